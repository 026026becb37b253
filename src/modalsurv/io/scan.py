"""Full cohort scan: every problem in one list, so a user fixes the data in one go.

A scan reads everything a run would read (clinical JSON, labels, every ``.pt`` tile
feature file, RNA profiles, the manifest's paths) and reports, each with path, patient
and field: missing files, corrupt JSON, wrong-shape features, duplicate case ids,
patients without labels, unknown categories. Nothing is skipped silently. ``strict=True``
turns warnings into errors: any problem raises one DataError that lists them all. A
column the schema itself declares a label leak (``BCR_PSA``) is expected, not a problem:
it is one ``note`` (how many records hold it), which no count or ``strict`` sees.
"""

from __future__ import annotations

from pathlib import Path

from modalsurv.errors import ConfigError, DataError, Problem
from modalsurv.io import chimera
from modalsurv.io.layouts import check_layout, chimera_task


def scan(
    root: str | Path,
    layout: str = "chimera-task1",
    strict: bool = False,
    event: str | None = None,
    features: str | Path | None = None,
    labels: bool = True,
    notes: list[Problem] | None = None,
) -> list[Problem]:
    """All problems of the cohort at ``root`` (a CHIMERA folder or a manifest CSV); with
    ``features``, also those of joining that feature store to the CHIMERA folder.
    ``labels=False``: a CHIMERA folder to predict on, read as ``predict`` reads it (a case
    without follow-up and event is no problem). ``notes``, when given, receives the
    informational notes (severity ``note``: a declared label-leak column), never problems.

    Returns errors first, then warnings. ``strict=True`` raises a DataError listing every
    problem when there is any (warnings included)."""
    task = chimera_task(check_layout(layout))
    if task is not None:
        out, problems, stopped = _read(root, task, event, features, labels)
        if stopped and features is not None:
            # the store stopped the read (a damaged file, no image modality): the folder's
            # own problems are still listed, from a read without it
            out, problems, _ = _read(root, task, event, None, labels)
            if stopped not in problems:  # not the folder's own stop (a missing root) twice
                problems.append(stopped)
        if notes is not None and out is not None:
            notes.extend(out.notes)
        problems.extend(other_layout_problems(root, task))
        if out is None and not any(p.severity == "error" for p in problems):
            problems.append(Problem("error", chimera.no_patient_found(root, chimera.LAYOUTS[task]),
                                    str(root)))  # fmt: skip
    else:  # the manifest
        from modalsurv.io.manifest import scan_manifest

        if not labels:
            raise ConfigError("a manifest always holds labels (time, event): reading one"
                              " without them is for CHIMERA folders only")  # fmt: skip

        problems = list(scan_manifest(root))
    problems.sort(key=lambda p: p.severity != "error")
    if strict and problems:
        chimera.raise_problems(problems, root)
    return problems


def _read(root: str | Path, task: int, event: str | None, features: str | Path | None,
          labels: bool = True) -> tuple[chimera.ChimeraCohort | None, list[Problem],
                                        Problem | None]:  # fmt: skip
    """(the cohort or None, the problems, the problem that stopped the read or None)."""
    problems: list[Problem] = []
    try:
        out = chimera.read_chimera_into(root, task, problems, event=event, features=features,
                                        labels=labels)  # fmt: skip
    except DataError as exc:  # e.g. the root folder itself is missing
        stop = Problem("error", exc.reason, exc.path, exc.patient, exc.field)
        return None, [*problems, stop], stop
    return out, problems, None


def other_layout_problems(root: str | Path, task: int) -> list[Problem]:
    """A warning per other CHIMERA layout whose clinical files lie under ``root``: a read
    with task ``task``'s layout does not see those cases (a task-3 ``data/`` folder
    inside a task-1 root, or a whole folder read with the wrong ``--layout``).

    Why: they were skipped without a word (a wrong layout said only "no patient found")."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for other, lay in chimera.LAYOUTS.items():
        if other == task:
            continue
        cases = sorted(case for case, p in chimera.clinical_files(root, lay) if p.is_file())
        if cases:
            shown = ", ".join(cases[:5]) + (", ..." if len(cases) > 5 else "")
            out.append(Problem("warning", f"{len(cases)} case(s) in the chimera-task{other}"
                               f" layout ({lay.clinical}: {shown}) are not read with"
                               f" --layout chimera-task{task}", str(root),
                               None, "layout"))  # fmt: skip
    return out
