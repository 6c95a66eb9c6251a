"""The command line's exit-code rule: 0 healthy, 1 findings, 2 anything else.

Every command runs under :func:`guarded`. A usage error (``typer.BadParameter``) keeps
typer's usage message, its text cleaned of control characters; any other failure (the
user's forward raising, a full disk, a file that calls ``sys.exit`` while being imported)
prints one line saying what failed, its type and message and where, and exits 2, never a
traceback and never the exit codes 0/1 that mean "healthy"/"findings".
"""

from __future__ import annotations

import functools
import os
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

import click
import typer

F = TypeVar("F", bound=Callable[..., Any])

# typer >= 0.20 vendors click: catch both its classes and click's own
_USAGE: tuple[type[Any], ...] = tuple(
    {typer.BadParameter, click.BadParameter, typer.BadParameter.__mro__[1], click.UsageError}
)
_PASS: tuple[type[BaseException], ...] = tuple({typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException,
               *[c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"], KeyboardInterrupt})

_OURS = (
    os.path.dirname(os.path.abspath(__file__)),
    os.path.dirname(os.path.abspath(click.__file__)),
    os.path.dirname(os.path.abspath(typer.__file__)),
)


def clean(s: Any) -> str:
    """``gradvet._render.clean``, imported on use: ``gradvet --help`` does not pay for rich tables."""
    from gradvet._render import clean as _clean

    return _clean(s)


def _library_dirs() -> tuple[str, ...]:
    """Directories whose frames are not "where" a user's error happened (gradvet, torch, click, typer)."""
    dirs = list(_OURS)
    try:
        import torch

        dirs.append(os.path.dirname(os.path.abspath(torch.__file__)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return tuple(dirs)


def where(exc: BaseException) -> str:
    """``file.py:12 in forward``: the innermost frame of ``exc`` outside gradvet, torch, click and typer
    (the user's code), else the innermost frame; empty when there is no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    libs = _library_dirs()
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(libs)]
    f = (user or frames)[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}"


def describe(exc: BaseException) -> str:
    """One line: ``RuntimeError: kaput (at model.py:12 in forward)``, control characters removed."""
    msg = " ".join(str(exc).split()) or "(no message)"
    loc = where(exc)
    return clean(f"{type(exc).__name__}: {msg}" + (f" (at {loc})" if loc else ""))


def guarded(command: str, err: Any) -> Callable[[F], F]:
    """Decorator: run a CLI command under the exit-code rule (see the module docstring).

    ``err`` is the rich console for stderr; ``command`` names the command in the message.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except _USAGE as e:
                e.message = clean(e.message)  # type: ignore[attr-defined]
                raise
            except _PASS:
                raise
            except SystemExit as e:  # the user's code called sys.exit / exit() during the command
                _fail(err, command, f"the user's code called sys.exit({e.code!r}) while gradvet ran it "
                                    f"(guard script code with `if __name__ == \"__main__\":`)")
            except OSError as e:
                name = f" {clean(e.filename)}" if getattr(e, "filename", None) else ""
                _fail(err, command, f"could not read or write{name}: {clean(e.strerror or e)}")
            except Exception as e:
                _fail(err, command, describe(e))

        return run  # type: ignore[return-value]

    return wrap


def _fail(err: Any, command: str, what: str) -> None:
    from rich.text import Text

    err.print(Text(f"gradvet {command}: error: {what}"), soft_wrap=True)
    raise typer.Exit(2)


def writable_target(path: Path, option: str = "-o") -> Path:
    """``path`` after checking it can be written (not a directory, not read-only, its directory, or the
    nearest existing one above it when the directories are yet to be made, writable), before any long
    work runs.

    Raises:
        typer.BadParameter: saying what is wrong with ``path`` and how to fix it.
    """
    p = Path(path)
    if p.is_dir():
        raise typer.BadParameter(f"{option} {p} is a directory: give a file name, e.g. {p / 'out'}")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise typer.BadParameter(f"{option} {p} is read-only")
        return p
    above = p.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise typer.BadParameter(f"{option} {p}: {above} is a file, not a directory")
    if not os.access(above, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{option} {p}: the directory {above} is not writable")
    return p
