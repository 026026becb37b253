"""`predict` / `evaluate` on a CHIMERA folder read it as the run was trained (its loader
settings) and refuse image features made otherwise than the run's (run_inputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from modalsurv.cli import app


def test_predict_on_a_chimera_folder_matches_the_challenge_answers(task1, tmp_path, kit):
    """The run was trained with data.params.max_tiles=6 and the held-out patients have up
    to 8 tiles: predict used to read them with the default cap (500) and give other risks
    than the challenge path; without --features it silently read the folder's own tile
    features in place of the extracted ones the model was trained on."""
    store = tmp_path / "store"
    kit.run(["extract", str(task1["held"]), "--layout", "chimera-task1", "--out", str(store),
             *kit.EXTRACT, "--volume-encoder", "medicalnet_resnet10"])
    spec = f"chimera-task1:{task1['held']}"
    kit.run(["predict", str(task1["run"]), "--data", spec, "--features", str(store),
             "--out", str(tmp_path / "p.csv")])
    kit.run(["challenge", "task1", "--model", str(task1["run"]), "--batch", str(task1["held"]),
             "--out", str(tmp_path / "b.csv")])
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"patient": str}).set_index("patient")
    batch = pd.read_csv(tmp_path / "b.csv", dtype={"case": str}).set_index("case")
    assert sorted(pred.index) == sorted(batch.index)
    # float32 networks: predict scores the patients in one batch, the challenge one case at
    # a time, and the kernels sum in another order (measured: up to 2.5e-6 relative); a
    # patient read otherwise (another tile cap or bag seed) moves its risk by 1e-2 or more
    np.testing.assert_allclose(pred.loc[batch.index, "risk"], batch["risk"], rtol=2e-5)
    res = CliRunner().invoke(app, ["predict", str(task1["run"]), "--data", spec,
                                   "--out", str(tmp_path / "own.csv")])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "modality 'wsi'" in text and "from elsewhere" in text, text
    assert "--features" in text and not (tmp_path / "own.csv").exists()
