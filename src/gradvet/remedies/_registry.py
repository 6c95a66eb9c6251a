"""Remedy ids -> model-editing functions, and the two entry points ``apply_remedy`` and ``applicable``.

Every entry of :data:`MODEL_REMEDIES` is ``fn(model, *, batch=None, **kw) -> list[Change]``
and edits ``model`` in place. Idempotence rule, shared by all of them: a model already in
the state a remedy produces gives no changes (a falsy :class:`RemedyResult`);
:class:`RemedyNotApplicable` is raised only when the model has nothing the remedy could
act on and shows no sign of an earlier application.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from gradvet._validate import require_module
from gradvet.diagnosis._prescribe import CATALOGUE
from gradvet.errors import GradvetUsageError
from gradvet.remedies._activations import swap_activations
from gradvet.remedies._domain import guard_domain
from gradvet.remedies._gated import gate_rnns
from gradvet.remedies._gates import chrono_init, init_forget_gate_bias
from gradvet.remedies._init import init_kaiming, init_orthogonal, init_xavier, reset_biases
from gradvet.remedies._layout import weighted_layers
from gradvet.remedies._lsuv import lsuv_init
from gradvet.remedies._norm import insert_norm
from gradvet.remedies._norm_affine import reset_norm_affine
from gradvet.remedies._pretrain import pretrain_applicable, pretrain_remedy
from gradvet.remedies._reset import reinit_nonfinite
from gradvet.remedies._residual import add_residual, zero_init_residual
from gradvet.remedies._result import Change, RemedyNotApplicable, RemedyResult
from gradvet.remedies._shallower import shallower

RemedyFn = Callable[..., list[Change]]


def _ignoring_batch(fn: Callable[..., list[Change]], **fixed: Any) -> RemedyFn:
    """Adapt ``fn(model, **kw)`` to the registry signature ``fn(model, *, batch=None, **kw)``."""
    def run(model: nn.Module, *, batch: Any = None, **kw: Any) -> list[Change]:
        return fn(model, **fixed, **kw)
    run.__doc__ = fn.__doc__
    run.__name__ = getattr(fn, "__name__", "remedy")
    return run


def _lsuv(model: nn.Module, *, batch: Any = None, **kw: Any) -> list[Change]:
    if batch is None:
        raise RemedyNotApplicable("init:lsuv measures each layer's output on data: pass batch=(inputs, targets), "
                                  "e.g. apply_remedy('init:lsuv', model, batch=batch)")
    return lsuv_init(model, batch, **kw)


def _guard_domain(model: nn.Module, *, batch: Any = None, **kw: Any) -> list[Change]:
    if batch is None:
        raise RemedyNotApplicable("guard:domain finds where non-finite values are born by running the batch: "
                                  "pass batch=(inputs, targets), e.g. apply_remedy('guard:domain', model, "
                                  "batch=batch)")
    return guard_domain(model, batch, **kw)


def _chrono(model: nn.Module, *, batch: Any = None, **kw: Any) -> list[Change]:
    return chrono_init(model, batch=batch, **kw)


#: Remedy id -> ``fn(model, *, batch=None, **kw) -> list[Change]`` (edits in place).
MODEL_REMEDIES: dict[str, RemedyFn] = {
    # ReLU replaces the saturating activations; the others also replace ReLU, whose units can
    # die (Maas et al., 2013: the leaky slope keeps a gradient flowing through units that are off).
    "activation:relu": _ignoring_batch(partial(swap_activations, to="relu", replace=(nn.Sigmoid, nn.Tanh))),
    **{f"activation:{a}": _ignoring_batch(partial(swap_activations, to=a, replace=(nn.Sigmoid, nn.Tanh, nn.ReLU)))
       for a in ("leaky_relu", "prelu", "gelu", "silu", "elu", "selu", "mish")},
    "init:kaiming": _ignoring_batch(init_kaiming),
    "init:xavier": _ignoring_batch(init_xavier),
    "init:orthogonal": _ignoring_batch(init_orthogonal),
    "init:lsuv": _lsuv,
    "init:forget_gate_bias": _ignoring_batch(init_forget_gate_bias),
    "init:chrono": _chrono,
    "init:zero_residual": _ignoring_batch(zero_init_residual),
    "init:reset_bias": _ignoring_batch(reset_biases),
    "init:reset_nonfinite": _ignoring_batch(reinit_nonfinite),
    "init:reset_norm": _ignoring_batch(reset_norm_affine),
    "norm:batch": _ignoring_batch(insert_norm, kind="batch"),
    "norm:layer": _ignoring_batch(insert_norm, kind="layer"),
    "norm:rms": _ignoring_batch(insert_norm, kind="rms"),
    "residual": _ignoring_batch(add_residual),
    "residual:rezero": _ignoring_batch(add_residual, branch_init="rezero"),
    "arch:gated_rnn": _ignoring_batch(gate_rnns),
    "arch:shallower": _ignoring_batch(shallower),
    "pretrain:layerwise": pretrain_remedy,
    "guard:domain": _guard_domain,
}


def _lookup(rid: str) -> RemedyFn:
    if rid in MODEL_REMEDIES:
        return MODEL_REMEDIES[rid]
    if rid in CATALOGUE:
        explanation, snippet = CATALOGUE[rid]
        kind = "an architecture change in your model's code" if rid.startswith("arch:") else "a training-loop change"
        raise GradvetUsageError(
            f"{rid!r} is {kind}, not a model edit: gradvet prescribes it but does not apply it "
            f"({explanation}). Do this in your code:\n{snippet}"
        )
    raise GradvetUsageError(f"unknown remedy id {rid!r}; the model-editing remedies are {sorted(MODEL_REMEDIES)} "
                            f"(training-loop prescriptions: {sorted(set(CATALOGUE) - set(MODEL_REMEDIES))})")


def apply_remedy(rid: str, model: nn.Module, *, inplace: bool = False, batch: Any = None,
                 **kwargs: Any) -> RemedyResult:
    """Apply the model-editing remedy ``rid`` and report every edit.

    Args:
        rid: a key of :data:`MODEL_REMEDIES`, e.g. ``'activation:relu'``, ``'init:kaiming'``,
            ``'norm:batch'``, ``'residual'``.
        model: the model; left untouched unless ``inplace``.
        inplace: edit ``model`` itself instead of a ``copy.deepcopy`` (same device and dtype).
        batch: ``(inputs, targets)``, needed by ``init:lsuv``, ``guard:domain`` and ``pretrain:layerwise``
            (its training data), read by ``init:chrono``.
        **kwargs: passed to the remedy function (e.g. ``t_max=`` for ``init:chrono``,
            ``mode='fan_out'`` for ``init:kaiming``).

    Returns:
        A :class:`RemedyResult`; falsy when nothing needed changing (already applied).

    Raises:
        GradvetUsageError: unknown id, or an id gradvet only prescribes (the message shows the code).
        RemedyNotApplicable: the model has nothing this remedy can act on.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2))
        >>> result = apply_remedy("activation:relu", model)
        >>> type(result.model[1]).__name__, type(model[1]).__name__, bool(result)
        ('ReLU', 'Sigmoid', True)
        >>> bool(apply_remedy("activation:relu", result.model))
        False
    """
    fn = _lookup(rid)
    require_module(model, "apply_remedy")
    target = model if inplace else copy.deepcopy(model)
    return RemedyResult(rid, target, fn(target, batch=batch, **kwargs))


def applicable(rid: str, model: nn.Module, batch: Any = None) -> tuple[bool, str]:
    """Whether ``apply_remedy(rid, model, batch=batch)`` would change something, and why (or why not).

    Nothing is modified, the global RNG included: the remedy runs on a deep copy of the model
    (so this costs one copy), except ``init:lsuv`` and ``pretrain:layerwise``, which are judged
    without a forward pass.

    Returns:
        ``(True, 'would change: ...')``, or ``(False, reason)`` when the remedy does not apply
        or was applied already.

    Raises:
        GradvetUsageError: unknown or prescription-only id.

    Example:
        >>> applicable("init:forget_gate_bias", nn.Sequential(nn.Linear(4, 4)))[0]
        False
    """
    fn = _lookup(rid)
    require_module(model, "applicable")
    if rid == "init:lsuv":
        return _lsuv_applicable(model, batch)
    if rid == "pretrain:layerwise":  # judged without training a layer
        return pretrain_applicable(model, batch)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        changes = fn(copy.deepcopy(model), batch=batch)
    except RemedyNotApplicable as e:
        return False, str(e)
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    if not changes:
        return False, f"{rid} was applied already: nothing would change"
    shown = "; ".join(str(c) for c in changes[:3]) + (f"; ... ({len(changes)} in all)" if len(changes) > 3 else "")
    return True, f"would change: {shown}"


def _lsuv_applicable(model: nn.Module, batch: Any) -> tuple[bool, str]:
    if batch is None:
        return False, "init:lsuv needs batch=(inputs, targets)"
    layers = [n for n, m in weighted_layers(model) if getattr(m, "_gradvet_init", None) != "lsuv"]
    if not layers:
        return False, "no Linear/Conv layer left to LSUV-initialise"
    return True, f"would rescale up to {len(layers)} Linear/Conv layer(s) on the batch"


def _kind(rid: str) -> str:
    if rid in MODEL_REMEDIES:
        return "model edit"
    if rid.startswith("clip:") or rid == "skip_nonfinite":
        return "gradient transform"
    if rid.startswith(("optim:", "lr:")):
        return "optimizer"
    return rid.split(":", 1)[0]


def catalogue() -> list[dict[str, str]]:
    """Every remedy gradvet knows, model edits first: ``{'id', 'kind', 'what', 'snippet'}`` each.

    ``kind`` is ``'model edit'`` (``apply_remedy`` and ``treat`` apply it), ``'gradient transform'``
    (a training-loop object from this package), ``'optimizer'`` or ``'data'`` (prescriptions to
    apply by hand). ``gradvet remedies`` prints this table.

    Example:
        >>> rows = catalogue()
        >>> rows[0]["kind"], any(r["id"] == "clip:norm" and r["kind"] == "gradient transform" for r in rows)
        ('model edit', True)
    """
    order = {"model edit": 0, "gradient transform": 1, "optimizer": 2}
    rows = [{"id": rid, "kind": _kind(rid), "what": what, "snippet": snippet.format(id=rid, extra="")}
            for rid, (what, snippet) in CATALOGUE.items()]
    return sorted(rows, key=lambda r: (order.get(r["kind"], 3), r["id"]))
