"""A self-contained HTML report (tables + embedded PNG figures) for a run folder."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from modalsurv.utils import atomic_write_text


def figure_to_data_uri(fig: Figure) -> str:
    """PNG-encode a figure for embedding, so the report is one file that travels."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render_report(
    title: str,
    sections: list[tuple[str, pd.DataFrame | Figure | str]],
    path: str | Path | None = None,
) -> str:
    """Render sections (heading, table | figure | paragraph) to HTML; write atomically."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:right}.warn{color:#a40}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, pd.DataFrame):
            parts.append(body.to_html(float_format=lambda v: f"{v:.3f}", na_rep="–"))
        elif isinstance(body, Figure):
            parts.append(f"<img alt='{html.escape(heading)}' src='{figure_to_data_uri(body)}'>")
        else:
            parts.append(f"<p>{html.escape(str(body))}</p>")
    parts.append("</body></html>")
    text = "\n".join(parts)
    if path is not None:
        atomic_write_text(path, text)
    return text
