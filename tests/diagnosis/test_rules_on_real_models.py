"""Saturated units, vanishing through time and stalled layers on models other people wrote.

No corpus case covered these three rules. Each sick variant is sick for a reason a practitioner meets, measured
in plain PyTorch first; then gradvet's finding (kind, severity, layers, first cause and remedy), one recorded
statistic against a plain recomputation, and the healthy original with no warning.

- saturated: timm's VGG-11 built with its own ``act_layer`` factory set to tanh, fed raw 0-255 pixels (never
  standardised): 96-97% of the first tanh's outputs sit where tanh' < 0.1 (seeds 0-2), 0% on standardised
  pixels.
- time: pytorch/examples' word-level ``RNNModel`` read as a sequence classifier (the loss on the last of 32
  steps) at PyTorch's init: the first step gets 1.6e-7..3.5e-7 (RNN_TANH) and 4.6e-6..1.0e-5 (LSTM) of the last
  step's gradient (seeds 0-2).
- stalled: transformers' MobileBERT under AdamW (lr 1e-3, eps 1e-8) at its own init: layer 0's query/key
  gradients are ~1e-10, below Adam's eps, so only weight decay moves them (1e-5 of their norm per step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradvet
from gradvet.corpus import RNNModel, V, call, cases, images, lm_batch, logits_ce

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- saturated units: timm VGG-11 with tanh on raw pixels ------------------------------------------------
def _vgg11(seed: int, act: str = "tanh") -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    kw = {"act_layer": timm.layers.get_act_layer(act)} if act != "relu" else {}
    # mlp_ratio 1/8: the 4096-wide pre-logits cost seconds per check and change nothing before them
    return timm.create_model("vgg11", pretrained=False, num_classes=10, mlp_ratio=0.125, **kw)


def _raw_pixels(seed: int, n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes of an image as a loader gives them without ``Normalize``: integers 0..255 as floats."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float(), torch.randint(0, 10, (n,), generator=g)


def _first_tanh(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float, float]:
    """Plain PyTorch: std of ``features.0``'s output, the fraction of ``features.1`` (tanh) outputs where
    tanh'(a) = 1 - y^2 < 0.1, and the mean of tanh'."""
    with torch.no_grad():
        pre = model.features[0](x)
        pre_std = float(pre.std())
        y = torch.tanh(pre)
    return pre_std, float((1 - y * y < 0.1).float().mean()), float((1 - y * y).mean())


def test_timm_vgg11_tanh_on_raw_pixels_is_saturated_and_diagnosed() -> None:
    model, batch = _vgg11(0), _raw_pixels(0)
    pre_std, sat, slope = _first_tanh(model, batch[0])
    assert pre_std > 20 and sat > 0.9 and slope < 0.05  # measured: std 41, 97% saturated, mean tanh' 0.019
    _, sat_std, _ = _first_tanh(model, images(0, n=4, size=32)[0])
    assert sat_std < 0.01  # the same net on standardised pixels

    report = gradvet.check(model, batch, F.cross_entropy)
    f = report.finding("saturated_units")
    assert f is not None and f.severity == "error"
    assert list(f.layers[:2]) == ["features.0", "features.1"]
    assert f.causes[0].id == "unnormalised_inputs" and f.remedies[0].id == "data:normalize"
    # the recorded statistics against the plain recomputation
    assert report.layer("features.1").sat_frac == pytest.approx(sat, abs=1e-6)
    assert f.data["sat_frac"]["features.1"] == pytest.approx(sat, abs=1e-6)
    assert report.layer("features.0").act_std == pytest.approx(pre_std, rel=1e-3)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_timm_vgg11_on_standardised_pixels_has_no_warning(act: str) -> None:
    report = gradvet.check(_vgg11(0, act), images(0, n=4, size=32), F.cross_entropy)
    assert report.healthy, [(f.kind, f.severity, f.layers[:3]) for f in report.findings]


# -- vanishing through time: the word-level RNN model read as a sequence classifier ------------------------
T_SEQ = 32


def _last_step_ce(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's loss: the last step's output only."""
    return F.cross_entropy(out[:, -1], targets[:, -1])


def _word_rnn(mode: str, seed: int) -> tuple[RNNModel, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    return RNNModel(mode), lm_batch(seed, V, n=4, T=T_SEQ, key=None)


def _step_grads(model: RNNModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain autograd, eval mode: ``||dL/d x_t||`` over batch and features for each step t of the RNN input."""
    model.eval()
    emb = model.encoder(x).detach().requires_grad_(True)
    out, _ = model.rnn(emb)
    (g,) = torch.autograd.grad(_last_step_ce(model.decoder(out), y), emb)
    return g.pow(2).sum(dim=(0, 2)).sqrt()


@pytest.mark.parametrize(("mode", "cause", "first_remedy", "below"),
                         [("RNN_TANH", "contractive_recurrence", "arch:gated_rnn", 1e-6),
                          ("LSTM", "gate_bias", "init:chrono", 1e-4)])
def test_word_rnn_classifier_vanishes_through_time(mode: str, cause: str, first_remedy: str, below: float) -> None:
    model, (x, y) = _word_rnn(mode, 0)
    plain = _step_grads(model, x, y)
    assert float(plain[0] / plain[-1]) < below  # measured: 1.7e-7 (RNN_TANH), 4.6e-6 (LSTM)

    model.eval()  # no dropout, as the plain pass: the profiles must match step for step
    report = gradvet.check(model, (x, y), _last_step_ce, train=False)
    f = report.finding("vanishing_gradients")
    assert f is not None and f.severity == "error" and list(f.layers) == ["rnn"]
    assert f.causes[0].id == cause and f.remedies[0].id == first_remedy
    recorded = np.asarray(report.layer("rnn").time_profile)
    assert recorded.shape == (T_SEQ,)
    np.testing.assert_allclose(recorded, plain.numpy(), rtol=1e-4)
    k = T_SEQ // 10  # the rule's statistic: the first 10% of steps over the last 10%
    att = np.log10(plain[:k].mean().item() / plain[-k:].mean().item())
    assert f.data["log10_first_vs_last"] == pytest.approx(att, abs=2e-3)


def test_word_rnn_classifier_cured_by_the_prescribed_gates() -> None:
    """The LSTM's first remedy, chrono gates, carries the gradient back; the RNN's, a GRU, only with them."""
    from gradvet.remedies import apply_remedy

    lstm, (x, y) = _word_rnn("LSTM", 0)
    chrono = apply_remedy("init:chrono", lstm, t_max=T_SEQ).model
    g = _step_grads(chrono, x, y)
    assert float(g[0] / g[-1]) > 0.1  # measured 1.2
    rnn, _ = _word_rnn("RNN_TANH", 0)
    gru = apply_remedy("arch:gated_rnn", rnn).model
    g = _step_grads(gru, x, y)
    assert float(g[0] / g[-1]) < 1e-4  # a GRU at PyTorch's init still vanishes (4.5e-6) ...
    g = _step_grads(apply_remedy("init:chrono", gru, t_max=T_SEQ).model, x, y)
    assert float(g[0] / g[-1]) > 0.1  # ... and carries it with chrono gates (1.7), which the remedy says
    model, _ = _word_rnn("RNN_TANH", 0)
    f = gradvet.check(model, (x, y), _last_step_ce).finding("vanishing_gradients")
    assert f is not None and "init:chrono" in f.remedies[0].explanation


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM"])
def test_word_rnn_language_model_has_no_warning(mode: str) -> None:
    """The original: the word-level language model, a loss at every step."""
    model, batch = _word_rnn(mode, 0)
    report = gradvet.check(model, batch, logits_ce)
    assert report.healthy, [(f.kind, f.severity, f.layers) for f in report.findings]


# -- stalled layers: MobileBERT's layer-0 query/key below AdamW's eps ------------------------------------
PRE = "mobilebert.encoder.layer.0.attention.self."


def _train_mobilebert(eps: float, steps: int = 20) -> tuple[dict[str, list[float]], gradvet.Monitor]:
    """AdamW (lr 1e-3, weight decay 0.01) on the corpus's MobileBERT batch, with plain measurements per step."""
    pytest.importorskip("transformers")
    case = next(c for c in cases() if c.id == "transformers/mobilebert")
    model, (x, y), loss_fn = case.build(0)
    p = dict(model.named_parameters())
    q, v = p[PRE + "query.weight"], p[PRE + "value.weight"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=eps)
    seen: dict[str, list[float]] = {"q_grad": [], "v_grad": [], "q_ratio": [], "v_ratio": []}
    with gradvet.Monitor(model, optimizer=opt) as mon:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(call(model, x), y)
            loss.backward()
            mon.step(loss)
            q0, v0 = q.detach().clone(), v.detach().clone()
            seen["q_grad"].append(float(q.grad.norm()))
            seen["v_grad"].append(float(v.grad.norm()))
            opt.step()
            seen["q_ratio"].append(float((q.detach() - q0).norm() / q0.norm()))
            seen["v_ratio"].append(float((v.detach() - v0).norm() / v0.norm()))
    return seen, mon


def test_mobilebert_query_key_below_adam_eps_are_stalled() -> None:
    seen, mon = _train_mobilebert(eps=1e-8)
    # plain PyTorch: the query's gradient (norm over 64x32 entries) sits far below eps; AdamW's step is then
    # lr * g / eps, and weight decay (lr * 0.01 = 1e-5 of the norm) is all that moves it
    assert max(seen["q_grad"]) < 1e-9 and min(seen["v_grad"]) > 1e-5
    assert max(seen["q_ratio"]) < 4e-5 and np.median(seen["v_ratio"]) > 1e-3

    report = mon.report()
    f = report.finding("stalled_layers")
    assert f is not None and f.severity == "warning"
    assert {PRE + "query", PRE + "key"} <= set(f.layers) and PRE + "value" not in f.layers
    # the recorded update ratios against the plain ones, on the steps the default profile measured (every
    # 50th: in 20 steps, step 0 alone)
    run = mon.load()
    u = run.get("param/update_ratio")
    col = next(i for i, p in enumerate(run.params) if p["name"] == PRE + "query.weight")
    steps = np.asarray(u.steps)
    assert steps.tolist() == [0]
    np.testing.assert_allclose(u.values[:, col], np.asarray(seen["q_ratio"])[steps], rtol=1e-3)
    assert f.data["update_ratio"][PRE + "query"] < 4e-5


def test_mobilebert_with_eps_below_its_gradients_has_no_warning() -> None:
    """The same model and optimizer with eps 1e-12: Adam normalises the query's gradient and it moves."""
    seen, mon = _train_mobilebert(eps=1e-12)
    assert np.median(seen["q_ratio"]) > 1e-3  # measured 1.6e-2
    report = mon.report()
    assert report.healthy, [(f.kind, f.severity, f.layers[:4]) for f in report.findings]


def test_mobilebert_stall_is_blamed_on_adam_eps() -> None:
    seen, mon = _train_mobilebert(eps=1e-8)
    f = mon.report().finding("stalled_layers")
    assert f is not None
    assert f.causes[0].id == "below_eps" and "1e-08" in f.causes[0].reason
    assert [r.id for r in f.remedies][0] == "optim:eps" and "optim:adam" not in [r.id for r in f.remedies]
    # the per-entry RMS the cause quotes is the recorded gradient norm over sqrt(numel), as plain PyTorch gives it
    q = next(p for p in mon.load().params if p["name"] == PRE + "query.weight")
    assert seen["q_grad"][0] / np.sqrt(q["numel"]) < 1e-8
