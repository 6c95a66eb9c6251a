"""The audit of issue 15, re-run: hostile and careless uses of gradvet, tried as a new user would.

Every item the issue names is attempted, several times where the issue gives counts
(SIGKILL at random moments including the first 50 ms, random 16-byte overwrites and
single-bit flips over many seeds, two writers on one path), plus a sample of the uses
the first audit found handled well. Each attempt states its pass criterion in code
(an exit code, an exact error type, a record that loads with the expected steps, a file
untouched byte for byte, no traceback, nothing on stderr); a failure prints what happened.

Everything is written under one temporary directory, removed at the end. Command-line
cases and kills run in subprocesses (``python -m gradvet.cli``; a forking harness for the
kills and concurrent writers, so a trial costs milliseconds, not an interpreter start).
A disk-full run and a read-only place use a tiny tmpfs in a private mount namespace
(``unshare -rm``) when the machine allows it; else a file-size limit and file modes.

Usage::

    .venv/bin/python bench/audit.py            # the full audit (~10 min on 2 cores)
    .venv/bin/python bench/audit.py --quick    # fewer random trials (~3 min)
    .venv/bin/python bench/audit.py --quick --only damage_tables,edge_check --json audit.json

Exit status: 0 when every attempt passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

import gradvet

SECTIONS = {
    "1": "1. data loss",
    "2": "2. damaged records",
    "3": "3. CLI exit codes, terminal safety",
    "4": "4. API edge cases",
    "ok": "handled well (sample)",
}

#: random trials per kind: (quick, full)
TRIALS = {
    "kill": (40, 150),
    "bytes16": (40, 300),
    "bit": (80, 400),
    "two_processes": (6, 16),
    "two_monitors": (10, 70),
    "poll": (3, 8),
}

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="250", PYTHONDONTWRITEBYTECODE="1")
ENV.pop("FORCE_COLOR", None)
ENV.pop("NO_COLOR", None)


class Failed(Exception):
    """An attempt whose pass criterion did not hold; the message says what happened."""


def expect(cond: Any, what: str) -> None:
    if not cond:
        raise Failed(what)


def short(text: str, n: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n // 2] + " ... " + text[-n // 2 :]


@dataclass
class Result:
    section: str
    group: str
    name: str
    ok: bool
    detail: str
    seconds: float


# --- small helpers ----------------------------------------------------------------------------------------------


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


def train(mon: gradvet.Monitor, model: nn.Module, n: int, opt: Optional[torch.optim.Optimizer] = None,
          width: int = 3) -> None:
    for _ in range(n):
        if opt is not None:
            opt.zero_grad()
        else:
            model.zero_grad()
        loss = model(torch.randn(5, width)).square().mean()
        loss.backward()
        mon.step(loss)
        if opt is not None:
            opt.step()


def write_record(path: Path, n: int = 3, model: Optional[nn.Module] = None, **kw: Any) -> gradvet.Run:
    model = model or tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradvet.Monitor(model, optimizer=opt, record=path, **kw) as mon:
        train(mon, model, n, opt)
    return gradvet.load(path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def raises(exc: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any], match: str = "") -> str:
    """Run ``fn``; it must raise ``exc`` (exactly that type or a subclass) whose text matches ``match``."""
    try:
        fn()
    except exc as e:
        expect(re.search(match, str(e), re.S), f"{type(e).__name__} raised, but its message {str(e)!r} lacks /{match}/")
        return str(e)
    except Exception as e:
        names = exc.__name__ if isinstance(exc, type) else "/".join(x.__name__ for x in exc)
        raise Failed(f"expected {names}, got {type(e).__name__}: {short(str(e))}") from e
    names = exc.__name__ if isinstance(exc, type) else "/".join(x.__name__ for x in exc)
    raise Failed(f"expected {names}, nothing was raised")


def hooks_of(model: nn.Module) -> list[int]:
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    ] + [len(p._backward_hooks or {}) for p in model.parameters()]


def full_device(a: Audit) -> Optional[str]:
    """A device that answers every write with ENOSPC: a copy of /dev/full's node in the temporary directory when
    this process may make one (root: a bug that replaced the path would then replace only the copy), else
    /dev/full itself (which an unprivileged process cannot replace)."""
    if os.geteuid() == 0:
        p = a.tmp("dev") / "full"
        try:
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
            return str(p)
        except OSError:
            return None
    return "/dev/full" if os.path.exists("/dev/full") else None


def unshare_ok() -> bool:
    """Whether a private mount namespace with a tmpfs can be made here (no change to the machine's mounts)."""
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory() as d:
        try:
            res = subprocess.run(
                ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", d],
                capture_output=True, timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0


# --- the audit ----------------------------------------------------------------------------------------------------


class Audit:
    def __init__(self, root: Path, quick: bool, trials: Optional[dict[str, int]] = None, echo: bool = True) -> None:
        self.root, self.quick, self.echo = root, quick, echo
        self.trials = {k: v[0] if quick else v[1] for k, v in TRIALS.items()}
        self.trials.update(trials or {})
        self.results: list[Result] = []
        self.group = ""
        self.section = ""
        self._n = 0
        self._unshare: Optional[bool] = None

    # bookkeeping
    def tmp(self, name: str = "t") -> Path:
        self._n += 1
        d = self.root / f"{self._n:04d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:40]}"
        d.mkdir(parents=True)
        return d

    def add(self, name: str, ok: bool, detail: str = "", seconds: float = 0.0) -> None:
        r = Result(SECTIONS[self.section], self.group, name, ok, detail, seconds)
        self.results.append(r)
        if not ok and self.echo:
            print(f"  FAIL [{self.group}] {name}: {detail}", file=sys.stderr, flush=True)

    def attempt(self, name: str, fn: Callable[[], Any]) -> bool:
        t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an attempt that cares about warnings records its own
                fn()
            ok, detail = True, ""
        except Failed as e:
            ok, detail = False, str(e)
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            ok, detail = False, f"unexpected {type(e).__name__}: {short(str(e))} (at {Path(tb.filename).name}:{tb.lineno})"
        self.add(name, ok, detail, time.monotonic() - t0)
        return ok

    @property
    def unshare(self) -> bool:
        if self._unshare is None:
            self._unshare = unshare_ok()
        return self._unshare

    # subprocesses
    def cli(self, *args: str, cwd: Optional[Path] = None, env: Optional[dict] = None, timeout: float = 300,
            wrap: Optional[list[str]] = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "gradvet.cli", *args]
        return subprocess.run(
            (wrap or []) + cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.root,
            env=dict(ENV, **(env or {})), errors="replace",
        )

    def py(self, code: str, *args: str, timeout: float = 300, wrap: Optional[list[str]] = None,
           cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            (wrap or []) + [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
            env=ENV, cwd=cwd or self.root, errors="replace",
        )


def clean_exit(res: subprocess.CompletedProcess, code: int = 2, *words: str) -> str:
    """The exit-code rule: ``code``, no traceback, and the words said (panel borders drawn away)."""
    out = res.stdout + res.stderr
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", out).split())
    expect(res.returncode == code, f"exit {res.returncode}, wanted {code}; said: {short(text)}")
    expect("Traceback" not in out, f"a traceback was printed: {short(out[out.find('Traceback'):], 600)}")
    for w in words:
        expect(w.lower() in text.lower(), f"the message does not say {w!r}: {short(text)}")
    return text


def one_line(res: subprocess.CompletedProcess, prefix: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    expect(len(lines) == 1, f"stderr is {len(lines)} lines, wanted one: {short(res.stderr, 600)}")
    expect(lines[0].startswith(prefix), f"stderr line {lines[0]!r} does not start with {prefix!r}")
    return lines[0]


# --- the forking harness: kills, concurrent writers, polling readers ----------------------------------------------

HARNESS = r'''
import json, os, random, signal, sys, time
from pathlib import Path
import torch
import gradvet


def model(kind):
    torch.manual_seed(kind)
    if kind == 0:
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 1))


def train(path, kind, steps, overwrite, ready=None, go=None, sleep=0.002):
    torch.set_num_threads(1)
    m = model(kind)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    if ready is not None:
        os.write(ready, b"e")
    if go is not None:
        os.read(go, 1)
    with gradvet.Monitor(m, optimizer=opt, record=path, profile="full", flush_every=3, flush_seconds=0.05,
                         overwrite=overwrite) as mon:
        t0 = time.monotonic()
        i = 0
        while steps < 0 or i < steps:
            opt.zero_grad()
            m(torch.randn(8, 4)).square().mean().backward()
            mon.step()
            opt.step()
            i += 1
            time.sleep(sleep)
    return t0, time.monotonic()


def state(path):
    if not path.exists():
        return {"state": "absent"}
    try:
        run = gradvet.load(path)
    except Exception as e:
        return {"state": f"error: {type(e).__name__}: {e}"}
    return {"state": "loaded", "steps": run.steps.tolist(), "params": len(run.params), "status": run.meta.get("status")}


def fork(fn):
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = fn() or 0
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    return pid


def warm(out):
    # one monitored step in this process first, so a forked child finds gradvet's lazy imports done
    torch.set_num_threads(1)
    train(out / "warm.gradvet", 0, 2, False, sleep=0.0)
    (out / "warm.gradvet").unlink()


def kill(out, trials, seed):
    rng = random.Random(seed)
    path = out / "kill-0.gradvet"
    for i in range(trials):
        reuse = i % 2 == 1  # odd trials overwrite the record the last kill left
        if not reuse:
            path = out / f"kill-{i}.gradvet"
        q = trials // 4
        delay = rng.uniform(0, 0.005) if i < q else rng.uniform(0, 0.05) if i < 2 * q else rng.uniform(0.05, 0.4)
        r, w = os.pipe()
        pid = fork(lambda: train(path, 0, -1, reuse, ready=w) and 0)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(json.dumps({"trial": i, "delay": delay, "reused": reuse, **state(path)}), flush=True)


def two(out, trials, seed):
    for i in range(trials):
        path = out / f"two-{i}.gradvet"
        go_r, go_w = os.pipe()
        pids, files = [], []
        for kind in (0, 1):
            res = out / f"two-{i}-{kind}.json"
            files.append(res)
            r, w = os.pipe()

            def child(kind=kind, res=res, w=w):
                try:
                    t0, t1 = train(path, kind, 40, True, ready=w, go=go_r, sleep=0.004)
                    res.write_text(json.dumps({"ok": True, "t0": t0, "t1": t1}))
                except Exception as e:
                    res.write_text(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
                    return 5

            pids.append(fork(child))
            os.close(w)
            os.read(r, 1)
            os.close(r)
        os.write(go_w, b"gg")
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        kids = [json.loads(f.read_text()) if f.exists() else {"ok": False, "error": "no result"} for f in files]
        print(json.dumps({"trial": i, "codes": codes, "writers": kids, **state(path)}), flush=True)
        os.close(go_r)
        os.close(go_w)


def poll(out, trials, seed):
    for i in range(trials):
        path = out / f"poll-{i}.gradvet"
        pid = fork(lambda: train(path, 0, 20, False, sleep=0.0) and 0)
        reads, errors = 0, []
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if path.exists():
                try:
                    gradvet.load(path)
                    reads += 1
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")
            if done:
                break
        print(json.dumps({"trial": i, "code": os.waitstatus_to_exitcode(status), "reads": reads,
                          "errors": errors[:3], "n_errors": len(errors), **state(path)}), flush=True)


warm(Path(sys.argv[2]))
{"kill": kill, "two": two, "poll": poll}[sys.argv[1]](Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
'''


def harness(audit: Audit, mode: str, trials: int, seed: int = 0) -> list[dict]:
    d = audit.tmp(f"harness-{mode}")
    res = audit.py(HARNESS, mode, str(d), str(trials), str(seed), timeout=600)
    rows = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or len(rows) != trials:
        audit.add(f"{mode} harness ran", False, f"exit {res.returncode}, {len(rows)}/{trials} trials: {short(res.stderr, 800)}")
    return rows


# =================================================================================================================
# 1. data loss
# =================================================================================================================


def g_not_a_record(a: Audit) -> None:
    """Monitor(record=PATH) where PATH is the user's file: refused, the file untouched, nothing left beside it."""

    def case(make: Callable[[Path], Path], overwrite: bool) -> Callable[[], None]:
        def run() -> None:
            d = a.tmp("nr")
            path = make(d)
            before = listing(d)
            snap = digest(path) if path.is_file() else None
            raises((ValueError, IsADirectoryError, FileExistsError),
                   lambda: write_record(path, 2, overwrite=overwrite), match=re.escape(path.name))
            if snap is not None:
                expect(digest(path) == snap, f"{path.name} was changed")
            else:
                expect(path.is_dir(), f"{path.name} is gone")
            expect(listing(d) == before, f"files left beside it: {sorted(set(listing(d)) - set(before))}")
        return run

    def ckpt(d: Path) -> Path:
        p = d / "model_weights.pt"
        torch.save(tiny().state_dict(), p)
        return p

    def notes(d: Path) -> Path:
        p = d / "notes.gradvet"
        p.write_text("my notes, not a record\n" * 50)
        return p

    def other_sqlite(d: Path) -> Path:
        p = d / "app.db"
        con = sqlite3.connect(p)
        with con:
            con.execute("CREATE TABLE users(name TEXT)")
            con.execute("INSERT INTO users VALUES ('ada')")
        con.close()
        return p

    def meta_sqlite(d: Path) -> Path:  # an SQLite file with a table called meta, but not gradvet's
        p = d / "cache.sqlite"
        con = sqlite3.connect(p)
        with con:
            con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT INTO meta VALUES ('owner', 'someone else')")
        con.close()
        return p

    def directory(d: Path) -> Path:
        p = d / "runs"
        p.mkdir()
        (p / "keep.txt").write_text("x")
        return p

    def link(d: Path) -> Path:
        target = ckpt(d)
        p = d / "latest.gradvet"
        p.symlink_to(target)
        return p

    for label, make in [("torch checkpoint", ckpt), ("symlink to a checkpoint", link), ("text file", notes), ("another SQLite db", other_sqlite),
                        ("SQLite db with a meta table", meta_sqlite), ("a directory", directory)]:
        for ow in (False, True):
            a.attempt(f"record=<{label}>, overwrite={ow}: refused, untouched", case(make, ow))


_SPECIAL = """
import json, os, stat, sys, warnings
import torch, gradvet
path, kind, overwrite = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if kind == "char device":
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is
else:
    os.mkfifo(path)
def ident():
    st = os.lstat(path)
    return [stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino]
before = ident()
warnings.simplefilter("ignore")
try:
    model = torch.nn.Linear(3, 1)
    with gradvet.Monitor(model, record=path, overwrite=overwrite) as m:
        model(torch.randn(2, 3)).sum().backward()
        m.step()
    said = "nothing raised"
except Exception as e:
    said = f"{type(e).__name__}: {e}"
print(json.dumps({"said": said, "same": ident() == before, "mode_now": stat.filemode(os.lstat(path).st_mode),
                  "left": sorted(os.listdir(os.path.dirname(path)))}))
"""


def g_special_files(a: Audit) -> None:
    """record=<a device node or FIFO> (zero-size, not regular files): refused, the node left as it was.

    Made inside the temporary directory: the char device is a copy of /dev/full's node (c 1 7), made only
    when this process may (root); never the machine's own /dev entries.
    """

    def case(kind: str, overwrite: bool) -> Callable[[], None]:
        def run() -> None:
            d = a.tmp("special")
            res = a.py(_SPECIAL, str(d / "full"), kind, "1" if overwrite else "0", timeout=120)
            expect(res.returncode == 0 and res.stdout.strip(), f"exit {res.returncode}: {short(res.stderr, 600)}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            expect(out["said"].startswith("ValueError"), f"not refused ({out['said']}); the {kind} is now {out['mode_now']}")
            expect(out["same"], f"the {kind} was replaced: now {out['mode_now']}")
            expect(out["left"] == ["full"], f"files left beside it: {out['left']}")
        return run

    kinds = ["FIFO"] + (["char device"] if os.geteuid() == 0 else [])
    for kind in kinds:
        for ow in (False, True):
            a.attempt(f"record=<a {kind}>, overwrite={ow}: refused, the node left as it was", case(kind, ow))


def g_existing_record(a: Audit) -> None:
    def refused() -> None:
        p = a.tmp("er") / "exp.gradvet"
        write_record(p, 3)
        snap = digest(p)
        raises(ValueError, lambda: write_record(p, 1), match=r"overwrite=True")
        expect(digest(p) == snap, "the existing record changed")
        expect(len(gradvet.load(p).steps) == 3, "the existing record lost steps")

    def replaced() -> None:
        p = a.tmp("er") / "exp.gradvet"
        write_record(p, 3)
        write_record(p, 1, overwrite=True)
        expect(len(gradvet.load(p).steps) == 1, "overwrite=True did not replace the record")

    def leftover_wal() -> None:
        d = a.tmp("wal")
        p = d / "exp.gradvet"
        wal = Path(str(p) + "-wal")
        wal.write_bytes(b"x" * 100)
        raises(ValueError, lambda: write_record(p), match="left over")
        expect(wal.read_bytes() == b"x" * 100, "the leftover -wal was changed")

    a.attempt("existing record, no overwrite: refused, untouched", refused)
    a.attempt("existing record, overwrite=True: replaced", replaced)
    a.attempt("a leftover PATH-wal without its record: refused", leftover_wal)


def g_reenter(a: Audit) -> None:
    def blocks(k: int, n: int) -> Callable[[], None]:
        def run() -> None:
            p, model = a.tmp("re") / "two.gradvet", tiny()
            mon = gradvet.Monitor(model, record=p)
            for _ in range(k):
                with mon:
                    train(mon, model, n)
            run_ = gradvet.load(p)
            expect(run_.steps.tolist() == list(range(k * n)), f"steps {run_.steps.tolist()}, wanted 0..{k * n - 1}")
            expect(run_.meta.get("status") == "finished", f"status {run_.meta.get('status')!r}")
        return run

    a.attempt("Monitor entered twice (5 + 5 steps): all 10 kept", blocks(2, 5))
    a.attempt("Monitor entered three times (3 steps each): all 9 kept", blocks(3, 3))

    def after_crash() -> None:
        p, model = a.tmp("re") / "crash.gradvet", tiny()
        mon = gradvet.Monitor(model, record=p)
        with contextlib.suppress(RuntimeError), mon:
            train(mon, model, 4)
            raise RuntimeError("user error")
        with mon:
            train(mon, model, 4)
        expect(gradvet.load(p).steps.tolist() == list(range(8)), "steps lost across a crashed first block")

    a.attempt("re-entered after the first block raised: all 8 kept", after_crash)


def g_report_html(a: Audit) -> None:
    def plain() -> None:
        d = a.tmp("html")
        p = d / "exp.html"
        write_record(p, 2)
        snap = digest(p)
        res = a.cli("report", str(p), cwd=d)
        clean_exit(res, 0)
        expect(digest(p) == snap, "the record exp.html was changed by its report")
        expect(len(gradvet.load(p).steps) == 2, "the record no longer loads")
        others = [f for f in listing(d) if f != "exp.html" and f.endswith(".html")]
        expect(others, f"no report written beside it: {listing(d)}")

    def onto_itself(out: Callable[[Path], str]) -> Callable[[], None]:
        def run() -> None:
            d = a.tmp("html")
            p = d / "exp.html"
            write_record(p, 2)
            snap = digest(p)
            res = a.cli("report", str(p), "-o", out(p), cwd=d)
            clean_exit(res, 2)
            expect(digest(p) == snap, "the record was overwritten")
        return run

    def symlink(p: Path) -> str:
        link = p.parent / "link.html"
        link.symlink_to(p)
        return str(link)

    a.attempt("gradvet report exp.html (a record named *.html): record untouched", plain)
    a.attempt("gradvet report exp.html -o exp.html: exit 2, untouched", onto_itself(str))
    a.attempt("gradvet report exp.html -o ./exp.html (relative): exit 2, untouched", onto_itself(lambda p: "./exp.html"))
    a.attempt("gradvet report exp.html -o link.html (symlink to it): exit 2, untouched", onto_itself(symlink))

    def api() -> None:
        from gradvet.html import write_report

        p = a.tmp("html") / "exp.html"
        write_record(p, 2)
        snap = digest(p)
        raises(ValueError, lambda: write_report(p, p), match="record")
        expect(digest(p) == snap, "the record was overwritten")

    a.attempt("write_report(record, record) from the API: ValueError, untouched", api)


def g_two_writers(a: Audit) -> None:
    # two Monitors on one path in one process
    def in_process(i: int) -> Callable[[], None]:
        def run() -> None:
            p = a.tmp("2m") / "one.gradvet"
            first = tiny(i)
            other = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 1))
            k = i % 4  # steps before the second Monitor tries
            with gradvet.Monitor(first, record=p, flush_every=1 + i % 3) as mon:
                train(mon, first, k)
                second = lambda: gradvet.Monitor(other, record=p, overwrite=bool(i % 2)).__enter__()  # noqa: E731
                raises(ValueError, second, match=rf"another Monitor \(process {os.getpid()}\)")
                train(mon, first, 3)
            run_ = gradvet.load(p)
            expect(run_.steps.tolist() == list(range(k + 3)), f"steps {run_.steps.tolist()}")
            expect(len(run_.params) == 4, f"{len(run_.params)} params, wanted the first model's 4: the models were mixed")
            expect(not Path(str(p) + ".lock").exists(), "the lock was left behind")
        return run

    for i in range(a.trials["two_monitors"]):
        a.attempt(f"two Monitors, one path, one process (trial {i})", in_process(i))

    # two processes started together on one path, both with overwrite=True (so only the lock can stop one)
    for r in harness(a, "two", a.trials["two_processes"], seed=1):
        ok, detail = True, ""
        try:
            w = r["writers"]
            won = [k for k in (0, 1) if w[k]["ok"]]
            expect(r["state"] == "loaded", f"the record: {r['state']}")
            if len(won) == 2:  # both ran: only fine if one finished before the other began
                first, last = sorted((0, 1), key=lambda k: w[k]["t0"])
                expect(w[first]["t1"] <= w[last]["t0"], f"both wrote at once, no refusal: {w}")
                won = [last]
            expect(len(won) == 1, f"no writer succeeded: {w}")
            loser = 1 - won[0]
            if not w[loser]["ok"]:
                expect("another Monitor" in w[loser]["error"], f"refused without saying why: {w[loser]['error']!r}")
            expect(r["steps"] == list(range(40)), f"record steps {r['steps'][:5]}...(n={len(r['steps'])}), wanted 0..39")
            expect(r["params"] == (4, 6)[won[0]], f"record holds {r['params']} params, the winner has {(4, 6)[won[0]]}")
        except Failed as e:
            ok, detail = False, str(e)
        a.add(f"two processes, one path (trial {r['trial']})", ok, detail)


_NEVER_CLOSED = """
import sys, torch, gradvet
torch.set_num_threads(1)
model = torch.nn.Linear(3, 1)
m = gradvet.Monitor(model, record=sys.argv[1], flush_every=1000, flush_seconds=1e6)
m.__enter__()
for _ in range(250):
    model.zero_grad()
    model(torch.randn(2, 3)).sum().backward()
    m.step()
END = sys.argv[2]
if END == "exit0":
    sys.exit(0)
if END == "del":
    del m
    import gc; gc.collect()
if END == "raise":
    raise RuntimeError("the user's script died")
"""


def g_never_closed(a: Audit) -> None:
    def case(end: str, code: int) -> Callable[[], None]:
        def run() -> None:
            p = a.tmp("nc") / "exit.gradvet"
            res = a.py(_NEVER_CLOSED, str(p), end)
            expect(res.returncode == code, f"exit {res.returncode}: {short(res.stderr)}")
            run_ = gradvet.load(p)
            expect(len(run_.steps) == 250, f"{len(run_.steps)} of 250 steps kept")
            expect(run_.meta.get("status") != "running", "status still 'running'")
        return run

    a.attempt("never-closed Monitor, script ends normally: 250/250 steps", case("normal", 0))
    a.attempt("never-closed Monitor, sys.exit(0): 250/250 steps", case("exit0", 0))
    a.attempt("never-closed Monitor, `del monitor` then exit: 250/250 steps", case("del", 0))
    a.attempt("never-closed Monitor, script raises: 250/250 steps", case("raise", 1))


def g_chdir(a: Audit) -> None:
    def case(when: str) -> Callable[[], None]:
        def run() -> None:
            d = a.tmp("cd")
            (d / "a").mkdir()
            (d / "b").mkdir()
            old = os.getcwd()
            try:
                os.chdir(d / "a")
                model = tiny()
                mon = gradvet.Monitor(model, record="rel.gradvet")
                if when == "before":
                    os.chdir(d / "b")
                with mon:
                    if when == "inside":
                        os.chdir(d / "b")
                    train(mon, model, 3)
                expect(len(mon.load().steps) == 3, "monitor.load() did not find 3 steps")
                mon.report()
            finally:
                os.chdir(old)
            expect((d / "a" / "rel.gradvet").is_file(), f"record not where the path pointed at creation: {listing(d / 'a')}")
            expect(not (d / "b" / "rel.gradvet").exists(), "a record appeared in the new directory")
        return run

    a.attempt("relative record path, os.chdir() inside `with`", case("inside"))
    a.attempt("relative record path, os.chdir() between Monitor() and `with`", case("before"))


_DISK_FULL = """
import json, os, sys, warnings
import torch, gradvet
torch.set_num_threads(1)
path = sys.argv[1]
if len(sys.argv) > 2:  # no tmpfs here: a file-size limit, the same failure seen as EFBIG
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
model = torch.nn.Linear(64, 64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with gradvet.Monitor(model, record=path, profile="full", flush_every=2) as m:
        for _ in range(100):
            model.zero_grad()
            model(torch.randn(4, 64)).sum().backward()
            m.step()
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    result = {}
    try:
        run = m.load()
        result["steps"], result["status"] = len(run.steps), run.meta.get("status")
    except ValueError as e:
        result["error"] = str(e)
    try:
        m.report()
        result["report"] = "ok"
    except Exception as e:
        result["report"] = f"{type(e).__name__}: {e}"
result["open"] = [f for f in fds if os.path.basename(path) in f]
result["warnings"] = [str(w.message) for w in caught]
print(json.dumps(result))
"""


def g_disk_full(a: Audit) -> None:
    def check(res: subprocess.CompletedProcess) -> None:
        expect(res.returncode == 0, f"training did not go on: exit {res.returncode}: {short(res.stderr, 800)}")
        out = json.loads(res.stdout.strip().splitlines()[-1])
        expect(out["open"] == [], f"descriptors left open: {out['open']}")
        said = out.get("error", "") + " ".join(out["warnings"]) + out.get("report", "")
        expect(any("could not write the record" in w for w in out["warnings"]), f"no warning said the write failed: {out}")
        expect(re.search(r"full|space|I/O|too large", said, re.I), f"nothing says the disk was full: {short(said)}")
        expect(out.get("status") != "running", "the record still says status 'running'")
        expect("pass the path given to Monitor" not in out.get("report", ""), f"report() blames the user: {out['report']}")
        if "steps" in out:  # 0 is right when the disk cannot hold even the first flush (64 kB: the WAL's pages)
            expect(0 <= out["steps"] < 100, f"{out['steps']} steps in a record the disk could not hold")
            expect(str(out.get("status", "")).startswith("record write failed"),
                   f"the record does not say the write failed: {out.get('status')}")

    def tmpfs() -> None:
        d = a.tmp("full")
        wrap = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"', str(d)]
        check(a.py(_DISK_FULL, str(d / "full.gradvet"), wrap=wrap))

    def rlimit() -> None:
        check(a.py(_DISK_FULL, str(a.tmp("full") / "full.gradvet"), "60000"))

    if a.unshare:
        a.attempt("disk full (a 64 kB tmpfs, ENOSPC) mid-run", tmpfs)
    a.attempt("disk full (RLIMIT_FSIZE 60 kB, EFBIG) mid-run", rlimit)



# =================================================================================================================
# 2. damaged records
# =================================================================================================================


def _reference(a: Audit) -> tuple[Path, gradvet.Run]:
    if not hasattr(a, "_ref"):
        p = a.tmp("ref") / "clean.gradvet"
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        torch.manual_seed(0)
        run = write_record(p, 30, model=model, profile="full", flush_every=4)
        a._ref = (p, run)  # type: ignore[attr-defined]
    return a._ref  # type: ignore[attr-defined]


def _rows(run: gradvet.Run, metric: str) -> dict[int, bytes]:
    s = run.series(metric)
    return {int(step): s.values[i].tobytes() for i, step in enumerate(s.steps)}


def damage_outcome(path: Path, ref: gradvet.Run) -> str:
    """'error' (one ValueError naming the file), 'partial' (damaged rows named and skipped) or 'intact'."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = gradvet.load(path)
    except ValueError as e:
        expect(str(path) in str(e), f"the ValueError does not name the file: {e}")
        return "error"
    except Exception as e:
        raise Failed(f"raw {type(e).__name__}: {short(str(e))}") from e
    said = [str(w.message) for w in caught]
    expect({k: v for k, v in run.meta.items() if k != "damaged"} == ref.meta, "meta loaded with different values")
    expect(run.params == ref.params and run.layers == ref.layers, "params/layers loaded with different values")
    missing = False
    for metric in ref.metrics:
        want = _rows(ref, metric)
        got = _rows(run, metric) if metric in run.metrics else {}
        bad = [s for s in got if got[s] != want.get(s)]
        expect(not bad, f"silently wrong values in {metric} at steps {bad[:5]}")
        missing |= len(got) < len(want)
    expect(set(run.metrics) <= set(ref.metrics), "metrics appeared that were never written")
    if missing:
        expect(run.meta.get("damaged") and any("damaged" in w for w in said), "rows lost without a word")
        return "partial"
    return "intact"


def g_damage_random(a: Audit) -> None:
    src, ref = _reference(a)
    data = src.read_bytes()
    d = a.tmp("dmg")
    for kind, label in (("bytes16", "random 16-byte overwrite"), ("bit", "single-bit flip")):
        counts = {"error": 0, "partial": 0, "intact": 0}
        for seed in range(a.trials[kind]):
            rng = np.random.default_rng(seed)
            buf = bytearray(data)
            if kind == "bit":
                pos = int(rng.integers(len(buf)))
                buf[pos] ^= 1 << int(rng.integers(8))
                where = f"byte {pos}"
            else:
                pos = int(rng.integers(len(buf) - 16))
                buf[pos : pos + 16] = rng.bytes(16)
                where = f"bytes {pos}-{pos + 15}"
            p = d / f"{kind}-{seed}.gradvet"
            p.write_bytes(bytes(buf))

            def one(p: Path = p, counts: dict[str, int] = counts) -> None:
                counts[damage_outcome(p, ref)] += 1

            a.attempt(f"{label}, seed {seed} ({where})", one)
            p.unlink()
        if a.echo:
            print(f"  {label}: {counts}", file=sys.stderr, flush=True)


def _sql(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    with con:
        for s in sql:
            con.execute(s)
    con.close()


def g_damage_tables(a: Audit) -> None:
    src, ref = _reference(a)

    def case(make: Callable[[Path], None], cli: bool = False, lenient: bool = False) -> Callable[[], None]:
        def run() -> None:
            p = a.tmp("tab") / "bad.gradvet"
            shutil.copy(src, p)
            make(p)
            if cli:
                for cmd in (["show", str(p)], ["report", str(p), "-o", str(p.with_name("r.html"))], ["watch", str(p), "--once"]):
                    res = a.cli(*cmd)
                    if res.returncode == 2:
                        clean_exit(res, 2, "bad.gradvet")
                    else:  # a partial load is fine too, shown with its damage
                        clean_exit(res, res.returncode if res.returncode in (0, 1) else 2)
                        expect("damaged" in (res.stdout + res.stderr).lower(), f"{cmd[0]} loaded a damaged record without a word")
            elif lenient:  # a row deleted whole carries no checksum to fail: a clean load or error, never raw
                try:
                    gradvet.load(p)
                except ValueError:
                    pass
                except Exception as e:
                    raise Failed(f"raw {type(e).__name__}: {short(str(e))}") from e
            else:
                expect(damage_outcome(p, ref) != "intact", "the damage went unnoticed")
        return run

    def meta_only(p: Path) -> None:
        p.unlink()
        _sql(p, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)", "INSERT INTO meta VALUES ('schema_version', '1')")

    cases: list[tuple[str, Callable[[Path], None]]] = [
        ("meta-only SQLite file", meta_only),
        ("invalid JSON in meta", lambda p: _sql(p, "UPDATE meta SET value='{not json' WHERE key='model'")),
        ("non-UTF-8 bytes in meta", lambda p: _sql(p, "UPDATE meta SET value=CAST(X'FF00FF' AS TEXT) WHERE key='model'")),
        ("a block whose row count does not match its data", lambda p: _sql(p, "UPDATE blocks SET n=n+1 WHERE id=(SELECT MIN(id) FROM blocks)")),
        ("a block with its data cut short", lambda p: _sql(p, "UPDATE blocks SET data=substr(data, 1, 8) WHERE id=(SELECT MAX(id) FROM blocks)")),
        ("a block with a flipped data byte", lambda p: _sql(p, "UPDATE blocks SET data=X'00' || substr(data, 2) WHERE id=(SELECT MIN(id) FROM blocks)")),
        ("params table dropped", lambda p: _sql(p, "DROP TABLE params")),
        ("blocks table dropped", lambda p: _sql(p, "DROP TABLE blocks")),
        ("layers row changed", lambda p: _sql(p, "UPDATE layers SET info='[]' WHERE idx=0")),
        ("file truncated to half", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        ("file truncated to 100 bytes", lambda p: p.write_bytes(p.read_bytes()[:100])),
        ("an empty file", lambda p: p.write_bytes(b"")),
        ("random garbage", lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000))),
        ("a text file named .gradvet", lambda p: p.write_text("hello\n" * 100)),
        ("a torch checkpoint named .gradvet", lambda p: torch.save(tiny().state_dict(), p)),
    ]
    for label, make in cases:
        a.attempt(f"gradvet.load on {label}: one ValueError naming the file, or a named partial load", case(make))
    a.attempt("gradvet.load with meta row 'model' deleted: a load or one ValueError, never a raw exception",
              case(lambda p: _sql(p, "DELETE FROM meta WHERE key='model'"), lenient=True))
    for label, make in cases[:3] + cases[9:10] + cases[12:13]:
        a.attempt(f"show/report/watch on {label}: exit 2 (or a named partial load), no traceback", case(make, cli=True))


def g_kill(a: Audit) -> None:
    rows = harness(a, "kill", a.trials["kill"], seed=0)
    for r in rows:
        ok, detail = True, ""
        if r["state"] not in ("absent", "loaded"):
            ok, detail = False, f"killed {r['delay'] * 1000:.1f} ms after entering: {r['state']}"
        elif r["state"] == "loaded" and r["steps"] != list(range(len(r["steps"]))):
            ok, detail = False, f"torn record: steps {r['steps']}"
        a.add(f"SIGKILL {r['delay'] * 1000:.1f} ms after entering{' (over the last record)' if r['reused'] else ''}", ok, detail)
    if a.echo and rows:
        early = sum(r["delay"] < 0.05 for r in rows)
        states = {s: sum(r["state"] == s for r in rows) for s in ("absent", "loaded")}
        print(f"  SIGKILL: {len(rows)} trials, {early} in the first 50 ms, {states}", file=sys.stderr, flush=True)
    for r in harness(a, "poll", a.trials["poll"], seed=0):
        ok = r["code"] == 0 and r["n_errors"] == 0 and r["reads"] > 0 and r["state"] == "loaded"
        a.add(f"a reader polling a record as it is created (trial {r['trial']}, {r['reads']} reads)", ok,
              "" if ok else f"exit {r['code']}, {r['n_errors']} failed reads: {r['errors']}")


# =================================================================================================================
# 3. the command line
# =================================================================================================================

FACTORIES = '''
import os
import torch
from torch import nn


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(3, 3)

    def forward(self, x):
        raise RuntimeError("kaput in forward")


def boom():
    return Boom(), (torch.randn(4, 3), None), lambda out, y: out.sum()


def strmodel():
    return "model", (torch.randn(4, 3), None), lambda out, y: out.sum()


def noloss():
    return nn.Linear(3, 1), (torch.randn(4, 3), None), "mse"


def badloss():
    return nn.Linear(3, 1), (torch.randn(4, 3), None), lambda out, y: 1 / 0


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 1))

    def forward(self, x):
        with open(os.environ["AUDIT_MARKER"], "a") as f:
            f.write("f")
        return self.net(x)


def counted():
    torch.manual_seed(0)
    return Counted(), (torch.randn(16, 3), None), lambda out, y: out.pow(2).mean()


def ok():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    return net, (torch.randn(16, 3), None), lambda out, y: out.pow(2).mean()
'''


def _user(a: Audit) -> Path:
    if not hasattr(a, "_user_file"):
        f = a.tmp("user") / "user_models.py"
        f.write_text(FACTORIES)
        a._user_file = f  # type: ignore[attr-defined]
    return a._user_file  # type: ignore[attr-defined]


def _small_record(a: Audit) -> Path:
    if not hasattr(a, "_small"):
        p = a.tmp("rec") / "run.gradvet"
        write_record(p, 4)
        a._small = p  # type: ignore[attr-defined]
    return a._small  # type: ignore[attr-defined]


def g_cli_exit(a: Audit) -> None:
    user, rec = _user(a), _small_record(a)

    def cmd(args: list[str], code: int, *words: str, line: str = "", env: Optional[dict] = None,
            wrap: Optional[list[str]] = None) -> Callable[[], None]:
        def run() -> None:
            res = a.cli(*args, env=env, wrap=wrap)
            clean_exit(res, code, *words)
            if line:
                one_line(res, line)
        return run

    a.attempt("check: factory returns a str as the model -> 2", cmd(["check", f"{user}:strmodel"], 2, "str", "model"))
    a.attempt("check: factory returns a str as loss_fn -> 2", cmd(["check", f"{user}:noloss"], 2, "loss_fn"))
    a.attempt("check: forward raises -> 2, one line with type, message, place",
              cmd(["check", f"{user}:boom"], 2, "RuntimeError: kaput in forward", "user_models.py:",
                  line="gradvet check: error: RuntimeError: kaput in forward"))
    a.attempt("check: loss_fn raises -> 2, one line", cmd(["check", f"{user}:badloss"], 2, "ZeroDivisionError",
                                                        line="gradvet check: error: ZeroDivisionError"))
    a.attempt("treat: forward raises -> 2, one line",
              cmd(["treat", f"{user}:boom"], 2, "RuntimeError: kaput in forward",
                  line="gradvet treat: error: RuntimeError: kaput in forward"))
    a.attempt("check: missing file -> 2", cmd(["check", f"{user.parent}/nope.py:f"], 2, "nope.py"))
    a.attempt("check: missing factory name -> 2", cmd(["check", f"{user}:nothere"], 2, "nothere"))

    for name, body in [("exit0", "import sys\nsys.exit(0)\ndef f():\n    pass\n"),
                       ("exit_none", "raise SystemExit\ndef f():\n    pass\n"),
                       ("import_error", "import no_such_module_hopefully\ndef f():\n    pass\n")]:
        f = a.tmp("imp") / f"{name}.py"
        f.write_text(body)
        for c in ("check", "treat"):
            a.attempt(f"{c}: a file that does {name} at import -> 2, not healthy", cmd([c, f"{f}:f"], 2))

    d = a.tmp("out")
    (d / "afile").write_text("x")
    a.attempt("report -o <a directory> -> 2", cmd(["report", str(rec), "-o", str(d)], 2, "directory"))
    a.attempt("report -o <file>/r.html (parent is a file) -> 2", cmd(["report", str(rec), "-o", str(d / "afile" / "r.html")], 2))
    full = full_device(a)
    if full:
        a.attempt("report -o <a full device> -> 2, one line",
                  cmd(["report", str(rec), "-o", full], 2, full, "space", line="gradvet report: error:"))
    ro = a.tmp("ro")
    if a.unshare:
        wrap = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o ro,size=16k tmpfs "$0" && exec "$@"', str(ro)]
    elif os.geteuid() != 0:
        ro.chmod(0o555)
        wrap = None
    else:
        wrap = []
    if wrap is not None:
        a.attempt("report -o <read-only place> -> 2", cmd(["report", str(rec), "-o", str(ro / "r.html")], 2, wrap=wrap or None))

    def treat_out(target: Callable[[], str], words: tuple[str, ...], before: bool, w: Optional[list[str]] = None,
                  says: str = "") -> Callable[[], None]:
        def run() -> None:
            marker = a.tmp("mark") / "forward.calls"
            res = a.cli("treat", f"{user}:counted", "-o", target(), env={"AUDIT_MARKER": str(marker)}, wrap=w)
            clean_exit(res, 2, *words)
            if says:  # one line that says what failed
                line = one_line(res, "gradvet treat: error:")
                expect(re.search(says, line, re.I), f"the line does not say what failed: {line!r}")
            calls = len(marker.read_text()) if marker.exists() else 0
            if before:
                expect(calls == 0, f"the treatment ran first ({calls} forwards) and only then was -o refused")
        return run

    a.attempt("treat -o <a directory> -> 2 before the treatment runs", treat_out(lambda: str(d), ("directory",), True))
    if wrap is not None:
        a.attempt("treat -o <read-only place> -> 2 before the treatment runs",
                  treat_out(lambda: str(ro / "m.pt"), ("writable",), True, wrap or None))
    if full:
        a.attempt("treat -o <a full device> -> 2, one line naming the file or the full disk",
                  treat_out(lambda: str(full), (), False, says=rf"{re.escape(str(full))}|no space|full"))

    junk = a.tmp("junk") / "junk.gradvet"
    junk.write_bytes(b"not a record at all" * 10)
    ckpt = junk.with_name("weights.pt")
    torch.save(tiny().state_dict(), ckpt)
    a.attempt("watch --once <missing file> -> 2", cmd(["watch", str(junk.with_name("missing.gradvet")), "--once"], 2, "missing.gradvet"))
    a.attempt("watch --once <not a record> -> 2", cmd(["watch", str(junk), "--once"], 2, "junk.gradvet"))
    a.attempt("watch --once <a checkpoint> -> 2", cmd(["watch", str(ckpt), "--once"], 2, "weights.pt"))
    a.attempt("watch --interval 0 -> 2", cmd(["watch", str(rec), "--interval", "0"], 2, "interval"))
    a.attempt("watch --interval -1 -> 2", cmd(["watch", str(rec), "--interval", "-1"], 2, "interval"))
    a.attempt("show <missing file> -> 2", cmd(["show", str(junk.with_name("missing.gradvet"))], 2))
    a.attempt("report <not a record> -> 2", cmd(["report", str(junk)], 2, "junk.gradvet"))

    root = Path(__file__).resolve().parents[1] / "examples"
    if (root / "healthy.py").exists():
        a.attempt("check examples/healthy.py:factory -> 0", cmd(["check", f"{root / 'healthy.py'}:factory"], 0))
    if (root / "sick.py").exists():
        a.attempt("check examples/sick.py:factory -> 1", cmd(["check", f"{root / 'sick.py'}:factory"], 1))


# hostile names: module name -> what the terminal must show
NAMES = {
    "[/]": "[/]",
    "[bold red]x": "[bold red]x",
    "[link=https://evil]innocent[/link]": "[link=https://evil]innocent[/link]",
    "win\x1b]0;title\x07dow": "window",
    "clr\x1b[2Jscreen": "clrscreen",
    "<script>alert(1)</script>": "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>": "<img src=x onerror=alert(2)>",
}
EVIL_CLASS = "[red]Evil[/]Linear"


def hostile() -> nn.Module:
    torch.manual_seed(0)
    evil = type(EVIL_CLASS, (nn.Linear,), {})
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    for i, name in enumerate(NAMES):
        mods[name] = evil(16, 16) if i == 0 else nn.Linear(16, 16)
        mods[f"act{i}"] = nn.Sigmoid()
    for i in range(4):
        mods[f"fc{i}"], mods[f"sig{i}"] = nn.Linear(16, 16), nn.Sigmoid()
    mods["head"] = nn.Linear(16, 4)
    return nn.Sequential(mods)


def _hostile_record(a: Audit) -> Path:
    if not hasattr(a, "_hostile"):
        p = a.tmp("hostile") / "run[/]x" / "run[bold].gradvet"
        model = hostile()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
        with gradvet.Monitor(model, optimizer=opt, record=p, profile="full") as mon:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                mon.step(loss)
                opt.step()
        a._hostile = p  # type: ignore[attr-defined]
    return a._hostile  # type: ignore[attr-defined]


SGR = re.compile(r"\x1b\[[0-9;]*m")


def literal(text: str, *, colour: bool, types: bool = True) -> None:
    """Names shown as plain text; no escape sequence but colour (SGR) codes in a forced terminal."""
    if colour:
        text = SGR.sub("", text)
    expect("\x1b" not in text, f"an escape sequence reached the terminal: {short(repr(text[text.find(chr(27)) - 20:][:80]))}")
    expect("\x07" not in text, "a BEL reached the terminal")
    flat = text.replace("\n", "")
    missing = [shown for shown in [*NAMES.values(), *([EVIL_CLASS] if types else [])] if shown not in text and shown not in flat]
    expect(not missing, f"names not shown literally: {missing}")


def g_markup(a: Audit) -> None:
    p = _hostile_record(a)
    forced = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "TTY_COMPATIBLE": "1"}

    def cmd(args: list[str], codes: tuple[int, ...], colour: bool) -> Callable[[], None]:
        def run() -> None:
            res = a.cli(*args, env=forced if colour else None)
            out = res.stdout + res.stderr
            expect(res.returncode in codes, f"exit {res.returncode}: {short(out)}")
            expect("Traceback" not in out and "MarkupError" not in out, f"crashed: {short(out, 600)}")
            literal(res.stdout, colour=colour, types=args[0] != "watch")  # watch shows no layer types
            if colour:
                expect("\x1b]8;" not in out, "a hidden terminal hyperlink (OSC 8) was printed")
        return run

    for colour in (False, True):
        how = "forced colour terminal" if colour else "pipe"
        a.attempt(f"show <record with markup/escape names> ({how})", cmd(["show", str(p)], (0, 1), colour))
        a.attempt(f"show --all <record with markup/escape names> ({how})", cmd(["show", "--all", str(p)], (0, 1), colour))
        a.attempt(f"watch --once <record with markup/escape names> ({how})", cmd(["watch", str(p), "--once"], (0,), colour))

    def report_to_markup_path() -> None:
        out = a.tmp("mk") / "[/]out[bold].html"
        res = a.cli("report", str(p), "-o", str(out))
        clean_exit(res, 0)
        expect(out.is_file(), "no report written")
        expect(str(out) in res.stdout.replace("\n", ""), f"the path is not shown literally: {short(res.stdout)}")

    a.attempt("report <markup path> -o '[/]out[bold].html'", report_to_markup_path)

    f = a.tmp("mkf") / "evil_model.py"
    f.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        + "import torch\nfrom audit import hostile\n\n\ndef factory():\n"
        "    return hostile(), (torch.randn(32, 16), torch.randint(0, 4, (32,))), torch.nn.functional.cross_entropy\n"
    )
    a.attempt("check <factory with markup/escape names> (pipe)", cmd(["check", f"{f}:factory"], (0, 1), False))
    a.attempt("check <factory with markup/escape names> (forced colour)", cmd(["check", f"{f}:factory"], (0, 1), True))

    def str_report() -> None:
        report = gradvet.check(hostile(), (torch.randn(32, 16), torch.randint(0, 4, (32,))), nn.functional.cross_entropy)
        literal(str(report), colour=False)

    a.attempt("str(gradvet.check(<markup names>))", str_report)

    def esc_exception() -> None:
        g = a.tmp("esc") / "esc.py"
        g.write_text("def f():\n    raise RuntimeError('\\x1b]0;pwned\\x07bad\\x1b[2J thing')\n")
        res = a.cli("check", f"{g}:f")
        clean_exit(res, 2, "bad thing")
        expect("\x1b" not in res.stdout + res.stderr and "pwned" not in res.stderr, "escape sequence from an exception printed")

    a.attempt("check: an exception message carrying escape sequences -> 2, stripped", esc_exception)

    def esc_argument() -> None:
        res = a.cli("check", "\x1b[2J\x1b]0;pwned\x07evil.py:f")
        clean_exit(res, 2, "evil.py")
        expect("\x1b" not in res.stdout + res.stderr and "\x07" not in res.stdout + res.stderr, "escape sequence echoed")

    a.attempt("check '<ESC>[2J<ESC>]0;pwned<BEL>evil.py:f' -> 2, nothing raw echoed", esc_argument)


# =================================================================================================================
# 4. API edge cases
# =================================================================================================================


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 4), torch.randint(0, 3, (n,))


def _state(model: nn.Module) -> list:
    return [{k: v.clone() for k, v in model.state_dict().items()}, [p.grad for p in model.parameters()],
            [m.training for m in model.modules()], hooks_of(model)]


def unchanged(model: nn.Module, before: list) -> None:
    after = _state(model)
    expect(all(torch.equal(v, after[0][k]) for k, v in before[0].items()), "check changed the weights/buffers")
    expect(all(x is y for x, y in zip(before[1], after[1])), "check changed .grad")
    expect(before[2] == after[2] and before[3] == after[3], "check left modes or hooks changed")


def g_edge_check(a: Audit) -> None:
    ce = nn.functional.cross_entropy

    def under(mode: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            model = _bn_model().eval()
            before = _state(model)
            with mode():
                msg = raises(ValueError, lambda: gradvet.check(model, _batch(), ce), match=r"no_grad|inference_mode")
            expect("does not require grad" not in msg, f"torch's message, not gradvet's: {msg}")
            unchanged(model, before)
        return run

    a.attempt("check inside torch.no_grad(): ValueError that says so", under(torch.no_grad))
    a.attempt("check inside torch.inference_mode(): ValueError that says so", under(torch.inference_mode))
    a.attempt("check inside @torch.no_grad()-decorated function", lambda: torch.no_grad()(under(contextlib.nullcontext))())

    def empty(batch: Any) -> Callable[[], None]:
        def run() -> None:
            model = _bn_model()
            before = _state(model)
            raises(ValueError, lambda: gradvet.check(model, batch, ce), match="empty|shape")
            unchanged(model, before)
        return run

    a.attempt("check on a batch of 0 samples: ValueError", empty((torch.randn(0, 4), torch.randint(0, 3, (0,)))))
    a.attempt("check on 0 targets: ValueError", empty((torch.randn(8, 4), torch.randint(0, 3, (0,)))))
    a.attempt("check on an empty dict of inputs: ValueError", empty(({}, torch.randint(0, 3, (8,)))))
    a.attempt("check on an empty list of inputs: ValueError", empty(([], torch.randint(0, 3, (8,)))))

    def meta() -> None:
        with torch.device("meta"):
            model = _bn_model()
        raises(ValueError, lambda: gradvet.check(model, _batch(), ce), match="meta")
        expect(all(p.is_meta for p in model.parameters()), "the meta model was changed")

    a.attempt("check on a meta-device model: ValueError up front", meta)


def g_edge_monitor(a: Audit) -> None:
    def trained(calls: list[int], opt_model: Optional[nn.Module] = None) -> list[str]:
        model = _bn_model()
        opt = torch.optim.SGD((opt_model or model).parameters(), lr=0.01)
        x, y = _batch()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with gradvet.Monitor(model, optimizer=opt) as mon:
                for c in calls:
                    opt.zero_grad()
                    for _ in range(c):
                        loss = nn.functional.cross_entropy(model(x), y)
                        loss.backward()
                        mon.step(loss)
                    opt.step()
        return [str(w.message) for w in caught]

    def twice(calls: list[int], k: int) -> Callable[[], None]:
        def run() -> None:
            said = [w for w in trained(calls) if "monitor.step() was called" in w]
            expect(len(said) == 1, f"{len(said)} warnings, wanted one: {said}")
            expect(f"{k} times" in said[0], f"the counts are not said: {said[0]}")
        return run

    a.attempt("monitor.step() twice per optimizer step: one warning with the counts", twice([2] * 6, 2))
    a.attempt("monitor.step() three times per optimizer step: one warning", twice([3] * 5, 3))

    def once() -> None:
        said = [w for w in trained([1] * 5) if "monitor.step() was called" in w]
        expect(not said, f"warned for correct use: {said}")

    a.attempt("monitor.step() once per optimizer step: no warning", once)

    def other_model() -> None:
        model, other = _bn_model(), _bn_model()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gradvet.Monitor(model, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
        said = [str(w.message) for w in caught if "none of the" in str(w.message)]
        expect(len(said) == 1, f"no warning that the optimizer holds none of the parameters: {[str(w.message) for w in caught]}")

    a.attempt("Monitor(optimizer=<another model's optimizer>): warns", other_model)

    class Growing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
            self.extra: Optional[nn.Module] = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return h if self.extra is None else self.extra(h)

    def grow(how: str) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(0)
            model = Growing()
            if how == "unfreeze":
                model.extra = nn.Linear(8, 2).requires_grad_(False)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with gradvet.Monitor(model, flush_every=2) as mon:
                    train(mon, model, 3, width=4)
                    if how == "add":
                        model.extra = nn.Linear(8, 2)
                    else:
                        model.extra.requires_grad_(True)  # type: ignore[union-attr]
                    train(mon, model, 6, width=4)
            said = [str(w.message) for w in caught if "not monitored" in str(w.message)]
            expect(len(said) == 1, f"{len(said)} warnings about the new layer, wanted one: {said}")
            expect("extra.weight" in said[0], f"the layer is not named: {said[0]}")
            expect(mon.run is not None and mon.run.steps.tolist() == list(range(9)), "steps lost")
        return run

    a.attempt("a layer added to the model mid-run: warned once, named", grow("add"))
    a.attempt("a frozen layer unfrozen mid-run: warned once, named", grow("unfreeze"))


def _amp_record(a: Audit) -> tuple[Path, int]:
    if not hasattr(a, "_amp"):
        p = a.tmp("amp") / "amp.gradvet"
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)  # overflows fp16 for the first steps
        with gradvet.Monitor(m, optimizer=opt, scaler=scaler, record=p, layer_every=1) as mon:
            for _ in range(40):
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = m(torch.randn(32, 8)).float().pow(2).mean()
                opt.zero_grad()
                scaler.scale(loss).backward()
                mon.step(loss)
                scaler.step(opt)
                scaler.update()
        run = gradvet.load(p)
        a._amp = (p, int(run.skipped.sum()))  # type: ignore[attr-defined]
    return a._amp  # type: ignore[attr-defined]


_AMP_READ = """
import sys, gradvet
from gradvet.html import write_report
run = gradvet.load(sys.argv[1])
r = run.report()
print(str(r)[:100])
write_report(sys.argv[1], sys.argv[2])
"""


def g_amp_warnings(a: Audit) -> None:
    p, skipped = _amp_record(a)

    def precondition() -> None:
        expect(skipped >= 3, f"the AMP run skipped only {skipped} steps: not the case of the issue")

    a.attempt(f"AMP record has overflowed steps ({skipped} skipped)", precondition)

    def in_process() -> None:
        from gradvet.html import write_report

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = gradvet.load(p)
            str(run.report())
            write_report(p, a.tmp("ampr") / "amp.html")
        expect(not caught, f"warnings: {[str(w.message) for w in caught]}")

    a.attempt("run.report()/str/write_report of an AMP run: no warnings", in_process)

    def stderr_clean(res: subprocess.CompletedProcess, codes: tuple[int, ...]) -> None:
        expect(res.returncode in codes, f"exit {res.returncode}: {short(res.stderr)}")
        expect(res.stderr.strip() == "", f"stderr: {short(res.stderr, 600)}")

    a.attempt("a user script reading an AMP run: empty stderr",
              lambda: stderr_clean(a.py(_AMP_READ, str(p), str(a.tmp("ampr") / "r.html")), (0,)))
    a.attempt("gradvet show <AMP run>: empty stderr", lambda: stderr_clean(a.cli("show", str(p)), (0, 1)))
    a.attempt("gradvet report <AMP run>: empty stderr",
              lambda: stderr_clean(a.cli("report", str(p), "-o", str(a.tmp("ampr") / "c.html")), (0,)))
    a.attempt("gradvet watch --once <AMP run>: empty stderr", lambda: stderr_clean(a.cli("watch", str(p), "--once"), (0,)))


def g_docs(a: Audit) -> None:
    def help_says() -> None:
        res = a.cli("check", "--help")
        text = " ".join(re.sub("[│╭╮╰╯─]", " ", res.stdout).split())
        expect(res.returncode == 0 and re.search(r"imported and run", text), f"check --help: {short(text)}")

    def readme_says() -> None:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        text = " ".join(readme.read_text().split())
        expect(re.search(r"imports? (that|the) file|imported and run", text) and "top-level code" in text,
               "README does not say the file is imported and its top-level code run")

    a.attempt("gradvet check --help says the file is imported and run", help_says)
    a.attempt("README says the file is imported and run", readme_says)


# =================================================================================================================
# handled well: a sample of what the first audit found right
# =================================================================================================================


def g_bad_args(a: Audit) -> None:
    ce = nn.functional.cross_entropy

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(5, 3), torch.randint(0, 2, (5,))

    x, y = batch()
    cases: list[tuple[str, type[BaseException], Callable[[], Any]]] = [
        ("check(<a function>)", TypeError, lambda: gradvet.check(lambda t: t, batch(), ce)),
        ("check(<the class nn.Linear>)", TypeError, lambda: gradvet.check(nn.Linear, batch(), ce)),
        ("check(<no parameters>)", ValueError, lambda: gradvet.check(nn.Sequential(nn.ReLU()), batch(), ce)),
        ("check(<all frozen>)", ValueError, lambda: gradvet.check(model().requires_grad_(False), batch(), ce)),
        ("check(batch=<a tensor>)", TypeError, lambda: gradvet.check(model(), x, ce)),
        ("check(batch=<3-tuple>)", TypeError, lambda: gradvet.check(model(), (x, y, y), ce)),
        ("check(loss_fn='cross_entropy')", TypeError, lambda: gradvet.check(model(), (x, y), "cross_entropy")),
        ("check(loss not scalar)", ValueError, lambda: gradvet.check(model(), (x, y), lambda o, t: ce(o, t, reduction="none"))),
        ("check(passes=0)", ValueError, lambda: gradvet.check(model(), (x, y), ce, passes=0)),
        ("check(profile='fast')", ValueError, lambda: gradvet.check(model(), (x, y), ce, profile="fast")),
        ("Monitor(<a function>)", TypeError, lambda: gradvet.Monitor(lambda t: t)),
        ("Monitor(<no parameters>)", ValueError, lambda: gradvet.Monitor(nn.Sequential(nn.ReLU()))),
        ("Monitor(optimizer=[])", ValueError, lambda: gradvet.Monitor(model(), optimizer=[])),
        ("Monitor(optimizer={})", TypeError, lambda: gradvet.Monitor(model(), optimizer={})),
        ("Monitor(scaler=1.0)", TypeError, lambda: gradvet.Monitor(model(), scaler=1.0)),
        ("Monitor(profile='fast')", ValueError, lambda: gradvet.Monitor(model(), profile="fast")),
        ("Monitor(profile=3)", TypeError, lambda: gradvet.Monitor(model(), profile=3)),
        ("Monitor(layer_every=0)", ValueError, lambda: gradvet.Monitor(model(), layer_every=0)),
        ("Monitor(flush_every=True)", ValueError, lambda: gradvet.Monitor(model(), flush_every=True)),
        ("Monitor(flush_seconds=0)", ValueError, lambda: gradvet.Monitor(model(), flush_seconds=0)),
        ("Monitor(saturation_threshold=1.0)", ValueError, lambda: gradvet.Monitor(model(), saturation_threshold=1.0)),
        ("Monitor(layers_every=5) (typo)", TypeError, lambda: gradvet.Monitor(model(), layers_every=5)),
        ("Monitor(record=3)", TypeError, lambda: gradvet.Monitor(model(), record=3)),
        ("Monitor(overwrite='yes')", TypeError, lambda: gradvet.Monitor(model(), overwrite="yes")),
    ]
    for label, exc, fn in cases:
        a.attempt(f"{label}: {exc.__name__}", lambda exc=exc, fn=fn: raises(exc, fn))

    def step_outside() -> None:
        m = model()
        mon = gradvet.Monitor(m)
        m(torch.randn(2, 3)).sum().backward()
        raises(gradvet.GradvetUsageError, mon.step, match="outside")

    def step_bad_loss() -> None:
        m = model()
        with gradvet.Monitor(m) as mon:
            out = m(torch.randn(5, 3))
            out.sum().backward()
            raises(ValueError, lambda: mon.step(out), match="scalar")
            raises(TypeError, lambda: mon.step("0.3"), match="scalar")

    def nested() -> None:
        mon = gradvet.Monitor(model())

        def enter_twice() -> None:
            with mon, mon:
                pass

        raises(gradvet.GradvetUsageError, enter_twice, match="already active")

    a.attempt("monitor.step() outside `with`: GradvetUsageError", step_outside)
    a.attempt("monitor.step(<non-scalar>/<str>): ValueError/TypeError", step_bad_loss)
    a.attempt("`with monitor, monitor:`: GradvetUsageError", nested)


def g_hooks(a: Audit) -> None:
    def mixed() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

    def body_raises(exc: type[BaseException]) -> Callable[[], None]:
        def run() -> None:
            model = mixed()
            before = hooks_of(model)
            mon = gradvet.Monitor(model, profile="full")
            try:
                with mon:
                    train(mon, model, 1)
                    model(torch.randn(2, 3))  # a forward in flight
                    raise exc("boom")
            except exc:
                pass
            expect(hooks_of(model) == before, "hooks left on the model")
            expect(str(mon.run.meta.get("status", "")).startswith("crashed"), f"status {mon.run.meta.get('status')!r}")
            expect(mon.run.steps.tolist() == [0], "the measured step was not kept")
        return run

    a.attempt("exception in the `with` body: hooks removed, status crashed", body_raises(RuntimeError))
    a.attempt("KeyboardInterrupt in the `with` body: hooks removed", body_raises(KeyboardInterrupt))

    def forward_raises() -> None:
        class Broken(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(3, 3)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                torch.sigmoid(self.fc(x))
                raise ValueError("bad shape")

        model = Broken()
        before = hooks_of(model)
        with contextlib.suppress(ValueError), gradvet.Monitor(model, profile="full"):
            model(torch.randn(2, 3))
        expect(hooks_of(model) == before, "hooks left on the model")
        expect(not torch.overrides._is_torch_function_mode_enabled(), "a TorchFunctionMode was left on")

    a.attempt("forward raises inside the model: hooks and function mode removed", forward_raises)

    def check_loss_raises() -> None:
        model = mixed()
        before = hooks_of(model)

        def bad(o: Any, t: Any) -> Any:
            raise KeyError("label")

        raises(KeyError, lambda: gradvet.check(model, (torch.randn(4, 3), None), bad))
        expect(hooks_of(model) == before, "hooks left on the model")
        expect(all(p.grad is None for p in model.parameters()), "grads left on the model")

    a.attempt("check with a raising loss_fn: the error propagates, no hooks/grads left", check_loss_raises)


def g_amp_exact(a: Audit) -> None:
    def case(poisoned: set[int], n: int = 6) -> Callable[[], None]:
        def run() -> None:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
            flag = {"on": False}
            model[0].weight.register_hook(lambda g: g * float("inf") if flag["on"] else g)
            scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            really = []
            with gradvet.Monitor(model, optimizer=opt, scaler=scaler, profile="full") as mon:
                for i in range(n):
                    flag["on"] = i in poisoned
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,)))
                    scaler.scale(loss).backward()
                    mon.step(loss)
                    w = model[2].weight.detach().clone()
                    scaler.step(opt)
                    scaler.update()
                    really.append(bool(torch.equal(w, model[2].weight)))
            got = mon.run.skipped.tolist()
            expect(got == really, f"recorded skipped {got}, the scaler skipped {really}")
            expect(mon.run.meta.get("final_loss_scale") == scaler.get_scale(), "final loss scale differs")
        return run

    a.attempt("AMP: one overflowed step (2 of 6) recorded as skipped, exactly", case({2}))
    a.attempt("AMP: steps 0, 3, 4 of 6 overflowed: exactly those skipped", case({0, 3, 4}))
    a.attempt("AMP: the last step overflowed: recorded as skipped", case({5}))


def g_html(a: Audit) -> None:
    from gradvet.html import write_report

    def html() -> str:
        out = a.tmp("html") / "r.html"
        write_report(_hostile_record(a), out)
        return out.read_text()

    def escapes() -> None:
        text = html()
        low = text.lower()
        expect("<script" not in low, "a <script> tag in the report")
        expect("<img src=x" not in low, "an injected <img> tag in the report")
        expect("&lt;script&gt;alert(1)&lt;/script&gt;" in text, "the <script> layer name is not shown escaped")

    def offline() -> None:
        text = html()
        low = text.lower()
        refs = re.findall(r'(?:src|href|action|data)\s*=\s*["\']([^"\']*)["\']', text, re.I)
        bad = [r for r in refs if not r.startswith(("#", "data:image/"))]
        expect(not bad, f"references outside the page: {bad[:5]}")
        for tag in ("<link", "<iframe", "<object", "<embed", "<script", "@import", "<meta http-equiv=\"refresh\""):
            expect(tag not in low, f"{tag} in the report")
        expect(not re.findall(r"url\((?!#)", text), "a CSS url() outside the page")

    a.attempt("HTML report escapes hostile layer names", escapes)
    a.attempt("HTML report loads nothing from the network", offline)


# =================================================================================================================

#: key -> (section, function); the order is the order run
GROUPS: dict[str, tuple[str, Callable[[Audit], None]]] = {
    "not_a_record": ("1", g_not_a_record),
    "special_files": ("1", g_special_files),
    "existing_record": ("1", g_existing_record),
    "reenter": ("1", g_reenter),
    "report_html": ("1", g_report_html),
    "two_writers": ("1", g_two_writers),
    "never_closed": ("1", g_never_closed),
    "chdir": ("1", g_chdir),
    "disk_full": ("1", g_disk_full),
    "damage_tables": ("2", g_damage_tables),
    "damage_random": ("2", g_damage_random),
    "kill": ("2", g_kill),
    "cli_exit": ("3", g_cli_exit),
    "markup": ("3", g_markup),
    "edge_check": ("4", g_edge_check),
    "edge_monitor": ("4", g_edge_monitor),
    "amp_warnings": ("4", g_amp_warnings),
    "docs": ("4", g_docs),
    "bad_args": ("ok", g_bad_args),
    "hooks": ("ok", g_hooks),
    "amp_exact": ("ok", g_amp_exact),
    "html": ("ok", g_html),
}


def run_audit(quick: bool = True, only: Optional[list[str]] = None, trials: Optional[dict[str, int]] = None,
              echo: bool = True) -> list[Result]:
    """Run the audit (or the groups named in ``only``) in a temporary directory; every attempt's result."""
    unknown = set(only or []) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown groups {sorted(unknown)}; choose from {list(GROUPS)}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gradvet-audit-") as d:
        audit = Audit(Path(d), quick, trials, echo)
        for key, (section, fn) in GROUPS.items():
            if only and key not in only:
                continue
            audit.group, audit.section = key, section
            t0 = time.monotonic()
            n0 = len(audit.results)
            try:
                fn(audit)
            except Exception as e:  # a group's set-up failed: one failed attempt says so
                tb = traceback.extract_tb(e.__traceback__)[-1]
                audit.add("set-up", False, f"{type(e).__name__}: {short(str(e))} (at line {tb.lineno})")
            if echo:
                new = audit.results[n0:]
                print(f"{key:16s} {sum(r.ok for r in new):4d}/{len(new):<4d} passed  {time.monotonic() - t0:6.1f} s",
                      file=sys.stderr, flush=True)
        return audit.results


def summary(results: list[Result]) -> dict[str, Any]:
    sections: dict[str, dict[str, int]] = {}
    for name in SECTIONS.values():
        rs = [r for r in results if r.section == name]
        if rs:
            sections[name] = {"attempts": len(rs), "passed": sum(r.ok for r in rs), "failed": sum(not r.ok for r in rs)}
    groups: dict[str, dict[str, int]] = {}
    for r in results:
        g = groups.setdefault(r.group, {"attempts": 0, "passed": 0, "failed": 0})
        g["attempts"] += 1
        g["passed" if r.ok else "failed"] += 1
    total = {"attempts": len(results), "passed": sum(r.ok for r in results), "failed": sum(not r.ok for r in results)}
    return {"sections": sections, "groups": groups, "total": total,
            "failures": [asdict(r) for r in results if not r.ok]}


def print_tables(s: dict[str, Any], wall: float, quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    t = Table(title=f"gradvet audit (issue 15){' --quick' if quick else ''}: {wall:.0f} s")
    for col in ("section", "attempts", "passed", "failed"):
        t.add_column(col, justify="left" if col == "section" else "right")
    for name, c in s["sections"].items():
        t.add_row(Text(name), str(c["attempts"]), str(c["passed"]), Text(str(c["failed"]), style="red" if c["failed"] else ""))
    tot = s["total"]
    t.add_section()
    t.add_row(Text("total", style="bold"), str(tot["attempts"]), str(tot["passed"]),
              Text(str(tot["failed"]), style="bold red" if tot["failed"] else "bold"))
    console.print(t)
    g = Table(title="by item")
    for col in ("item", "attempts", "passed", "failed"):
        g.add_column(col, justify="left" if col == "item" else "right")
    for name, c in s["groups"].items():
        g.add_row(Text(name), str(c["attempts"]), str(c["passed"]), str(c["failed"]))
    console.print(g)
    if s["failures"]:
        console.print(Text(f"{len(s['failures'])} failure(s):", style="bold red"))
        for f in s["failures"]:
            console.print(Text(f"- [{f['section']} / {f['group']}] {f['name']}\n    {f['detail']}"))
    else:
        console.print(Text("no failures", style="bold green"))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer random trials (about 3 minutes on 2 cores)")
    ap.add_argument("--only", default="", help=f"comma-separated groups to run: {','.join(GROUPS)}")
    ap.add_argument("--json", type=Path, help="write the numbers and failures here")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    results = run_audit(args.quick, [g for g in args.only.split(",") if g] or None)
    wall = time.monotonic() - t0
    s = summary(results)
    print_tables(s, wall, args.quick)
    if args.json:
        payload = {
            "quick": args.quick, "wall_s": round(wall, 1), "trials": {k: v[0] if args.quick else v[1] for k, v in TRIALS.items()},
            "gradvet": gradvet.__version__, "torch": torch.__version__, "python": sys.version.split()[0], **s,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if not s["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
