"""``gradvet.check`` against one forward+backward on a real torchvision model (gradvet issue 13: <= 3x).

Interleaved rounds after a warm-up call of each; medians of wall time (device work included).

Usage::

    python bench/check_speed.py --model resnet50 --device cuda --batch 32 --size 224
    python bench/check_speed.py --model resnet18 --device cpu --batch 2 --size 64 --rounds 2   # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Optional

import torch
import torch.nn.functional as F
from common import print_table, setup_device, timed, write_json

import gradvet


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50", help="a torchvision.models classifier name")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torchvision

    device = setup_device(args.device, None)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(num_classes=1000).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def check() -> None:
        gradvet.check(model, (x, y), F.cross_entropy)

    calls = {"fwd+bwd": fwd_bwd, "gradvet.check": check}
    for fn in calls.values():
        fn()  # first-call costs (allocator, cuDNN autotuning) are not what is timed
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.rounds):
        for k, fn in calls.items():
            times[k].append(timed(device, fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["gradvet.check"] / med["fwd+bwd"]
    print_table(f"{args.model}, batch {args.batch}x3x{args.size}x{args.size}, {device}",
                ["call", "ms", "ratio"], [[k, f"{v * 1e3:.1f}", f"{v / med['fwd+bwd']:.2f}x"] for k, v in med.items()])
    out = {"model": args.model, "device": str(device), "ms": {k: v * 1e3 for k, v in med.items()}, "ratio": ratio}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
