"""The command line's exit-code rule: 0 healthy, 1 findings, 2 anything else, with one line saying what
failed (issue 15, section 3). Each case here exited 1 with a traceback, or 0, before the rule."""

import os
import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import gradvet
import gradvet.html  # noqa: F401  (sys.modules entry patched below)
import gradvet.treat  # noqa: F401
from gradvet import _cli_guard
from gradvet.cli import app

runner = CliRunner()

FACTORIES = '''
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


def ok():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    return net, (torch.randn(16, 3), None), lambda out, y: out.pow(2).mean()
'''


@pytest.fixture()
def user(tmp_path):
    f = tmp_path / "user_models.py"
    f.write_text(FACTORIES)
    return f


def _text(res) -> str:
    """The output with typer's error panel drawn away: words joined by single spaces."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", res.output).split())


def _stderr_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["check", "treat"])
def test_a_forward_that_raises_exits_2_with_its_type_message_and_place(user, command):
    res = runner.invoke(app, [command, f"{user}:boom"])
    assert res.exit_code == 2
    line = _stderr_line(res)
    assert line.startswith(f"gradvet {command}: error: RuntimeError: kaput in forward")
    assert "(at user_models.py:12 in forward)" in line  # the user's line, not gradvet's or torch's
    assert "Traceback" not in res.output


def test_a_factory_returning_a_str_as_model_is_a_usage_error_not_an_attribute_error(user):
    res = runner.invoke(app, ["check", f"{user}:strmodel"])
    assert res.exit_code == 2
    assert "returned a str as the model" in _text(res) and "AttributeError" not in res.output
    res = runner.invoke(app, ["check", f"{user}:noloss"])
    assert res.exit_code == 2 and "returned a str as loss_fn" in _text(res)


def test_a_file_that_calls_sys_exit_0_at_import_is_not_healthy(tmp_path):
    f = tmp_path / "script.py"
    f.write_text("import sys\nsys.exit(0)\ndef f():\n    pass\n")
    for command in ("check", "treat"):
        res = runner.invoke(app, [command, f"{f}:f"])
        assert res.exit_code == 2, res.output
        assert "called sys.exit(0)" in _text(res) and "__main__" in _text(res)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "run.gradvet"
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with gradvet.Monitor(m, optimizer=opt, record=path) as mon:
        for _ in range(4):
            loss = m(torch.randn(8, 3)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            opt.step()
    return path


def test_report_never_writes_over_its_record_or_into_a_directory(record, tmp_path):
    before = record.read_bytes()
    res = runner.invoke(app, ["report", str(record), "-o", str(record)])
    assert res.exit_code == 2 and "its own record" in _text(res)
    assert record.read_bytes() == before
    res = runner.invoke(app, ["report", str(record), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in _text(res)
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(app, ["report", str(record), "-o", str(tmp_path / "afile" / "r.html")])
    assert res.exit_code == 2 and "is a file, not a directory" in _text(res)
    res = runner.invoke(app, ["report", str(record), "-o", str(tmp_path / "new" / "dir" / "r.html")])
    assert res.exit_code == 0 and (tmp_path / "new" / "dir" / "r.html").stat().st_size > 0  # made


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_report_to_a_full_disk_exits_2_naming_the_file(record):
    res = runner.invoke(app, ["report", str(record), "-o", "/dev/full"])
    assert res.exit_code == 2
    assert _stderr_line(res) == "gradvet report: error: could not read or write /dev/full: No space left on device"


def test_treat_refuses_an_unwritable_output_before_running_the_treatment(user, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(sys.modules["gradvet.treat"], "treat", lambda *a, **k: ran.append(1))
    res = runner.invoke(app, ["treat", f"{user}:ok", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in _text(res) and not ran
    # a read-only directory (tested through os.access: this suite may run as root, which ignores modes)
    real = os.access
    monkeypatch.setattr(_cli_guard.os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    res = runner.invoke(app, ["treat", f"{user}:ok", "-o", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "is not writable" in _text(res) and not ran


def test_watch_errors_are_usage_errors(record, tmp_path):
    res = runner.invoke(app, ["watch", str(record), "--interval", "0"])
    assert res.exit_code == 2 and "interval must be > 0" in _text(res)
    junk = tmp_path / "junk.gradvet"
    junk.write_bytes(b"not a record at all" * 10)
    for path in (tmp_path / "missing.gradvet", junk):
        res = runner.invoke(app, ["watch", str(path), "--once"])
        assert res.exit_code == 2 and "Traceback" not in res.output


def test_usage_error_text_never_carries_terminal_escapes(tmp_path):
    res = runner.invoke(app, ["check", "\x1b[2J\x1b]0;pwned\x07evil.py:f"])
    assert res.exit_code == 2 and "evil.py" in _text(res)
    assert "\x1b" not in res.output and "\x07" not in res.output  # shown as repr text, never sent raw
    f = tmp_path / "esc.py"
    f.write_text("def f():\n    raise RuntimeError('\\x1b]0;pwned\\x07bad\\x1b[2J thing')\n")
    res = runner.invoke(app, ["check", f"{f}:f"])
    assert res.exit_code == 2 and "RuntimeError: bad thing (at esc.py:2 in f)" in _text(res)
    assert "\x1b" not in res.output and "pwned" not in res.output

    @_cli_guard.guarded("x", None)
    def command():
        raise _cli_guard.typer.BadParameter("name \x1b[31mred\x1b[0m here")

    with pytest.raises(_cli_guard.typer.BadParameter) as info:
        command()
    assert info.value.message == "name red here"


def test_an_unexpected_internal_error_exits_2_with_one_line(record, monkeypatch):
    def broken(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(sys.modules["gradvet.html"], "write_report", broken)
    res = runner.invoke(app, ["report", str(record), "-o", str(record.with_suffix(".x.html"))])
    assert res.exit_code == 2
    assert _stderr_line(res).startswith("gradvet report: error: KeyError: 'surprise'")


def test_healthy_and_sick_keep_exit_codes_0_and_1(user):
    assert runner.invoke(app, ["check", f"{user}:ok"]).exit_code == 0
    sick = Path(__file__).resolve().parents[2] / "examples" / "sick.py"
    assert runner.invoke(app, ["check", f"{sick}:factory"]).exit_code == 1


def test_describe_names_the_innermost_user_frame():
    def user_code():
        return {}["k"]

    try:
        user_code()
    except KeyError as e:
        text = _cli_guard.describe(e)
    assert text.startswith("KeyError: 'k' (at test_cli_exit_codes.py:")
    assert text.endswith("in user_code)")
    assert sys.exc_info() == (None, None, None)


def test_treat_saves_a_model_whose_class_is_defined_in_the_users_file(tmp_path):
    """The audit's `treat -o` found it: the file was imported as `gradvet_user_<stem>`, which pickle could
    not import back, so saving a model of a class from that file raised PicklingError."""
    import subprocess

    src = tmp_path / "netdefs.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 2)\n\n"
        "    def forward(self, x):\n        return self.b(torch.relu(self.a(x)))\n\n\n"
        "def factory():\n    torch.manual_seed(0)\n"
        "    return Net(), (torch.randn(32, 4), torch.randint(0, 2, (32,))), torch.nn.functional.cross_entropy\n")
    out = tmp_path / "treated.pt"
    res = runner.invoke(app, ["treat", f"{src}:factory", "-o", str(out)])
    assert res.exit_code == 0, res.output
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); m = torch.load(sys.argv[2], weights_only=False); "
            "print(type(m).__module__, type(m).__name__, tuple(m(torch.zeros(1, 4)).shape))")
    got = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(out)], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["netdefs", "Net", "(1,", "2)"]
