"""The grand-challenge interface of CHIMERA tasks 1 and 3: which socket holds what, in one
table, and one case's ``/input`` folder read into the files a prediction needs.

Facts come from the organisers' public templates (``DIAGNijmegen`` / the CHIMERA minimal
baseline) and differ between their versions; none is confirmed by the organisers, so the
table lists every variant seen and is the one place to correct them:

- task 1: the HBV sequence appears as ``transverse-hbv-prostate-mri`` and, in one
  template, as ``axial-dwi-prostate-mri``; the extra slide masks appear as folders
  ``prostatectomy-tissue-mask-wsi-{i}`` and ``prostatectomy-tissue-wsi-{i}`` (slugs
  ``prostatectomy-tissue-mask-wsi-{i}`` / ``prostatectomy-tissue-whole-slide-image-{i}-2``);
- task 3: the clinical socket appears as ``...-bladder-cancer-recurrence-patients``,
  ``...-bladder-cancer-recurrence`` and ``...-bladder-cancer-patients``.

``/input/inputs.json`` (a list of ``{"interface": {"slug", "relative_path", ...},
"value", ...}``), when present, is preferred: its relative paths win over the table's,
and a JSON socket's inline ``value`` is used when its file is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modalsurv.errors import ConfigError, DataError, Problem
from modalsurv.utils import staged_folder

Kind = Literal["json", "image"]
IMAGE_SUFFIXES = (".tif", ".tiff", ".mha", ".mhd", ".nii", ".nii.gz", ".svs", ".ndpi", ".mrxs")
MAX_EXTRA_SLIDES = 9  # task 1: up to 9 slides beside the main one


class ChallengeInputError(DataError):
    """A required socket is missing or unreadable: names the socket and the file."""


@dataclass(frozen=True)
class Socket:
    """One input of the interface: its role for modalsurv, the slugs that carry it (the
    first is the documented one) and where its file or folder sits under ``/input``."""

    role: str  # clinical | rna | t2w | adc | hbv | mri_mask | slide | slide_mask
    slugs: tuple[str, ...]
    paths: tuple[str, ...]
    kind: Kind
    required: bool = False
    index: int = 0  # slide number: 0 the main slide, 1..9 the extra ones
    extension: bool = False  # not part of the organisers' interface: used when present


def _extra_slides() -> tuple[Socket, ...]:
    out = []
    for i in range(1, MAX_EXTRA_SLIDES + 1):
        out.append(Socket("slide", (f"prostatectomy-tissue-whole-slide-image-{i}",),
                          (f"images/prostatectomy-wsi-z-{i}",), "image", index=i))  # fmt: skip
        out.append(Socket("slide_mask", (f"prostatectomy-tissue-mask-wsi-{i}",
                                         f"prostatectomy-tissue-whole-slide-image-{i}-2"),
                          (f"images/prostatectomy-tissue-mask-wsi-{i}",
                           f"images/prostatectomy-tissue-wsi-{i}"), "image", index=i))  # fmt: skip
    return tuple(out)


SOCKETS: dict[str, tuple[Socket, ...]] = {
    "task1": (
        Socket("clinical", ("chimera-clinical-data-of-prostate-cancer-patients",),
               ("chimera-clinical-data-of-prostate-cancer-patients.json",), "json", True),
        Socket("t2w", ("axial-t2-prostate-mri",), ("images/axial-t2-prostate-mri",), "image"),
        Socket("adc", ("axial-adc-prostate-mri",), ("images/axial-adc-prostate-mri",), "image"),
        Socket("hbv", ("transverse-hbv-prostate-mri", "axial-dwi-prostate-mri"),
               ("images/transverse-hbv-prostate-mri", "images/axial-dwi-prostate-mri"), "image"),
        Socket("mri_mask", ("prostate-tissue-mask-for-axial-t2-prostate-mri",),
               ("images/prostate-tissue-mask-for-axial-t2-prostate-mri",), "image"),
        Socket("slide", ("prostatectomy-tissue-whole-slide-image",),
               ("images/prostatectomy-wsi",), "image"),
        Socket("slide_mask", ("prostatectomy-tissue-mask",),
               ("images/prostatectomy-tissue-mask",), "image"),
        *_extra_slides(),
        # a modalsurv extension (task 1 has no RNA in CHIMERA): lets a cohort that has RNA,
        # such as the synthetic one, answer with it; absent on the grand challenge
        Socket("rna", ("bulk-rna-seq-prostate-cancer",), ("bulk-rna-seq-prostate-cancer.json",),
               "json", extension=True),
    ),
    "task3": (
        Socket("clinical", ("chimera-clinical-data-of-bladder-cancer-recurrence-patients",
                            "chimera-clinical-data-of-bladder-cancer-recurrence",
                            "chimera-clinical-data-of-bladder-cancer-patients"),
               ("chimera-clinical-data-of-bladder-cancer-recurrence-patients.json",
                "chimera-clinical-data-of-bladder-cancer-recurrence.json",
                "chimera-clinical-data-of-bladder-cancer-patients.json"), "json", True),
        Socket("rna", ("bulk-rna-seq-bladder-cancer",), ("bulk-rna-seq-bladder-cancer.json",),
               "json"),
        Socket("slide", ("bladder-cancer-tissue-biopsy-whole-slide-image",),
               ("images/bladder-cancer-tissue-biopsy-wsi",), "image"),
        Socket("slide_mask", ("tissue-mask",), ("images/tissue-mask",), "image"),
    ),
}  # fmt: skip
OUTPUTS = {
    "task1": "time-to-biochemical-recurrence-for-prostate-cancer-months.json",
    "task3": "likelihood-of-bladder-cancer-recurrence.json",
}
TASKS = tuple(SOCKETS)


@dataclass
class CaseInputs:
    """One case, as read from ``/input``: the clinical record, the RNA profile (gene →
    value) and the image files by role, plus every problem met on the way."""

    task: str
    case: str  # a name for messages and tile sampling (the main slide's stem, or the id)
    clinical: dict[str, Any]
    rna: dict[str, Any] | None = None
    slides: list[Path] = field(default_factory=list)
    masks: list[Path | None] = field(default_factory=list)
    mri: dict[str, Path | None] = field(default_factory=dict)
    mri_mask: Path | None = None
    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # role (clinical, rna, t2w, ...) → file
    # roles whose value is the inline one of inputs.json (their file missing or corrupt):
    # ``sources`` then names inputs.json, which must not be re-read as that role's file
    inline: set[str] = field(default_factory=set)

    @property
    def sample_key(self) -> str:
        """What seeds the subset of tiles kept when the bag is over the cap: the patient id
        the main slide's name carries under CHIMERA's naming (what ``modalsurv extract``'s
        store, and so training and ``predict``, seed it with), else that slide's stem;
        the same whether the case comes from /input or a folder."""
        from modalsurv.io.chimera import case_of_slide

        if not self.slides:
            return self.case
        name = self.slides[0].name
        return case_of_slide(int(self.task[-1]), name) or name.split(".")[0]


def task_name(task: str) -> str:
    """"task1" | "task3" from the spellings a user types (task1, 1, task_1, TASK-1)."""
    t = task.lower().replace("-", "").replace("_", "")
    t = {"1": "task1", "3": "task3"}.get(t, t)
    if t not in SOCKETS:  # a usage error (exit 2), not bad data
        raise ConfigError(f"challenge task must be task1 or task3; found {task!r}")
    return t


def _inputs_json(root: Path) -> dict[str, dict[str, Any]]:
    """slug → entry of ``/input/inputs.json`` (empty when the file is absent)."""
    path = root / "inputs.json"
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ChallengeInputError(f"corrupt inputs.json: {exc}", path=path,
                                  field="inputs.json") from None  # fmt: skip
    if not isinstance(entries, list):
        raise ChallengeInputError("inputs.json must be a list of socket values", path=path,
                                  field="inputs.json")  # fmt: skip
    out = {}
    for k, e in enumerate(entries):
        iface = e.get("interface") if isinstance(e, dict) else None
        if iface is not None and not isinstance(iface, dict):
            raise ChallengeInputError(f"inputs.json entry {k}: 'interface' must be an object,"
                                      f" found {type(iface).__name__}", path=path,
                                      field="inputs.json")  # fmt: skip
        slug = (iface or {}).get("slug")
        if slug:
            out[str(slug)] = e
    return out


def _image_files(folder: Path) -> list[Path]:
    """The image files of a socket folder in name order; hidden files (macOS ``._x.tif``
    resource forks, editors' dotfiles) are not images, and sorting first they would name
    the case and seed its tile sample."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(IMAGE_SUFFIXES))  # fmt: skip


def _hidden_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def _locate(root: Path, sock: Socket, listed: dict[str, dict[str, Any]]
            ) -> tuple[str, Path | None, dict[str, Any] | None]:  # fmt: skip
    """(slug used, path or None, inputs.json entry or None) for one socket."""
    for slug in sock.slugs:
        entry = listed.get(slug)
        if entry is not None:
            rel = (entry.get("interface") or {}).get("relative_path")
            paths = ([rel] if rel else []) + list(sock.paths)
            for r in paths:
                if (root / r).exists():
                    return slug, root / r, entry
            return slug, None, entry
    for slug, rel in zip(sock.slugs, sock.paths):
        if (root / rel).exists():
            return slug, root / rel, None
    for rel in sock.paths[len(sock.slugs):]:
        if (root / rel).exists():
            return sock.slugs[0], root / rel, None
    return sock.slugs[0], None, None


def _json_value(slug: str, path: Path | None, entry: dict[str, Any] | None, required: bool,
                problems: list[Problem]) -> tuple[Any, str | None]:  # fmt: skip
    """(value, where it came from) of a JSON socket: its file, else its inputs.json value.

    A file that is not JSON (empty, cut short) costs only that file: the inputs.json value
    is used when there is one, an optional socket is otherwise absent (a warning); only a
    required socket with nothing usable stops the case."""
    inline = entry.get("value") if entry is not None else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8-sig")), str(path)
        except (ValueError, UnicodeDecodeError) as exc:
            if inline is None and required:
                raise ChallengeInputError(f"corrupt JSON: {exc}", path=path, field=slug) from None
            use = "using its value in inputs.json" if inline is not None else "ignored"
            problems.append(Problem("warning", f"corrupt JSON ({exc}); {use}", str(path), None,
                                    slug))  # fmt: skip
    if inline is not None:
        return inline, "inputs.json"
    return None, None


def read_case(input_dir: str | Path, task: str) -> CaseInputs:
    """Read one case's ``/input`` folder (see module docstring).

    A missing or corrupt clinical socket raises ChallengeInputError naming the socket and
    the file; every optional input that is absent or unusable (no MRI, no RNA, an extra
    slide without its mask) is a problem in ``.problems`` and the rest is used.
    """
    root = Path(input_dir)
    t = task_name(task)
    if not root.is_dir():
        raise ChallengeInputError("input folder does not exist", path=root, field="input")
    listed = _inputs_json(root)
    problems: list[Problem] = []
    sources: dict[str, str] = {}
    known = {s for sock in SOCKETS[t] for s in sock.slugs}
    for slug in sorted(set(listed) - known):
        problems.append(Problem("warning", "socket not used by modalsurv", str(root / "inputs.json"),
                                None, slug))  # fmt: skip
    values: dict[str, Any] = {}
    json_paths: dict[str, str] = {}
    inline: set[str] = set()
    images: dict[tuple[str, int], list[Path]] = {}
    for sock in SOCKETS[t]:
        slug, path, entry = _locate(root, sock, listed)
        if sock.kind == "json":
            value, source = _json_value(slug, path, entry, sock.required, problems)
            if value is None:
                where = root / sock.paths[0]
                if sock.required:
                    raise ChallengeInputError(f"required input socket {slug!r} is missing"
                                              f" (looked for {', '.join(sock.paths)})",
                                              path=where, field=slug)  # fmt: skip
                if not sock.extension:
                    problems.append(Problem("warning", f"optional input socket {slug!r} absent;"
                                            f" predicting without {sock.role}", str(where),
                                            None, slug))  # fmt: skip
                continue
            values[sock.role] = value
            if source == "inputs.json":
                inline.add(sock.role)
                source = str(root / "inputs.json")
            sources[sock.role] = json_paths[sock.role] = str(source)
            continue
        files = _image_files(path) if path is not None else []
        if path is not None and not files:
            problems.append(Problem("warning", f"socket {slug!r}: no image file in the folder",
                                    str(path), None, slug))  # fmt: skip
        for f in _hidden_files(path) if path is not None else []:
            problems.append(Problem("warning", "hidden file ignored (not an image)", str(f), None,
                                    slug))  # fmt: skip
        if files:
            images[(sock.role, sock.index)] = files
            role = sock.role if sock.index == 0 else f"{sock.role}_{sock.index}"
            sources[role] = ", ".join(str(f) for f in files)
    clinical = values.get("clinical")
    if isinstance(clinical, list) and len(clinical) == 1:
        clinical = clinical[0]
    if not isinstance(clinical, dict):
        raise ChallengeInputError("the clinical socket must hold one JSON object of field →"
                                  f" value; found {type(clinical).__name__}",
                                  path=json_paths.get("clinical"), field="clinical")  # fmt: skip
    rna = values.get("rna")
    if rna is not None and not isinstance(rna, dict):
        problems.append(Problem("warning", "the RNA socket is not a JSON object of gene →"
                                " value; predicting without RNA", None, None, "rna"))  # fmt: skip
        rna = None
    slides, masks = _pair_slides(images, problems)
    mri = {q: _one_volume(images, q, t, problems) for q in ("t2w", "adc", "hbv")}
    mri_mask = _one_volume(images, "mri_mask", t, problems)
    if t == "task1":
        have = [q for q, p in mri.items() if p is not None]
        if have and len(have) < 3:
            problems.append(Problem("warning", f"MRI sequences missing: {sorted(set(mri) - set(have))};"
                                    " predicting without MRI", None, None, "mri"))  # fmt: skip
        elif not have:
            problems.append(Problem("warning", "no MRI; predicting without it", None, None, "mri"))
        if have and mri_mask is None:
            problems.append(Problem("warning", "no prostate mask; the MRI is not cropped to the"
                                    " prostate", None, None, "mri_mask"))  # fmt: skip
    if not slides:
        problems.append(Problem("warning", "no slide; predicting without pathology", None, None,
                                "wsi"))  # fmt: skip
    case = slides[0].name.split(".")[0] if slides else "case"
    return CaseInputs(t, case, dict(clinical), rna, slides, masks,
                      mri if t == "task1" else {}, mri_mask, problems, sources, inline)  # fmt: skip


def _one_volume(images: dict[tuple[str, int], list[Path]], role: str, task: str,
                problems: list[Problem]) -> Path | None:  # fmt: skip
    """The first file (by name) of an MRI socket; more than one is a warning naming the file
    used and those ignored, since a sequence is one volume."""
    files = images.get((role, 0)) or []
    if len(files) > 1:
        problems.append(Problem("warning", f"{len(files)} files in the socket folder; using"
                                f" {files[0].name}, ignoring {', '.join(f.name for f in files[1:])}",
                                str(files[0].parent), None, slug_of(role, task)))  # fmt: skip
    return files[0] if files else None


def _mask_owners(slides: list[Path], masks: list[Path]) -> dict[Path, Path | None]:
    """Each mask's slide by name: the slide whose stem is the longest that the mask's name
    equals or continues with a separator (``X_HE`` owns ``X_HE_mask`` but ``X_HE_2`` owns
    ``X_HE_2_mask``; ``p_1`` never owns ``p_10_tissue``); None when no stem matches."""
    def owns(stem: str, name: str) -> bool:
        return bool(stem) and (name == stem or (name.startswith(stem) and name[len(stem)] in "_-."))

    out: dict[Path, Path | None] = {}
    for m in masks:
        name = m.name.split(".")[0]
        fits = [f for f in slides if owns(f.name.split(".")[0], name)]
        out[m] = max(fits, key=lambda f: len(f.name.split(".")[0]), default=None)
    return out


def _pair_slides(images: dict[tuple[str, int], list[Path]], problems: list[Problem]
                 ) -> tuple[list[Path], list[Path | None]]:  # fmt: skip
    """Slides in socket order (main, then extra 1..9; several files in one folder in name
    order), each with its mask when one is given (same socket number; within a folder by
    name, else by position). A slide without a mask gets tissue detected instead."""
    slides: list[Path] = []
    masks: list[Path | None] = []
    for i in range(MAX_EXTRA_SLIDES + 1):
        files = images.get(("slide", i), [])
        cands = list(images.get(("slide_mask", i), []))
        owner = _mask_owners(files, cands)
        for k, f in enumerate(files):
            named = [m for m in cands if owner[m] == f]
            mask = named[0] if named else (cands[k] if len(cands) == len(files) else None)
            if mask is None:
                problems.append(Problem("warning", "slide has no tissue mask; tissue is detected"
                                        " on a thumbnail", str(f), None, "slide_mask"))  # fmt: skip
            slides.append(f)
            masks.append(mask)
        if not files and cands:
            problems.append(Problem("warning", "tissue mask without its slide; ignored",
                                    str(cands[0]), None, "slide_mask"))  # fmt: skip
    return slides, masks


def slug_of(role: str, task: str, index: int = 0) -> str:
    """The documented socket slug of a role (for messages and for writing test inputs)."""
    for sock in SOCKETS[task_name(task)]:
        if sock.role == role and sock.index == index:
            return sock.slugs[0]
    raise KeyError(role)


def folder_of(role: str, task: str, index: int = 0) -> str:
    """The documented relative path of a role under ``/input``."""
    for sock in SOCKETS[task_name(task)]:
        if sock.role == role and sock.index == index:
            return sock.paths[0]
    raise KeyError(role)



def case_to_input(root: str | Path, task: str, case: str, dest: str | Path,
                  inputs_json: bool = True, replace: bool = False) -> Path:  # fmt: skip
    """Lay out one case of a CHIMERA storage folder as the challenge presents it under
    ``/input`` (labels removed from the clinical record; images copied into their socket
    folders; ``inputs.json`` listing the sockets). For trying a model before submitting,
    and for the demo and the tests.

    ``dest`` must be new or empty: a socket folder holding another case's files would be
    read as this case's (every slide of a folder is taken). ``replace`` empties it first."""
    import shutil

    from modalsurv.io.chimera import LAYOUTS, discover

    t = task_name(task)
    problems: list[Problem] = []
    paths = discover(root, LAYOUTS[1 if t == "task1" else 3], problems, raw=True)
    if case not in paths.index:
        raise DataError("case not found", path=root, patient=case)
    row = paths.loc[case]
    dest = Path(dest)
    used = dest.exists() and (not dest.is_dir() or any(dest.iterdir()))
    if used and not (replace and _is_case_input(dest)):
        raise DataError("the folder exists and is not empty: an /input folder must hold one"
                        " case alone (give a new folder, or replace one that case-input wrote)",
                        path=dest, patient=case)  # fmt: skip
    # built beside ``dest`` and swapped in whole: a case that fails to read (a corrupt
    # clinical file) leaves the folder as it was
    with staged_folder(dest) as out:
        _write_case(row, t, case, out, inputs_json, root)
        if used:
            shutil.rmtree(dest)
        elif dest.exists():
            dest.rmdir()
        out.rename(dest)
    return dest


def _is_case_input(folder: Path) -> bool:
    """Whether ``folder`` holds only what ``case_to_input`` writes (the interface's socket
    JSON files by their names, ``images/``, ``inputs.json``): the one kind of folder
    ``replace`` may empty. A challenge ``/output`` folder (an answer JSON) is not one."""
    socket_files = {Path(p).name for socks in SOCKETS.values() for sock in socks
                    for p in sock.paths if p.endswith(".json")} | {"inputs.json"}  # fmt: skip
    return folder.is_dir() and all(
        (p.is_file() and p.name in socket_files) or (p.is_dir() and p.name == "images")
        for p in folder.iterdir())  # fmt: skip


def _write_case(row: Any, t: str, case: str, dest: Path, inputs_json: bool, root: Any) -> None:
    """Write one case's socket files and ``inputs.json`` into the empty folder ``dest``."""
    import shutil

    from modalsurv.io import clinical as clin
    from modalsurv.io.chimera import MRI_SEQUENCES

    entries: list[dict[str, Any]] = []

    def put_json(role: str, value: Any) -> None:
        slug, rel = slug_of(role, t), folder_of(role, t)
        (dest / rel).write_text(json.dumps(value), encoding="utf-8")
        entries.append({"interface": {"slug": slug, "relative_path": rel, "kind": "Anything"},
                        "value": value})  # fmt: skip

    def put_image(role: str, index: int, src: Path) -> None:
        slug, rel = slug_of(role, t, index), folder_of(role, t, index)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / rel / src.name)
        entries.append({"interface": {"slug": slug, "relative_path": rel, "kind": "Image"},
                        "image": {"name": src.name}})  # fmt: skip

    record = clin.read_json_file(row["clinical"], case)
    schema = clin.TASK1 if t == "task1" else clin.TASK3
    labels = {schema.time, schema.event, *clin.TASK3_LABELS, *clin.TASK3_LABELS.values(),
              *schema.leak, "BCR_PSA"}  # fmt: skip
    put_json("clinical", {k: v for k, v in record.items() if k not in labels})
    if row.get("rna"):
        put_json("rna", clin.read_json_file(row["rna"], case))
    if t == "task1" and len(row["slides"]) > MAX_EXTRA_SLIDES + 1:
        raise DataError(f"{len(row['slides'])} slides; the task-1 interface holds at most"
                        f" {MAX_EXTRA_SLIDES + 1} (the main socket and {MAX_EXTRA_SLIDES} extra)",
                        path=root, patient=case, field="slides")  # fmt: skip
    for i, (slide, mask) in enumerate(zip(row["slides"], row["masks"])):
        index = i if t == "task1" else 0
        put_image("slide", index, Path(slide))
        if mask is not None:
            put_image("slide_mask", index, Path(mask))
    if t == "task1":
        for q in MRI_SEQUENCES:
            if row.get(f"mri_{q}") is not None:
                put_image(q, 0, Path(row[f"mri_{q}"]))
        if row.get("mri_mask") is not None:
            put_image("mri_mask", 0, Path(row["mri_mask"]))
    if inputs_json:
        (dest / "inputs.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
