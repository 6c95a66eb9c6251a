"""Where NaN/Inf comes from, inside architectures other people wrote (issue 12): a Hugging Face GPT-2
whose attention scores overflow float16 (no scaler can help a forward overflow), a torchvision ResNet
fed a batch with NaN in a live training run, and an LSTM whose output goes through ``torch.log``.
Each against a plain-PyTorch reference computed op by op."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet


def _gpt2_half():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=256, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        model.transformer.h[1].attn.c_attn.weight.mul_(400.0)  # query/key grow past float16's range
    return model.half()


def _loss(out, ids):
    return F.cross_entropy(out.logits.float().flatten(0, 1), ids.flatten())


def test_gpt2_fp16_attention_overflow_names_the_score_matmul() -> None:
    model = _gpt2_half()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    # reference, op by op: block 1's c_attn output is finite, its q @ k^T is not; block 0's is finite
    seen = {}
    hooks = [model.transformer.h[i].attn.c_attn.register_forward_hook(
        lambda m, a, o, i=i: seen.__setitem__(i, o.detach())) for i in range(2)]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()

    def scores(qkv):
        q, k, _ = qkv.split(64, dim=2)
        q, k = (t.view(4, 32, 4, 16).transpose(1, 2) for t in (q, k))
        return torch.matmul(q, k.transpose(-1, -2))

    assert torch.isfinite(seen[0]).all() and torch.isfinite(scores(seen[0])).all()
    assert torch.isfinite(seen[1]).all() and not torch.isfinite(scores(seen[1])).all()

    report = gradvet.check(model, ({"input_ids": ids}, ids), _loss)
    (f,) = [f for f in report.findings if f.kind == "nonfinite_gradients"]
    assert f.data["op"] == "torch.matmul"
    assert f.data["between"] == ["transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]
    assert "overflows float16 (largest finite value 65504)" in f.evidence
    assert f.data["where"].startswith("modeling_gpt2.py:") and "attention" in f.data["where"]
    assert f.remedies[0].id == "guard:domain" and "bfloat16" in f.remedies[0].snippet


def test_resnet_fed_a_nan_batch_in_training_says_the_batch_first() -> None:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    counts = []
    with gradvet.Monitor(model, optimizer=opt) as mon:
        for step in range(6):
            x = torch.randn(4, 3, 32, 32, generator=g)
            if step == 4:
                x[1, 0, 5, 7] = float("nan")
                x[2, 2, 0, 0] = float("inf")
            counts.append(int((~torch.isfinite(x)).sum()))  # the reference count
            y = torch.randint(0, 10, (4,), generator=g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            if step < 4:
                opt.step()  # from step 4 on the weights would be NaN: stop updating them
    s = mon.load().get("input_nonfinite")
    np.testing.assert_array_equal(s.values, np.asarray(counts, dtype=np.float32))
    first = mon.report().findings[0]
    assert first.kind == "nonfinite_gradients" and first.severity == "error"
    assert "the batch at step 4 holds 2 NaN/Inf value(s) in its inputs" in first.evidence
    assert first.remedies[0].id == "data:filter_nonfinite"


class LSTMLog(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 12, batch_first=True)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(torch.log(out[:, -1]))  # log of tanh-bounded values: NaN where they are < 0


def test_lstm_with_a_log_of_its_output_names_log_between_lstm_and_head() -> None:
    torch.manual_seed(0)
    model = LSTMLog()
    x = torch.randn(8, 10, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # reference: the LSTM's output is finite, log of it is not; count the negatives
        h = model.lstm(x)[0][:, -1]
    assert torch.isfinite(h).all() and not torch.isfinite(torch.log(h)).all()
    negatives = int((h < 0).sum())
    report = gradvet.check(model, (x, y), F.cross_entropy)
    (f,) = [f for f in report.findings if f.kind == "nonfinite_gradients"]
    assert f.data["op"] == "torch.log" and f.data["between"] == ["lstm", "head"]
    assert f"`torch.log` of lstm's output, where {negatives} of {h.numel()} values are negative" in f.evidence
    assert f.remedies[0].id == "guard:domain" and "torch.log(x.clamp_min(" in f.remedies[0].snippet
