"""Non-finite values: where NaN/Inf is born, and whether it matters.

The birthplace is the first layer (execution order) whose forward output is
non-finite; if every forward output was finite, the NaN was born in the backward
pass, at the last layer (execution order) whose dL/d output is non-finite, since
backward runs output to input. With an AMP GradScaler, steps whose gradients
overflow are *skipped* by design while the scale calibrates (Micikevicius et
al., 2018): those are reported as ``info`` unless most recent steps are skipped.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._prescribe import remedy
from gradvet.findings import Cause, Finding, Remedy
from gradvet.record._run import Run

_FORWARD_BIRTH = "its forward output is non-finite"


def bad_param_steps(run: Run) -> np.ndarray:
    """Per recorded step, whether some parameter's gradient held NaN/Inf (empty when not recorded)."""
    s = run.get("param/grad_nonfinite")
    if s is None:
        return np.zeros(0, dtype=bool)
    return np.asarray((np.nan_to_num(s.values.astype(np.float64), nan=0.0) > 0).any(axis=1))


def _nonfinite_weights(run: Run) -> list[str]:
    """Parameters whose norm is non-finite at the first step that measured parameter norms
    (a row with at least one finite norm; economy profiles measure them every k steps)."""
    s = run.get("param/param_norm")
    if s is None:
        return []
    vals = s.values.astype(np.float64)
    measured = [row for row in vals if np.isfinite(row).any()]
    if not measured:
        return []
    names = run.param_names()
    return [names[i] for i in np.where(~np.isfinite(measured[0]))[0]]


def _birthplace(run: Run) -> tuple[Optional[str], str]:
    out = run.get("layer/out_nonfinite")
    grad = run.get("layer/grad_nonfinite")
    ordered = [x for x in run.ordered_layers() if x.get("order", -1) >= 0]
    if out is None:
        return None, ""
    for r in range(len(out.steps)):
        o = np.nan_to_num(out.values[r].astype(np.float64), nan=0.0)
        for layer in ordered:
            if o[layer["index"]] > 0:
                return layer["name"], f"{_FORWARD_BIRTH} at step {int(out.steps[r])}"
        if grad is not None:
            g = np.nan_to_num(grad.values[r].astype(np.float64), nan=0.0)
            for layer in reversed(ordered):
                if g[layer["index"]] > 0:
                    return layer["name"], (f"the forward pass is finite, and the backward pass first turns "
                                           f"non-finite at its output (step {int(out.steps[r])})")
    return None, ""


def _first_layer_step_from(run: Run, step: int) -> Optional[int]:
    """The first step >= ``step`` on which the layers were measured."""
    out = run.get("layer/out_nonfinite")
    if out is None:
        return None
    later = [int(s) for s in out.steps if int(s) >= step]
    return later[0] if later else None


def _bad_input_steps(run: Run) -> tuple[list[int], float]:
    """Steps whose model inputs held NaN/Inf (checked on layer steps), and the count at the first."""
    s = run.get("input_nonfinite")
    if s is None or not len(s.steps):
        return [], 0.0
    v = np.nan_to_num(s.values.astype(np.float64), nan=0.0)
    hits = np.where(v > 0)[0]
    return [int(s.steps[i]) for i in hits], float(v[hits[0]]) if len(hits) else 0.0


def _input_finding(run: Run, steps: list[int], count: float, targets: int) -> Finding:
    where = []
    if steps:
        where.append(f"the batch at step {steps[0]} holds {count:.0f} NaN/Inf value(s) in its inputs" +
                     (f" ({len(steps)} batch(es) in all)" if len(steps) > 1 else ""))
    if targets:
        where.append(f"the targets hold {targets} NaN/Inf value(s)")
    evidence = "; ".join(where) + ": every gradient computed from them is non-finite, whatever the model"
    born, _ = _birthplace(run)
    if born:
        evidence += f" (the first layer with a non-finite output is {born!r}, the one that reads them)"
    causes = [Cause("nonfinite_inputs", "the data holds NaN/Inf: " + "; ".join(where), 0.97)]
    rems = [remedy("data:filter_nonfinite", 0.95), remedy("skip_nonfinite", 0.8)]
    return Finding("nonfinite_gradients", "error", [born] if born else [], evidence, causes, rems,
                   {"input_steps": steps, "first_input_count": count, "target_count": targets})


def _op_finding(run: Run, origin: dict, first: Optional[int], bad: np.ndarray, bad_params: list[str]) -> Finding:
    """The finding when the op that made the first NaN/Inf is known (``gradvet.check`` hunted it): name
    the op, the modules around it, the source line, why its input left the domain, and its guard."""
    from gradvet._nanhunt import GUARDS, Origin

    o = Origin.from_dict(origin)
    step = int(run.steps[first]) if first is not None and len(run.steps) > first else 0
    evidence = f"non-finite values from step {step}"
    if bad_params:
        evidence += f", in the gradients of {len(bad_params)} parameter tensor(s) on {int(bad.sum())} of {len(bad)} steps"
    evidence += f"; the NaN/Inf is born {o.describe()}"
    if not o.leaf and o.next:
        evidence += f"; {o.next!r} only receives it: the op is called in forward(), not a layer"
    layers = [x for x in ((o.module,) if o.leaf else (o.after, o.next)) if x]
    causes = [Cause("birthplace", f"`{o.op}`" + (f", where {o.detail}" if o.detail else ""), 0.95),
              Cause("numerics", "an operation evaluated outside its domain (log or sqrt of a negative number, "
                    "division by 0, exp or a matmul past the float range)", 0.6)]
    rems: list[Remedy] = []
    if o.leaf:  # a module: DomainGuard can wrap it (gradvet.treat applies it)
        fix = f"; in its code: {GUARDS[o.kind]}" if o.kind in GUARDS else ""
        rems.append(remedy("guard:domain", 0.9, f"the NaN/Inf is born in {o.module!r}'s forward output "
                                                f"(`{o.op}`){fix}"))
    elif o.kind in GUARDS:
        rems.append(Remedy("guard:domain", f"keep `{o.op}`'s input in its domain at {o.where or 'its call'}: "
                           f"{GUARDS[o.kind]}", f"# {o.where}\n" + GUARDS[o.kind].split("  (")[0].split(", or")[0],
                           0.9))
    elif "overflows float16" in o.detail or "overflows bfloat16" in o.detail:
        rems.append(Remedy(
            "guard:domain",
            f"`{o.op}` overflows half precision at {o.where or 'its call'}: compute it in bfloat16 (the range of "
            "float32) or float32, or scale its inputs down first; a GradScaler cannot help a forward overflow",
            "with torch.autocast(device_type='cuda', dtype=torch.bfloat16):  # instead of model.half() / float16\n"
            "    loss = loss_fn(model(x), y)",
            0.9))
    else:
        rems.append(remedy("guard:domain", 0.8, f"`{o.op}` overflows in {o.module or o.after or 'the model'!r}"))
    rems += [remedy("skip_nonfinite", 0.7), remedy("clip:norm", 0.5), remedy("lr:lower", 0.4)]
    return Finding("nonfinite_gradients", "error", layers, evidence, causes, rems,
                   {"first_step": first, "parameters": bad_params, "born_at": o.module if o.leaf else None,
                    "op": o.op, "between": [o.after, o.next], "where": o.where})


@register_rule("nonfinite")
def nonfinite_rule(run: Run) -> list[Finding]:
    in_steps, in_count = _bad_input_steps(run)
    targets = int(run.meta.get("targets_nonfinite", 0) or 0)
    if in_steps or targets:
        # the data, not the model: the first thing to say, with the data's remedy
        return [_input_finding(run, in_steps, in_count, targets)]
    bad = bad_param_steps(run)
    loss = run.loss.astype(np.float64)
    # NaN is also "no loss passed": a NaN loss counts only together with non-finite gradients
    loss_bad = np.isinf(loss)
    if len(bad) == len(loss):
        loss_bad = loss_bad | (np.isnan(loss) & bad)
    born, how = _birthplace(run)
    if not bad.any() and not loss_bad.any() and born is None:
        return []
    n = len(bad)
    skipped = run.skipped
    if len(skipped) == n and bad.any() and run.get("loss_scale") is not None:
        only_skipped = not (bad & ~skipped).any()
        recent = skipped[-min(n, 10):]
        if only_skipped and recent.mean() < 0.5:
            return [Finding(
                "nonfinite_gradients", "info", (),
                f"the AMP GradScaler skipped {int(skipped.sum())} of {n} steps whose scaled gradients "
                "overflowed; this is how it finds its scale, and the weights were not touched",
                data={"skipped_steps": int(skipped.sum()), "steps": n},
            )]
    first = int(np.argmax(bad)) if bad.any() else None
    names = run.param_names()
    s = run.get("param/grad_nonfinite")
    bad_params = []
    if s is not None and first is not None:
        row = np.nan_to_num(s.values[first].astype(np.float64), nan=0.0)
        bad_params = [names[i] for i in np.where(row > 0)[0]]
    origin = run.meta.get("nonfinite_origin")  # gradvet.check's op-by-op hunt (gradvet._nanhunt)
    if isinstance(origin, dict) and origin.get("op"):
        return [_op_finding(run, origin, first, bad, bad_params)]
    layers: list[str] = [born] if born else sorted({run.params[names.index(p)]["layer"] for p in bad_params})
    step_txt = f" from step {int(run.steps[first])}" if first is not None and len(run.steps) > first else ""
    evidence = f"non-finite gradients{step_txt} in {len(bad_params)} parameter tensor(s)"
    if bad.any():
        evidence += f" on {int(bad.sum())} of {n} steps"
    if born:
        evidence += f"; the NaN/Inf is born at {born!r}: {how}"
        seen_at = _first_layer_step_from(run, int(run.steps[first])) if first is not None else None
        if seen_at is not None and seen_at > int(run.steps[first]):
            evidence += (f" (layers are measured every {run.meta.get('config', {}).get('layer_every', '?')} steps: "
                         f"the origin is read at step {seen_at}, the first measured one after step "
                         f"{int(run.steps[first])}; profile='full' or gradvet.check read it where it happens)")
        if how.startswith(_FORWARD_BIRTH) and run.meta.get("source") != "check":  # a live run sees module outputs
            evidence += ("; if an op called in forward() between layers made it, gradvet.check(model, batch, "
                         "loss_fn) on that batch names the op and its line")
    causes = [Cause("birthplace", f"{born!r}: {how}", 0.9)] if born else []
    bad_weights = _nonfinite_weights(run)
    if bad_weights:
        causes.insert(0, Cause("nonfinite_weights", f"parameters {bad_weights} hold NaN/Inf values: every forward "
                               "pass through them is non-finite, whatever the data", 0.95))
    causes.append(Cause("exploding", "gradients or activations that grew until they overflowed", 0.6))
    causes.append(Cause("numerics", "an operation outside its domain (log of 0, division by 0, sqrt of a "
                        "negative number) in the layer where the NaN is born", 0.5))
    rems = [remedy("skip_nonfinite", 0.8), remedy("clip:norm", 0.7), remedy("lr:lower", 0.6)]
    if bad_weights:
        rems.insert(0, remedy("init:reset_nonfinite", 0.9, f"{bad_weights[0]!r} is not finite"))
    elif born and how.startswith(_FORWARD_BIRTH):
        rems.insert(0, remedy("guard:domain", 0.85, f"the NaN/Inf is born in {born!r}'s forward output"))
    return [Finding("nonfinite_gradients", "error", layers, evidence, causes, rems,
                    {"first_step": first, "parameters": bad_params, "born_at": born})]
