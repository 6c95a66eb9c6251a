"""Subprocess for the record tests: trains a tiny model and records it.

Usage: python _record_writer.py PATH STEPS SLEEP   (STEPS < 0: forever)
"""

import sys
import time

import torch

import gradvet


def main() -> None:
    path, steps, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradvet.Monitor(
        model, optimizer=opt, record=path, profile="full", flush_every=5, flush_seconds=0.2
    ) as m:
        i = 0
        while steps < 0 or i < steps:
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).square().mean()
            loss.backward()
            m.step(loss)
            opt.step()
            i += 1
            if sleep:
                time.sleep(sleep)
            if i == 1:
                print("started", flush=True)


if __name__ == "__main__":
    main()
