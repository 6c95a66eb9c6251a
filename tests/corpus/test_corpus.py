"""Real architectures (torchvision, timm, transformers, PyTorch examples) get the right verdict.

Healthy cases are the libraries' own models at their own init: no warning, and ``treat``
leaves them alone. Sick cases are derived from them by one change; each is measured sick
by plain autograd (its ``verify``) before gradvet's verdict is compared.
"""

import pytest
import torch

import gradvet
from gradvet.corpus import Case, cases, run_case, verdict_ok

CASES = cases()
HEALTHY = [c for c in CASES if c.healthy]
SICK = [c for c in CASES if not c.healthy]


def _need(case: Case) -> None:
    if case.library != "torch":
        pytest.importorskip(case.library)


@pytest.mark.parametrize("case", HEALTHY, ids=[c.id for c in HEALTHY])
def test_healthy_model_has_no_warning(case):
    _need(case)
    ok, why = verdict_ok(case, run_case(case))
    assert ok, why


def _sickness_shown(case: Case, numbers: dict) -> str:
    """Empty when the plain-autograd numbers show the case's sickness, else why not."""
    if "first_over_last" in numbers:  # dL/d out of the first layer (or time step) over the last
        ratio = numbers["first_over_last"]
        if "vanishing_gradients" in case.expect and not ratio < 1e-2:
            return f"first/last = {ratio:.3g}, not < 1e-2"
        if "exploding_gradients" in case.expect and not ratio > 30:
            return f"first/last = {ratio:.3g}, not > 30"
        return ""
    if "nonfinite_grad_params" in numbers:
        return "" if numbers["nonfinite_grad_params"] > 0 and numbers["loss_finite"] == 0 else f"finite: {numbers}"
    if "dead_frac_fresh" in numbers:  # units killed in training: alive at init, off for every fresh input after
        if numbers["dead_frac_init"] < 0.5 <= min(numbers["dead_frac_last"], numbers["dead_frac_fresh"]):
            return ""
        return f"no units died in training: {numbers}"
    if "first_nonfinite_step" in numbers:  # a training run: NaN, or a loss that grows by orders of magnitude
        diverged = numbers["first_nonfinite_step"] >= 0 or numbers["max_over_first"] > 1e3
        if "nonfinite_gradients" in case.expect and numbers["first_nonfinite_step"] < 0:
            return f"the loss stayed finite: {numbers}"
        return "" if diverged else f"did not diverge: {numbers}"
    if "sat_frac" in numbers:  # saturated outputs of the named activation
        return "" if numbers["sat_frac"] >= 0.5 else f"sat_frac = {numbers['sat_frac']:.3g}, not >= 0.5"
    if "stalled_over_moving" in numbers:  # a layer whose gradient sits below its optimizer's eps
        ok = numbers["stalled_grad_max"] < numbers["eps"] and numbers["stalled_over_moving"] < 1e-2
        return "" if ok else f"not stalled: {numbers}"
    return f"unknown measurement {numbers}"


@pytest.mark.parametrize("case", SICK, ids=[c.id for c in SICK])
def test_sick_variant_is_sick_and_diagnosed(case):
    _need(case)
    assert case.verify is not None, "a sick case needs an independent measurement"
    numbers = case.verify(0)
    assert all(isinstance(v, float) for v in numbers.values()), numbers
    why_not = _sickness_shown(case, numbers)
    assert not why_not, f"the variant is not sick by plain autograd: {why_not}"
    ok, why = verdict_ok(case, run_case(case))
    assert ok, why


def _bit_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", HEALTHY, ids=[c.id for c in HEALTHY])
def test_treat_leaves_a_healthy_model_alone(case):
    _need(case)
    model, batch, loss_fn = case.build(0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = gradvet.treat(model, batch, loss_fn, )
    assert result.applied == [], f"remedies applied to a healthy model: {[r.id for r in result.applied]}"
    assert [a.outcome for a in result.attempts if a.outcome == "kept"] == []
    assert _bit_equal(result.model.state_dict(), before)
    assert _bit_equal(model.state_dict(), before)


def test_corpus_is_wide():
    assert len(HEALTHY) >= 40
    assert len(SICK) >= 15
    assert len({c.library for c in CASES}) >= 3
    assert {"encoder", "decoder", "encoder-decoder", "cnn", "vit", "rnn"} <= {c.family for c in CASES}
    assert len({c.id for c in CASES}) == len(CASES)
    for c in SICK:
        assert c.layers and c.verify is not None and set(c.expect) <= set(gradvet.KINDS), c.id


def test_verdict_ok_reads_severity_and_layers():
    from gradvet.findings import Finding
    from gradvet.report import Report

    sick = next(c for c in SICK if c.expect == ("vanishing_gradients",))
    named = Report(findings=[Finding("vanishing_gradients", "error", [sick.layers[0]], "x")])
    elsewhere = Report(findings=[Finding("vanishing_gradients", "error", ["nowhere"], "x")])
    info = Report(findings=[Finding("vanishing_gradients", "info", [sick.layers[0]], "x")])
    assert verdict_ok(sick, named)[0]
    assert not verdict_ok(sick, elsewhere)[0]
    assert not verdict_ok(sick, info)[0]
    assert verdict_ok(HEALTHY[0], info)[0]
    assert not verdict_ok(HEALTHY[0], named)[0]
