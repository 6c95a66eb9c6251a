# mypy: disable-error-code="misc,index,arg-type,assignment"
"""A zoo of sick and healthy models with known diagnoses.

Each :class:`Scenario` builds a model, a batch and a loss, says which finding
kinds a correct diagnosis contains (none for a healthy model) and which layer
must be named. The test suite runs every scenario through ``gradvet.check`` or
a ``gradvet.Monitor`` training loop exactly as users do, and
``python -m gradvet.zoo`` prints the confusion table of gradvet's verdicts and of
a naive detector (per-parameter gradient norm below 1e-5 or above 1e3).

Families vary depth, width, activation, initialisation, data scale and seed,
so that no threshold is tuned to a handful of cases.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

Batch = tuple[Any, Any]


@dataclass
class Scenario:
    """One model with a known diagnosis.

    Attributes:
        id: unique name.
        family: group of related scenarios.
        build: ``seed -> (model, batch, loss_fn)``.
        expect: finding kinds a correct verdict must contain (empty: healthy).
        layer: a layer name that the expected finding must name (or None).
        train: optional ``(model, batch, loss_fn, monitor) -> None`` training loop; the
            verdict is then ``monitor.report()`` instead of ``check``.
        optimizer: builds the optimizer for ``train``.
    """

    id: str
    family: str
    build: Callable[[int], tuple[nn.Module, Batch, Callable]]
    expect: tuple[str, ...] = ()
    layer: Optional[str] = None
    train: Optional[Callable[..., None]] = None
    optimizer: Optional[Callable[[nn.Module], torch.optim.Optimizer]] = None
    steps: int = 40
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.expect


# -- data -----------------------------------------------------------------------------
_DIGITS: Optional[tuple[torch.Tensor, torch.Tensor]] = None


def digits(n: int = 256, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised scikit-learn digits (8x8 images flattened to 64 features)."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        Xt = torch.tensor(X, dtype=torch.float32)
        _DIGITS = ((Xt - Xt.mean(0)) / (Xt.std(0) + 1e-6), torch.tensor(y))
    X, y = _DIGITS
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X), generator=g)[:n]
    return X[idx] * scale, y[idx]


def adding_problem(n: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Hochreiter & Schmidhuber (1997): sum the two marked values of a length-T sequence."""
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, T, generator=g)
    marks = torch.zeros(n, T)
    first = torch.randint(0, max(1, T // 2), (n,), generator=g)
    second = torch.randint(T // 2, T, (n,), generator=g)
    marks[torch.arange(n), first] = 1.0
    marks[torch.arange(n), second] = 1.0
    return torch.stack([values, marks], dim=-1), (values * marks).sum(1, keepdim=True)


# -- builders -------------------------------------------------------------------------
ACTS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity, "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def init_linear(m: nn.Linear, init: str, gain: float = 1.0) -> None:
    """Initialise one Linear: default (PyTorch), xavier, he, orthogonal, small, or scaled (gain/sqrt(fan_in))."""
    if init == "default":
        return
    with torch.no_grad():
        if init == "xavier":
            nn.init.xavier_normal_(m.weight, gain=gain)
        elif init == "he":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif init == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=gain)
        elif init == "small":
            nn.init.normal_(m.weight, std=0.01 * gain)
        elif init == "scaled":
            nn.init.normal_(m.weight, std=gain / math.sqrt(m.in_features))
        else:
            raise ValueError(f"unknown init {init!r}")
        if m.bias is not None:
            m.bias.zero_()


def tapered_mlp(widths: list[int], act: str) -> nn.Sequential:
    """An MLP whose hidden widths change from layer to layer (default init)."""
    layers: list[nn.Module] = []
    d = 64
    for w in widths:
        layers += [nn.Linear(d, w), ACTS[act]()]
        d = w
    return nn.Sequential(*layers, nn.Linear(d, 10))


class InfWeightNet(nn.Module):
    """fc2 holds an infinite weight: its output is the first non-finite value of the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        with torch.no_grad():
            self.fc2.weight[0, 0] = float("inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def mlp(depth: int, act: str, width: int = 64, init: str = "default", gain: float = 1.0, norm: Optional[str] = None,
        d_in: int = 64, d_out: int = 10) -> nn.Sequential:
    """``depth`` Linear layers with ``act`` (and optional batch/layer norm) between them."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth - 1):
        layers.append(nn.Linear(d, width))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width))
        elif norm == "layer":
            layers.append(nn.LayerNorm(width))
        layers.append(ACTS[act]())
        d = width
    layers.append(nn.Linear(d, d_out))
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            init_linear(m, init, gain)
    return model


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``x + W2 act(W1 act(x))``."""

    def __init__(self, width: int, act: str, norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.act = ACTS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.act(self.norm(x)))))


class ResMLP(nn.Module):
    def __init__(self, blocks: int, act: str = "relu", width: int = 64, norm: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, act, norm) for _ in range(blocks)])
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.inp(x)))


class ConvNet(nn.Module):
    """A plain conv stack on 8x8 digits."""

    def __init__(self, depth: int, act: str, channels: int = 16, bn: bool = False, init: str = "default") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for _ in range(depth):
            layers.append(nn.Conv2d(c, channels, 3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(ACTS[act]())
            c = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 64, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and init != "default":
                if init == "he":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                elif init == "small":
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    raise ValueError(f"unknown init {init!r}")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


class ResConvBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (He et al., 2016)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResCNN(nn.Module):
    """A small ResNet on 8x8 digits."""

    def __init__(self, blocks: int = 6, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(*[ResConvBlock(c) for _ in range(blocks)])
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x.view(-1, 1, 8, 8))).mean((2, 3)))


class SeqModel(nn.Module):
    """Recurrent layer + linear head on the last time step."""

    def __init__(self, cell: str, hidden: int = 32, init: str = "default", gain: float = 1.0, T: int = 100) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        h = hidden
        with torch.no_grad():
            if init == "orthogonal":
                nn.init.orthogonal_(self.rnn.weight_hh_l0, gain=gain)
            elif init == "chrono":
                b = torch.log(torch.rand(h) * (T - 2) + 1)
                self.rnn.bias_ih_l0.zero_()
                self.rnn.bias_hh_l0.zero_()
                if cell == "LSTM":
                    self.rnn.bias_ih_l0[h : 2 * h] = b
                    self.rnn.bias_ih_l0[:h] = -b
                else:  # GRU: z gate (index 1) near 1 keeps the memory
                    self.rnn.bias_ih_l0[h : 2 * h] = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class TinyTransformer(nn.Module):
    """Token classifier: embedding, Transformer encoder (pre- or post-LN), mean pool, head."""

    def __init__(self, layers: int = 4, d: int = 32, norm_first: bool = True, vocab: int = 50) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(x)).mean(1))


class SparseBag(nn.Module):
    """Sparse-gradient embedding bag classifier."""

    def __init__(self, vocab: int = 1000, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d, sparse=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1))


class LogLayer(nn.Module):
    """A layer that takes the log of its input: NaN is born here for negative inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class NanNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.log, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 32), LogLayer(), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.log(self.fc2(torch.relu(self.fc1(x)))))


# -- training loops -------------------------------------------------------------------
def sgd(lr: float) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr)


def adam(lr: float = 1e-3) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.Adam(m.parameters(), lr=lr)


def train_loop(model: nn.Module, batch: Batch, loss_fn: Callable, monitor: Any, opt: torch.optim.Optimizer,
               steps: int, scaler: Any = None) -> None:
    """The Monitor loop exactly as the README shows it (full batch)."""
    x, y = batch
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            monitor.step(loss)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            monitor.step(loss)
            opt.step()


def _ce(model: nn.Module, n: int = 256, scale: float = 1.0, seed: int = 0) -> tuple[nn.Module, Batch, Callable]:
    return model, digits(n, seed, scale), F.cross_entropy


def _tf(seed: int, n_layers: int, norm_first: bool = True) -> tuple[nn.Module, Batch, Callable]:
    torch.manual_seed(seed)
    model = TinyTransformer(n_layers, norm_first=norm_first)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (32, 16), generator=g)
    return model, (x, (x[:, 0] % 2)), F.cross_entropy


def _zeroed(model: nn.Module, match: str) -> nn.Module:
    """Zero every parameter whose name contains ``match`` (zero-init residual branch ends, a zero head)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if match in name:
                p.zero_()
    return model


def _seeded(fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return fn()


# -- the catalogue --------------------------------------------------------------------
def scenarios(seeds: tuple[int, ...] = (0, 1)) -> list[Scenario]:
    """Every scenario of the zoo."""
    out: list[Scenario] = []
    add = out.append
    for seed in seeds:
        # vanishing with depth: saturating stacks at default / too-small init, linear stacks at small init
        for act, depth, width in (("sigmoid", 8, 64), ("sigmoid", 12, 32), ("sigmoid", 20, 128), ("tanh", 12, 64),
                                  ("tanh", 20, 32)):
            add(Scenario(f"vanish-mlp-{act}-d{depth}-w{width}-s{seed}", "vanishing/depth",
                         lambda s, a=act, d=depth, w=width: _ce(_seeded(lambda: mlp(d, a, w), s)),
                         ("vanishing_gradients",), "0"))
        for act, depth in (("tanh", 8), ("identity", 8), ("identity", 12), ("relu", 8)):
            add(Scenario(f"vanish-default-init-{act}-d{depth}-s{seed}", "vanishing/default-init",
                         lambda s, a=act, d=depth: _ce(_seeded(lambda: mlp(d, a, 64), s)),
                         ("vanishing_gradients",), "0"))
        for act, depth in (("sigmoid", 5), ("tanh", 6), ("relu", 6), ("identity", 5)):
            add(Scenario(f"vanish-small-init-{act}-d{depth}-s{seed}", "vanishing/small-init",
                         lambda s, a=act, d=depth: _ce(_seeded(lambda: mlp(d, a, 64, init="small"), s)),
                         ("vanishing_gradients",), "0"))
        for depth in (8, 12):
            add(Scenario(f"vanish-cnn-sigmoid-d{depth}-s{seed}", "vanishing/cnn",
                         lambda s, d=depth: _ce(_seeded(lambda: ConvNet(d, "sigmoid"), s), n=128),
                         ("vanishing_gradients",), "features.0"))
        for depth in (20, 30, 40):
            add(Scenario(f"vanish-relu-xavier-d{depth}-s{seed}", "vanishing/relu-xavier",
                         lambda s, d=depth: _ce(_seeded(lambda: mlp(d, "relu", 64, init="xavier"), s)),
                         ("vanishing_gradients",), "0"))
        # through time
        for cell, T in (("RNN", 50), ("RNN", 100), ("LSTM", 60), ("LSTM", 120), ("GRU", 60), ("GRU", 120)):
            add(Scenario(f"vanish-time-{cell}-T{T}-s{seed}", "vanishing/time",
                         lambda s, c=cell, t=T: (_seeded(lambda: SeqModel(c), s), adding_problem(64, t, s), F.mse_loss),
                         ("vanishing_gradients",), "rnn"))
        for gain, T in ((2.0, 30), (3.0, 50)):
            add(Scenario(f"explode-time-RNN-g{gain}-T{T}-s{seed}", "exploding/time",
                         lambda s, g=gain, t=T: (_seeded(lambda: SeqModel("RNN", init="orthogonal", gain=g), s),
                                                 adding_problem(64, t, s), F.mse_loss),
                         ("exploding_gradients",), "rnn"))
        # exploding with depth
        for act, gain, depth in (("tanh", 3.0, 25), ("tanh", 4.0, 20), ("relu", 2.5, 12), ("relu", 3.0, 10)):
            add(Scenario(f"explode-depth-{act}-g{gain}-d{depth}-s{seed}", "exploding/depth",
                         lambda s, a=act, g=gain, d=depth: _ce(_seeded(lambda: mlp(d, a, 64, "scaled", g), s)),
                         ("exploding_gradients",), "0"))
        # exploding over training: learning rate far too large
        for lr in (3.0, 10.0):
            add(Scenario(f"explode-lr-{lr}-s{seed}", "exploding/lr",
                         lambda s: _ce(_seeded(lambda: mlp(4, "relu", 64, "he"), s)),
                         ("exploding_gradients",), "0", train=train_loop, optimizer=sgd(lr), steps=40))
        # dead ReLUs: strongly negative biases in one layer
        for bias, layer in ((-5.0, 2), (-20.0, 4)):
            def build_dead(s: int, b: float = bias, li: int = layer) -> tuple[nn.Module, Batch, Callable]:
                m = _seeded(lambda: mlp(5, "relu", 64, "he"), s)
                with torch.no_grad():
                    m[li].bias.fill_(b)
                return _ce(m)
            add(Scenario(f"dead-relu-bias{bias}-L{layer}-s{seed}", "dead", build_dead, ("dead_units",), str(layer)))
        # saturation: unnormalised inputs
        for act, scale in (("sigmoid", 50.0), ("tanh", 100.0), ("tanh", 30.0)):
            add(Scenario(f"saturated-{act}-x{scale}-s{seed}", "saturated",
                         lambda s, a=act, k=scale: _ce(_seeded(lambda: mlp(3, a, 64, "xavier"), s), scale=k),
                         ("saturated_units",), "0"))
        # NaN born at one layer
        add(Scenario(f"nan-log-layer-s{seed}", "nonfinite",
                     lambda s: _ce(_seeded(NanNet, s)), ("nonfinite_gradients",), "log"))
        # stalled: a param group with a near-zero learning rate
        def stalled_opt(m: nn.Module) -> torch.optim.Optimizer:
            slow = list(m[2].parameters())
            rest = [p for p in m.parameters() if all(p is not q for q in slow)]
            return torch.optim.SGD([{"params": rest, "lr": 0.05}, {"params": slow, "lr": 1e-9}])
        add(Scenario(f"stalled-lr-s{seed}", "stalled", lambda s: _ce(_seeded(lambda: mlp(4, "relu", 64, "he"), s)),
                     ("stalled_layers",), "2", train=train_loop, optimizer=stalled_opt, steps=30,
                     monitor_kwargs={"profile": "full"}))

        for widths in ((256, 128, 96, 64, 48, 32, 32), (32, 64, 128, 128, 64, 32, 16, 16, 16)):
            add(Scenario(f"vanish-tapered-sigmoid-{len(widths)}-s{seed}", "vanishing/tapered",
                         lambda s, w=widths: _ce(_seeded(lambda: tapered_mlp(list(w), "sigmoid"), s)),
                         ("vanishing_gradients",), "0"))
        for act in ("relu", "tanh"):
            add(Scenario(f"vanish-cnn-small-init-{act}-s{seed}", "vanishing/cnn",
                         lambda s, a=act: _ce(_seeded(lambda: ConvNet(4, a, init="small"), s), n=128),
                         ("vanishing_gradients",), "features.0"))
        add(Scenario(f"nan-inf-weight-s{seed}", "nonfinite", lambda s: _ce(_seeded(InfWeightNet, s)),
                     ("nonfinite_gradients",), "fc2"))

        # ---- healthy -------------------------------------------------------------
        for act in ("gelu", "leaky_relu"):
            add(Scenario(f"healthy-{act}-he-d10-s{seed}", "healthy/he-relu",
                         lambda s, a=act: _ce(_seeded(lambda: mlp(10, a, 64, "he"), s))))
        add(Scenario(f"healthy-ln-relu-d12-s{seed}", "healthy/layernorm",
                     lambda s: _ce(_seeded(lambda: mlp(12, "relu", 64, "he", norm="layer"), s))))
        for blocks in (6, 12):
            add(Scenario(f"healthy-resnet-cnn-b{blocks}-s{seed}", "healthy/residual",
                         lambda s, b=blocks: _ce(_seeded(lambda: ResCNN(b), s), n=128)))
        # zero-initialised layers: the signal behind them is exactly 0 at init, by design
        add(Scenario(f"healthy-resnet-cnn-zero-gamma-b6-s{seed}", "healthy/zero-init",
                     lambda s: _ce(_zeroed(_seeded(lambda: ResCNN(6), s), "bn2.weight"), n=128)))
        add(Scenario(f"healthy-fixup-resmlp-b8-s{seed}", "healthy/zero-init",
                     lambda s: _ce(_zeroed(_seeded(lambda: ResMLP(8), s), "fc2."))))
        add(Scenario(f"healthy-zero-head-relu-d6-s{seed}", "healthy/zero-init",
                     lambda s: _ce(_zeroed(_seeded(lambda: mlp(6, "relu", 64, "he"), s), "10."))))
        add(Scenario(f"healthy-cnn-bn-sigmoid-d10-s{seed}", "healthy/bn-sigmoid",
                     lambda s: _ce(_seeded(lambda: ConvNet(10, "sigmoid", bn=True), s), n=128)))
        add(Scenario(f"healthy-postln-transformer-L2-s{seed}", "healthy/pre-ln",
                     lambda s: _tf(s, 2, norm_first=False)))
        add(Scenario(f"healthy-cnn-he-relu-s{seed}", "healthy/cnn",
                     lambda s: _ce(_seeded(lambda: ConvNet(4, "relu", init="he"), s), n=128)))
        add(Scenario(f"healthy-adam-training-s{seed}", "healthy/training",
                     lambda s: _ce(_seeded(lambda: mlp(5, "relu", 64, "he"), s)),
                     train=train_loop, optimizer=adam(1e-3), steps=80))
        add(Scenario(f"healthy-sgd-training-tanh-s{seed}", "healthy/training",
                     lambda s: _ce(_seeded(lambda: mlp(4, "tanh", 64, "xavier"), s)),
                     train=train_loop, optimizer=sgd(0.1), steps=80, monitor_kwargs={"profile": "business"}))
        add(Scenario(f"healthy-chrono-gru-T100-s{seed}", "healthy/chrono-lstm",
                     lambda s: (_seeded(lambda: SeqModel("GRU", init="chrono", T=100), s),
                                adding_problem(64, 100, s), F.mse_loss)))
        for act, depth in (("sigmoid", 2), ("sigmoid", 3), ("tanh", 3)):
            add(Scenario(f"healthy-shallow-{act}-d{depth}-s{seed}", "healthy/shallow",
                         lambda s, a=act, d=depth: _ce(_seeded(lambda: mlp(d, a, 64), s))))
        for depth in (5, 10):
            add(Scenario(f"healthy-xavier-tanh-d{depth}-s{seed}", "healthy/xavier-tanh",
                         lambda s, d=depth: _ce(_seeded(lambda: mlp(d, "tanh", 64, "xavier"), s))))
        for depth in (5, 10, 20):
            add(Scenario(f"healthy-he-relu-d{depth}-s{seed}", "healthy/he-relu",
                         lambda s, d=depth: _ce(_seeded(lambda: mlp(d, "relu", 64, "he"), s))))
        for depth in (10, 20):
            add(Scenario(f"healthy-bn-sigmoid-d{depth}-s{seed}", "healthy/bn-sigmoid",
                         lambda s, d=depth: _ce(_seeded(lambda: mlp(d, "sigmoid", 64, norm="batch"), s))))
        for blocks, act in ((8, "relu"), (16, "relu"), (8, "tanh")):
            add(Scenario(f"healthy-resnet-{act}-b{blocks}-s{seed}", "healthy/residual",
                         lambda s, b=blocks, a=act: _ce(_seeded(lambda: ResMLP(b, a), s))))
        add(Scenario(f"healthy-cnn-bn-relu-s{seed}", "healthy/cnn",
                     lambda s: _ce(_seeded(lambda: ConvNet(6, "relu", bn=True), s), n=128)))
        for n_layers in (2, 6):
            def build_tf(s: int, n: int = n_layers) -> tuple[nn.Module, Batch, Callable]:
                m = _seeded(lambda: TinyTransformer(n, norm_first=True), s)
                g = torch.Generator().manual_seed(s)
                x = torch.randint(0, 50, (32, 16), generator=g)
                return m, (x, (x[:, 0] % 2)), F.cross_entropy
            add(Scenario(f"healthy-preln-transformer-L{n_layers}-s{seed}", "healthy/pre-ln", build_tf))
        for T in (60, 120):
            add(Scenario(f"healthy-chrono-lstm-T{T}-s{seed}", "healthy/chrono-lstm",
                         lambda s, t=T: (_seeded(lambda: SeqModel("LSTM", init="chrono", T=t), s),
                                         adding_problem(64, t, s), F.mse_loss)))

        def build_frozen(s: int) -> tuple[nn.Module, Batch, Callable]:
            m = _seeded(lambda: mlp(6, "relu", 64, "he"), s)
            for p in list(m[0].parameters()) + list(m[2].parameters()):
                p.requires_grad_(False)
            return _ce(m)
        add(Scenario(f"healthy-frozen-s{seed}", "healthy/frozen", build_frozen, train=train_loop,
                     optimizer=lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05),
                     steps=20, monitor_kwargs={"profile": "business"}))

        def build_sparse(s: int) -> tuple[nn.Module, Batch, Callable]:
            m = _seeded(SparseBag, s)
            g = torch.Generator().manual_seed(s)
            x = torch.randint(0, 1000, (64, 12), generator=g)
            return m, (x, (x[:, 0] % 2)), F.cross_entropy
        add(Scenario(f"healthy-sparse-embedding-s{seed}", "healthy/sparse", build_sparse, train=train_loop,
                     optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), steps=20,
                     monitor_kwargs={"profile": "business"}))
        add(Scenario(f"healthy-converged-s{seed}", "healthy/converged",
                     lambda s: _ce(_seeded(lambda: mlp(3, "relu", 128, "he"), s), n=64),
                     train=train_loop, optimizer=adam(3e-3), steps=300, monitor_kwargs={"profile": "business"}))
        add(Scenario(f"healthy-amp-scaler-s{seed}", "healthy/amp",
                     lambda s: _ce(_seeded(lambda: mlp(4, "relu", 64, "he"), s)),
                     train=train_loop, optimizer=sgd(0.05), steps=30,
                     monitor_kwargs={"profile": "business", "amp": True}))
    return out


def run_scenario(sc: Scenario, seed: int = 0, mode: str = "auto", steps: int = 20) -> Any:
    """Run one scenario the way a user would; returns the Report.

    Args:
        sc: the scenario.
        seed: its seed.
        mode: ``"check"`` (``gradvet.check`` on the batch), ``"monitor"`` (a Monitor training
            loop, default profile, ``steps`` SGD steps unless the scenario sets its own loop), or
            ``"auto"`` (the scenario's own loop if it has one, else check).
        steps: training steps for ``"monitor"`` mode on scenarios without their own loop.
    """
    import gradvet

    if mode not in ("auto", "check", "monitor"):
        raise ValueError(f"mode must be 'auto', 'check' or 'monitor', got {mode!r}")
    model, batch, loss_fn = sc.build(seed)
    if sc.train is None and mode != "monitor":
        return gradvet.check(model, batch, loss_fn)
    kwargs = dict(sc.monitor_kwargs) if sc.train is not None else {}
    amp = kwargs.pop("amp", False)
    opt = (sc.optimizer or sgd(0.01))(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16) if amp else None
    loop = sc.train or train_loop
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler, **kwargs) as monitor:
        loop(model, batch, loss_fn, monitor, opt, sc.steps if sc.train is not None else steps, scaler)
    return monitor.report()


def verdict_ok(sc: Scenario, report: Any) -> tuple[bool, str]:
    """Whether ``report`` is the right verdict for ``sc`` (and why not)."""
    sev = [f for f in report.findings if f.severity in ("warning", "error")]
    if sc.healthy:
        return (not sev, "" if not sev else f"false alarm: {[(f.kind, f.layers[:3]) for f in sev]}")
    for kind in sc.expect:
        hits = [f for f in sev if f.kind == kind]
        if not hits:
            return False, f"missed {kind}; got {[f.kind for f in sev]}"
        if sc.layer is not None and not any(sc.layer in f.layers for f in hits):
            return False, f"{kind} named {[f.layers[:4] for f in hits]}, expected {sc.layer!r}"
    return True, ""


def naive_verdict(sc: Scenario, seed: int = 0) -> bool:
    """The naive detector: sick iff some parameter's gradient norm is < 1e-5 or > 1e3 (or non-finite)."""
    model, batch, loss_fn = sc.build(seed)
    x, y = batch
    model.zero_grad()
    loss_fn(model(x), y).backward()
    norms = [float(p.grad.coalesce().values().norm() if p.grad.is_sparse else p.grad.norm())  # sync-ok
             for p in model.parameters() if p.grad is not None]
    sick = any(not math.isfinite(n) or n < 1e-5 or n > 1e3 for n in norms)
    return sick != sc.healthy


def main() -> None:  # pragma: no cover - a report printer
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows: dict[str, list[int]] = {}
    naive_ok = total = 0
    failures = []
    for sc in scenarios():
        seed = int(sc.id.rsplit("-s", 1)[1])
        rep = run_scenario(sc, seed)
        ok, why = verdict_ok(sc, rep)
        fam = sc.family
        r = rows.setdefault(fam, [0, 0, 0])
        r[0] += 1
        r[1] += ok
        nv = naive_verdict(sc, seed)
        r[2] += nv
        naive_ok += nv
        total += 1
        if not ok:
            failures.append((sc.id, why))
    table = Table(title="gradvet zoo: right verdicts per family")
    for c in ("family", "scenarios", "gradvet right", "naive right"):
        table.add_column(c)
    for fam, (n, ok, nv) in rows.items():
        table.add_row(fam, str(n), str(ok), str(nv))
    right = sum(r[1] for r in rows.values())
    table.add_row("total", str(total), f"{right} ({100 * right / total:.0f}%)", f"{naive_ok} ({100 * naive_ok / total:.0f}%)")
    console.print(table)
    if "--markdown" in sys.argv:  # the table as it appears in the README and docs/diagnosis.md
        print("| family | scenarios | gradvet right | naive right |\n|---|---|---|---|")
        for fam, (n, ok, nv) in rows.items():
            print(f"| {fam} | {n} | {ok} | {nv} |")
        print(f"| total | {total} | {right} ({100 * right / total:.0f}%) | {naive_ok} ({100 * naive_ok / total:.0f}%) |")
    for sid, why in failures:
        console.print(f"[red]{sid}[/]: {why}")


if __name__ == "__main__":  # pragma: no cover
    main()
