"""The HTML page: one self-contained file, each chart's data as CSV beside it."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import pandas as pd

from modalsurv.report.html import DATA_DIR, Chart, Note, render_report, slug


def _chart(name: str) -> Chart:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return Chart(fig, pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}), name, "a caption")


def test_page_embeds_images_and_writes_chart_data_beside_it(tmp_path):
    page = tmp_path / "sub" / "page.html"
    table = pd.DataFrame({"model": ["a", "b"], "c": [0.61234, float("nan")]})
    text = render_report("T <1>", [("Scores", table), ("Curve", _chart("my curve")),
                                   ("", Note("careful & watch")), ("Again", _chart("my curve")),
                                   ("Text", "plain <b>")], page)  # fmt: skip
    assert page.read_text("utf-8") == text
    assert "<title>T &lt;1&gt;</title>" in text and "plain &lt;b&gt;" in text
    assert text.count("src='data:image/png;base64,") == 2  # embedded: nothing to fetch
    assert "<td>0.612</td>" in text and "<td>–</td>" in text  # 3 decimals, NaN shown as a dash
    assert "id='t-scores'" in text or 'id="t-scores"' in text
    assert "<p class='warn'>careful &amp; watch</p>" in text
    links = re.findall(r"href='([^']+\.csv)'", text)
    assert links == [f"{DATA_DIR}/my-curve.csv", f"{DATA_DIR}/my-curve-2.csv"]  # one file each
    back = pd.read_csv(page.parent / links[0])
    assert back.to_dict("list") == {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    assert "<h2 id='curve'>" in text and "<h2 id='again'>" in text


def test_charts_whose_names_slug_alike_keep_their_own_data_files(tmp_path):
    """Cohorts "site_b" and "site-b" (or one named "out_of_fold") give chart names with one
    slug: the second chart's CSV used to overwrite the first's, both links showing it."""
    page = tmp_path / "page.html"
    charts = [(f"Chart {i}", _chart(name)) for i, name in
              enumerate(["uncertainty_out_of_fold", "uncertainty_site_b", "uncertainty_site-b",
                         "uncertainty_out-of-fold"])]  # fmt: skip
    for i, (_, chart) in enumerate(charts):
        chart.data = pd.DataFrame({"x": [float(i)]})
    text = render_report("t", charts, page)
    links = re.findall(r"href='([^']+\.csv)'", text)
    assert len(set(links)) == 4
    for i, link in enumerate(links):  # each link holds its own chart's numbers
        assert pd.read_csv(tmp_path / link)["x"].tolist() == [float(i)], link


def test_without_a_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = render_report("t", [("c", _chart("c")), ("c", "same heading twice")])
    assert "data:" not in re.sub(r"data:image", "", text) and not list(tmp_path.iterdir())
    assert "<h2 id='c'>" in text and "<h2 id='c-2'>" in text  # anchors stay unique


def test_slug():
    assert slug("Kaplan–Meier by risk (ModalSurv)") == "kaplan-meier-by-risk-modalsurv"
    assert slug("—") == "section"


def test_a_report_stopped_while_drawing_leaves_the_last_reports_files(tmp_path, monkeypatch):
    """Figure data is written once every figure is encoded: a build killed half-way used to
    leave report_data/ mixing this build's CSVs with the last one's."""
    import pytest

    from modalsurv.report import html as H

    page = tmp_path / "page.html"
    render_report("old", [("A", _chart("a")), ("B", _chart("b"))], page)
    before = {p.name: p.read_bytes() for p in (tmp_path / DATA_DIR).iterdir()}
    new = pd.DataFrame({"x": [5.0], "y": [6.0]})
    fig, _ = plt.subplots()
    real, calls = H.figure_to_data_uri, []

    def dies_on_the_second(figure):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(figure)

    monkeypatch.setattr(H, "figure_to_data_uri", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        render_report("new", [("A", Chart(fig, new, "a")), ("B", Chart(fig, new, "b"))], page)
    assert {p.name: p.read_bytes() for p in (tmp_path / DATA_DIR).iterdir()} == before
    assert "<title>old</title>" in page.read_text("utf-8")
