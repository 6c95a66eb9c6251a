"""Remedies: model edits that treat gradient problems, and gradient transforms for the training loop.

Model-editing remedies are looked up by the ids the diagnosis prescribes
(``gradvet.diagnosis._prescribe.CATALOGUE``) and applied with :func:`apply_remedy`,
which works on a copy and reports every edit as a :class:`Change`::

    result = gradvet.remedies.apply_remedy("activation:relu", model)
    model = result.model

The plain functions (``swap_activations``, ``init_kaiming``, ``insert_norm``,
``pretrain_layerwise``, ``shallower``, ...) edit the model they are given in place and
return their list of changes.
"""

from gradvet.remedies._activations import ACT_FACTORIES, create_act, swap_activations
from gradvet.remedies._domain import DomainGuard, guard_domain
from gradvet.remedies._gated import gate_rnns
from gradvet.remedies._gates import chrono_init, init_forget_gate_bias
from gradvet.remedies._init import init_kaiming, init_orthogonal, init_xavier, reset_biases
from gradvet.remedies._lsuv import lsuv_init
from gradvet.remedies._norm import insert_norm
from gradvet.remedies._norm_affine import reset_norm_affine
from gradvet.remedies._pretrain import pretrain_layerwise
from gradvet.remedies._registry import MODEL_REMEDIES, applicable, apply_remedy, catalogue
from gradvet.remedies._reset import reinit_nonfinite
from gradvet.remedies._residual import Residual, add_residual, zero_init_residual
from gradvet.remedies._result import Change, RemedyNotApplicable, RemedyResult
from gradvet.remedies._shallower import shallower
from gradvet.remedies._transforms import (
    GradientTransform,
    adaptive_clip,
    autoclip,
    chain,
    clip_by_global_norm,
    clip_by_value,
    skip_nonfinite,
)

__all__ = [
    "ACT_FACTORIES",
    "MODEL_REMEDIES",
    "Change",
    "DomainGuard",
    "GradientTransform",
    "RemedyNotApplicable",
    "RemedyResult",
    "Residual",
    "adaptive_clip",
    "add_residual",
    "applicable",
    "apply_remedy",
    "autoclip",
    "catalogue",
    "chain",
    "chrono_init",
    "clip_by_global_norm",
    "clip_by_value",
    "create_act",
    "gate_rnns",
    "guard_domain",
    "init_forget_gate_bias",
    "init_kaiming",
    "init_orthogonal",
    "init_xavier",
    "insert_norm",
    "lsuv_init",
    "pretrain_layerwise",
    "reinit_nonfinite",
    "reset_biases",
    "reset_norm_affine",
    "shallower",
    "skip_nonfinite",
    "swap_activations",
    "zero_init_residual",
]
