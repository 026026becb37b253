"""A trained run folder as a challenge predictor: it extracts a case's features exactly as
the training features were extracted, and predicts with the fold ensemble.

The run folder holds ``config.yaml``, ``models/repeat_0/`` (the fold ensemble) and, when
image features were used, ``extraction.json`` (copied from the feature store by
``modalsurv train``): the encoders with their weight checksums, tile µm/px and size,
the per-slide tile cap and the MRI preprocessing. Encoder weights are looked up by their
recorded file name in the given weight folders (e.g. ``/opt/ml/model/weights``), then at
the recorded path; a file whose checksum differs from the record is refused, since
features from other weights would be silently wrong. Random-init encoders (allowed at
extraction with ``--random-weights``) are rebuilt from their fixed seed and checked the
same way.

A model whose tile (or MRI) encoder was fine-tuned in training (``finetune:``) holds the
adapted weights or LoRA adapters next to the encoder's record: the case's tiles (or
prepared volumes) are kept in memory (``images``) and each fold model re-encodes them
with its own adapted encoder, as in training's evaluation; the frozen encoder's
features only fill the shapes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.challenge.sockets import CaseInputs
from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, load_config
from modalsurv.errors import ConfigError, DataError, Problem, WeightsError
from modalsurv.features import encoders as enc
from modalsurv.features import wsi
from modalsurv.features.encoders import find_weights
from modalsurv.features.extract import MRI_REVISION, TILE_REVISION, SlideSettings, mri_config
from modalsurv.features.mri import embed_mri, prepare_mri
from modalsurv.features.tile_cache import MemoryImages
from modalsurv.io import clinical as clin
from modalsurv.io.chimera import DEFAULT_MAX_TILES
from modalsurv.io.feature_files import tile_subset
from modalsurv.io.rnaseq import read_rna_json, rna_from_pairs
from modalsurv.io.store import read_extraction_record
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.finetune import weight_folders

IMAGE_MODALITIES = ("wsi", "slide", "mri")
_TILES = {"tile_encoder": ("spec",), "tiles": ("mpp", "tile_size", "max_tiles_per_slide",
                                               "min_tissue", "sampling", "seed")}  # fmt: skip
# what ``ChallengeModel.encoders`` reads of the extraction record, per image modality
RECORD_KEYS = {"wsi": _TILES, "slide": _TILES,
               "mri": {"volume_encoder": ("spec",),
                       "mri": ("size", "margin_mm", "norm", "combine", "sequences")}}  # fmt: skip


class ModelMismatchError(DataError):
    """The model folder cannot answer these inputs (other task, missing record, weights)."""


@dataclass
class Encoders:
    """The frozen encoders of an extraction record, rebuilt and checked."""

    tile: enc.TileEncoder | None = None
    slide: Any = None
    volume: enc.VolumeEncoder | None = None
    slide_settings: SlideSettings | None = None
    mri: Any = None  # MriConfig


@dataclass
class CaseResult:
    """One case's answer and how it was reached."""

    value: float
    risk: float
    modalities: list[str]
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    n_tiles: int = 0


def _schema(task: str, event: str | None) -> clin.Schema:
    """The task's clinical schema without labels (an inference record has none; label
    columns that are present anyway are ignored, not reported)."""
    base = clin.TASK1 if task == "task1" else clin.task3_schema(event or "progression")
    labels = tuple(c for c in (base.time, base.event) if c)
    return replace(base, time=None, event=None, ignore=(*base.ignore, *labels))


def _checked(built: Any, entry: dict[str, Any], path: Path | None) -> Any:
    if built.checksum != entry.get("checksum"):
        raise WeightsError(
            f"encoder {entry.get('name')!r}: these weights are not the ones the model's features"
            f" were extracted with (checksum {built.checksum}, recorded {entry.get('checksum')})",
            path=path, field="weights")  # fmt: skip
    return built


class ChallengeModel:
    """A finished run folder, ready to answer challenge cases (see module docstring)."""

    def __init__(self, run: Path, ensemble: FoldEnsemble, config: RunConfig,
                 record: dict[str, Any] | None) -> None:  # fmt: skip
        self.run = run
        self.ensemble = ensemble
        self.config = config
        self.record = record
        self._encoders: Encoders | None = None
        first = ensemble.members[0]
        self.modalities: list[str] = list(first.modalities_)
        self.in_dims: dict[str, int] = dict(first.preprocessor_.in_dims)
        self.bags = {m: k == "bag" for m, k in first.preprocessor_.kinds.items()}
        # modalities whose encoder the fold models fine-tuned: their images are kept
        self.adapted = {m.finetune_.modality for m in ensemble.members
                        if getattr(m, "finetune_", None) is not None}  # fmt: skip
        self.images = MemoryImages()  # the current case's tiles / volumes (adapted encoders)

    @classmethod
    def load(cls, run: str | Path, task: str, weights: Sequence[str | Path] = ()
             ) -> ChallengeModel:  # fmt: skip
        """Load and check a run folder for ``task`` ("task1" | "task3"). ``weights``:
        folders holding encoder weights, needed here when the model fine-tuned an
        encoder (default: RUN/weights, then the recorded path)."""
        run = Path(run)
        bundle = run / "models" / "repeat_0"
        if not (bundle / "bundle.json").is_file() or not (run / "config.yaml").is_file():
            # a mistyped folder: a ConfigError (exit 2), as evaluate / export-model give
            raise ConfigError(f"{run} is not a finished modalsurv run folder (needs config.yaml"
                              " and models/repeat_0/bundle.json)")  # fmt: skip
        config = load_config(run / "config.yaml")
        data = config.data
        if data.source == "chimera" and (data.name or "task1") != task:
            raise ModelMismatchError(f"the model was trained on CHIMERA {data.name}; these inputs"
                                     f" are {task}", path=run, field="task")  # fmt: skip
        with weight_folders([*map(Path, weights), run / "weights"]):
            ensemble = FoldEnsemble.load(bundle)
        model = cls(run, ensemble, config, read_extraction_record(run))
        model._check_task(task)
        return model

    def _check_revisions(self, images: list[str], rec: dict[str, Any]) -> None:
        """A case's features are made by this code: a model trained on features of another
        tile / MRI revision (``features.extract.TILE_REVISION``) would read features unlike
        its training ones, silently."""
        parts = {"wsi": ("tiles", TILE_REVISION), "slide": ("tiles", TILE_REVISION),
                 "mri": ("mri", MRI_REVISION)}  # fmt: skip
        for sec, now in dict(parts[m] for m in images).items():
            made = rec[sec].get("revision", 1)
            if made != now:
                raise ModelMismatchError(
                    f"the model's {sec} features were made by revision {made} of modalsurv's"
                    f" extraction; this version makes revision {now}, so a case's features"
                    " would not be made as its training ones were: extract the training"
                    " folder into a new store and train again", path=self.run / "extraction.json",
                    field=f"{sec}.revision")  # fmt: skip

    def _check_task(self, task: str) -> None:
        step = self.ensemble.members[0].preprocessor_.steps.get("clinical")
        if step is not None:
            want = _schema(task, self.config.data.params.get("event")).feature_names()
            have = list(step.feature_names_in_)
            if have != want:
                raise ModelMismatchError(
                    f"the model's clinical variables are not {task}'s: model"
                    f" {have[:4]}..., {task} {want[:4]}...", path=self.run, field="clinical")  # fmt: skip
        images = [m for m in self.modalities if m in IMAGE_MODALITIES]
        rec = self.record or {}
        need = {"wsi": "tile_encoder", "slide": "tile_encoder", "mri": "volume_encoder"}
        lacking = [m for m in images if not rec.get(need[m])]
        if lacking:
            raise ModelMismatchError(
                f"the model uses {lacking} features but its run folder has no extraction record"
                " for them (extraction.json: trained on precomputed features?); the challenge"
                " command can only extract features the way 'modalsurv extract' records",
                path=self.run, field="extraction")  # fmt: skip
        # a damaged record is named here, not met as a KeyError while answering
        absent = sorted({f"{sec}.{key}" for m in images for sec, keys in RECORD_KEYS[m].items()
                         for key in keys
                         if not isinstance(rec.get(sec), dict) or key not in rec[sec]})  # fmt: skip
        if absent:
            raise ModelMismatchError(
                f"the extraction record lacks {absent}: the model folder's extraction.json is"
                " damaged or was edited",
                path=self.run / "extraction.json", field="extraction")  # fmt: skip
        self._check_revisions(images, rec)
        unknown = [m for m in self.modalities if m not in (*IMAGE_MODALITIES, "clinical", "rna")]
        if unknown:
            raise ModelMismatchError(f"the model uses modalities {unknown} that challenge inputs"
                                     " do not provide", path=self.run, field="modalities")  # fmt: skip

    # ------------------------------------------------------------------ encoders
    def encoders(self, weight_folders: Sequence[str | Path] = (), device: str = "cpu") -> Encoders:
        """Rebuild (once) the encoders the model's image features need, checksums checked."""
        if self._encoders is not None:
            return self._encoders
        rec = self.record or {}
        folders = [Path(f) for f in weight_folders] + [self.run / "weights"]
        out = Encoders()
        if any(m in self.modalities for m in ("wsi", "slide")):
            te = rec["tile_encoder"]
            path = find_weights(te, folders)
            out.tile = _checked(enc.get_tile_encoder(te["spec"], path, device=device,
                                                     **dict(te.get("kwargs") or {})), te, path)  # fmt: skip
            se = rec.get("slide_encoder") or {"spec": "mean"}
            spath = find_weights(se, folders) if se.get("weights_name") else None
            out.slide = enc.get_slide_encoder(se["spec"], out.tile.dim, spath, device)
            if spath is not None:  # another snapshot of the slide model: other slide vectors
                _checked(out.slide, se, spath)
            t = rec["tiles"]
            out.slide_settings = SlideSettings(
                mpp=t["mpp"], tile_size=t["tile_size"], max_tiles=t["max_tiles_per_slide"],
                min_tissue=t["min_tissue"], sampling=t["sampling"], seed=t["seed"],
                mpp_override=t.get("mpp_override"), workers=2, batch_size=32)  # fmt: skip
        if "mri" in self.modalities:
            ve = rec["volume_encoder"]
            path = find_weights(ve, folders)
            out.volume = _checked(enc.get_volume_encoder(ve["spec"], path, device=device), ve, path)
            out.mri = mri_config(rec["mri"])
        self._encoders = out
        return out

    # ------------------------------------------------------------------ one case
    def case_cohort(self, case: CaseInputs, encoders: Encoders, timer: dict[str, float]
                    ) -> tuple[Cohort, list[Problem], int]:  # fmt: skip
        """A one-patient Cohort with every modality the model uses (absent where the case
        lacks it), the problems met, and the number of tiles encoded."""
        problems = list(case.problems)
        t0 = time.perf_counter()
        self.images.clear()
        items: dict[str, np.ndarray | None] = {}
        schema = _schema(case.task, self.config.data.params.get("event"))
        path = case.sources.get("clinical")  # the file read (by role: see CaseInputs)
        src = {case.case: path} if path else {}
        table = clin.coerce_records({case.case: case.clinical}, schema, problems, src,
                                    collect_errors=True)  # fmt: skip
        x_clin, _ = clin.clinical_to_matrix(table, schema, problems)
        items["clinical"] = x_clin[0]
        if "rna" in self.modalities:
            items["rna"] = self._rna(case, problems)
        timer["reading"] = timer.get("reading", 0.0) + time.perf_counter() - t0
        n_tiles = 0
        if any(m in self.modalities for m in ("wsi", "slide")):
            bag, vec, n_tiles = self._slides(case, encoders, problems, timer)
            items["wsi"], items["slide"] = bag, vec
        if "mri" in self.modalities:
            t0 = time.perf_counter()
            items["mri"] = self._mri(case, encoders, problems)
            timer["mri"] = timer.get("mri", 0.0) + time.perf_counter() - t0
        return self._cohort(case.case, items), problems, n_tiles

    def _rna(self, case: CaseInputs, problems: list[Problem]) -> np.ndarray | None:
        if case.rna is None:
            return None
        genes = list(self.ensemble.members[0].preprocessor_.steps["rna"].feature_names_in_)
        source = case.sources.get("rna")
        try:
            if source is not None and "rna" not in case.inline and Path(source).is_file():
                # the file again, as training reads it: a gene written twice keeps both
                # values (the socket's dict kept only the last)
                series = read_rna_json(source, case.case)
            else:  # the value in inputs.json: a dict, one value per gene
                series = rna_from_pairs(list(case.rna.items()), case.case, source)
        except DataError as exc:
            problems.append(Problem("warning", f"{exc.reason}; predicting without RNA", exc.path,
                                    case.case, exc.field or "rna"))  # fmt: skip
            return None
        # a repeated gene: the mean of its values, as training merges them (align_genes)
        series = series.groupby(level=0, sort=False).mean()
        values = series.reindex(pd.Index(genes)).to_numpy(np.float64)
        missing = int(np.isnan(values).sum())
        if missing == len(genes):
            problems.append(Problem("warning", "none of the model's genes is in the RNA profile;"
                                    " predicting without RNA", None, case.case, "rna"))  # fmt: skip
            return None
        huge = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)  # NaN: False
        if len(huge):  # read as inf in float32: treated as an infinite value is (no answer
            # at all before: "features contain +/-inf")
            problems.append(Problem("warning", f"expression value {values[huge[0]]:g} is beyond"
                                    " float32; predicting without RNA", case.sources.get("rna"),
                                    case.case, str(genes[huge[0]])))  # fmt: skip
            return None
        step = self.ensemble.members[0].preprocessor_.steps["rna"]
        negative = np.flatnonzero(values < 0)  # NaN compares False
        if getattr(step, "log1p", False) and len(negative):
            problems.append(Problem("warning", f"negative expression value {values[negative[0]]:g}"
                                    " (the model reads raw counts / TPM through log1p);"
                                    " predicting without RNA", case.sources.get("rna"),
                                    case.case, str(genes[negative[0]])))  # fmt: skip
            return None
        if missing:
            problems.append(Problem("warning", f"{missing} of the model's {len(genes)} genes missing"
                                    " from the RNA profile; imputed with the training median",
                                    None, case.case, "rna"))  # fmt: skip
        return values.astype(np.float32)

    def _slides(self, case: CaseInputs, encoders: Encoders, problems: list[Problem],
                timer: dict[str, float]) -> tuple[np.ndarray | None, np.ndarray | None, int]:  # fmt: skip
        s, tile = encoders.slide_settings, encoders.tile
        assert s is not None and tile is not None
        bags, vecs, kept = [], [], []
        keep = "wsi" in self.adapted
        for path, mask in zip(case.slides, case.masks or [None] * len(case.slides)):
            try:
                t0 = time.perf_counter()
                with wsi.Slide(path, mpp_override=s.mpp_override, backend=s.backend) as slide:
                    try:
                        tm = wsi.tissue_mask(slide, mask)
                    except DataError as exc:  # the mask alone is bad: the slide still counts
                        problems.append(Problem("warning", f"{exc.reason}; tissue found by Otsu"
                                                " thresholding instead", str(mask), case.case,
                                                "wsi"))  # fmt: skip
                        tm = wsi.tissue_mask(slide, None)
                    plan = wsi.plan_tiles(slide, tm, s.mpp, s.tile_size, s.max_tiles,
                                          s.min_tissue, s.sampling, s.seed)  # fmt: skip
                    t1 = time.perf_counter()
                    feats = np.empty((len(plan.coords), tile.dim), dtype=np.float32)
                    i, encode = 0, 0.0
                    slide_tiles = []
                    for tiles, _ in wsi.iter_tile_batches(slide, plan, s.batch_size, s.workers):
                        if keep:
                            slide_tiles.append(tiles)
                        te = time.perf_counter()
                        feats[i : i + len(tiles)] = tile.encode(tiles)
                        encode += time.perf_counter() - te
                        i += len(tiles)
                t2 = time.perf_counter()
                timer["tiling"] = timer.get("tiling", 0.0) + t1 - t0
                timer["encoding"] = timer.get("encoding", 0.0) + encode
                timer["reading"] = timer.get("reading", 0.0) + (t2 - t1 - encode)
            except DataError as exc:
                problems.append(Problem("warning", f"{exc.reason}; slide skipped", str(path),
                                        case.case, exc.field or "wsi"))  # fmt: skip
                continue
            except Exception as exc:  # an unreadable slide must not cost the whole answer
                problems.append(Problem("warning", f"cannot read slide ({type(exc).__name__}:"
                                        f" {exc}); slide skipped", str(path), case.case, "wsi"))  # fmt: skip
                continue
            if not len(feats):
                problems.append(Problem("warning", "no tile with enough tissue; slide skipped",
                                        str(path), case.case, "wsi"))  # fmt: skip
                continue
            bags.append(feats)
            if keep:
                kept.append(np.concatenate(slide_tiles))
            vecs.append(encoders.slide.encode(feats, plan.coords, plan.tile_size_lv0))
        if not bags:
            return None, None, 0
        bag = np.concatenate(bags)
        n = len(bag)
        cap = self.config.data.params.get("max_tiles", DEFAULT_MAX_TILES)
        keep_idx = np.arange(n)
        if cap is not None and len(bag) > cap:
            keep_idx = tile_subset(case.sample_key, len(bag), int(cap),
                                   int(self.config.data.params.get("seed", 0)))  # fmt: skip
            bag = bag[keep_idx]
        if keep:  # the very tiles of the bag, in its order
            self.images.add(case.case, tiles=np.concatenate(kept)[keep_idx])
        return bag, np.mean(vecs, axis=0).astype(np.float32), n

    def _mri(self, case: CaseInputs, encoders: Encoders, problems: list[Problem]
             ) -> np.ndarray | None:  # fmt: skip
        # the sequences the model's MRI features were extracted from (the record's), not
        # all three: a case lacking one the model never used still has its MRI
        if not case.mri or any(case.mri.get(q) is None for q in encoders.mri.sequences):
            return None
        try:
            try:
                vols = prepare_mri(case.mri, case.mri_mask, encoders.mri, case.case)
            except DataError as exc:
                if case.mri_mask is None or exc.path != str(case.mri_mask):
                    raise
                # the prostate mask alone is bad: the sequences, uncropped, as without one
                problems.append(Problem("warning", f"{exc.reason}; MRI used without cropping",
                                        exc.path, case.case, "mri"))  # fmt: skip
                vols = prepare_mri(case.mri, None, encoders.mri, case.case)
            bad = [name for name, v in vols.items() if not np.isfinite(v).all()]
            if bad:  # as extraction: a non-finite voxel makes the MRI unusable
                raise DataError(f"NaN or inf voxels in {', '.join(bad)}", field="mri")
            if "mri" in self.adapted:
                self.images.add(case.case, volumes=np.stack(list(vols.values())))
            out = embed_mri(vols, encoders.volume, encoders.mri.combine)
            if not np.isfinite(out).all():
                raise DataError("the MRI embedding is not finite", field="mri")
            return out
        except Exception as exc:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            problems.append(Problem("warning", f"MRI unusable ({reason}); predicting without it",
                                    getattr(exc, "path", None), case.case, "mri"))  # fmt: skip
            return None

    def _cohort(self, case: str, items: dict[str, np.ndarray | None]) -> Cohort:
        feats, present, masks = {}, {}, {}
        for m in self.modalities:
            x, d = items.get(m), self.in_dims[m]
            if x is not None and x.shape[-1] != d:
                raise ModelMismatchError(f"{m} features of this case are {x.shape[-1]}-d; the"
                                         f" model was trained on {d}-d", path=self.run, field=m)  # fmt: skip
            present[m] = np.array([x is not None])
            if self.bags.get(m):
                k = 1 if x is None else len(x)
                feats[m] = np.zeros((1, k, d), np.float32) if x is None else x[None].astype(np.float32)
                masks[m] = np.array([[x is not None] * k])
            else:
                feats[m] = np.zeros((1, d), np.float32) if x is None else x[None].astype(np.float32)
        return Cohort([case], [1.0], [False], features=feats, present=present, bag_mask=masks)
