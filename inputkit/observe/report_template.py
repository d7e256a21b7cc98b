"""The HTML run report's frame: inline CSS, the page around the sections, tables, escaping.

Everything the page needs is inline (no CDN, no script), so it opens offline and from a
copied run directory. Every string goes through :func:`esc` or :func:`table`: paths, input
names and error texts come from the config and the data, and a ``<script>`` in a file name
must show as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d1d1f; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d6d9de; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.figure { background: #fff; border: 1px solid #d6d9de; border-radius: 6px; padding: 8px 14px; }
.figure b { display: block; font-size: 20px; }
.figure span { color: #555; font-size: 12px; }
.verdict { background: #fff; border-left: 5px solid #2c7be5; padding: 8px 12px; margin: 6px 0; }
.warning { background: #fff8e6; border-left: 5px solid #e5a100; padding: 6px 12px; margin: 4px 0; }
.bad { background: #fdecec; border-left: 5px solid #d0342c; padding: 6px 12px; margin: 4px 0; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #d6d9de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef0f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #fff; border: 1px solid #d6d9de; padding: 10px; overflow-x: auto;
      font-size: 12px; }
h4.chart-title { margin: 14px 0 2px; font-size: 13px; font-weight: 600; color: #333; }
svg.chart { background: #fff; border: 1px solid #d6d9de; margin: 4px 0 12px; max-width: 100%;
            height: auto; display: block; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #333; }
svg.chart text.axis { font-size: 12px; fill: #111; }
.empty { color: #777; font-style: italic; }
"""


def esc(value: Any) -> str:
    """Text for HTML: ``<``, ``>``, ``&`` and both quotes escaped; None as an empty cell."""
    return "" if value is None else escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          numeric: Sequence[int] = ()) -> str:
    """A ``<table>`` with every cell escaped; columns in ``numeric`` right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{esc(cell)}</td>' if i in numeric else
                         f"<td>{esc(cell)}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    """One titled part of the page; ``anchor`` is its id (the tests find sections by it)."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """The whole document: no external resource of any kind."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>"
            f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>\n"
            + "\n".join(sections) + "\n</main></body></html>\n")
