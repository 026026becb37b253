"""The one-screen summary of what a command read."""

from __future__ import annotations

from modalsurv.data.sources import load_data
from modalsurv.data.summary import data_summary, headline
from modalsurv.data.synthetic import make_cohort, write_chimera


def test_summary_counts_patients_events_coverage_and_unlabelled(tmp_path):
    cohort = make_cohort(8, 1, max_tiles=4, tile_dim=8, slide_dim=4, mri_dim=4, n_genes=10,
                         missing={"wsi": 0.0, "rna": 0.0})[0]  # fmt: skip
    root = write_chimera(cohort, tmp_path / "t1", images=False)
    for f in (root / "pathology/features/embeddings").glob(f"{cohort.ids[1]}_*.pt"):
        f.unlink()  # one patient without tile features: wsi coverage 7 of 8
    rec = root / "clinical_data" / f"{cohort.ids[0]}.json"
    rec.write_text(rec.read_text().replace('"BCR"', '"no_label"'))  # one case without label
    events = int(cohort.event[1:].sum())
    s = data_summary(load_data(f"chimera-task1:{root}"))  # training: the case is dropped
    assert (s["patients"], s["events"], s["unlabelled"]) == (7, events, 0)
    assert s["modalities"]["wsi"]["patients"] == 6 and s["n_errors"] == 1
    s = data_summary(load_data(f"chimera-task1:{root}", labels=False))  # prediction: kept
    assert (s["patients"], s["events"], s["unlabelled"]) == (8, events, 1)
    assert s["modalities"]["wsi"]["patients"] == 7
    assert s["modalities"]["wsi"]["coverage"] == 7 / 8
    line = headline(s)
    # the events of the labelled cases used to be left out of the line
    assert f"8 patients, {events} events among 7 labelled, 1 without a label" in line
    assert "wsi 88%" in line
