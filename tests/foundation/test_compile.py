"""A torch.compile'd model: monitoring must not crash and must measure correctly.

Observed with torch 2.13 (eager and inductor backends): per-parameter statistics,
update ratios and module-level layer taps (forward hooks on the submodules of
``_orig_mod``, which run eagerly) are all measured and match the uncompiled
recomputation. Functional activations inside a compiled forward
(``torch.sigmoid(self.fc(x))``) are attributed to their layer as in eager mode: dynamo
traces gradvet's TorchFunctionMode (tested in ``test_engine_fastpaths.py``).
"""

from __future__ import annotations

import copy
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet

from ._reference import reference_outputs


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc3(torch.sigmoid(self.fc2(self.act(self.fc1(x)))))


def _inductor_works() -> bool:
    if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("g++") is None:
        return False
    try:
        torch._dynamo.reset()
        return bool(torch.compile(lambda t: t * 2 + 1)(torch.ones(2)).eq(3).all())
    except Exception:
        return False


@pytest.mark.parametrize(
    "backend",
    [
        "eager",
        pytest.param("inductor", marks=pytest.mark.slow),
    ],
)
def test_compiled_model_is_measured(backend):
    if backend == "inductor" and not _inductor_works():
        pytest.skip("inductor needs a working C compiler")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Net()
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.SGD(compiled.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    data = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    expected_grads, expected_layers, expected_updates = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no tap may fail under compile
        with gradvet.Monitor(compiled, optimizer=opt, profile="full") as monitor:
            for x, y in data:
                ref = reference_outputs(
                    reference,
                    x,
                    lambda out, y=y: F.cross_entropy(out, y),
                    ["fc1", "act", "fc2", "fc3"],
                )
                expected_layers.append({n: c[0][1].norm().item() for n, c in ref.items()})
                expected_grads.append([p.grad.norm().item() for p in reference.parameters()])
                before = [p.detach().clone() for p in reference.parameters()]
                ref_opt.step()
                expected_updates.append(
                    [
                        ((p - b).norm() / b.norm()).item()
                        for p, b in zip(reference.parameters(), before)
                    ]
                )

                opt.zero_grad()
                loss = F.cross_entropy(compiled(x), y)
                loss.backward()
                monitor.step(loss)
                opt.step()
    run = monitor.run
    assert run.param_names() == [f"_orig_mod.{n}" for n, _ in model.named_parameters()]
    np.testing.assert_allclose(run.series("param/grad_norm").values, expected_grads, rtol=1e-5)
    np.testing.assert_allclose(run.series("param/update_ratio").values, expected_updates, rtol=1e-4)
    for name in ("fc1", "act", "fc2", "fc3"):
        got = run.series("layer/grad_norm").values[
            :, [layer["name"] for layer in run.layers].index(f"_orig_mod.{name}")
        ]
        np.testing.assert_allclose(got, [e[name] for e in expected_layers], rtol=1e-5, err_msg=name)
    assert (
        run.layers[[layer["name"] for layer in run.layers].index("_orig_mod.act")]["activation"]
        == "tanh"
    )
