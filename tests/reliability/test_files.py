"""What the files say: permissions, model checksums, and scan output a log can parse."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from modalsurv.errors import FeatureError
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.utils import atomic_write_text


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        import modalsurv.utils as utils

        utils._UMASK.clear()  # read once per process: make this test's umask the one read
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
        utils._UMASK.clear()


def test_run_files_are_readable_by_the_group(finished_run):
    mode = stat.S_IMODE((finished_run / "metrics.json").stat().st_mode)
    assert mode & 0o040, oct(mode)  # mkstemp's 0600 no longer leaks into run folders


def test_bundle_records_and_checks_sha256(finished_run, tmp_path):
    run = Path(shutil.copytree(finished_run / "models" / "repeat_0", tmp_path / "m"))
    bundle = json.loads((run / "bundle.json").read_text())
    assert set(bundle["sha256"]) == {"model_0.safetensors", "state_0.json", "state_0.npz",
                                     "model_1.safetensors", "state_1.json", "state_1.npz"}
    (run / "state_1.json").write_text((run / "state_1.json").read_text().replace(" ", "  "))
    with pytest.raises(FeatureError, match="state_1.json.*SHA-256"):
        FoldEnsemble.load(run)


def test_bundle_without_hashes_still_loads(rel, finished_run, tmp_path):
    run = Path(shutil.copytree(finished_run / "models" / "repeat_0", tmp_path / "m"))
    bundle = json.loads((run / "bundle.json").read_text())
    del bundle["sha256"]
    (run / "bundle.json").write_text(json.dumps(bundle))
    from modalsurv.config import DataConfig
    from modalsurv.data.sources import load_cohort

    cohort = load_cohort(DataConfig(params={**rel.TINY_DATA, "n": 12, "seed": 3}))
    np.testing.assert_array_equal(FoldEnsemble.load(run).predict_risk(cohort),
                                  FoldEnsemble.load(finished_run / "models" / "repeat_0")
                                  .predict_risk(cohort))  # fmt: skip


@pytest.fixture
def broken_chimera(tmp_path):
    from modalsurv.data.synthetic import make_cohort, write_chimera

    cohort, _ = make_cohort(n=3, seed=0, max_tiles=2, tile_dim=4, slide_dim=4, mri_dim=4,
                            n_genes=6)  # fmt: skip
    root = write_chimera(cohort, tmp_path / "c", task=1, images=False)
    (root / "clinical_data" / f"{cohort.ids[0]}.json").write_text("{not json")
    return root, cohort.ids[0]


def test_scan_keeps_the_severity_tags(rel, broken_chimera):
    root, pid = broken_chimera
    res = rel.invoke("scan", root)
    assert res.exit_code == 1
    line = next(ln for ln in res.output.splitlines() if pid in ln)
    assert line.startswith("[error] ")


def test_scan_json_is_machine_readable(rel, broken_chimera):
    root, pid = broken_chimera
    res = rel.invoke("scan", root, "--json")
    assert res.exit_code == 1
    problems = json.loads(res.output)
    assert {"severity", "reason", "path", "patient", "field"} <= set(problems[0])
    assert any(p["severity"] == "error" and p["patient"] == pid for p in problems)
