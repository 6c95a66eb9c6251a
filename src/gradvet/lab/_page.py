"""The lab's report: ``index.html`` built from ``results.json`` and the run records."""

from __future__ import annotations

from html import escape
from typing import Any

from gradvet.html import page, section
from gradvet.lab import _cures, _dead, _depth, _exploding, _time
from gradvet.lab._context import LabContext

#: (key in results, module, title, introduction HTML)
EXPERIMENTS: tuple[tuple[str, Any, str, str], ...] = (
    (_depth.NAME, _depth, "1. Depth × activation × initialisation",
     "Glorot &amp; Bengio (2010) showed that deep sigmoid networks barely train with plain SGD: every layer "
     "multiplies the backpropagated gradient by the activation's derivative (at most 0.25 for sigmoid) and by "
     "the weights, so the signal shrinks geometrically with depth. Xavier init (Glorot &amp; Bengio, 2010) "
     "keeps the variance for tanh; He init (He et al., 2015) does it for ReLU."),
    (_cures.NAME, _cures, "2. The cures, side by side",
     "The deep sigmoid network of experiment 1, treated one change at a time with every remedy of the textbook "
     "list: ReLU-family activations (Glorot et al., 2011; Maas et al., 2013; Clevert et al., 2016; Klambauer et "
     "al., 2017; Hendrycks &amp; Gimpel, 2016; Elfwing et al., 2018; Misra, 2019), Xavier, He and LSUV init "
     "(Glorot &amp; Bengio, 2010; He et al., 2015; Mishkin &amp; Matas, 2016), batch and layer norm (Ioffe "
     "&amp; Szegedy, 2015; Ba et al., 2016), skip connections (He et al., 2016), Adam and RMSprop (Kingma "
     "&amp; Ba, 2015; Tieleman &amp; Hinton, 2012), weight decay (Krogh &amp; Hertz, 1992), dropout "
     "(Srivastava et al., 2014), greedy layer-wise pretraining (Hinton et al., 2006; Bengio et al., 2007) and a "
     "shallower net. The charts group them by family, each against the baseline."),
    (_exploding.NAME, _exploding, "3. Exploding gradients and clipping",
     "The opposite failure: per-layer factors above 1, or steps too large for the curvature. Global-norm "
     "clipping (Pascanu et al., 2013), value clipping and adaptive gradient clipping (Brock et al., 2021) bound "
     "each step; gradvet measures the gradient before the clip."),
    (_time.NAME, _time, "4. Gradients through time: the adding problem",
     "Hochreiter &amp; Schmidhuber (1997): sequences of (value, marker) pairs; the target is the sum of the two "
     "marked values, so the first one must be remembered to the end. Predicting the mean scores MSE 1/6. A "
     "plain RNN's gradient decays exponentially with distance in time (Bengio et al., 1994); LSTM and GRU gates "
     "give it an additive path, wider when the memory gate's bias starts open (Gers et al., 2000; "
     "Jozefowicz et al., 2015). Adam, lr 0.01, gradients clipped to norm 1."),
    (_dead.NAME, _dead, "5. Dead ReLUs",
     "Biases initialised far below zero switch most ReLU units off for every input: no gradient reaches them "
     "and they never recover (Lu et al., 2019). LeakyReLU (Maas et al., 2013) keeps a slope of 0.1 below "
     "zero."),
)


def _records(res: dict[str, Any]) -> list[str]:
    """Every ``record`` path inside an experiment's results."""
    out: list[str] = []
    if isinstance(res, dict):
        for k, v in res.items():
            if k == "record" and isinstance(v, str):
                out.append(v)
            else:
                out += _records(v)
    return out


def _experiment(key: str, module: Any, title: str, intro: str, results: dict, ctx: LabContext) -> str:
    res = results[key]
    charts = [c for c in (module.charts(res) if key == _depth.NAME else module.charts(res, ctx)) if c is not None]
    body = "\n".join(c.html() for c in charts)
    recs = _records(res)
    files = (f'<details><summary>{len(recs)} run records</summary><p class="muted">Open any of them with '
             "<code>gradvet report &lt;file&gt;</code> or <code>gradvet show &lt;file&gt;</code>.</p><ul>"
             + "".join(f"<li><code>{escape(r)}</code></li>" for r in recs) + "</ul></details>")
    numbers = f'<p class="numbers"><b>Key numbers.</b> {module.summary(res)}</p>'
    if hasattr(module, "details"):  # a table of the experiment's numbers, one row per run
        numbers += "\n" + module.details(res)
    return section(key, title, f"{numbers}\n{body}\n{files}", intro)


def render_lab(results: dict[str, Any], ctx: LabContext) -> str:
    """The lab page for ``results`` (as saved in results.json)."""
    meta = results["meta"]
    toc = " ".join(f'<a href="#{k}">{escape(t)}</a>' for k, _, t, _ in EXPERIMENTS if k in results)
    head = (
        '<header class="top"><h1>gradvet lab: vanishing and exploding gradients, reproduced</h1>'
        f'<p class="sub">{escape(meta["mode"])} run, seed {meta["seed"]}, {meta["wall_s"]:.0f} s on '
        f'{meta["threads"]} CPU thread(s), torch {escape(meta["torch"])}, gradvet {escape(meta["gradvet"])}. '
        f'Reproduce with <code>{escape(meta["command"])}</code>. Every number below is in '
        "<code>results.json</code>; every training run is a gradvet record under <code>runs/</code>.</p>"
        f'<nav class="toc">{toc}</nav></header>'
    )
    parts = [head] + [_experiment(k, m, t, i, results, ctx) for k, m, t, i in EXPERIMENTS if k in results]
    parts.append("<footer>Data: scikit-learn's handwritten digits (1,797 8×8 images, 80/20 stratified split) "
                 "and the adding problem, generated with a seeded torch.Generator. No network access needed.</footer>")
    return page("gradvet lab", "\n".join(parts))
