"""The demo (the README's main job) runs the spine end to end, in its quick form."""

from __future__ import annotations

import json

import pandas as pd

from modalsurv.challenge.sockets import OUTPUTS
from modalsurv.experiments.demo import run_demo


def test_quick_demo_goes_from_files_to_answers(tmp_path):
    stages: list[str] = []
    res = run_demo(tmp_path, quick=True,
                   progress=lambda e, **kw: stages.append(kw["message"]) if e == "stage" else None)  # fmt: skip
    assert [s[:3] for s in stages] == ["1/4", "2/4", "3/4", "4/4"]
    assert "3-fold CV" in stages[2]  # the quick demo's folds, not the full one's 5
    assert set(res.table["model"]) == {"modalsurv", "modalsurv_plain", "coxph_clinical", "coxnet",
                                       "rsf"}
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert set(data["modalities"]) == {"clinical", "wsi", "slide", "mri", "rna"}
    assert data["random_weights"] == ["medicalnet_resnet10"]  # the MRI encoder, flagged
    answers = pd.read_csv(tmp_path / "challenge" / "answers.csv", dtype={"case": str})
    assert len(answers) == 8 and (answers["predicted_months"] > 0).all()
    for case in answers["case"]:
        out = tmp_path / "challenge" / case / "output" / OUTPUTS["task1"]
        assert isinstance(json.loads(out.read_text()), float)
    assert "held-out C (challenge)" in res.table.columns
    assert set(res.seconds) == {"write + scan", "extract", "train", "challenge"}


def test_the_demo_refuses_another_commands_folder_and_a_bad_seed_writes_nothing(tmp_path):
    """Was: the demo added chimera/, store/, run/ and challenge/ into a train run folder;
    a bad --seed was reported as '<dict>: seed' after the folder was made."""
    import pytest

    from modalsurv.errors import ConfigError

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="written by `modalsurv train`"):
        run_demo(run, quick=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.json"]
    with pytest.raises(ConfigError, match="--seed"):
        run_demo(tmp_path / "new", quick=True, seed=-1)
    assert not (tmp_path / "new").exists()


def test_a_demo_folder_is_reused_only_with_its_own_seed_and_size(tmp_path, monkeypatch):
    """Was: a rerun with another --seed (or --quick) reused the folder's files, features
    and run, and scored the oracle with its own seed's risks against the files' patients."""
    import pytest

    from modalsurv.data.synthetic import make_cohort, oracle_cindex
    from modalsurv.errors import ConfigError
    from modalsurv.experiments import demo

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(demo, "_write_folders", stop)
    with pytest.raises(Stop):
        run_demo(tmp_path, quick=True, seed=0)
    assert json.loads((tmp_path / "demo.json").read_text()) == {"seed": 0, "quick": True}
    with pytest.raises(Stop):  # the same settings: the folder is resumed
        run_demo(tmp_path, quick=True, seed=0)
    for kw in ({"quick": True, "seed": 1}, {"quick": False, "seed": 0}):
        with pytest.raises(ConfigError, match="was made with .*use another --out"):
            run_demo(tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json"]
    # what the reuse scored: another seed's risks on these patients are no oracle
    files, _ = make_cohort(n=40, seed=0, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                           n_genes=10)  # fmt: skip
    _, other_risk = make_cohort(n=40, seed=1, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                                n_genes=10)  # fmt: skip
    assert abs(oracle_cindex(files, other_risk) - 0.5) < 0.15
