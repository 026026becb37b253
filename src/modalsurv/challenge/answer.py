"""Answer the challenge: one case from ``/input`` to its ``/output`` JSON, or a whole CHIMERA
folder scored the same way with the organisers' metric.

One case: read the sockets (``challenge.sockets``), extract the features with the
model's recorded encoders and settings, predict with the fold ensemble, then write the
one float (``challenge.outputs``) atomically. Nothing is written to ``/output`` unless
the answer is complete and finite; a missing optional input (MRI, RNA, an extra slide, a
tissue mask) is a logged problem and the answer uses what is there.

Batch: every case of a CHIMERA task folder goes through the very same per-case code
(``case_cohort``), one row per case, and Harrell's C is computed exactly as the
organisers' evaluation does: ``sksurv.metrics.concordance_index_censored(event, time,
-prediction)``, the prediction read as a time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.challenge.model import CaseResult, ChallengeModel
from modalsurv.challenge.outputs import Direction, challenge_value
from modalsurv.challenge.sockets import OUTPUTS, CaseInputs, read_case
from modalsurv.errors import DataError, Problem
from modalsurv.train.finetune import images
from modalsurv.utils import Progress, atomic_write_csv, atomic_write_text


def predict_case(model: ChallengeModel, case: CaseInputs, weights: Sequence[str | Path] = (),
                 device: str = "cpu", direction: Direction = "risk") -> CaseResult:  # fmt: skip
    """The challenge value of one case (see module docstring), with timings by stage."""
    timer: dict[str, float] = {}
    encoders = model.encoders(weights, device)
    cohort, problems, n_tiles = model.case_cohort(case, encoders, timer)
    t0 = time.perf_counter()
    with images(model.images):  # fine-tuned encoders re-encode the case's own images
        risks = model.ensemble.predict_risk(cohort)
        value = float(challenge_value(model.ensemble, cohort, case.task, direction, risks)[0])
    risk = float(risks[0])
    timer["prediction"] = time.perf_counter() - t0
    if not math.isfinite(value):
        raise DataError(f"the prediction is not finite ({value}); nothing written",
                        patient=case.case, field="prediction")  # fmt: skip
    used = [m for m in model.modalities if bool(cohort.present[m][0])]
    return CaseResult(value, risk, used, problems, timer, n_tiles)


def answer_case(task: str, model: ChallengeModel, input_dir: str | Path, output_dir: str | Path,
                weights: Sequence[str | Path] = (), device: str = "cpu",
                direction: Direction = "risk") -> tuple[CaseResult, Path]:  # fmt: skip
    """Read one case from ``input_dir``, write its answer into ``output_dir``."""
    t0 = time.perf_counter()
    case = read_case(input_dir, task)
    result = predict_case(model, case, weights, device, direction)
    result.seconds["total"] = time.perf_counter() - t0
    path = Path(output_dir) / OUTPUTS[case.task]
    atomic_write_text(path, json.dumps(result.value))
    return result, path


# ---------------------------------------------------------------------------- batch
@dataclass
class BatchResult:
    """A CHIMERA folder scored case by case."""

    table: pd.DataFrame  # case, prediction, risk, modalities, n_problems, n_tiles, time,
    # event, error: one row per case of the folder, answered or not (the reason in error)
    c_index: float | None  # organisers' formula: C(event, time, -prediction)
    c_index_as_risk: float | None  # the prediction read as a risk: C(event, time, prediction)
    problems: list[Problem] = field(default_factory=list)
    n_skipped: int = 0  # cases with a row but no prediction (the reason in ``error``)


def folder_cases(root: str | Path, task: str, problems: list[Problem],
                 event: str | None = None) -> tuple[list[CaseInputs], pd.DataFrame]:  # fmt: skip
    """Every case of a CHIMERA task folder as the challenge would present it, and the
    labels found in the clinical files (index case: time, event; NaN when absent), for
    task 3 of the endpoint ``event`` (the model's ``data.params.event``; progression).
    A case whose clinical file is unreadable is left out (a problem names it)."""
    found = [(c, lab) for _, c, _, lab in _folder_entries(root, task, problems, event)
             if c is not None]  # fmt: skip
    return [c for c, _ in found], pd.DataFrame(
        [lab for _, lab in found], index=pd.Index([c.case for c, _ in found], name="case"),
        columns=["time", "event"])  # fmt: skip


def _folder_entries(root: str | Path, task: str, problems: list[Problem], event: str | None
                    ) -> list[tuple[str, CaseInputs | None, str, tuple[float, float]]]:  # fmt: skip
    """(case id, its inputs or None when unreadable, why not, (time, event)) for every case
    of the folder, in its order: a batch gives each one a row, answered or not."""
    from modalsurv.io import clinical as clin
    from modalsurv.io.chimera import LAYOUTS, MRI_SEQUENCES, discover

    layout = LAYOUTS[1 if task == "task1" else 3]
    paths = discover(root, layout, problems, raw=True)  # the model embeds the raw slides
    out: list[tuple[str, CaseInputs | None, str, tuple[float, float]]] = []
    for pid, row in paths.iterrows():
        try:
            record = clin.read_json_file(row["clinical"], str(pid))
            if not isinstance(record, dict):
                raise DataError("expected a JSON object of field → value", path=row["clinical"],
                                patient=str(pid), field="clinical")  # fmt: skip
        except DataError as exc:
            problems.append(Problem("error", f"{exc.reason}; case skipped", exc.path, str(pid),
                                    "clinical"))  # fmt: skip
            out.append((str(pid), None, f"unreadable clinical file: {exc}", (math.nan, math.nan)))
            continue
        rna = None
        if row.get("rna"):
            try:
                rna = clin.read_json_file(row["rna"], str(pid))
            except DataError as exc:
                problems.append(Problem("warning", f"{exc.reason}; predicting without RNA",
                                        exc.path, str(pid), "rna"))  # fmt: skip
        if rna is not None and not isinstance(rna, dict):  # as read_case says of the socket
            problems.append(Problem("warning", "not a JSON object of gene → value; predicting"
                                    " without RNA", str(row["rna"]), str(pid), "rna"))  # fmt: skip
            rna = None
        case = CaseInputs(task, str(pid), dict(record), rna,
                          [Path(s) for s in row["slides"]],
                          [None if m is None else Path(m) for m in row["masks"]],
                          sources={"clinical": str(row["clinical"]), "rna": str(row.get("rna"))})  # fmt: skip
        if task == "task1":
            case.mri = {q: (None if row.get(f"mri_{q}") is None else Path(row[f"mri_{q}"]))
                        for q in MRI_SEQUENCES}  # fmt: skip
            case.mri_mask = None if row.get("mri_mask") is None else Path(row["mri_mask"])
        out.append((str(pid), case, "", labels_of(record, task, event)))
    return out


def labels_of(record: dict[str, Any], task: str, event: str | None = None
              ) -> tuple[float, float]:  # fmt: skip
    """(time, event) of a clinical record with labels, NaN when it has none; task 3's
    endpoint is ``event`` (progression when None)."""
    from modalsurv.io import clinical as clin

    schema = clin.TASK1 if task == "task1" else clin.task3_schema(event or "progression")
    try:
        table = clin.coerce_records({"c": record}, schema, [], collect_errors=True)
        return float(table["time"].iloc[0]), float(table["event"].iloc[0])
    except (DataError, KeyError, IndexError):
        return math.nan, math.nan


def organiser_c_index(event: np.ndarray, time_: np.ndarray, prediction: np.ndarray) -> float:
    """Harrell's C exactly as the organisers' evaluation computes it: scikit-survival's
    ``concordance_index_censored(event, time, -prediction)``."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(np.asarray(event, bool), np.asarray(time_, float),
                                            -np.asarray(prediction, float))[0])  # fmt: skip


def score_folder(task: str, model: ChallengeModel, root: str | Path, out: str | Path | None = None,
                 weights: Sequence[str | Path] = (), device: str = "cpu",
                 direction: Direction = "risk", progress: Progress | None = None) -> BatchResult:  # fmt: skip
    """Predict every case of a CHIMERA folder as the challenge would; write one CSV row per
    case (and ``<out stem>_metrics.json`` beside it, shaped as the organisers' evaluation
    writes its ``metrics.json``).

    A case that cannot be answered (unreadable clinical file, a DataError on the way)
    costs only itself: its row has no prediction and says why in ``error``; the metric
    is over the answered cases and ``_metrics.json`` counts the others as ``n_skipped``."""
    emit = progress or (lambda *a, **k: None)
    problems: list[Problem] = []
    entries = _folder_entries(root, task, problems, model.config.data.params.get("event"))
    if not entries:
        raise DataError("no case found", path=root)
    rows = []
    # the progress events of extraction: unreadable cases are settled before the start
    readable = sum(case is not None for _, case, _, _ in entries)
    emit("start", total=readable, skipped=len(entries) - readable)
    index = 0
    for pid, case, why, (t_, e_) in entries:
        row = {"case": pid, "prediction": math.nan, "risk": math.nan, "modalities": "",
               "n_problems": 0, "n_tiles": 0, "time": t_, "event": e_, "error": why}  # fmt: skip
        if case is not None:
            index += 1
            emit("patient", patient=pid, index=index, total=readable)
            try:
                res = predict_case(model, case, weights, device, direction)
            except DataError as exc:  # this case alone: the others are still answered
                problems.append(Problem("error", f"{exc.reason}; case not answered",
                                        exc.path, exc.patient or pid, exc.field))  # fmt: skip
                row["error"] = str(exc)
                emit("failed", patient=pid, path=exc.path, reason=exc.reason)
            else:
                problems.extend(p for p in res.problems if p not in problems)
                row.update(prediction=res.value, risk=res.risk,
                           modalities="+".join(res.modalities), n_problems=len(res.problems),
                           n_tiles=res.n_tiles)  # fmt: skip
                emit("done", patient=pid)
        rows.append(row)
    emit("finish", report=None)
    table = pd.DataFrame(rows)
    skipped = int(table["prediction"].isna().sum())
    ok = table["time"].notna() & table["event"].notna() & table["prediction"].notna()
    c = c_risk = None
    if ok.any() and table.loc[ok, "event"].astype(bool).any():
        from sksurv.exceptions import NoComparablePairException

        ev, t, pred = table.loc[ok, "event"].astype(bool), table.loc[ok, "time"], table.loc[ok, "prediction"]
        try:
            c = organiser_c_index(ev, t, pred)
            c_risk = organiser_c_index(ev, t, -pred)
        except NoComparablePairException:  # no event with another case still at risk:
            # C is undefined, and the predictions made must still be written
            problems.insert(0, Problem("warning", "no comparable pair of labelled cases (no"
                                       " event with another case still at risk): no C-index",
                                       str(root), None, "c_index"))  # fmt: skip
    if out is not None:
        atomic_write_csv(out, table)
        atomic_write_text(Path(out).with_name(Path(out).stem + "_metrics.json"),
                          json.dumps({"aggregates": {"c_index": c, "n_cases": int(ok.sum()),
                                                     "n_skipped": skipped}}, indent=1))  # fmt: skip
    return BatchResult(table, c, c_risk, problems, skipped)
