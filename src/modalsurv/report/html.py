"""A self-contained HTML report: tables, notes and embedded PNG figures, one file.

Sections are ``(heading, body)`` with body a DataFrame (a table), a :class:`Chart` (a
matplotlib figure embedded as a PNG data URI, with the numbers it shows written as CSV to
``report_data/<name>.csv`` beside the page and linked under the image), a :class:`Note`
(a warning or flag line, highlighted), a bare matplotlib Figure, or text. The page needs
nothing else to display: it can be mailed or copied alone (the CSVs are for re-plotting).
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from modalsurv.utils import atomic_write_csv, atomic_write_text

DATA_DIR = "report_data"
STYLE = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}"
    "img{max-width:100%;height:auto;display:block;margin:.5em 0}"
    ".warn{color:#a40;font-weight:bold}.ok{color:#264}.data{font-size:85%;color:#555}"
    "h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
)


@dataclass
class Chart:
    """A figure and the data it shows (written as ``report_data/<name>.csv``)."""

    figure: Figure
    data: pd.DataFrame
    name: str
    caption: str = ""


@dataclass
class Note:
    """A highlighted line: ``kind`` "warn" (a flag or warning) or "ok"."""

    text: str
    kind: str = "warn"


def figure_to_data_uri(fig: Figure) -> str:
    """PNG-encode a figure for embedding, so the report is one file that travels."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def slug(text: str) -> str:
    """``"Kaplan–Meier by risk"`` → ``"kaplan-meier-by-risk"`` (file and anchor names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _table(df: pd.DataFrame, anchor: str) -> str:
    text = df.to_html(float_format=lambda v: f"{v:.3f}", na_rep="–", index=False,
                      classes="table", table_id=f"t-{anchor}", border=0)  # fmt: skip
    return text


def render_report(
    title: str,
    sections: list[tuple[str, Any]],
    path: str | Path | None = None,
) -> str:
    """Render sections (see module docstring) to HTML; with ``path``, write the page and
    the charts' CSVs (``report_data/`` beside it) atomically. Returns the page."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    used: set[str] = set()
    files: set[str] = set()  # the charts' CSV names, unique like the anchors
    data_dir = None if path is None else Path(path).parent / DATA_DIR
    tables: dict[str, pd.DataFrame] = {}  # written together at the end, see below
    for heading, body in sections:
        anchor = slug(heading)
        base, k = anchor, 2
        while anchor in used:
            anchor, k = f"{base}-{k}", k + 1
        used.add(anchor)
        if heading:
            parts.append(f"<h2 id='{anchor}'>{html.escape(heading)}</h2>")
        if isinstance(body, pd.DataFrame):
            parts.append(_table(body, anchor))
        elif isinstance(body, Chart):
            # one file per chart, as for the anchors: two names with one slug (cohorts
            # "site_b" and "site-b", or "out_of_fold") used to share a CSV, the last
            # chart's data overwriting the first's under both links
            name = base = slug(body.name)
            k = 2
            while name in files:
                name, k = f"{base}-{k}", k + 1
            files.add(name)
            parts.append(f"<img alt='{html.escape(heading or body.name)}'"
                         f" src='{figure_to_data_uri(body.figure)}'>")  # fmt: skip
            if body.caption:
                parts.append(f"<p>{html.escape(body.caption)}</p>")
            if data_dir is not None:
                tables[name] = body.data
                parts.append(f"<p class='data'>data: <a href='{DATA_DIR}/{name}.csv'>"
                             f"{DATA_DIR}/{name}.csv</a></p>")  # fmt: skip
        elif isinstance(body, Figure):
            parts.append(f"<img alt='{html.escape(heading)}' src='{figure_to_data_uri(body)}'>")
        elif isinstance(body, Note):
            parts.append(f"<p class='{html.escape(body.kind)}'>{html.escape(body.text)}</p>")
        else:
            parts.append(f"<p>{html.escape(str(body))}</p>")
    parts.append("</body></html>")
    text = "\n".join(parts)
    if path is not None:
        # the figures' CSVs once every figure is drawn (seconds of work), then the page:
        # a report killed while drawing leaves the last report's files as they were, not
        # a mix of this report's figure data and the last one's
        for name, data in tables.items():
            atomic_write_csv(data_dir / f"{name}.csv", data)
        atomic_write_text(path, text)
    return text
