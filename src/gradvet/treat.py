"""``gradvet.treat``: diagnose, apply the ranked remedies one at a time, measure again.

Each remedy the diagnosis ranks is tried on a copy of the model and re-checked on
the same batch; it is kept only when the re-check is measurably better (fewer or
milder findings, or a gradient signal that spans fewer decades across layers or
time steps), and the loop stops as soon as the re-check is healthy. A remedy that
does not pay off alone gets one chance in a pair with the re-check's next remedy
(an RNN swapped for a GRU still vanishes until its gate biases are set), kept
only if the pair beats that next remedy alone. Nothing is
reported as fixed that was not measured: ``result.after`` is the re-check of the
returned model, and ``result.healthy`` is its verdict.

Remedies that change the training loop rather than the model (clipping, learning
rate, optimizer, data) are never applied silently; the ones that still matter
after treatment are returned in ``result.prescriptions`` with their snippets.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from gradvet._validate import require_module, split_batch
from gradvet.check import check
from gradvet.errors import GradvetUsageError
from gradvet.findings import Remedy
from gradvet.report import Report

log = logging.getLogger(__name__)

_SEVERITY_COST = {"error": 10.0, "warning": 3.0, "info": 0.0}
_MIN_GAIN = 0.25  # a remedy must lower the badness by this much to be kept


@dataclass(frozen=True)
class Attempt:
    """One remedy tried by :func:`treat`.

    Attributes:
        remedy: the remedy id.
        outcome: ``"kept"``, ``"reverted"`` (re-check not better), ``"no change"``
            (already applied), ``"not applicable"`` or ``"failed"`` (the remedy or the
            re-check of its result raised; the model is left as it was).
        reason: why (the remedy's refusal, or the badness before -> after).
        badness_before, badness_after: the score compared (see :func:`badness`).
        kinds_after: finding kinds of the re-check (empty when not measured).
    """

    remedy: str
    outcome: str
    reason: str = ""
    badness_before: Optional[float] = None
    badness_after: Optional[float] = None
    kinds_after: tuple[str, ...] = ()


@dataclass
class TreatResult:
    """What :func:`treat` did and measured.

    Attributes:
        model: the treated model (a copy unless ``inplace=True``).
        applied: the kept remedies, each a ``gradvet.remedies.RemedyResult`` listing
            what it changed (module, old -> new).
        attempts: every remedy tried, in order, with its outcome.
        before, after: the reports of the original and of the treated model.
        prescriptions: training-loop remedies (clipping, learning rate, optimizer,
            data) for the findings that remain, to apply by hand.
    """

    model: nn.Module
    applied: list[Any]
    attempts: list[Attempt]
    before: Report
    after: Report
    prescriptions: list[Remedy] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """The re-check's verdict on the treated model."""
        return self.after.healthy

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from gradvet._render_treat import render_treat

        yield render_treat(self)


def _spread(values: Sequence[Optional[float]]) -> float:
    """Decades between the largest and the smallest finite positive value."""
    logs = [math.log10(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    return max(logs) - min(logs) if len(logs) >= 2 else 0.0


def badness(report: Report) -> float:
    """A score to compare re-checks of the same model: lower is healthier.

    10 per error and 3 per warning finding, plus the number of decades spanned by
    the gradient signal ``||dL/d out||`` (per element) across the parameterised
    layers, plus the decades spanned by each recurrent layer's per-time-step
    profile. A non-finite loss or signal counts as an error.
    """
    score = sum(_SEVERITY_COST.get(f.severity, 0.0) for f in report.findings)
    params = [layer for layer in report.layers if layer.role == "param"]
    score += _spread([layer.signal_rms for layer in params])
    for layer in report.layers:
        if layer.time_profile:
            score += _spread(layer.time_profile)
    if report.loss is not None and not math.isfinite(report.loss):
        score += _SEVERITY_COST["error"]
    return score


def ranked_remedies(report: Report) -> list[Remedy]:
    """The remedies of ``report``'s warning/error findings, most severe finding first,
    each finding's remedies by score, each id once."""
    seen: set[str] = set()
    out: list[Remedy] = []
    for finding in report.findings:
        if finding.severity == "info":
            continue
        for rem in sorted(finding.remedies, key=lambda r: -r.score):
            if rem.id not in seen:
                seen.add(rem.id)
                out.append(rem)
    return out


def probe(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    steps: int = 40,
    profile: Any = None,
) -> Report:
    """Diagnose a short training run: ``steps`` optimizer steps on ``batch`` under a Monitor, on a copy.

    What a one-batch :func:`gradvet.check` cannot see (a learning rate that makes training
    explode, a layer that never moves) shows here. ``model`` itself is not trained.

    Args:
        model: the model (deep-copied; the copy is trained).
        batch: ``(inputs, targets)``; every step uses this batch.
        loss_fn: ``loss_fn(model(inputs), targets)`` is a scalar.
        optimizer: builds the optimizer for a model, e.g.
            ``lambda m: torch.optim.SGD(m.parameters(), lr=0.1)``.
        steps: training steps; the run stops early after a non-finite loss.
        profile: the Monitor's measurement profile (default: its default).

    Returns:
        The Monitor's :class:`gradvet.Report`.
    """
    from gradvet.check import call_model
    from gradvet.monitor import Monitor

    copy_ = copy.deepcopy(model).train()
    opt = optimizer(copy_)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer must build a torch.optim.Optimizer from the model, got {type(opt).__name__}")
    inputs, targets = split_batch(batch, "probe")
    with Monitor(copy_, optimizer=opt, **({"profile": profile} if profile is not None else {})) as monitor:
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(call_model(copy_, inputs), targets)
            loss.backward()
            monitor.step(loss)
            if not bool(torch.isfinite(loss.detach())):  # sync-ok: once per probe step, CPU-side decision
                break
            opt.step()
    return monitor.report()


def treat(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    remedies: Optional[Sequence[str]] = None,
    max_remedies: int = 6,
    inplace: bool = False,
    optimizer: Optional[Callable[[nn.Module], torch.optim.Optimizer]] = None,
    steps: int = 40,
    **check_kwargs: Any,
) -> TreatResult:
    """Diagnose ``model``, apply the ranked remedies until the re-check is healthy.

    Args:
        model: the model to treat.
        batch: ``(inputs, targets)``, as for :func:`gradvet.check`; also the data batch
            for data-dependent remedies (LSUV, chrono init).
        loss_fn: ``loss_fn(model(inputs), targets)`` is a scalar.
        remedies: remedy ids to try, in this order, instead of the diagnosis's ranking
            (e.g. ``["activation:relu", "init:kaiming"]``).
        max_remedies: at most this many remedies are tried.
        inplace: edit ``model`` itself (its modules and parameters end up identical to
            the treated copy); by default the original is left untouched.
        optimizer: with it, every diagnosis (before, and after each remedy) is a short
            training run instead of one batch (:func:`probe`: ``steps`` steps of this
            optimizer on ``batch``, on a copy), so sickness that only shows in training (a
            learning rate that makes it explode) is treated too. Builds the optimizer from
            a model, e.g. ``lambda m: torch.optim.SGD(m.parameters(), lr=0.1)``; remedies that
            add or rename modules get a fresh optimizer over the new model's parameters.
        steps: training steps of each probe (with ``optimizer``).
        **check_kwargs: passed to :func:`gradvet.check` (``passes``, ``profile``, ``train``);
            with ``optimizer``, only ``profile`` (the Monitor's).

    Returns:
        A :class:`TreatResult`; ``result.after`` is the measured re-check of ``result.model``.

    Raises:
        TypeError, ValueError: as :func:`gradvet.check`, or for an unknown remedy id.

    Example:
        >>> import torch, gradvet
        >>> layers = [m for _ in range(10) for m in (torch.nn.Linear(32, 32), torch.nn.Sigmoid())]
        >>> model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))
        >>> batch = (torch.randn(64, 32), torch.randint(0, 10, (64,)))
        >>> result = gradvet.treat(model, batch, torch.nn.functional.cross_entropy)
        >>> result.healthy, [r.id for r in result.applied]  # doctest: +SKIP
        (True, ['activation:relu', 'init:kaiming'])
    """
    from gradvet.remedies import MODEL_REMEDIES, RemedyNotApplicable, apply_remedy

    require_module(model, "treat")
    if not isinstance(max_remedies, int) or max_remedies < 0:
        raise GradvetUsageError(f"max_remedies must be a non-negative int, got {max_remedies!r}")
    if optimizer is not None:
        if not callable(optimizer) or isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a function that builds an optimizer for a model (each remedy gets "
                            "a fresh one), e.g. lambda m: torch.optim.SGD(m.parameters(), lr=0.1); got "
                            f"{type(optimizer).__name__}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise GradvetUsageError(f"steps must be an int >= 1, got {steps!r}")
        extra = set(check_kwargs) - {"profile"}
        if extra:
            raise GradvetUsageError(f"with optimizer=, treat diagnoses a training run and takes only profile=; "
                                    f"got {sorted(extra)}")

    def diagnose(m: nn.Module) -> Report:
        if optimizer is None:
            return check(m, batch, loss_fn, **check_kwargs)
        return probe(m, batch, loss_fn, optimizer, steps, check_kwargs.get("profile"))
    if remedies is not None:
        if isinstance(remedies, str):
            raise TypeError(f"remedies must be a list of ids, got the string {remedies!r}; write [{remedies!r}]")
        unknown = [r for r in remedies if r not in MODEL_REMEDIES]
        if unknown:
            raise GradvetUsageError(
                f"treat can apply only model remedies; unknown or training-loop ids {unknown}. "
                f"Valid: {sorted(MODEL_REMEDIES)}"
            )

    def attempt(rid: str, base: nn.Module) -> Union[Attempt, tuple[Any, Report]]:
        """Apply ``rid`` to a copy of ``base`` and re-check it: ``(result, re-check)``, or the Attempt saying why not."""
        try:
            # apply_remedy works on a copy and says itself when it cannot act (raises) or
            # has nothing left to do (an empty result): no separate applicable() dry run
            res = apply_remedy(rid, base, inplace=False, batch=batch)
            if not res:
                return Attempt(rid, "no change", f"{rid} was applied already: nothing would change")
            return res, diagnose(res.model)
        except RemedyNotApplicable as err:
            return Attempt(rid, "not applicable", str(err))
        except Exception as err:  # one remedy failing on an unusual model must not end the treatment
            log.warning("gradvet.treat: remedy %s failed: %s", rid, err)
            return Attempt(rid, "failed", f"{type(err).__name__}: {err}")

    def candidates(rep: Report) -> list[str]:
        if remedies is not None:
            return [r for r in remedies if r not in tried]
        return [r.id for r in ranked_remedies(rep) if r.id in MODEL_REMEDIES and r.id not in tried]

    if optimizer is not None:
        split_batch(batch, "treat")  # the probe indexes (inputs, targets): fail here with check's message
    before = diagnose(model)
    current, report = model, before
    applied: list[Any] = []
    attempts: list[Attempt] = []
    tried: set[str] = set()
    while not report.healthy and len(attempts) < max_remedies:
        queue = candidates(report)
        if not queue:
            break
        rid = queue[0]
        tried.add(rid)
        tried_one = attempt(rid, current)
        if isinstance(tried_one, Attempt):
            attempts.append(tried_one)
            continue
        res, new = tried_one
        b0, b1 = badness(report), badness(new)
        if new.healthy or b1 <= b0 - _MIN_GAIN:
            attempts.append(Attempt(rid, "kept", f"badness {b0:.2f} -> {b1:.2f}", b0, b1, tuple(new.kinds())))
            current, report = res.model, new
            applied.append(res)
            continue
        # Some cures work only in pairs (a GRU in place of an RNN needs its gate biases set): before
        # reverting, try the re-check's own first remedy on top, once. The pair is kept only if it
        # beats that second remedy alone, so a remedy that does nothing cannot ride along.
        reason = f"badness {b0:.2f} -> {b1:.2f}"
        follow = next((f for f in candidates(new) if f != rid), None)
        if follow is not None and len(attempts) + 2 <= max_remedies:
            pair = attempt(follow, res.model)
            if isinstance(pair, Attempt):
                reason += f"; with {follow} on top: {pair.outcome}"
            else:
                res2, new2 = pair
                b2 = badness(new2)
                reason += f"; with {follow} on top: {b2:.2f}"
                if new2.healthy or b2 <= b0 - _MIN_GAIN:
                    alone = attempt(follow, current)
                    if isinstance(alone, Attempt):
                        wins = True
                    else:
                        b3 = badness(alone[1])
                        wins = (new2.healthy and not alone[1].healthy) or b2 <= b3 - _MIN_GAIN
                        reason += f" ({follow} alone: {b3:.2f})"
                    if wins:
                        tried.add(follow)
                        attempts.append(Attempt(rid, "kept", f"badness {b0:.2f} -> {b1:.2f}, kept with {follow}",
                                                b0, b1, tuple(new.kinds())))
                        attempts.append(Attempt(follow, "kept", f"badness {b1:.2f} -> {b2:.2f} "
                                                f"({b0:.2f} before {rid})", b1, b2, tuple(new2.kinds())))
                        current, report = res2.model, new2
                        applied += [res, res2]
                        continue
        attempts.append(Attempt(rid, "reverted", reason, b0, b1, tuple(new.kinds())))

    if current is model:
        current = model if inplace else copy.deepcopy(model)
    elif inplace:
        for res in applied:
            apply_remedy(res.id, model, inplace=True, batch=batch)
        model.load_state_dict(current.state_dict())
        current = model
    prescriptions = [r for r in ranked_remedies(report) if r.id not in MODEL_REMEDIES]
    return TreatResult(current, applied, attempts, before, report, prescriptions)
