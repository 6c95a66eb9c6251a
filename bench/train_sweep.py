"""Training sweep: train every healthy corpus case under a Monitor and print what gradvet warns about.

A healthy architecture at its own init, trained on its batch, must get no warning: each line this
prints with a kind in it is a false alarm to look at (or a true finding to justify). Per model::

    zero_grad -> loss_fn(call(model, x), y) -> backward -> monitor.step(loss) -> optimizer.step

for ``--steps`` steps, then ``monitor.report()``. One line per model: id, loss first -> last,
seconds, and the kinds at warning/error with their layers.

Usage::

    python bench/train_sweep.py --optimizer adamw --steps 60 --json /tmp/fa/adamw.json
    python bench/train_sweep.py --optimizer sgd --steps 40 --only timm/ --chunk 1/2 --records /tmp/fa/sgd
    python bench/train_sweep.py --group held_out_2 --skip torchvision/s3d --records /tmp/fa2/rec_adamw
    python bench/train_sweep.py --profile full --steps 40 --records /tmp/amp/rec_full
    python bench/train_sweep.py --amp bf16 --steps 40 --only transformers/ --records /tmp/amp/rec_bf16
    python bench/train_sweep.py --rediagnose /tmp/fa/sgd   # the saved records under today's rules
    python bench/train_sweep.py --fresh --skip torchvision/s3d --records /tmp/fresh/rec_default

``--amp bf16`` runs the forward and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
``--amp fp16-scaler`` under float16 autocast with a ``torch.amp.GradScaler("cpu")`` given to the
Monitor (``scaler.scale(loss).backward()``, ``monitor.step(loss)``, ``scaler.step(opt)``,
``scaler.update()``, as the README's AMP loop). Parameters stay float32 under both.

``--fresh`` trains on a new batch every step instead of the case's one batch (see :func:`redraw`):
noise the net cannot memorise, so the loss stays near its start (about ln(classes)) and the
gradients stay noisy -- the regime opposite to the default, where every net fits its 2 samples.

``--records DIR`` keeps each run's record (``DIR/<id>.gvrec``); ``--rediagnose DIR`` reads them back
and diagnoses them again without training, so a rule change is checked against the whole sweep in
seconds (the report reads only the record).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import gradvet
from gradvet import corpus
from gradvet.corpus import Case, call, cases
from gradvet.record import Run, load
from gradvet.report import build_report


def make_optimizer(name: str, model: torch.nn.Module, lr: float | None) -> torch.optim.Optimizer:
    """AdamW at lr 1e-3, or SGD at lr 0.05 with momentum 0.9 (``lr`` overrides)."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr or 1e-3)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr or 0.05, momentum=0.9)
    raise ValueError(f"--optimizer must be adamw or sgd, got {name!r}")


def redraw(batch: Any, seed: int, step: int) -> Any:
    """A new batch of the same structure as ``batch``, drawn from a generator seeded by ``(seed, step)``.

    Floating tensors: ``torch.randn`` of the same shape and dtype, scaled to the tensor's own mean
    and std -- except a tensor holding only 0s and 1s (binary targets, float masks), redrawn as
    Bernoulli(its mean) so it stays in {0, 1}. Integer tensors (token ids, labels): uniform ints in
    the tensor's own [min, max]. Dicts, tuples and lists recursively. A dict with ``"boxes"`` (a
    detection target), a bool tensor and anything else: kept as is. One tensor met twice in the
    batch is redrawn once (the same new tensor both times).
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    memo: dict[int, Any] = {}

    def new(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            if id(t) not in memo:
                memo[id(t)] = _redraw_tensor(t, g)
            return memo[id(t)]
        if isinstance(t, dict):
            return t if "boxes" in t else {k: new(v) for k, v in t.items()}
        if isinstance(t, (tuple, list)):
            return type(t)(new(v) for v in t)
        return t
    return new(batch)


def _redraw_tensor(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if t.numel() == 0 or t.dtype == torch.bool:
        return t
    if t.is_floating_point():
        f = t.detach().float()
        if bool(((f == 0) | (f == 1)).all()):
            return torch.bernoulli(torch.full(t.shape, float(f.mean())), generator=g).to(t.dtype)
        std = float(f.std()) if t.numel() > 1 else 0.0
        return (torch.randn(t.shape, generator=g) * std + float(f.mean())).to(t.dtype)
    if t.is_complex():
        return t
    lo, hi = int(t.min()), int(t.max())
    return torch.randint(lo, hi + 1, t.shape, generator=g, dtype=t.dtype)


def train_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``case`` under a Monitor; its losses, findings at warning/error, and seconds."""
    t0 = time.perf_counter()
    model, (x, y), loss_fn = case.build(args.seed)
    fresh = getattr(args, "fresh", False)
    batch = (x, y)
    opt = make_optimizer(args.optimizer, model, args.lr)
    losses = []
    record = _record_path(args.records, case.id) if args.records else None
    amp = getattr(args, "amp", "none")
    scaler = torch.amp.GradScaler("cpu") if amp == "fp16-scaler" else None
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler, profile=args.profile, record=record,
                         overwrite=True) as mon:
        for step in range(args.steps):
            if fresh:
                x, y = redraw(batch, args.seed, step)
            opt.zero_grad()
            with _autocast(amp):
                loss = loss_fn(call(model, x), y)
            if scaler is None:
                loss.backward()
                mon.step(loss)
                opt.step()
            else:  # README's AMP loop: monitor.step after backward, before scaler.step
                scaler.scale(loss).backward()
                mon.step(loss)
                scaler.step(opt)
                scaler.update()
            losses.append(float(loss.detach()))
    r = summarise(case.id, mon.load())
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


def _autocast(amp: str) -> Any:
    """The forward's precision: float32 (``none``), or CPU autocast to bfloat16 / float16 (parameters,
    gradients and optimizer state stay float32 under autocast)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def summarise(case_id: str, run: Run) -> dict[str, Any]:
    """The run's first and last loss, its findings at warning/error and the kinds it gives as info."""
    report = build_report(run)
    findings = [{"kind": f.kind, "severity": f.severity, "layers": list(f.layers), "evidence": f.evidence}
                for f in report.findings if f.severity in ("warning", "error")]
    info = sorted({f.kind for f in report.findings if f.severity == "info"})
    return {"id": case_id, "loss_first": float(run.loss[0]), "loss_last": float(run.loss[-1]),
            "findings": findings, "info": info, "seconds": 0.0}


def _record_path(folder: str, case_id: str) -> Path:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / (case_id.replace("/", "__") + ".gvrec")


def rediagnose(folder: str) -> list[dict[str, Any]]:
    """Summaries of every record saved under ``folder``, diagnosed by the rules as they are now."""
    out = []
    for path in sorted(Path(folder).glob("*.gvrec")):
        try:
            r = summarise(path.stem.replace("__", "/"), load(path))
        except (ValueError, IndexError) as e:  # a record still being written, or one without a step
            print(f"# {path.name}: {type(e).__name__}: {e}", flush=True)
            continue
        print(_line(r), flush=True)
        out.append(r)
    return out


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['id']:45s} CRASH {r['error']}"
    kinds = "; ".join(f"{f['kind']} ({f['severity']}) {f['layers'][:4]}" for f in r["findings"]) or "-"
    return f"{r['id']:45s} loss {r['loss_first']:.3g} -> {r['loss_last']:.3g}  {r['seconds']:6.1f}s  {kinds}"


_GROUPS = {"held_out": corpus._held_out_healthy, "held_out_2": corpus._held_out_2_healthy,
           "held_out_3": corpus._held_out_3_healthy}


def select(args: argparse.Namespace) -> list[Case]:
    """The healthy, available cases of ``--group`` matching ``--only``, then this process's ``--chunk i/n``."""
    pool = _GROUPS[args.group]() if args.group else cases()
    chosen = [c for c in pool if c.healthy and c.available and (not args.only or args.only in c.id)]
    chosen = [c for c in chosen if not any(s in c.id for s in args.skip)]
    if args.ids_from:
        keep = set(Path(args.ids_from).read_text().split())
        chosen = [c for c in chosen if c.id in keep]
    i, n = (int(v) for v in args.chunk.split("/"))
    return chosen[i - 1::n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 for adamw, 0.05 for sgd")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--profile", default="default", help="economy (default), business or full")
    p.add_argument("--amp", choices=["none", "bf16", "fp16-scaler"], default="none",
                   help="bf16: forward and loss under CPU bfloat16 autocast; fp16-scaler: under float16 "
                        "autocast with a torch.amp.GradScaler passed to the Monitor")
    p.add_argument("--only", default="", help="a substring of the case ids to keep")
    p.add_argument("--group", choices=sorted(_GROUPS), default=None,
                   help="only the cases of one held-out group (held_out_2: the 105 added last)")
    p.add_argument("--skip", action="append", default=[], help="a substring of case ids to leave out (repeatable)")
    p.add_argument("--ids-from", default=None, help="a file of case ids (whitespace-separated): only those")
    p.add_argument("--chunk", default="1/1", help="i/n: every n-th case from the i-th (to run in parallel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true",
                   help="a new batch every step (redraw: same structure, shapes, dtypes, ranges; seeded by "
                        "--seed and the step) instead of the case's one batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--records", default=None, help="keep each run's record in this folder")
    p.add_argument("--rediagnose", default=None, help="diagnose the records in this folder again; no training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    results = rediagnose(args.rediagnose) if args.rediagnose else []
    for case in [] if args.rediagnose else select(args):
        try:
            r = train_case(case, args)
        except Exception as e:  # a crash is a result of the sweep, not the end of it
            r = {"id": case.id, "error": f"{type(e).__name__}: {e}"[:300]}
        results.append(r)
        print(_line(r), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    if args.json and args.rediagnose:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    alarms = sum(len(r.get("findings", [])) for r in results)
    flagged = sum(1 for r in results if r.get("findings"))
    crashes = sum(1 for r in results if "error" in r)
    print(f"# {len(results)} models, {flagged} with warnings ({alarms} findings), {crashes} crashed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
