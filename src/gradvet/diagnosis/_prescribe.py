"""The remedy catalogue: one prescription per remedy id, with a snippet to paste.

Ids match ``gradvet.remedies`` (the treatment module applies the model-editing
ones, ``arch:gated_rnn`` included; ``clip:*``, ``optim:*``, ``lr:*``,
``skip_nonfinite`` and ``data:*`` are changes to the training loop or the data
that gradvet prescribes but does not apply silently).
"""

from __future__ import annotations

from gradvet.findings import Remedy

_APPLY = "model = gradvet.remedies.apply_remedy({id!r}, model{extra}).model"

CATALOGUE: dict[str, tuple[str, str]] = {
    "activation:relu": (
        "swap sigmoid/tanh for ReLU: its derivative is 1 on the active side instead of <= 0.25 "
        "(Glorot et al., 2011)",
        _APPLY,
    ),
    "activation:leaky_relu": (
        "use LeakyReLU: a small negative slope keeps a gradient flowing through units that are off "
        "(Maas et al., 2013)",
        _APPLY,
    ),
    "activation:prelu": ("use PReLU, a leaky ReLU whose negative slope is learned (He et al., 2015)", _APPLY),
    "activation:gelu": ("use GELU, a smooth non-saturating activation (Hendrycks & Gimpel, 2016)", _APPLY),
    "activation:silu": ("use SiLU/Swish, x * sigmoid(x) (Elfwing et al., 2018; Ramachandran et al., 2017)", _APPLY),
    "activation:elu": ("use ELU, whose negative side keeps a gradient and a mean near zero (Clevert et al., 2016)",
                       _APPLY),
    "activation:selu": ("use SELU, self-normalising with LeCun-normal init (Klambauer et al., 2017)", _APPLY),
    "activation:mish": ("use Mish, x * tanh(softplus(x)) (Misra, 2019)", _APPLY),
    "init:kaiming": (
        "He/Kaiming init, std = sqrt(2/fan_in), keeps the signal's variance through ReLU layers "
        "(He et al., 2015)",
        _APPLY,
    ),
    "init:xavier": (
        "Xavier/Glorot init, Var(W) = 2/(fan_in+fan_out), keeps variance through tanh layers "
        "(Glorot & Bengio, 2010)",
        _APPLY,
    ),
    "init:orthogonal": (
        "orthogonal init keeps every singular value at 1, so signals neither shrink nor grow "
        "(Saxe et al., 2014)",
        _APPLY,
    ),
    "init:lsuv": (
        "LSUV: orthogonal init, then rescale each layer to unit output variance on a batch "
        "(Mishkin & Matas, 2016)",
        "model = gradvet.remedies.apply_remedy('init:lsuv', model, batch=batch).model",
    ),
    "init:forget_gate_bias": (
        "set the LSTM forget-gate bias to 1 so the cell keeps its memory at the start "
        "(Gers et al., 2000; Jozefowicz et al., 2015)",
        _APPLY,
    ),
    "init:chrono": (
        "chrono init: forget-gate biases log(U(1, T-1)) match the memory to the sequence length "
        "(Tallec & Ollivier, 2018)",
        "model = gradvet.remedies.apply_remedy('init:chrono', model, batch=batch).model  # T from the batch",
    ),
    "init:zero_residual": (
        "zero-init the last layer of each residual branch so every block starts as the identity "
        "(Goyal et al., 2017; Zhang et al., 2019)",
        _APPLY,
    ),
    "init:reset_bias": (
        "reset the biases to zero so the units are active on about half the inputs again "
        "(Lu et al., 2019)",
        _APPLY,
    ),
    "init:reset_norm": (
        "reset every normalisation layer's affine to its default, gain 1 and shift 0 (0 for a Gemma-style "
        "RMSNorm that scales by 1 + weight), so each norm hands on the normalised signal at unit scale "
        "(Ioffe & Szegedy, 2015; Ba et al., 2016); zero-init residual gains are reset too",
        _APPLY,
    ),
    "init:reset_nonfinite": (
        "re-initialise the layers whose weights hold NaN/Inf (or load them from an earlier checkpoint): "
        "no optimizer step can repair a non-finite weight",
        _APPLY,
    ),
    "guard:domain": (
        "wrap the layer where NaN/Inf is born in a DomainGuard that clamps its inputs to the op's domain "
        "(at least 1/20 of the inputs' RMS for log, sqrt, 1/x; below the exp overflow bound), measured on the "
        "batch: a guard that "
        "keeps training alive and proves the cause; then fix the op in your code, e.g. "
        "torch.log(x.clamp_min(1e-6)) (Goodfellow et al., 2016, sec. 4.1)",
        "model = gradvet.remedies.apply_remedy('guard:domain', model, batch=batch).model",
    ),
    "norm:batch": (
        "insert BatchNorm after each Linear/Conv: it re-centres and re-scales every layer's input "
        "(Ioffe & Szegedy, 2015)",
        _APPLY,
    ),
    "norm:layer": ("insert LayerNorm after each Linear (Ba et al., 2016)", _APPLY),
    "norm:rms": ("insert RMSNorm after each Linear (Zhang & Sennrich, 2019)", _APPLY),
    "residual": (
        "add skip connections x + W act(x), each branch's end starting at zero: the identity path carries "
        "the gradient past every block (He et al., 2016; SkipInit: De & Smith, 2020)",
        _APPLY,
    ),
    "residual:rezero": (
        "add skip connections x + alpha * f(x) with a learnable alpha that starts at 0, so every block "
        "starts as the identity and learns how much of its branch to add (ReZero: Bachlechner et al., 2020)",
        _APPLY,
    ),
    "clip:norm": (
        "clip the global gradient norm before optimizer.step() (Pascanu et al., 2013)",
        "clip = gradvet.remedies.clip_by_global_norm(1.0)\n"
        "...; loss.backward(); monitor.step(loss); clip(monitor.parameters, norms=monitor.last_grad_norms); opt.step()",
    ),
    "clip:value": (
        "clamp every gradient entry to [-c, c] (Mikolov, 2012)",
        "clip = gradvet.remedies.clip_by_value(1.0)\n...; loss.backward(); clip(list(model.parameters())); opt.step()",
    ),
    "clip:autoclip": (
        "AutoClip: clip to a percentile of the gradient-norm history, no threshold to tune "
        "(Seetharaman et al., 2020)",
        "clip = gradvet.remedies.autoclip(10.0)\n...; loss.backward(); clip(list(model.parameters())); opt.step()",
    ),
    "clip:agc": (
        "adaptive gradient clipping: cap each unit's gradient relative to its weight norm (Brock et al., 2021)",
        "clip = gradvet.remedies.adaptive_clip(0.01)\n...; loss.backward(); clip(list(model.parameters())); opt.step()",
    ),
    "lr:lower": (
        "lower the learning rate (try 10x lower, or a warm-up)",
        "for g in opt.param_groups:\n    g['lr'] *= 0.1",
    ),
    "optim:adam": (
        "an adaptive optimizer scales each parameter's step by its own gradient history, so layers "
        "with small gradients still move (Kingma & Ba, 2015)",
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3)",
    ),
    "skip_nonfinite": (
        "skip optimizer steps whose gradients are not finite instead of corrupting the weights",
        "guard = gradvet.remedies.skip_nonfinite()\n...; loss.backward(); guard(list(model.parameters())); opt.step()",
    ),
    "data:filter_nonfinite": (
        "clean the data, or drop the samples that hold NaN/Inf before they reach the model (and find where "
        "the pipeline makes them: a division by a zero std, a log of 0, a missing value read as NaN)",
        "keep = torch.isfinite(x.flatten(1)).all(1) & torch.isfinite(y.reshape(len(y), -1)).all(1)\n"
        "x, y = x[keep], y[keep]",
    ),
    "data:normalize": (
        "standardise the inputs to zero mean and unit variance per feature (LeCun et al., 1998)",
        "x = (x - x_train.mean(0)) / (x_train.std(0) + 1e-8)",
    ),
    "arch:gated_rnn": (
        "replace the plain RNN by a GRU (a drop-in: same sizes, inputs and outputs), whose gated state "
        "carries gradients over long spans (Hochreiter & Schmidhuber, 1997; Cho et al., 2014)",
        _APPLY + "  # nn.RNN -> nn.GRU; or in your code: torch.nn.GRU(input_size, hidden_size, batch_first=True)",
    ),
    "optim:rmsprop": (
        "RMSprop divides each step by a running RMS of that parameter's gradient, so a gradient spike or a "
        "tiny gradient still gives a step of about lr; a common choice for recurrent nets (Tieleman & Hinton, "
        "2012; Graves, 2013)",
        "opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)",
    ),
    "optim:adagrad": (
        "AdaGrad divides each step by the root of the parameter's summed squared gradients, so rarely "
        "updated parameters (sparse embedding rows, rare features) keep large steps (Duchi, Hazan & Singer, 2011)",
        "opt = torch.optim.Adagrad(model.parameters(), lr=1e-2)",
    ),
    "optim:weight_decay": (
        "add weight decay: each step shrinks the weights by lr * wd * W, so they stop growing and the gradients "
        "they multiply on the way back stop growing with them (an L2 penalty, Krogh & Hertz, 1992; decoupled "
        "from Adam's scaling in AdamW, Loshchilov & Hutter, 2019)",
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)\n"
        "# or, with SGD, an L2 term: torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)",
    ),
    "arch:shallower": (
        "use fewer layers: the gradient reaching a layer is a product of one factor per layer above it, and a "
        "shallower plain net often fits as well (He et al., 2016, saw a plain 56-layer net train worse than a "
        "20-layer one); this drops middle blocks of a plain nn.Sequential stack, then retrain",
        "model = gradvet.remedies.apply_remedy('arch:shallower', model, depth=4).model  # keep 4 Linear blocks",
    ),
    "pretrain:layerwise": (
        "pretrain greedily, one layer at a time (each as an autoencoder of the layer below, or with its own "
        "classifier head), then fine-tune the whole stack: every layer starts from useful weights instead of "
        "waiting for a gradient that vanishes on its way down (Hinton et al., 2006; Bengio et al., 2007)",
        "model = gradvet.remedies.apply_remedy('pretrain:layerwise', model, batch=(x_train, y_train)).model\n"
        "# then train the whole model as usual (fine-tuning)",
    ),
    "optim:eps": (
        "lower the adaptive optimizer's eps below the gradients it divides: Adam's step is "
        "lr * m / (sqrt(v) + eps), so a gradient far below eps moves its weight by only lr * g / eps "
        "(Kingma & Ba, 2015, Algorithm 1)",
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-12)",
    ),
    "optim:param_groups": (
        "check the optimizer: every trained parameter must be in a param group with a useful learning rate",
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # all parameters, one sane lr",
    ),
}


def remedy(rid: str, score: float, why: str = "", **snippet_kwargs: str) -> Remedy:
    """A :class:`Remedy` from the catalogue; ``why`` is prepended to the explanation."""
    explanation, snippet = CATALOGUE[rid]
    extra = "".join(f", {k}={v}" for k, v in snippet_kwargs.items())
    text = f"{why}; {explanation}" if why else explanation
    return Remedy(rid, text, snippet.format(id=rid, extra=extra), score)
