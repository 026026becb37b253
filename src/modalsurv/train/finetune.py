"""Fine-tuning an image encoder inside ModalSurv: the estimator's side.

``ModalSurv.fit`` asks :meth:`Finetune.plan` whether the run fine-tunes (``finetune.mode``
other than ``frozen`` and the modality in the model); if so, the plan

1. finds the image cache (``finetune.cache``, else ``image_cache`` in the feature store of
   ``data.features`` / a ``store:`` source; or the one bound with :func:`images`) and the
   encoder the cached modality was extracted with (the cache's record: preset or timm
   spec, architecture keywords, weights and checksum);
2. checks that the cache covers every training patient of the modality and that the
   cohort's features were made by that encoder (same width), with the cache's tile / MRI
   settings, from the same source files (the sidecars' fingerprints against the store's;
   predicted cohorts are checked the same way unless their images are bound);
3. builds, for every network (seed member), a fresh encoder from the preset and weights
   (checksum checked), wraps it in an ``nn.encoder_adapter`` adapter whose fixed map is
   the modality's train-fitted preprocessing, and attaches it to the network;
4. gives every cohort the estimator turns into tensors a row table (``x[ROWS]``) that the
   adapters' :class:`Feed` resolves to patients of the cache.

The cache is read only for the rows of the tensors being trained or predicted: during a
fold's training, its training (and inner validation) patients; the outer test fold is
read when it is predicted, by the finished model, never before. A saved model keeps
:meth:`Finetune.record` (the encoder entry, mode, settings) in its state and the adapted
weights (or LoRA adapters) in its safetensors; :meth:`Finetune.restore` rebuilds it, with
the encoder weights looked up by name in the folders bound by :func:`weight_folders`,
then at the recorded path.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalsurv.cohort import Cohort
from modalsurv.config import DataConfig, FinetuneConfig, RunConfig
from modalsurv.errors import ConfigError, FeatureError, WeightsError
from modalsurv.features import encoders as enc
from modalsurv.features.tile_cache import DEFAULT_FOLDER, ImageCache
from modalsurv.io.feature_files import tile_subset
from modalsurv.io.store import read_extraction_record
from modalsurv.utils import Progress

_IMAGES: contextvars.ContextVar[Any] = contextvars.ContextVar("modalsurv_images", default=None)
_WEIGHTS: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "modalsurv_weight_folders", default=())


@contextmanager
def images(source: Any) -> Iterator[Any]:
    """Within the block, fine-tuned models read their images from ``source`` (an
    ``ImageCache``, a ``MemoryImages``, or a folder path) instead of the cache their
    config names: predicting another cohort, or the challenge's one case."""
    if isinstance(source, str | Path):
        source = ImageCache(source)
    token = _IMAGES.set(source)
    try:
        yield source
    finally:
        _IMAGES.reset(token)


@contextmanager
def weight_folders(folders: Sequence[str | Path]) -> Iterator[None]:
    """Within the block, loading a fine-tuned model looks for its encoder weights by file
    name in ``folders`` first (as ``modalsurv challenge --weights``)."""
    token = _WEIGHTS.set(tuple(Path(f) for f in folders))
    try:
        yield
    finally:
        _WEIGHTS.reset(token)


def store_folder(data: DataConfig) -> Path | None:
    """A data source's feature store (``data.features``, or ``data.path`` of a ``store``
    source); None when it has none."""
    store = data.features if data.features else (data.path if data.source == "store" else None)
    return None if store is None else Path(store)


def data_cache_folder(data: DataConfig) -> Path | None:
    """The image cache of a data source's feature store: ``STORE/image_cache``, or where
    the store's extraction record says ``extract --cache-dir`` wrote it; None without a
    store."""
    store = store_folder(data)
    if store is None:
        return None
    beside = store / DEFAULT_FOLDER
    recorded = ((read_extraction_record(store) or {}).get("image_cache") or {}).get("path")
    return Path(recorded) if recorded and not beside.is_dir() else beside


def cache_folder(config: RunConfig) -> Path | None:
    """The image cache a config points at: ``finetune.cache``, else the one beside the
    data's feature store (:func:`data_cache_folder`)."""
    if config.finetune.cache:
        return Path(config.finetune.cache)
    return data_cache_folder(config.data)


def current_source(config: RunConfig) -> Any:
    """The bound source (:func:`images`), else the config's cache folder when it exists."""
    bound = _IMAGES.get()
    if bound is not None:
        return bound
    folder = cache_folder(config)
    return ImageCache(folder) if folder is not None and folder.is_dir() else None


def checked_cache(config: RunConfig) -> tuple[Any, dict[str, Any]]:
    """(the image cache a fine-tuning config reads, its entry for ``finetune.encoder``);
    a ConfigError saying how to write it when there is none or it lacks that encoder's
    images, a FeatureError when it was made with another encoder or other tile / MRI
    settings than the store's features. Why separate: a run checks this before it writes
    anything to its folder."""
    ft = config.finetune
    m = ft.encoder
    source = current_source(config)
    if not isinstance(source, ImageCache):
        where = cache_folder(config)
        raise ConfigError(
            f"finetune.mode {ft.mode!r} needs the image cache of the {m} features"
            f" ({'no cache folder: set finetune.cache or data.features' if where is None else f'{where} does not exist'});"
            " write it with modalsurv extract --tile-cache / --volume-cache")  # fmt: skip
    got = source.entry(m)
    if got is None:
        raise ConfigError(f"the image cache {source.root} holds no {m} images; extract with"
                          f" {'--tile-cache' if m == 'wsi' else '--volume-cache'}")  # fmt: skip
    _check_record(m, source, got, read_extraction_record(feature_store(config, source)) or {})
    return source, got


def feature_store(config: RunConfig, source: Any) -> Path:
    """The store whose features the cohort holds (a cache written with --cache-dir lies
    elsewhere); a bound or configured cache without one: the folder around it."""
    return store_folder(config.data) or source.root.parent


def _check_record(m: str, source: Any, got: dict[str, Any], record: dict[str, Any]) -> None:
    """The cache's encoder checksum and tile / MRI settings against the store's extraction
    ``record``: same encoder, other tiles (size, resolution, tissue threshold) or MRI
    preprocessing means the cached images are not what the features were made from."""
    key = "tile_encoder" if m == "wsi" else "volume_encoder"
    stored, checksum = (record.get(key) or {}).get("checksum"), got["encoder"].get("checksum")
    if stored is not None and stored != checksum:
        raise FeatureError(f"the image cache was written with encoder checksum {checksum};"
                           f" the store beside it says {stored}", path=source.root,
                           field=m)  # fmt: skip
    made, cached = record.get("tiles" if m == "wsi" else "mri"), got.get("settings")
    if isinstance(made, dict) and isinstance(cached, dict):
        # a key one side lacks is unset there (encoder_kwargs is kept only when set)
        differ = sorted(k for k in made.keys() | cached.keys() if made.get(k) != cached.get(k))
        if differ:
            raise FeatureError(f"the image cache's {m} images were made with other"
                               f" settings than the store's features ({', '.join(differ)}:"
                               f" {[cached.get(k) for k in differ]}, the store"
                               f" {[made.get(k) for k in differ]})", path=source.root,
                               field=m)  # fmt: skip


def _check_width(m: str, entry: dict[str, Any], settings: dict[str, Any], have: int,
                 source: Any) -> None:  # fmt: skip
    """The cached encoder's feature width against the cohort's (``have``)."""
    dim = cached_dim(m, entry, settings)
    if dim != have:
        raise FeatureError(f"the image cache's {m} encoder {entry.get('name')} gives {dim}-d"
                           f" features; the cohort's are {have}-d: the cache does not belong"
                           " to these features", path=source.root, field=m)  # fmt: skip


def cached_dim(modality: str, entry: dict[str, Any], settings: dict[str, Any]) -> int:
    """The width of the features the cached encoder makes (MRI ``concat``: per sequence)."""
    d = int(entry["dim"])
    if modality == "mri" and settings.get("combine", "concat") == "concat":
        return d * len(settings.get("sequences") or (1,))
    return d


def stored_fingerprints(store: Path | None, modality: str) -> dict[str, str | None]:
    """The store's source fingerprints of ``modality`` ({} without a store)."""
    if store is None:
        return {}
    from modalsurv.io.store import FeatureStore

    return FeatureStore(store).fingerprints(modality)


def check_images(config: RunConfig, cohort: Cohort) -> None:
    """Every check a fine-tuning fit makes of the image cache, for the whole ``cohort``
    at once: the cache and its encoder (:func:`checked_cache`), the feature width, and
    every patient's images present and made from its features' source files. Why: the
    fit checks its own patients only once the run folder is written; a run calls this
    first, so a stale cache leaves no half-made folder. Nothing when the run does not
    fine-tune (or does not use the modality: the run refuses that itself)."""
    ft = config.finetune
    m = ft.encoder
    used = config.model.modalities or cohort.modalities
    if not ft.active or m not in used or m not in cohort.features:
        return
    source, got = checked_cache(config)
    _check_width(m, got["encoder"], got.get("settings") or {},
                 int(cohort.features[m].shape[-1]), source)  # fmt: skip
    stored = stored_fingerprints(feature_store(config, source), m)
    Feed(m, int(config.data.params.get("seed", 0))).register(cohort, source, stored)


# ---------------------------------------------------------------------------- feed
class Feed:
    """Row numbers (``x[ROWS]``) → patients → images of a source.

    ``register(cohort)`` appends the cohort's patients to the table (once each) and
    returns their rows; for bags it works out, once per patient, how bag positions map
    onto the cache's tiles: the cohort's bag is the cache's whole bag (``None``), or the
    ``tile_subset(patient, n, length, seed)`` the loader kept of it (``data.params``
    ``max_tiles`` / ``seed``). A training step then only looks the map up.
    """

    def __init__(self, modality: str, seed: int) -> None:
        self.modality = modality
        self.seed = int(seed)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.tile_map: dict[str, np.ndarray | None] = {}  # bag position → cache tile
        self.source: Any = None

    def register(self, cohort: Cohort, source: Any,
                 stored: dict[str, str | None] | None = None) -> np.ndarray:  # fmt: skip
        """Rows of ``cohort``'s patients. ``stored`` (the feature store's source
        fingerprints of the modality): a patient whose cached images were made from other
        source files than its features (a slide re-extracted without the cache) is
        refused, as its images would silently be another slide's."""
        m = self.modality
        self.source = source
        present = cohort.present[m] if m in cohort.present else np.zeros(len(cohort), bool)
        lacking, stale = [], []
        for i, pid in enumerate(cohort.ids):
            pid = str(pid)
            if pid not in self.rows:
                self.rows[pid] = len(self.ids)
                self.ids.append(pid)
            if not present[i]:
                continue
            if source is None or not source.has(m, pid):
                lacking.append(pid)
                continue
            if stored and stored.get(pid) is not None:
                made = source.fingerprint(m, pid) if hasattr(source, "fingerprint") else None
                if made is not None and made != stored[pid]:
                    stale.append(pid)
                    continue
            if m in cohort.bag_mask:
                mk = cohort.bag_mask[m][i]
                k = int(mk.sum())
                if not mk[:k].all():
                    raise FeatureError("the tile bag is not a prefix of valid tiles",
                                       patient=pid, field=m)  # fmt: skip
                n = source.n_tiles(pid)
                if k > n:
                    raise FeatureError(f"the cohort's bag has {k} tiles, the image cache {n}:"
                                       " the cache was not written with these features",
                                       path=source.root, patient=pid, field=m)  # fmt: skip
                self.tile_map[pid] = None if k == n else tile_subset(pid, n, k, self.seed)
        if lacking:
            where = "no image source" if source is None else f"the image cache {source.root}"
            raise FeatureError(
                f"fine-tuning the {m} encoder needs the images of every patient it sees;"
                f" {where} lacks {len(lacking)} of them ({', '.join(lacking[:5])}"
                f"{' ...' if len(lacking) > 5 else ''}): extract with --tile-cache /"
                " --volume-cache, set finetune.cache, or bind the images"
                " (train.finetune.images)", field="finetune")  # fmt: skip
        if stale:
            raise FeatureError(
                f"the image cache {source.root} holds {m} images of {len(stale)} patients"
                f" made from other source files than their stored features"
                f" ({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}): features"
                " re-extracted without the cache, or an interrupted extraction; run"
                " modalsurv extract again with --tile-cache / --volume-cache"
                " (--reextract-changed for changed files)", field="finetune")  # fmt: skip
        return np.asarray([self.rows[str(p)] for p in cohort.ids], dtype=np.int64)

    def _positions(self, pid: str, positions: np.ndarray) -> np.ndarray:
        if pid not in self.tile_map:
            raise FeatureError("patient's bag was never registered", patient=pid, field="wsi")
        subset = self.tile_map[pid]
        return positions if subset is None else subset[positions]

    def tiles(self, rows: Sequence[int], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for r, pos in zip(rows, positions):
            pid = self.ids[int(r)]
            out.append(self.source.tiles(pid, self._positions(pid, np.asarray(pos))))
        return out

    def volumes(self, rows: Sequence[int]) -> np.ndarray:
        return np.stack([self.source.volumes(self.ids[int(r)]) for r in rows])


# ---------------------------------------------------------------------------- plan
def _affine(step: Any) -> Any:
    """A fitted VectorScaler / BagScaler as ``nn.encoder_adapter.AffineMap``."""
    from modalsurv.nn.encoder_adapter import AffineMap
    from modalsurv.train.preprocess import BagScaler
    from modalsurv.train.transforms import VectorScaler

    if not isinstance(step, VectorScaler | BagScaler):
        raise ConfigError(f"fine-tuning needs a plain embedding transform for the modality;"
                          f" it has {type(step).__name__} (is it listed in"
                          " preprocess.clinical_modalities / rna_modalities?)")  # fmt: skip
    return AffineMap(np.asarray(step.mean_, np.float64), np.asarray(step.scale_, np.float64),
                     step.components_, getattr(step, "pca_mean_", None),
                     getattr(step, "constant_", None))  # fmt: skip


class Finetune:
    """One fitted (or loading) estimator's fine-tuning: the encoder entry it adapts, how,
    and the feed of its images (see module docstring)."""

    def __init__(self, config: RunConfig, entry: dict[str, Any], settings: dict[str, Any],
                 preprocessor: Any) -> None:  # fmt: skip
        self.config = config
        self.cfg: FinetuneConfig = config.finetune
        self.modality = self.cfg.encoder
        self.entry = dict(entry)
        self.settings = dict(settings)
        self.step = preprocessor.steps[self.modality]
        self.feed = Feed(self.modality, int(config.data.params.get("seed", 0)))
        self._base: Any = None

    # -------------------------------------------------------------- creation
    @classmethod
    def plan(cls, config: RunConfig, preprocessor: Any, train: Cohort) -> Finetune | None:
        """The plan for a fit on ``train`` (None when the run does not fine-tune)."""
        ft = config.finetune
        m = ft.encoder
        if not ft.active or m not in preprocessor.steps:
            return None
        want = "bag" if m == "wsi" else "vector"
        if preprocessor.kinds[m] != want:
            raise ConfigError(f"finetune.encoder {m!r}: the cohort's {m} is a"
                              f" {preprocessor.kinds[m]}, not a {want}")  # fmt: skip
        source, got = checked_cache(config)  # its encoder and settings: the store's
        out = cls(config, got["encoder"], got["settings"], preprocessor)
        _check_width(m, out.entry, out.settings, preprocessor.in_dims[m], source)
        # every training patient has its images, made from its features' source files
        out.feed.register(train, source, out._stored(feature_store(config, source)))
        return out

    def _stored(self, store: Path | None) -> dict[str, str | None]:
        """The store's source fingerprints of the modality ({} without a store)."""
        return stored_fingerprints(store, self.modality)

    @classmethod
    def restore(cls, record: dict[str, Any] | None, config: RunConfig, preprocessor: Any
                ) -> Finetune | None:  # fmt: skip
        """The plan of a saved model (``record`` from :meth:`record`)."""
        if not record:
            return None
        return cls(config, record["encoder"], record["settings"], preprocessor)

    def record(self) -> dict[str, Any]:
        """What a saved model keeps besides its weights: the encoder entry (spec, kwargs,
        weights file name and path, checksum) and the cached images' settings."""
        return {"modality": self.modality, "mode": self.cfg.mode, "encoder": self.entry,
                "settings": self.settings}  # fmt: skip

    @property
    def raw_dim(self) -> int:
        return cached_dim(self.modality, self.entry, self.settings)

    # -------------------------------------------------------------- encoders
    def _weights(self) -> Path | None:
        try:
            return enc.find_weights(self.entry, list(_WEIGHTS.get()))
        except WeightsError as exc:
            raise WeightsError(f"{exc.reason}; the fine-tuned model's encoder is rebuilt from"
                               " them (bind the folder: train.finetune.weight_folders, or"
                               " modalsurv challenge --weights)", path=exc.path,
                               field="weights") from None  # fmt: skip

    def build_encoder(self) -> Any:
        """A fresh frozen encoder from the entry, its checksum checked."""
        path = self._weights()
        spec, kwargs = self.entry["spec"], dict(self.entry.get("kwargs") or {})
        with torch.random.fork_rng(devices=[]):
            if self.modality == "wsi":
                built = enc.get_tile_encoder(spec, path, device="cpu", **kwargs)
            else:
                built = enc.get_volume_encoder(spec, path, device="cpu", **kwargs)
        if built.checksum != self.entry.get("checksum"):
            raise WeightsError(f"encoder {self.entry.get('name')!r}: these weights are not the"
                               f" ones the features were extracted with (checksum"
                               f" {built.checksum}, recorded {self.entry.get('checksum')})",
                               path=path, field="weights")  # fmt: skip
        return built

    def adapter(self, seed: int) -> torch.nn.Module:
        """A new adapter (its own encoder copy) for one network, fed by this plan."""
        from modalsurv.nn.encoder_adapter import TileAdapter, VolumeAdapter

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            built = self.build_encoder()
            affine = _affine(self.step)
            if self.modality == "wsi":
                out: Any = TileAdapter(built, affine, self.cfg, seed)
            else:
                out = VolumeAdapter(built, affine, self.cfg, self.settings.get("combine", "concat"))
        out.feed = self.feed
        return out

    def attach(self, net: Any, seed: int) -> Any:
        net.attach_encoder(self.modality, self.adapter(seed))
        return net

    def rows(self, cohort: Cohort) -> torch.Tensor:
        """Row numbers of ``cohort``'s patients for ``x[ROWS]`` (their images must be in
        the current source: the bound one, else the config's cache)."""
        bound = _IMAGES.get() is not None  # another cohort's images: not this store's
        stored = {} if bound else self._stored(store_folder(self.config.data))
        return torch.from_numpy(self.feed.register(cohort, current_source(self.config), stored))

    # -------------------------------------------------------------- reporting
    def estimate(self, net: Any, batch: int | None = None) -> dict[str, float]:
        """Memory of one training step of the attached encoder (MiB; see
        ``nn.encoder_adapter.memory_estimate``) at ``batch`` patients a step (default:
        ``train.batch_size``, which must then be a number, not ``auto``)."""
        from modalsurv.nn.encoder_adapter import memory_estimate

        adapter = net.encoders[self.modality]
        batch = self.config.train.batch_size if batch is None else batch
        if not isinstance(batch, int):
            raise ValueError(f"the memory estimate needs the batch size resolved; got {batch!r}")
        if self.modality == "wsi":
            s = adapter.input_size or int((self.settings or {}).get("tile_size") or 224)
            sample = torch.zeros(1, 3, s, s)
            per_step = batch * self.cfg.tiles_per_step
        else:
            size = tuple(self.settings.get("size") or (32, 64, 64))
            sample = torch.zeros(1, 1, *size)
            per_step = batch * len(self.settings.get("sequences") or (1,))
        from modalsurv.devices import resolve_device

        cuda = resolve_device(self.config.train.device, fallback=True).type == "cuda"
        return memory_estimate(adapter, sample, per_step, cuda=cuda)

    def announce(self, net: Any, progress: Progress | None, batch: int | None = None) -> None:
        """One log line before training: what trains and the memory estimate (``batch``:
        the resolved ``train.batch_size``)."""
        if progress is None:
            return
        est = self.estimate(net, batch)
        cfg = self.cfg
        how = {"lora": f"LoRA r={cfg.lora_rank} on {'/'.join(cfg.lora_targets)}",
               "last_k": f"last {cfg.last_k} blocks", "last_stage": "last stage (layer4)",
               "all": "all layers"}[cfg.mode]  # fmt: skip
        msg = (f"fine-tuning the {self.modality} encoder {self.entry.get('name')} ({how}):"
               f" {est['trainable_params'] / 1e6:.2f}M of {est['total_params'] / 1e6:.2f}M"
               f" parameters train at lr {cfg.lr:g}; memory estimate {est['total']:.0f} MiB"
               f" (weights {est['weights']:.0f}, gradients + optimiser"
               f" {est['gradients'] + est['optimizer']:.0f}, activations"
               f" {est['activations']:.0f} for {int(est['samples_per_step'])}"
               f" {'tiles' if self.modality == 'wsi' else 'volumes'} a step)")  # fmt: skip
        progress("stage", message=msg, finetune=est)
