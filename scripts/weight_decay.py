"""Reproduce the weight-decay table of docs/treatment.md.

    python scripts/weight_decay.py [--steps 1000] [--out /tmp/gradvet-wd]

A 6-layer ReLU MLP on digits with 30% noisy training labels, AdamW lr 0.01, trained with
weight_decay 0, 0.1, 0.5 and 1.0 under a gradvet.Monitor (gradvet.lab._growth): the growth
of the weights' norm, the peak of the global gradient norm, the loss, the test accuracy
and what gradvet diagnosed and prescribed.
"""

import argparse
from pathlib import Path

import torch

from gradvet.lab._growth import GrowthSpec, train_growth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/gradvet-wd")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| weight_decay | weight norm (start -> end) | grad norm (start -> peak) | loss | test accuracy | findings |")
    print("|---|---|---|---|---|---|")
    for wd in (0.0, 0.1, 0.5, 1.0):
        r = train_growth(wd, Path(args.out) / f"wd{wd}.gradvet", GrowthSpec(steps=args.steps))
        found = ", ".join(sorted(set(r["findings"]))) or "-"
        if "optim:weight_decay" in r["prescribed"]:
            found += " (prescribes optim:weight_decay)"
        print(f"| {wd:g} | {r['weight_norm_start']:.1f} -> {r['weight_norm_end']:.1f} ({r['weight_growth']:.1f}x) | "
              f"{r['grad_norm_start']:.2f} -> {r['grad_norm_peak']:.2f} ({r['grad_peak_growth']:.0f}x) | "
              f"{r['final_loss']:.3f} | {100 * r['test_accuracy']:.0f}% | {found} |")


if __name__ == "__main__":
    main()
