"""The benchmark workloads: an MLP, a small transformer encoder, a GPT-2-small decoder,
and the launch-bound CPU proxies of GPT-2 and ResNet-50 (gradvet issue 13).

Each builder returns a :class:`Workload` (model, optimizer, one fixed batch, loss,
autocast dtype). The batch is fixed so that the data pipeline is not timed: the
benchmark measures what a monitor adds to forward, backward and the optimizer step.
``tiny=True`` shrinks every model to a few thousand parameters for smoke tests.

The *proxies* (``gpt2-proxy``, ``resnet-proxy``) keep the module graph of the real
model (12 GPT-2 blocks with a tied head and bf16 autocast; ResNet-50's 3-4-6-3
bottlenecks with in-place ReLUs and BatchNorm) with tensors of a few hundred
values, so that a step is dominated by per-op overhead: Python, dispatch and, on a
GPU, kernel launches. On a GPU the arithmetic of a real model is fast and that
per-op overhead is what remains of a monitor's cost; the proxies show it on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODELS = ("mlp", "transformer", "gpt2", "gpt2-proxy", "resnet-proxy")


@dataclass
class Workload:
    """One training setup: everything a timed step needs."""

    name: str  # model name as given on the command line
    model: nn.Module
    optimizer: torch.optim.Optimizer
    inputs: Tensor  # one fixed batch, already on the device
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]  # loss_fn(model(inputs), targets)
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None  # autocast dtype, None for fp32
    description: str = ""

    def autocast(self) -> torch.autocast:
        """The autocast context of a step (disabled for fp32 workloads)."""
        dtype = self.amp_dtype or torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over every position of a ``[B, T, V]`` output."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def mlp(device: torch.device, tiny: bool = False) -> Workload:
    """MLP 784-512x8-10 (8 hidden ReLU layers of 512), batch 128, SGD with momentum."""
    width, depth, batch = (32, 3, 16) if tiny else (512, 8, 128)
    dims = [784] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 784, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    desc = f"MLP 784-{width}x{depth}-10, ReLU, batch {batch}, SGD momentum"
    return Workload("mlp", model, opt, x, y, F.cross_entropy, device, None, desc)


class Encoder(nn.Module):
    """Token embedding + ``nn.TransformerEncoder`` + per-token classifier head."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, seq: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.1, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, idx: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(idx) + self.pos[: idx.shape[1]]))


def transformer(device: torch.device, tiny: bool = False) -> Workload:
    """Transformer encoder d_model 128, 4 layers, 4 heads, seq 64, batch 32, AdamW."""
    vocab, d, n, heads, seq, batch = (64, 16, 1, 2, 8, 4) if tiny else (1000, 128, 4, 4, 64, 32)
    model = Encoder(vocab, d, n, heads, seq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    desc = f"TransformerEncoder d{d} x{n} layers, {heads} heads, seq {seq}, batch {batch}, vocab {vocab}, AdamW"
    return Workload("transformer", model, opt, x, y, token_loss, device, None, desc)


class Block(nn.Module):
    """Pre-norm GPT-2 block (nanoGPT layout), causal SDPA attention."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        # [B, T, D] -> [B, heads, T, D/heads]
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 small when built with the defaults of :func:`gpt2` (124M parameters)."""

    def __init__(self, vocab: int, seq: int, d: int, n_layers: int, heads: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2(device: torch.device, tiny: bool = False) -> Workload:
    """GPT-2 small (124M), batch 8 x 1024 tokens, bf16 autocast, AdamW (fused on CUDA)."""
    if device.type != "cuda" and not tiny:
        raise ValueError(
            "the 124M GPT-2 workload needs --device cuda; use --tiny for a CPU smoke test"
        )
    vocab, seq, d, n, heads, batch = (
        (256, 32, 32, 2, 2, 2) if tiny else (50304, 1024, 768, 12, 12, 8)
    )
    model = GPT(vocab, seq, d, n, heads).to(device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=fused)
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    desc = f"GPT-2 d{d} x{n} layers, seq {seq}, batch {batch}, bf16 autocast, AdamW fused={fused}"
    return Workload("gpt2", model, opt, x, y, token_loss, device, torch.bfloat16, desc)


def gpt2_proxy(device: torch.device, tiny: bool = False) -> Workload:
    """GPT-2's module graph (12 blocks, 12 heads, tied head, bf16 autocast, AdamW) with d 24, seq 16.

    86k parameters: small enough that the per-parameter statistics, one fused kernel each on
    a GPU, are not arithmetic-bound on a CPU either (at d 48 the CPU inf-norm alone took 1 ms).
    """
    vocab, seq, d, n, heads, batch = (64, 8, 24, 2, 2, 2) if tiny else (64, 16, 24, 12, 12, 2)
    model = GPT(vocab, seq, d, n, heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=device.type == "cuda")
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    desc = f"GPT-2 proxy: d{d} x{n} layers, {heads} heads, seq {seq}, batch {batch}, vocab {vocab}, bf16 autocast"
    return Workload("gpt2-proxy", model, opt, x, y, token_loss, device, torch.bfloat16, desc)


def resnet_graph(width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3), classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50 (``Bottleneck``, 3-4-6-3, in-place ReLU) with base width ``width`` (64 there)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, list(blocks), num_classes=classes)
    if width == 64:
        return model
    # the same layers at another width: torchvision fixes 64-128-256-512, so rebuild the stages
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    for k, n in enumerate(blocks):
        stage = model._make_layer(Bottleneck, width * 2**k, n, stride=1 if k == 0 else 2)
        setattr(model, f"layer{k + 1}", stage)
    model.fc = nn.Linear(width * 8 * Bottleneck.expansion, classes)
    return model


def resnet_proxy(device: torch.device, tiny: bool = False) -> Workload:
    """ResNet-50's module graph (53 convs, 53 BatchNorms, in-place ReLUs) with base width 4 on 2x3x32x32 images, SGD."""
    width, blocks, batch, size = (2, (1, 1, 1, 1), 2, 16) if tiny else (4, (3, 4, 6, 3), 2, 32)
    model = resnet_graph(width, blocks, classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    desc = f"ResNet-50 proxy: bottlenecks {'-'.join(map(str, blocks))}, base width {width}, batch {batch}x3x{size}x{size}"
    return Workload("resnet-proxy", model, opt, x, y, F.cross_entropy, device, None, desc)


def build(name: str, device: torch.device, tiny: bool = False, seed: int = 0) -> Workload:
    """Build the workload ``name`` (one of :data:`MODELS`) on ``device``."""
    builders = {
        "mlp": mlp,
        "transformer": transformer,
        "gpt2": gpt2,
        "gpt2-proxy": gpt2_proxy,
        "resnet-proxy": resnet_proxy,
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return builders[name](device, tiny)
