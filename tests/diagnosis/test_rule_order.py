"""The rules run in one fixed order, whatever module was imported first.

Registration order is import order: a test that imported ``gradvet.diagnosis._units`` before anything
else made the dead/saturated rules run first, and ``treat`` of the demo's sigmoid MLP then tried (and kept)
``activation:leaky_relu`` after ``activation:relu`` (CI failed on tests/lab/test_demo.py that way).
"""

from __future__ import annotations

import subprocess
import sys

from gradvet.diagnosis import _engine
from gradvet.diagnosis._rules import ORDER
from gradvet.record._run import Run


def test_rules_run_in_order_whatever_the_registration_order(monkeypatch) -> None:
    ran: list[str] = []

    def recorder(name):
        return lambda run: ran.append(name) or []

    shuffled = {name: recorder(name) for name in reversed(ORDER)}
    shuffled["a_plugin_rule"] = recorder("a_plugin_rule")
    monkeypatch.setattr(_engine, "RULES", shuffled)
    _engine.diagnose(Run())
    assert ran == [*ORDER, "a_plugin_rule"]


def test_treat_of_the_demo_model_does_not_depend_on_import_order() -> None:
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "if sys.argv[1] == '1':\n"
        "    import gradvet.diagnosis._units\n"
        "from gradvet.demo import treat_model\n"
        "print([a.remedy for a in treat_model(0)[1].attempts if a.outcome == 'kept'])\n"
    )
    out = [subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True).stdout
           for flag in ("0", "1")]
    assert out[0] == out[1] == "['activation:relu', 'init:kaiming']\n"
