"""Structural facts about a model's layers, read once when monitoring starts.

Diagnosis explains findings with them (initialisation scale against fan-in,
negative biases, recurrent spectral radius, gate biases, learning rates), so a
record can be diagnosed offline without the model object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn


def _weight_facts(w: torch.Tensor, fan_in: int) -> dict[str, float]:
    w = w.detach().float()
    std = float(w.std()) if w.numel() > 1 else 0.0  # sync-ok: once, at start
    return {"weight_std": std, "fan_in": fan_in, "init_gain": std * math.sqrt(max(fan_in, 1))}


def _bias_facts(b: Optional[torch.Tensor]) -> dict[str, float]:
    if b is None or b.numel() == 0:
        return {}
    b = b.detach().float()
    return {"bias_mean": float(b.mean()), "bias_neg_frac": float((b < 0).float().mean())}  # sync-ok


def _rnn_facts(m: nn.RNNBase) -> dict[str, Any]:
    h = m.hidden_size
    w_hh: torch.Tensor = getattr(m, "weight_hh_l0")  # noqa: B009 - RNNBase registers it dynamically
    w = w_hh.detach().float().cpu()
    facts: dict[str, Any] = {"rnn_mode": m.mode, "hidden_size": h}
    bias = None
    if m.bias:
        b_ih: torch.Tensor = getattr(m, "bias_ih_l0")  # noqa: B009
        b_hh: torch.Tensor = getattr(m, "bias_hh_l0")  # noqa: B009
        bias = (b_ih.detach() + b_hh.detach()).float().cpu()
    if m.mode in ("RNN_TANH", "RNN_RELU"):
        facts["spectral_radius"] = float(torch.linalg.eigvals(w).abs().max())
    elif m.mode == "LSTM":
        # gate order i, f, g, o (PyTorch); the forget gate keeps the cell state.
        facts["spectral_radius"] = float(torch.linalg.matrix_norm(w[2 * h : 3 * h], ord=2))
        if bias is not None:
            facts["forget_gate_bias"] = float(bias[h : 2 * h].mean())
            facts["forget_gate_open"] = float(torch.sigmoid(bias[h : 2 * h]).mean())
    elif m.mode == "GRU":
        # gate order r, z, n; h' = (1 - z) n + z h: z near 1 keeps the memory.
        facts["spectral_radius"] = float(torch.linalg.matrix_norm(w[2 * h :], ord=2))
        if bias is not None:
            facts["update_gate_bias"] = float(bias[h : 2 * h].mean())
            facts["forget_gate_open"] = float(torch.sigmoid(bias[h : 2 * h]).mean())
    return facts


def layer_facts(module: nn.Module) -> dict[str, Any]:
    """Facts about one layer (empty for layers without a recognised weight)."""
    try:
        if isinstance(module, nn.RNNBase):
            facts = _rnn_facts(module)
            facts.update(_weight_facts(getattr(module, "weight_ih_l0"), module.input_size))  # noqa: B009
            return facts
        w = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Bilinear)) and w is not None:
            facts = _weight_facts(w, w.shape[1])
        elif isinstance(module, nn.modules.conv._ConvNd) and w is not None:
            fan_in = w.shape[1] * math.prod(w.shape[2:])
            if module.transposed:
                fan_in = w.shape[0] * math.prod(w.shape[2:])
            facts = _weight_facts(w, fan_in)
        else:
            return {}
        facts.update(_bias_facts(getattr(module, "bias", None)))
        return facts
    except Exception:  # facts are explanations, never a reason to fail
        return {}


#: param-group settings recorded per parameter: what decides how far a gradient moves a weight
SETTINGS = ("lr", "eps", "weight_decay", "momentum", "beta1", "beta2")


def optimizer_settings(
    optimizers: Sequence[torch.optim.Optimizer], params: list[nn.Parameter]
) -> list[dict[str, float]]:
    """Per monitored parameter, its param group's numeric settings among :data:`SETTINGS` (``betas`` split
    into ``beta1``/``beta2``); an empty dict where no optimizer owns it.

    Recorded so that a rule can tell a weight that stalls by itself from one whose gradient is below an
    adaptive optimizer's ``eps`` (Adam's step is ``lr * m / (sqrt(v) + eps)``: a gradient far below
    ``eps`` moves its weight by ``lr * g / eps``, Kingma & Ba, 2015, Algorithm 1).

    Example:
        >>> w = nn.Parameter(torch.zeros(2))
        >>> optimizer_settings([torch.optim.AdamW([w], lr=1e-3)], [w])[0]["eps"]
        1e-08
    """
    out: list[dict[str, float]] = [{} for _ in params]
    index = {id(p): i for i, p in enumerate(params)}
    for group in (g for optimizer in optimizers for g in optimizer.param_groups):
        found: dict[str, float] = {}
        values = dict(group)
        betas = values.pop("betas", None)
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            values["beta1"], values["beta2"] = betas
        for key in SETTINGS:
            v = values.get(key)
            if v is None or isinstance(v, bool):
                continue
            try:
                found[key] = float(v)  # sync-ok: a tensor lr is read at flush
            except (TypeError, ValueError, RuntimeError):
                continue
        for p in group["params"]:
            i = index.get(id(p))
            if i is not None:
                out[i] = found
    return out
