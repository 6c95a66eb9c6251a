"""Every scenario of the zoo gets the right verdict, the right kind and the right layer."""

import pytest

from gradvet.zoo import naive_verdict, run_scenario, scenarios, verdict_ok

SCENARIOS = scenarios(seeds=(0, 1))


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_verdict(sc):
    seed = int(sc.id.rsplit("-s", 1)[1])
    report = run_scenario(sc, seed)
    ok, why = verdict_ok(sc, report)
    assert ok, why


CHECK_ONLY = [s for s in SCENARIOS if s.train is None and s.id.endswith("-s0")]


@pytest.mark.parametrize("sc", CHECK_ONLY, ids=[s.id for s in CHECK_ONLY])
def test_same_verdict_under_a_monitor_training_loop(sc):
    """The Monitor loop of the README (default profile, 20 SGD steps) reaches the same verdict."""
    report = run_scenario(sc, 0, mode="monitor")
    ok, why = verdict_ok(sc, report)
    assert ok, why


def test_zoo_is_wide_and_beats_the_naive_detector():
    families = {s.family for s in SCENARIOS}
    assert len(SCENARIOS) >= 100
    assert sum(1 for s in SCENARIOS if s.healthy) >= 30
    assert len(families) >= 20
    naive = [naive_verdict(s, int(s.id.rsplit("-s", 1)[1])) for s in SCENARIOS]
    # the naive per-parameter-norm detector gets about two thirds right (the figure)
    assert 0.5 < sum(naive) / len(naive) < 0.8
