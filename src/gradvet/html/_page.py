"""The page shell: one HTML file with its CSS inline, no scripts, no external resources."""

from __future__ import annotations

from html import escape

_CSS = """
:root { --ink: #1f2328; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
        --error: #b42318; --warning: #b54708; --info: #175cd3; --ok: #067647; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.5 "DejaVu Sans", system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 32px 64px; }
header.top { border-bottom: 1px solid var(--line); margin-bottom: 18px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 6px; }
h4 { font-size: 14px; margin: 10px 0 4px; }
p.sub, .muted { color: var(--muted); }
nav.toc a { margin-right: 14px; color: var(--info); text-decoration: none; }
dl.meta { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 2px 14px; margin: 10px 0; font-size: 14px; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; font-size: 14px; }
.verdict.ok { background: #ecfdf3; color: var(--ok); } .verdict.bad { background: #fef3f2; color: var(--error); }
figure.chart { margin: 18px 0 26px; padding: 14px 16px 10px; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 920px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 18px; }
.grid2 figure.chart { margin: 10px 0 16px; }
article.finding { border: 1px solid var(--line); border-left: 5px solid var(--info); border-radius: 6px;
                  padding: 12px 16px; margin: 12px 0; background: var(--panel); }
article.finding.error { border-left-color: var(--error); } article.finding.warning { border-left-color: var(--warning); }
.badge { text-transform: uppercase; font-size: 11px; letter-spacing: .05em; padding: 2px 7px; border-radius: 4px;
         background: var(--info); color: #fff; vertical-align: middle; }
.error .badge { background: var(--error); } .warning .badge { background: var(--warning); }
article.finding ol { margin: 4px 0 4px 20px; padding: 0; } article.finding li { margin: 3px 0; }
pre { background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 6px 10px; overflow-x: auto; font-size: 12.5px; }
code { font-family: "DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; }
p.no-findings { background: #ecfdf3; color: var(--ok); padding: 10px 14px; border-radius: 6px; }
p.empty { color: var(--muted); font-style: italic; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2), th:nth-child(3), td:nth-child(3) { text-align: left; }
th { background: var(--panel); font-weight: 600; }
.scroll { overflow-x: auto; }
table.cures td:nth-child(6), table.cures td:nth-child(7) { white-space: normal; text-align: left; min-width: 11em; }
footer { margin-top: 40px; color: var(--muted); font-size: 13px; }
@media (max-width: 820px) { .grid2 { grid-template-columns: 1fr; } dl.meta { grid-template-columns: max-content 1fr; } }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: ``body`` inside ``<main>``, the stylesheet inline.

    Terminal escape sequences and control characters (from module names) are removed from the whole
    document: a browser ignores them, but ``cat report.html`` in a terminal would act on them.
    """
    from gradvet._render import clean

    return clean(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def section(anchor: str, title: str, content: str, intro: str = "") -> str:
    """An ``<h2>`` section with an anchor and an optional introductory paragraph (HTML)."""
    lead = f"<p>{intro}</p>" if intro else ""
    return f'<section id="{escape(anchor)}">\n<h2>{escape(title)}</h2>\n{lead}\n{content}\n</section>'


def missing(what: str) -> str:
    """A note in place of a chart whose data the run does not hold."""
    return f'<p class="empty">{escape(what)}</p>'
