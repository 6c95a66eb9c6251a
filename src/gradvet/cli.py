"""The ``gradvet`` command line (typer). Every command reads records or factories, never live state.

Heavy modules (rich tables, matplotlib, records, reports, the lab) are imported inside
the commands that use them: ``gradvet --help`` must not pay for them (bench/startup.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from gradvet._cli_guard import guarded, writable_target
from gradvet._version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="gradvet: find out why a PyTorch network will not learn when the cause is in its gradients.",
)
console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"gradvet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """gradvet command line."""


def _json(obj: Any, indent: int = 2) -> str:
    """JSON text of ``obj``; NaN and infinities become the strings "nan", "inf", "-inf"
    (bare ``NaN`` is not JSON, and ``null`` would read as "not measured")."""

    def safe(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: safe(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [safe(v) for v in x]
        return x

    return json.dumps(safe(obj), default=str, indent=indent, allow_nan=False)


def load_factory(spec: str) -> Any:
    """Import ``path/to/file.py:factory`` and call it.

    Raises:
        typer.BadParameter: bad path, missing function, or the factory raised.
    """
    if ":" not in spec:
        raise typer.BadParameter(f"expected path/to/file.py:factory, got {spec!r}")
    path_s, name = spec.rsplit(":", 1)
    path = Path(path_s)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path_s!r}")
    # imported under its own name, as pytest imports a test file: classes defined in it then pickle as
    # `models.Net`, so `treat -o` can save the model and torch.load can read it back beside the file
    mod_name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else f"gradvet_user_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(mod_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise typer.BadParameter(f"cannot import {path_s!r} as a Python file")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        mod_spec.loader.exec_module(module)
    except SystemExit as e:  # a script run at import: exit 0 would read as "healthy"
        sys.modules.pop(mod_name, None)
        raise typer.BadParameter(
            f"importing {path_s!r} called sys.exit({e.code!r}): gradvet imports and runs the file, so put "
            "script code under `if __name__ == \"__main__\":`") from None
    except Exception as e:
        from gradvet._cli_guard import describe

        sys.modules.pop(mod_name, None)
        raise typer.BadParameter(f"importing {path_s!r} raised {describe(e)}") from None
    finally:
        sys.path.pop(0)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise typer.BadParameter(f"{path_s!r} has no function {name!r}")
    try:
        return fn()
    except SystemExit as e:
        raise typer.BadParameter(f"{name}() called sys.exit({e.code!r}) instead of returning") from None
    except Exception as e:
        from gradvet._cli_guard import describe

        raise typer.BadParameter(f"{name}() raised {describe(e)}") from None


def unpack_factory(result: Any, spec: str) -> tuple[Any, Any, Any]:
    """``(model, batch, loss_fn)`` from a factory's tuple or dict."""
    if isinstance(result, dict) and {"model", "batch", "loss_fn"} <= set(result):
        model, batch, loss_fn = result["model"], result["batch"], result["loss_fn"]
    elif isinstance(result, (tuple, list)) and len(result) == 3:
        model, batch, loss_fn = result
    else:
        raise typer.BadParameter(
            f"{spec} must return (model, batch, loss_fn) or a dict with those keys, got {type(result).__name__}"
        )
    import torch

    if not isinstance(model, torch.nn.Module):
        raise typer.BadParameter(f"{spec} returned a {type(model).__name__} as the model: return a torch.nn.Module")
    if not callable(loss_fn):
        raise typer.BadParameter(f"{spec} returned a {type(loss_fn).__name__} as loss_fn: return a function "
                                 "loss_fn(output, batch) -> scalar tensor")
    return model, batch, loss_fn


def _to_device(obj: Any, device: str) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _check_device(device: str) -> None:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda requested but CUDA is not available")


@app.command()
@guarded("check", err)
def check(
    factory: str = typer.Argument(..., help="path/to/file.py:factory returning (model, batch, loss_fn)"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
) -> None:
    """Check a model before training. Exit 0 healthy, 1 findings, 2 anything else (one line says what).

    The file is imported and run, as pytest does with a test file: its top-level code executes, then
    the factory is called. Keep script code under `if __name__ == "__main__":`.
    """

    import gradvet

    _check_device(device)
    model, batch, loss_fn = unpack_factory(load_factory(factory), factory)
    try:
        model = model.to(device)
        report = gradvet.check(model, _to_device(batch, device), loss_fn)
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(_json(report.to_dict()))
    else:
        from gradvet._render import print_uncut

        print_uncut(console, report)
    raise typer.Exit(0 if report.healthy else 1)


@app.command()
@guarded("show", err)
def show(
    record: Path = typer.Argument(..., help="a .gradvet record"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (the same fields as check --json)."),
    full: bool = typer.Option(False, "--all", help="Every layer on its own row (above 40 layers the table groups "
                              "repeated blocks)."),
) -> None:
    """Print a record's per-layer table and findings.

    Piped or redirected, the table is printed at its full width: no value is cut.
    """
    import gradvet

    try:
        run = gradvet.load(record)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(_json(run.report().to_dict()))
        return
    from rich.console import Group

    from gradvet._render import clean, plain, print_uncut, render_report

    meta = run.meta
    console.print(plain(record, "bold") + clean(
        f": model {meta.get('model')}, {len(run.steps)} steps, status {meta.get('status')}"
    ))
    print_uncut(console, Group(*render_report(run.report(), full=full)))


@app.command()
@guarded("demo", err)
def demo(steps: int = typer.Option(60, help="training steps per model")) -> None:
    """Diagnose a 10-layer sigmoid MLP on digits, treat it, train both: the cure, measured."""
    from gradvet.demo import run_demo

    run_demo(console, steps=steps)


@app.command()
@guarded("report", err)
def report(
    record: Path = typer.Argument(..., help="a .gradvet record"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output HTML file"),
) -> None:
    """Write a self-contained HTML report for a record."""
    from gradvet.html import write_report

    target = out or record.with_suffix(".html")
    if out is None and target == record:  # a record named *.html: never write the report over it
        target = record.with_name(record.stem + ".report.html")
    if target.resolve() != record.resolve():  # that one write_report refuses, saying so
        writable_target(target)
    try:
        write_report(record, target)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    except OSError as e:  # a full disk, /dev/full: say which file
        raise OSError(e.errno, e.strerror, str(target)) from None
    from gradvet._render import plain

    console.print(plain(f"wrote {target}"))


@app.command()
@guarded("lab", err)
def lab(
    quick: bool = typer.Option(True, "--quick/--full", help="quick (<= 3 min on 2 cores) or full"),
    out: Path = typer.Option(Path("lab-report"), "-o", "--out", help="output directory"),
    seed: int = typer.Option(0, help="random seed"),
) -> None:
    """Reproduce the classic vanishing/exploding-gradient experiments and write an HTML report."""
    from gradvet._render import plain
    from gradvet.lab import run_lab

    path = run_lab(out, quick=quick, seed=seed, console=console)
    console.print(plain(f"lab report: {path}"))


@app.command()
@guarded("watch", err)
def watch(
    record: Path = typer.Argument(..., help="a .gradvet record being written"),
    interval: float = typer.Option(2.0, help="seconds between refreshes"),
    once: bool = typer.Option(False, help="render once and exit"),
) -> None:
    """Live terminal view of a run in progress (tails its record)."""
    from gradvet.watch import watch as _watch

    try:
        _watch(record, interval=interval, once=once, console=console)
    except (FileNotFoundError, ValueError) as e:  # missing or damaged record, interval <= 0: exit 2
        raise typer.BadParameter(str(e)) from None


_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


def _optimizer_factory(name: Optional[str], lr: Optional[float], momentum: float) -> Any:
    """``--optimizer/--lr/--momentum`` as a function that builds the optimizer for a model (None without it)."""
    if name is None:
        if lr is not None:
            raise typer.BadParameter("--lr goes with --optimizer (e.g. --optimizer sgd --lr 0.1)")
        return None
    if name.lower() not in _OPTIMIZERS:
        raise typer.BadParameter(f"--optimizer must be one of {sorted(_OPTIMIZERS)}, got {name!r}")
    if lr is None or lr <= 0:
        raise typer.BadParameter(f"--optimizer {name} needs a positive --lr, got {lr}")
    import torch

    cls = getattr(torch.optim, _OPTIMIZERS[name.lower()])
    extra = {"momentum": momentum} if name.lower() == "sgd" else {}
    return lambda m: cls(m.parameters(), lr=lr, **extra)


@app.command()
@guarded("treat", err)
def treat(
    factory: str = typer.Argument(..., help="path/to/file.py:factory returning (model, batch, loss_fn)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="save the treated model (torch.save)"),
    remedy: Optional[list[str]] = typer.Option(
        None, "--remedy", "-r", help="remedy id to try instead of the diagnosis's ranking (repeatable)"
    ),
    max_remedies: int = typer.Option(6, "--max-remedies", help="try at most this many remedies"),
    as_json: bool = typer.Option(False, "--json", help="print the before/after reports and attempts as JSON"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    optimizer: Optional[str] = typer.Option(
        None, "--optimizer", help="diagnose a short training run with this optimizer (sgd, adam, adamw, rmsprop) "
                                  "instead of one batch: for sickness that only shows in training"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate of --optimizer (required with it)"),
    momentum: float = typer.Option(0.0, "--momentum", help="momentum of --optimizer sgd"),
    steps: int = typer.Option(40, "--steps", help="training steps of each run with --optimizer"),
) -> None:
    """Diagnose, apply remedies one at a time, re-check; print a before/after table.

    Exit code 0 when the treated model's re-check is healthy, 1 when it is not, 2 for anything else.
    The file is imported and run, as by `gradvet check`.
    """
    from gradvet.treat import treat as _treat

    _check_device(device)
    make_opt = _optimizer_factory(optimizer, lr, momentum)
    if out is not None:  # before the treatment runs, not after
        writable_target(out)
    model, batch, loss_fn = unpack_factory(load_factory(factory), factory)
    try:
        model = model.to(device)
        result = _treat(model, _to_device(batch, device), loss_fn, remedies=remedy or None,
                        max_remedies=max_remedies, **({"optimizer": make_opt, "steps": steps} if make_opt else {}))
    except (TypeError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    if as_json:
        import dataclasses

        payload = {
            "healthy": result.healthy,
            "before": result.before.to_dict(),
            "after": result.after.to_dict(),
            "attempts": [dataclasses.asdict(a) for a in result.attempts],
            "applied": [{"id": r.id, "changes": [dataclasses.asdict(c) for c in r.changes]} for r in result.applied],
            "prescriptions": [r.id for r in result.prescriptions],
        }
        typer.echo(_json(payload, indent=1))
    else:
        from gradvet._render import print_uncut

        print_uncut(console, result)
    if out is not None:
        import io

        import torch

        buf = io.BytesIO()  # serialised in memory first: a full disk then fails as an OSError naming it
        torch.save(result.model, buf)
        try:
            with open(out, "wb") as fh:
                fh.write(buf.getbuffer())
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(out)) from None
        if not as_json:
            from gradvet._render import plain

            console.print(plain(f"saved treated model to {out} (load with torch.load(path, weights_only=False))"))
    raise typer.Exit(0 if result.healthy else 1)


@app.command()
@guarded("remedies", err)
def remedies(
    kind: Optional[str] = typer.Option(None, "--kind", help="only this kind: 'model edit', 'gradient transform', "
                                                             "'optimizer' or 'data'"),
    as_json: bool = typer.Option(False, "--json", help="print the catalogue as JSON"),
) -> None:
    """List every remedy: what it does, its paper, and the code that applies it."""
    from rich.table import Table

    from gradvet.remedies import catalogue

    rows = catalogue()
    kinds = sorted({r["kind"] for r in rows})
    if kind is not None and kind not in kinds:
        raise typer.BadParameter(f"--kind must be one of {kinds}, got {kind!r}")
    rows = [r for r in rows if kind is None or r["kind"] == kind]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="gradvet remedies (model edits: gradvet.treat applies them; the rest are prescriptions)")
    for col in ("id", "kind", "what it does", "code"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["kind"], r["what"], r["snippet"])
    console.print(table)


def main() -> None:
    """Console-script entry point; usage errors exit with code 2."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
