"""`gradvet.treat`: remedies are kept only when a re-check measures them better, and the
verdict it returns is the re-check of the model it returns."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

import gradvet
from gradvet.findings import Finding, Remedy
from gradvet.report import LayerReport, Report
from gradvet.treat import badness, ranked_remedies
from gradvet.zoo import NanNet, SeqModel, adding_problem, digits

ROOT = Path(__file__).resolve().parents[2]


def sigmoid_mlp(depth: int = 10, width: int = 64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def first_layer_grad(model: nn.Module, batch) -> float:
    """Plain-autograd reference: ||dL/dW|| of the first Linear."""
    model = copy.deepcopy(model)
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return float(first.weight.grad.norm())


def sgd_loss(model: nn.Module, batch, steps: int = 60) -> float:
    torch.manual_seed(0)
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    x, y = batch
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss.detach())


@pytest.fixture(scope="module")
def sick_treated():
    model, batch = sigmoid_mlp(), digits(256)
    original = copy.deepcopy(model.state_dict())
    result = gradvet.treat(model, batch, F.cross_entropy)
    return model, batch, original, result


def test_deep_sigmoid_net_is_healed_and_verdict_is_measured(sick_treated) -> None:
    model, batch, _, result = sick_treated
    assert "vanishing_gradients" in result.before.kinds()
    assert result.healthy and result.after.healthy
    assert result.applied and result.applied[0].id.startswith("activation:")
    assert all(a.outcome in ("kept", "reverted", "no change", "not applicable", "failed") for a in result.attempts)
    assert [r.id for r in result.applied] == [a.remedy for a in result.attempts if a.outcome == "kept"]
    # the verdict is a re-check of the returned model, not a claim: check it again independently
    again = gradvet.check(result.model, batch, F.cross_entropy)
    assert again.healthy
    # and the gradient reaching the first layer grew by orders of magnitude (plain autograd)
    g0, g1 = first_layer_grad(model, batch), first_layer_grad(result.model, batch)
    assert g1 / g0 > 1e3, (g0, g1)
    # no sigmoid left in the treated copy
    assert not any(isinstance(m, nn.Sigmoid) for m in result.model.modules())


def test_original_is_untouched_by_default(sick_treated) -> None:
    model, _, original, result = sick_treated
    assert result.model is not model
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 9
    for k, v in model.state_dict().items():
        assert torch.equal(v, original[k]), k


def test_treated_model_trains_to_lower_loss(sick_treated) -> None:
    model, batch, _, result = sick_treated
    untreated, treated = sgd_loss(model, batch), sgd_loss(result.model, batch)
    assert untreated > 2.0  # chance is ln 10 = 2.30: the sick net learns nothing
    assert treated < 0.5 * untreated, (untreated, treated)


def test_inplace_edits_the_model_to_equal_the_treated_copy() -> None:
    model, batch = sigmoid_mlp(depth=8, seed=1), digits(128)
    result = gradvet.treat(model, batch, F.cross_entropy, inplace=True)
    assert result.model is model
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())
    assert result.healthy and gradvet.check(model, batch, F.cross_entropy).healthy


def test_healthy_model_is_left_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    batch = digits(128)
    result = gradvet.treat(model, batch, F.cross_entropy)
    assert result.before.healthy and result.healthy
    assert result.attempts == [] and result.applied == []
    assert result.model is not model
    for p, q in zip(model.parameters(), result.model.parameters()):
        assert torch.equal(p, q)


def test_explicit_remedies_are_tried_in_the_given_order() -> None:
    model, batch = sigmoid_mlp(depth=8, seed=2), digits(128)
    result = gradvet.treat(model, batch, F.cross_entropy, remedies=["init:reset_bias", "activation:relu",
                                                                    "init:kaiming"])
    tried = [a.remedy for a in result.attempts]
    assert tried == ["init:reset_bias", "activation:relu", "init:kaiming"][: len(tried)]
    # resetting biases does not cure vanishing through sigmoids: measured, and reverted
    first = result.attempts[0]
    assert first.remedy == "init:reset_bias"
    if first.outcome == "reverted":
        assert first.badness_after > first.badness_before - 0.25
        assert "init:reset_bias" not in [r.id for r in result.applied]


def test_exploding_rnn_is_treated_by_reinitialising_the_recurrence() -> None:
    torch.manual_seed(0)
    model = SeqModel("RNN", init="orthogonal", gain=3.0)
    batch = adding_problem(64, 50, 0)
    result = gradvet.treat(model, batch, F.mse_loss)
    assert "exploding_gradients" in result.before.kinds()
    assert "exploding_gradients" not in result.after.kinds()
    assert any(r.id.startswith("init:") for r in result.applied)
    assert badness(result.after) < badness(result.before)


def test_nan_born_in_forward_is_guarded_and_the_verdict_measured() -> None:
    torch.manual_seed(0)
    model, batch = NanNet(), digits(64)
    result = gradvet.treat(model, batch, F.cross_entropy)
    assert "nonfinite_gradients" in result.before.kinds()
    assert [r.id for r in result.applied] == ["guard:domain"]
    assert [(c.module, c.what) for c in result.applied[0].changes] == [("log", "wrap")]
    recheck = gradvet.check(result.model, batch, F.cross_entropy)
    assert result.healthy and recheck.healthy and result.after.kinds() == recheck.kinds()
    assert not isinstance(model.log, gradvet.remedies.DomainGuard), "the original is left untouched"


def test_bad_arguments_raise_clear_errors() -> None:
    model, batch = sigmoid_mlp(depth=3), digits(32)
    with pytest.raises(ValueError, match="clip:norm"):
        gradvet.treat(model, batch, F.cross_entropy, remedies=["clip:norm"])
    with pytest.raises(TypeError, match="list of ids"):
        gradvet.treat(model, batch, F.cross_entropy, remedies="activation:relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_remedies"):
        gradvet.treat(model, batch, F.cross_entropy, max_remedies=-1)
    with pytest.raises(TypeError):
        gradvet.treat("not a model", batch, F.cross_entropy)  # type: ignore[arg-type]


# -- the pure parts -------------------------------------------------------------------
def _report(findings, rms) -> Report:
    layers = [LayerReport(name=str(i), type="Linear", role="param", signal_rms=v) for i, v in enumerate(rms)]
    return Report(findings=findings, layers=layers)


def test_badness_counts_severity_and_decades() -> None:
    err = Finding("vanishing_gradients", "error", ["0"], "", [], [])
    warn = Finding("dead_units", "warning", ["1"], "", [], [])
    info = Finding("nonfinite_gradients", "info", [], "")
    assert badness(_report([], [1e-3, 1e-3])) == pytest.approx(0.0)
    assert badness(_report([], [1e-9, 1e-3, None, 0.0])) == pytest.approx(6.0)
    assert badness(_report([err, warn, info], [1e-2, 1.0])) == pytest.approx(10 + 3 + 2)
    rnn = Report(layers=[LayerReport("rnn", "RNN", "recurrent", time_profile=[1e-8, 1e-4, 1.0])])
    assert badness(rnn) == pytest.approx(8.0)
    nan = Report(loss=math.nan)
    assert badness(nan) == pytest.approx(10.0)


def test_ranked_remedies_orders_by_finding_then_score_without_repeats() -> None:
    a = Finding("vanishing_gradients", "error", ["0"], "", [],
                [Remedy("init:kaiming", "", "", 0.5), Remedy("activation:relu", "", "", 0.9)])
    b = Finding("dead_units", "warning", ["1"], "", [],
                [Remedy("init:kaiming", "", "", 0.9), Remedy("init:reset_bias", "", "", 0.8)])
    c = Finding("saturated_units", "info", ["1"], "", [], [Remedy("norm:batch", "", "", 1.0)])
    ids = [r.id for r in ranked_remedies(Report(findings=[a, b, c]))]
    assert ids == ["activation:relu", "init:kaiming", "init:reset_bias"]


# -- CLI ------------------------------------------------------------------------------
def test_cli_treat_heals_the_sick_example_and_saves_it(tmp_path: Path) -> None:
    from gradvet.cli import app

    out = tmp_path / "treated.pt"
    res = CliRunner().invoke(app, ["treat", str(ROOT / "examples/sick.py:factory"), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["healthy"] is True and data["before"]["healthy"] is False
    assert data["applied"] and data["applied"][0]["changes"]
    treated = torch.load(out, weights_only=False)
    assert not any(isinstance(m, nn.Sigmoid) for m in treated.modules())


def test_cli_treat_prints_before_after_table() -> None:
    from gradvet.cli import app

    res = CliRunner().invoke(app, ["treat", str(ROOT / "examples/sick.py:factory")], terminal_width=160)
    assert res.exit_code == 0, res.output
    assert "remedies tried" in res.output and "kept" in res.output
    assert "before:" in res.output and "after:" in res.output and "healthy" in res.output


def test_cli_treat_rejects_unknown_remedy() -> None:
    from gradvet.cli import app

    res = CliRunner().invoke(app, ["treat", str(ROOT / "examples/sick.py:factory"), "--remedy", "magic"])
    assert res.exit_code == 2
    assert "magic" in res.output


# -- the catalogue the diagnosis prescribes from --------------------------------------
def test_every_catalogue_id_is_a_model_remedy_or_a_training_loop_change() -> None:
    from gradvet.diagnosis._prescribe import CATALOGUE
    from gradvet.remedies import MODEL_REMEDIES

    loop_only = {"clip:agc", "clip:autoclip", "clip:norm", "clip:value", "data:filter_nonfinite", "data:normalize",
                 "lr:lower", "optim:adagrad", "optim:adam", "optim:eps", "optim:param_groups", "optim:rmsprop",
                 "optim:weight_decay", "skip_nonfinite"}
    assert set(MODEL_REMEDIES) <= set(CATALOGUE)
    assert set(CATALOGUE) - set(MODEL_REMEDIES) == loop_only


@pytest.mark.parametrize("rid", ["clip:norm", "clip:value", "clip:autoclip", "clip:agc", "skip_nonfinite"])
def test_transform_snippets_construct_gradvet_transforms(rid: str) -> None:
    from gradvet.diagnosis._prescribe import CATALOGUE
    from gradvet.remedies import GradientTransform

    first_line = CATALOGUE[rid][1].splitlines()[0]
    ns: dict = {"gradvet": gradvet}
    exec(first_line, ns)
    obj = ns.get("clip", ns.get("guard"))
    assert isinstance(obj, GradientTransform)
    model = nn.Linear(4, 2)
    F.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 2)).backward()
    obj(list(model.parameters()))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("rid", ["init:lsuv", "init:chrono"])
def test_batch_snippets_apply(rid: str) -> None:
    from gradvet.diagnosis._prescribe import CATALOGUE

    torch.manual_seed(0)
    if rid == "init:chrono":
        model, batch = SeqModel("LSTM"), adding_problem(16, 30, 0)
    else:
        model, batch = sigmoid_mlp(depth=4), digits(64)
    ns: dict = {"gradvet": gradvet, "model": model, "batch": batch}
    exec(CATALOGUE[rid][1], ns)
    assert ns["model"] is not model


# -- the zoo, treated (the full table: scripts/treat_zoo.py, docs/treatment.md) --------
ZOO_CASES = {
    "vanish-cnn-sigmoid-d8-s0": "activation:relu",
    "explode-depth-tanh-g3.0-d25-s0": "init:xavier",
    "dead-relu-bias-5.0-L2-s0": "activation:leaky_relu",
    "saturated-sigmoid-x50.0-s0": "norm:batch",
    "vanish-time-LSTM-T60-s0": "init:chrono",
    "vanish-relu-xavier-d40-s0": "residual",
    "vanish-time-RNN-T50-s0": "arch:gated_rnn",
    "nan-log-layer-s0": "guard:domain",
}


@pytest.mark.parametrize("sid", sorted(ZOO_CASES))
def test_zoo_scenarios_are_healed(sid: str) -> None:
    from gradvet.zoo import scenarios

    (sc,) = [s for s in scenarios((0,)) if s.id == sid]
    model, batch, loss_fn = sc.build(0)
    result = gradvet.treat(model, batch, loss_fn)
    assert set(sc.expect) <= set(result.before.kinds())
    assert result.healthy, [(a.remedy, a.outcome, a.reason) for a in result.attempts]
    assert ZOO_CASES[sid] in [r.id for r in result.applied]
    assert badness(result.after) < badness(result.before)


def test_cli_treat_rejects_a_bad_device() -> None:
    from gradvet.cli import app

    res = CliRunner().invoke(app, ["treat", str(ROOT / "examples/sick.py:factory"), "--device", "tpu"])
    assert res.exit_code == 2
    assert "--device must be cpu or cuda" in res.output


def test_a_failing_remedy_is_recorded_and_the_treatment_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradvet.remedies import MODEL_REMEDIES

    def broken(model, *, batch=None, **kw):
        raise RuntimeError("boom")

    monkeypatch.setitem(MODEL_REMEDIES, "activation:relu", broken)
    model, batch = sigmoid_mlp(depth=8, seed=3), digits(128)
    result = gradvet.treat(model, batch, F.cross_entropy, remedies=["activation:relu", "norm:batch"])
    first = result.attempts[0]
    assert (first.remedy, first.outcome) == ("activation:relu", "failed") and "boom" in first.reason
    assert result.attempts[1].remedy == "norm:batch" and result.attempts[1].outcome == "kept"
    assert result.healthy


# -- non-finite weights ---------------------------------------------------------------
def test_reinit_nonfinite_resets_only_the_broken_layer() -> None:
    from gradvet.remedies import RemedyNotApplicable, apply_remedy
    from gradvet.zoo import InfWeightNet

    torch.manual_seed(0)
    model = InfWeightNet()
    res = apply_remedy("init:reset_nonfinite", model)
    assert [c.module for c in res.changes] == ["fc2"] and "1 non-finite" in res.changes[0].old
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    for name in ("fc1", "fc3"):  # untouched, bit for bit
        for p, q in zip(getattr(model, name).parameters(), getattr(res.model, name).parameters()):
            assert torch.equal(p, q)
    assert not apply_remedy("init:reset_nonfinite", res.model, inplace=True)  # idempotent
    with pytest.raises(RemedyNotApplicable, match="every parameter is finite"):
        apply_remedy("init:reset_nonfinite", nn.Linear(2, 2))


def test_nonfinite_weights_are_named_and_treated() -> None:
    from gradvet.zoo import InfWeightNet

    torch.manual_seed(0)
    model, batch = InfWeightNet(), digits(64)
    report = gradvet.check(model, batch, F.cross_entropy)
    f = report.finding("nonfinite_gradients")
    assert f is not None and f.remedies[0].id == "init:reset_nonfinite"
    assert f.causes[0].id == "nonfinite_weights" and "fc2.weight" in f.causes[0].reason
    result = gradvet.treat(model, batch, F.cross_entropy)
    assert result.healthy and [r.id for r in result.applied] == ["init:reset_nonfinite"]
    assert math.isfinite(sgd_loss(result.model, batch, steps=20))


# -- the catalogue on the command line ------------------------------------------------
def test_cli_remedies_lists_every_catalogue_id_with_its_kind() -> None:
    from gradvet.cli import app
    from gradvet.diagnosis._prescribe import CATALOGUE
    from gradvet.remedies import MODEL_REMEDIES

    res = CliRunner().invoke(app, ["remedies", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert {r["id"] for r in rows} == set(CATALOGUE)
    kinds = {r["id"]: r["kind"] for r in rows}
    assert all(kinds[rid] == "model edit" for rid in MODEL_REMEDIES)
    assert kinds["clip:agc"] == "gradient transform" and kinds["optim:rmsprop"] == "optimizer"
    assert kinds["data:normalize"] == "data"
    edits = [r["kind"] == "model edit" for r in rows]
    assert edits == sorted(edits, reverse=True), "model edits come first"
    res = CliRunner().invoke(app, ["remedies", "--kind", "optimizer", "--json"])
    assert {r["id"] for r in json.loads(res.output)} == {"lr:lower", "optim:adagrad", "optim:adam", "optim:eps",
                                                        "optim:param_groups", "optim:rmsprop", "optim:weight_decay"}
    res = CliRunner().invoke(app, ["remedies", "--kind", "magic"])
    assert res.exit_code == 2 and "--kind must be one of" in res.output
    res = CliRunner().invoke(app, ["remedies"])
    assert res.exit_code == 0 and "arch:gated_rnn" in res.output and "Bachlechner" in res.output


@pytest.mark.parametrize("rid", ["optim:rmsprop", "optim:adagrad", "optim:adam"])
def test_optimizer_snippets_build_a_torch_optimizer(rid: str) -> None:
    from gradvet.diagnosis._prescribe import CATALOGUE

    ns: dict = {"torch": torch, "model": nn.Linear(4, 2)}
    exec(CATALOGUE[rid][1], ns)
    assert isinstance(ns["opt"], torch.optim.Optimizer)


# -- treat with a training probe: sickness that only shows in training ---------------
def _explode_lr_case(seed: int = 0):
    from gradvet.zoo import scenarios

    (sc,) = [s for s in scenarios((seed,)) if s.id == f"explode-lr-3.0-s{seed}"]
    model, batch, loss_fn = sc.build(seed)
    return model, batch, loss_fn, sc.optimizer, sc.steps


def _losses(model, batch, loss_fn, make_opt, steps):
    """Plain-PyTorch reference loop: the losses of ``steps`` steps on the batch."""
    model = copy.deepcopy(model)
    opt = make_opt(model)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        out.append(float(loss.detach()))
        loss.backward()
        opt.step()
    return out


def test_treat_with_an_optimizer_heals_a_learning_rate_that_makes_training_explode() -> None:
    model, batch, loss_fn, make_opt, steps = _explode_lr_case()
    before_state = copy.deepcopy(model.state_dict())
    assert gradvet.check(model, batch, loss_fn).healthy, "one batch at init sees nothing"
    result = gradvet.treat(model, batch, loss_fn, optimizer=make_opt, steps=steps)
    assert "exploding_gradients" in result.before.kinds()
    assert [r.id for r in result.applied] == ["norm:batch"] and result.healthy
    # the returned model is the treated *initial* model: the probes trained copies, not it
    expected = gradvet.remedies.apply_remedy("norm:batch", model).model.state_dict()
    got = result.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before_state.items())
    # independent of gradvet's measurements: the same SGD(lr=3) diverges untreated and trains treated
    plain = _losses(model, batch, loss_fn, make_opt, steps)
    treated = _losses(result.model, batch, loss_fn, make_opt, steps)
    assert not all(math.isfinite(v) for v in plain)
    assert all(math.isfinite(v) for v in treated) and treated[-1] < 0.05 * treated[0]


def test_treat_with_an_optimizer_leaves_loop_only_sickness_to_prescriptions() -> None:
    from gradvet.zoo import scenarios

    (sc,) = [s for s in scenarios((0,)) if s.id == "stalled-lr-s0"]
    model, batch, loss_fn = sc.build(0)
    result = gradvet.treat(model, batch, loss_fn, optimizer=sc.optimizer, steps=sc.steps)
    assert "stalled_layers" in result.before.kinds() and not result.healthy
    assert result.applied == [] and "optim:param_groups" in [r.id for r in result.prescriptions]


def test_probe_trains_a_copy_and_reports_the_run() -> None:
    from gradvet.treat import probe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    state = copy.deepcopy(model.state_dict())
    report = probe(model, digits(128), F.cross_entropy, lambda m: torch.optim.SGD(m.parameters(), lr=0.1), steps=5)
    assert report.healthy and report.steps == 5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        probe(model, digits(16), F.cross_entropy, lambda m: "sgd", steps=2)


def test_treat_optimizer_arguments_are_checked() -> None:
    model, batch = sigmoid_mlp(depth=3), digits(32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="function that builds an optimizer"):
        gradvet.treat(model, batch, F.cross_entropy, optimizer=opt)  # type: ignore[arg-type]
    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        gradvet.treat(model, batch, F.cross_entropy, optimizer=make, steps=0)
    with pytest.raises(ValueError, match="takes only profile="):
        gradvet.treat(model, batch, F.cross_entropy, optimizer=make, passes=2)
    with pytest.raises(TypeError):
        gradvet.treat(model, "not a batch", F.cross_entropy, optimizer=make)


def test_cli_treat_with_an_optimizer_diagnoses_a_training_run(tmp_path: Path) -> None:
    from gradvet.cli import app

    script = tmp_path / "hot.py"
    script.write_text(
        "import torch\nfrom torch.nn import functional as F\nfrom gradvet.zoo import digits, mlp\n"
        "def factory():\n    torch.manual_seed(0)\n    return mlp(4, 'relu', 64, 'he'), digits(256), F.cross_entropy\n"
    )
    res = CliRunner().invoke(app, ["treat", f"{script}:factory", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["applied"] == [], "healthy on one batch"
    res = CliRunner().invoke(app, ["treat", f"{script}:factory", "--optimizer", "sgd", "--lr", "3.0",
                                   "--steps", "40", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert "exploding_gradients" in [f["kind"] for f in out["before"]["findings"]]
    assert [a["id"] for a in out["applied"]] == ["norm:batch"] and out["healthy"]
    res = CliRunner().invoke(app, ["treat", f"{script}:factory", "--optimizer", "lbfgs", "--lr", "1"])
    assert res.exit_code == 2 and "--optimizer must be one of" in res.output
    res = CliRunner().invoke(app, ["treat", f"{script}:factory", "--optimizer", "sgd"])
    assert res.exit_code == 2 and "positive --lr" in res.output
