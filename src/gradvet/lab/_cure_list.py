"""The cures of experiment 2: every textbook remedy for vanishing gradients, as a recipe on one baseline.

Each :class:`Cure` starts from the same deep sigmoid MLP (same seed, same data order) and
changes one thing: the model (built differently, or edited with ``gradvet.remedies``: the
same functions ``gradvet.treat`` applies), the optimizer, or the training before the
common SGD run (layer-wise pretraining). The papers are cited where each cure is defined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from gradvet.remedies import apply_remedy, pretrain_layerwise, shallower

BASELINE = "sigmoid (baseline)"


@dataclass(frozen=True)
class Cure:
    """One variant of the baseline.

    Attributes:
        label: the name shown in charts and tables.
        family: the chart group it is drawn in.
        why: half a sentence on how it acts (the reading adds what it measured).
        mlp: keyword arguments of ``gradvet.lab._models.MLP`` (activation, init, norm, skips, dropout).
        remedies: ``gradvet.remedies`` ids applied to the built model, in order.
        optimizer: ``"sgd"`` (the common settings), ``"adam"`` or ``"rmsprop"``.
        lr: learning rate when it differs from the common SGD one.
        weight_decay: the optimizer's weight decay.
        pretrain: greedy layer-wise pretraining (autoencoders) before the common run.
        keep_blocks: drop middle blocks down to this many before training (a shallower net).
    """

    label: str
    family: str
    why: str
    mlp: dict[str, Any] = field(default_factory=lambda: {"act": "sigmoid"})
    remedies: tuple[str, ...] = ()
    optimizer: str = "sgd"
    lr: Optional[float] = None
    weight_decay: float = 0.0
    pretrain: bool = False
    keep_blocks: Optional[int] = None


def _act(name: str, label: str, why: str) -> Cure:
    # the rectifier families want He init (std sqrt(2/fan_in)); init:kaiming reads the activation
    # and gives SELU its LeCun-normal std 1/sqrt(fan_in) (Klambauer et al., 2017)
    return Cure(label, "activations", why, remedies=(f"activation:{name}", "init:kaiming"))


CURES: tuple[Cure, ...] = (
    Cure(BASELINE, "baseline", "sigmoid's derivative is at most 1/4 at every layer"),
    # activations (ReLU: Glorot et al., 2011; Leaky ReLU: Maas et al., 2013; ELU: Clevert et al., 2016;
    # SELU: Klambauer et al., 2017; GELU: Hendrycks & Gimpel, 2016; SiLU: Elfwing et al., 2018; Mish: Misra, 2019)
    Cure("+ ReLU", "activations", "ReLU's derivative is 1 where it is on, but PyTorch's default init "
         "(std 1/sqrt(3 fan_in)) still shrinks the signal", {"act": "relu"}),
    Cure("+ ReLU + He init", "activations", "ReLU with He init keeps the variance per layer", {"act": "relu", "init": "he"}),
    _act("leaky_relu", "+ Leaky ReLU + He init", "a slope below zero too"),
    _act("elu", "+ ELU + He init", "smooth, negative outputs keep the mean near zero"),
    _act("selu", "+ SELU + LeCun normal", "self-normalising with variance 1/fan_in"),
    _act("gelu", "+ GELU + He init", "a smooth gated rectifier"),
    _act("silu", "+ SiLU + He init", "x * sigmoid(x), a smooth rectifier"),
    _act("mish", "+ Mish + He init", "x * tanh(softplus(x)), a smooth rectifier"),
    # initialisation (Glorot & Bengio, 2010; He et al., 2015; Mishkin & Matas, 2016)
    Cure("+ Xavier init", "initialisation", "variance-preserving for tanh; sigmoid's 1/4 slope remains",
         {"act": "sigmoid", "init": "xavier"}),
    Cure("+ He init", "initialisation", "larger weights, but sigmoid's slope still caps each layer's gain",
         {"act": "sigmoid", "init": "he"}),
    Cure("+ LSUV init", "initialisation", "orthogonal weights rescaled to unit output variance on a batch",
         remedies=("init:lsuv",)),
    # normalisation and skips (Ioffe & Szegedy, 2015; Ba et al., 2016; He et al., 2016)
    Cure("+ batch norm", "normalisation and skips", "re-scales each layer's pre-activation over the batch",
         {"act": "sigmoid", "norm": True}),
    Cure("+ layer norm", "normalisation and skips", "re-scales each layer's pre-activation per example",
         {"act": "sigmoid", "norm": "layer"}),
    Cure("+ skip connections", "normalisation and skips", "an identity path past every block",
         {"act": "sigmoid", "skip": True}),
    Cure("+ all (ReLU, He, BN, skips)", "normalisation and skips", "every structural cure at once",
         {"act": "relu", "init": "he", "norm": True, "skip": True}),
    # optimizers (Kingma & Ba, 2015; Tieleman & Hinton, 2012)
    Cure("+ Adam", "optimizers", "steps of about lr per parameter, whatever the gradient's size",
         optimizer="adam", lr=1e-3),
    Cure("+ RMSprop", "optimizers", "divides each step by the running RMS of that parameter's gradient",
         optimizer="rmsprop", lr=1e-3),
    # regularisers (Krogh & Hertz, 1992; Srivastava et al., 2014)
    Cure("+ weight decay (L2 5e-4)", "regularisers", "shrinks the weights a little every step",
         weight_decay=5e-4),
    Cure("+ dropout (0.1)", "regularisers", "zeroes 10% of the units in training, scales the rest by 1/0.9",
         {"act": "sigmoid", "dropout": 0.1}),
    Cure("+ ReLU + He init + dropout (0.1)", "regularisers", "dropout on a net whose gradient flows",
         {"act": "relu", "init": "he", "dropout": 0.1}),
    # depth (Hinton et al., 2006; Bengio et al., 2007; He et al., 2016)
    Cure("+ layer-wise pretraining", "depth", "each layer first trained alone as an autoencoder, then the whole "
         "stack fine-tuned", pretrain=True),
    Cure("+ shallower (3 layers)", "depth", "middle blocks dropped (gradvet.remedies.shallower), 3 Linear layers "
         "left: a short gradient path", keep_blocks=2),
)

FAMILIES = tuple(dict.fromkeys(c.family for c in CURES if c.family != "baseline"))


def build(cure: Cure, depth: int, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """The model of ``cure``: built with the global seed ``seed``, edited, and pretrained if asked."""
    from gradvet.lab._models import MLP

    torch.manual_seed(seed)
    model = MLP(depth, **cure.mlp)
    for rid in cure.remedies:
        apply_remedy(rid, model, inplace=True, batch=(x[:256], y[:256]))
    if cure.keep_blocks is not None:
        shallower(model, cure.keep_blocks, stack="blocks")
    if cure.pretrain:
        pretrain_layerwise(model, x, y, stack="blocks", seed=seed)
    return model
