"""ModalSurv: the scikit-learn-style estimator around ModalSurvNet.

A fitted ModalSurv owns everything that was learned from its training data: the
per-modality preprocessors, the time bins, the reference time of the risk score, the
network weights and what its survival family fits after training (Cox: a Breslow baseline
hazard). What the network's output means — loss, risk, curves — is the family's
(``survival.family``, ``model.head``); the estimator never branches on it. All of them are fitted
on the training rows only; when no validation cohort is given, an inner validation split
(stratified on the event) is carved from the training cohort for early stopping and is
excluded from fitting the preprocessors and the bins as well. With ``train.n_init > 1``
the network is a :class:`~modalsurv.nn.model.SeedEnsemble` of members trained from seeds
:func:`member_seed` (saved as one state dict, ``members.<k>.*``), by default each with its
own validation fold (:func:`member_splits`, ``train.member_splits="rotate"``; the
preprocessors and bins are then fitted on the whole training cohort), or all on one
shared split (``"shared"``).

Risk score (used for every C-index in this package):

* DeepHit and logistic-hazard heads, ``config.train.risk_score="survival"``: ``risk = 1 - S(t_ref)``, with
  ``t_ref`` a training-set reference time (``config.train.risk_reference``: the median
  training follow-up time by default, or the maximum) and ``S`` evaluated between bin
  edges by linear interpolation. ``"rmst"``: ``risk = -RMST`` up to the last bin edge, the
  area under the whole linearly interpolated curve, with the mass beyond the grid counted
  as surviving to its end. An *unrestricted* expected time over a long-tailed grid can
  reverse rankings when much probability mass sits beyond the last cut, which is why it
  is never used as the ranking score. Early stopping monitors the same score.
* Cox head: ``risk = log-risk`` (the network output); survival curves come from a Breslow
  baseline cumulative hazard fitted on the training rows (a step function).
"""

from __future__ import annotations

import json
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig, with_values
from modalsurv.devices import resolve_device
from modalsurv.errors import ConfigError, DataError, FeatureError, LabelError
from modalsurv.resume import flatten
from modalsurv.survival import curves
from modalsurv.survival.bins import TimeBins
from modalsurv.survival.family import SurvivalFamily, get_family
from modalsurv.train.defaults import cohort_shape, resolve, resolved_threads, torch_threads
from modalsurv.train.finetune import Finetune
from modalsurv.train.preprocess import Preprocessor, join_arrays, split_arrays
from modalsurv.train.trainer import (
    FitResult,
    Tensors,
    fit_network,
    forward,
    to_tensors,
)
from modalsurv.utils import Progress, atomic_path, atomic_write_text, global_rng_kept, set_seed

FORMAT_VERSION = 1


# ---------------------------------------------------------------------- helpers
def inner_split(event: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation positions, stratified on the event when both classes allow it."""
    n = len(event)
    idx = np.arange(n)
    n_val = min(max(1, round(n * fraction)), n - 1)
    counts = np.bincount(event.astype(int), minlength=2)
    stratify = event if counts.min() >= 2 and n_val >= 2 else None
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    if event[va].any() and not event[tr].any():
        # a lone event drawn for validation (too few to stratify): it trains instead, one
        # training row validates in its place (the fit refused this cohort as eventless)
        j = int(np.flatnonzero(event[va])[0])
        tr, va = tr.copy(), va.copy()
        tr[0], va[j] = va[j], tr[0]
    return np.sort(tr), np.sort(va)


def stratified_folds(labels: np.ndarray, folds: int, seed: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """StratifiedKFold's (train, test) splits of ``labels``, shuffled with ``seed``. Its
    warning that a class has fewer members than folds is silenced: callers pass such labels
    on purpose (a few events or censored rows still spread over different folds)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), labels))  # fmt: skip


def member_splits(
    event: np.ndarray, fraction: float, seed: int, n_members: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rotating inner validation splits, one per seed-ensemble member.

    Member ``k`` validates on fold ``k mod F`` of a stratified (on the event) ``F``-fold
    split with ``F = round(1 / fraction)``; members past ``F`` use a reshuffled split.
    Every row trains ``F - 1`` of every ``F`` members, instead of no member at all when
    the validation rows are shared: on a small cohort a fifth of the data is too much to
    give up for early stopping alone. With fewer events (or censored rows) than folds the
    split is still stratified as long as the other class fills every fold: the events then
    lie in different folds, so with two or more every member trains on one (a plain k-fold
    put both of two events in one fold about one time in seven, and that member learnt
    from no event at all: a Cox member nothing, its gradient being zero throughout).
    """
    n = len(event)
    folds = int(min(max(2, round(1.0 / fraction)), n))
    counts = np.bincount(np.asarray(event).astype(int), minlength=2)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for rnd in range((n_members + folds - 1) // folds):
        rs = int(seed) + 7919 * rnd
        if counts.min() >= 1 and counts.max() >= folds:
            parts = stratified_folds(event, folds, rs)
        else:
            parts = KFold(folds, shuffle=True, random_state=rs).split(np.zeros(n))
        out.extend((np.sort(tr), np.sort(va)) for tr, va in parts)
    return out[:n_members]


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "numpy", "scikit-learn", "scikit-survival", "modalsurv"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _build_net(dims: dict[str, int], bag: dict[str, bool], config: RunConfig, n_bins: int):
    from modalsurv.nn.model import ModalSurvNet  # deferred: nn is a heavier import

    model_cfg = config.model.model_copy(update={"n_bins": n_bins})
    return ModalSurvNet(dims, bag, model_cfg)


def _ensemble(nets: list[torch.nn.Module]) -> torch.nn.Module:
    from modalsurv.nn.model import SeedEnsemble

    return SeedEnsemble(nets)


def concordance_scorer(estimator: Any, cohort: Cohort, y: Any = None) -> float:
    """Harrell's C of ``estimator.predict_risk`` on ``cohort``: a scikit-learn scorer
    (``scoring=concordance_scorer`` in ``GridSearchCV`` / ``cross_val_score``)."""
    from modalsurv.survival.metrics import concordance_index

    return float(concordance_index(cohort.time, cohort.event, estimator.predict_risk(cohort)))


def check_labels(cohort: Cohort, y: Any) -> None:
    """``fit(X, y)``: ``y`` may only restate the cohort's own labels."""
    if y is None:
        return
    ours = cohort.survival_array()
    try:
        same = len(y) == len(ours) and np.array_equal(np.asarray(y["event"], bool), ours["event"]) \
            and np.allclose(np.asarray(y["time"], float), ours["time"])
    except (KeyError, IndexError, TypeError, ValueError):
        same = False
    if not same:
        raise DataError("fit(cohort, y): y must be the cohort's own labels"
                        " (cohort.survival_array()) or None; a Cohort carries its labels",
                        field="y")  # fmt: skip


def check_cohort(cohort: Any, what: str) -> None:
    """What fit and predict take is a non-empty :class:`Cohort`; anything else is refused
    here with a message naming the call, never a bare AttributeError or torch error."""
    if not isinstance(cohort, Cohort):
        raise TypeError(f"{what} takes a modalsurv.Cohort (ids, time, event and features per"
                        f" modality), not {type(cohort).__module__}.{type(cohort).__name__};"
                        " build one with Cohort(...) or modalsurv.io")  # fmt: skip
    if len(cohort) == 0:
        raise DataError(f"{what}: the cohort has no patient", field="cohort")


def member_seed(seed: int, k: int) -> int:
    """Seed of ensemble member ``k``: member 0 uses ``seed`` itself (``n_init=1`` unchanged);
    the large odd stride keeps members clear of the neighbouring folds' seeds."""
    return int(seed) + 100_003 * k


# ---------------------------------------------------------------------- estimator
class FittedCheck:
    """What ModalSurv and the stack share: the fitted check (scikit-learn's check passes
    and none of ``_fitted_parts`` is None), the time cuts, and member predictions from
    ``predict_member_outputs`` (ModalSurv's seed members; the stack's inner models)."""

    _fitted_parts: tuple[str, ...] = ("bins_",)

    def _check_fitted(self) -> None:
        fitted = self.__sklearn_is_fitted__()  # type: ignore[attr-defined]
        if not fitted or any(getattr(self, a, None) is None for a in self._fitted_parts):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit() or"
                               " load()")  # fmt: skip

    @property
    def cuts(self) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.bins_.cuts, dtype=np.float64)  # type: ignore[attr-defined]

    def predict_member_risk(self, cohort: Cohort) -> np.ndarray:
        """``S x N``: each member's risk on the scale of ``predict_risk`` (their mean;
        ``family.member_risks``): the spread is a per-patient uncertainty."""
        outs = list(self.predict_member_outputs(cohort))  # type: ignore[attr-defined]
        n = len(outs)
        return self.family.member_risks(  # type: ignore[attr-defined]
            outs, [self.cuts] * n, self.members_fitted(n), self.t_ref_,  # type: ignore[attr-defined]
            self.config.train.risk_score)  # type: ignore[attr-defined]

    def members_fitted(self, n: int) -> list[Any]:
        """What each of the ``n`` members' outputs is read with (``family.member_fitted``:
        Cox members each centred on their own training mean, with the model's baseline)."""
        return [self.family.member_fitted(self.fitted_, k) for k in range(n)]  # type: ignore[attr-defined]

    def predict_member_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``S x N x T``: each member's survival at ``times``; Cox members share the
        model's Breslow baseline, each on its own centred log-risk."""
        times = curves.check_times(times)
        outs = list(self.predict_member_outputs(cohort))  # type: ignore[attr-defined]
        return np.stack([self.family.survival(o, self.cuts, times, f)  # type: ignore[attr-defined]
                         for o, f in zip(outs, self.members_fitted(len(outs)), strict=True)])


class ModalSurv(FittedCheck, BaseEstimator):
    """Multimodal survival estimator: ``fit`` / ``predict_*`` / ``save`` / ``load``."""

    # Fitted attributes (scikit-learn convention: set by fit / load, ending in "_"):
    # modalities_, preprocessor_, bins_, t_ref_, net_, fit_results_ (one per seed member)
    # and fit_result_ (member 0's), fitted_ (what the family fits after training),
    # training_meta_ (a loaded model's training record, saved again), finetune_ (the
    # fine-tuned encoder's plan, train.finetune; None for frozen features), fitted_config_
    # (the config as trained: "auto" values resolved by train.defaults).
    preprocessor_: Preprocessor
    bins_: TimeBins
    t_ref_: float
    net_: torch.nn.Module
    modalities_: list[str]
    fit_result_: FitResult | None
    fit_results_: list[FitResult]
    fitted_: dict[str, np.ndarray]
    training_meta_: dict[str, Any] | None

    _fitted_parts = ("bins_", "preprocessor_")

    def __init__(self, config: RunConfig | None = None) -> None:
        self.config = config or RunConfig()

    # -------------------------------------------------------------- scikit-learn API
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """``config``, and with ``deep`` every config value as ``config__section__field``
        (so ``sklearn.base.clone`` and parameter grids work on any hyperparameter)."""
        out: dict[str, Any] = {"config": self.config}
        if deep:
            for key, value in flatten(self.config.model_dump(mode="json")).items():
                out["config__" + key.replace(".", "__")] = value
        return out

    def set_params(self, **params: Any) -> ModalSurv:
        """Replace ``config`` and/or set ``config__section__field`` values (validated as a
        config file is: an unknown key is a ConfigError naming it)."""
        config = params.pop("config", self.config)
        values = {}
        for key, value in params.items():
            if not key.startswith("config__"):
                raise ConfigError(f"{type(self).__name__} has no parameter {key!r}: set config"
                                  " or config__<section>__<field>")  # fmt: skip
            values[key[len("config__"):].replace("__", ".")] = value
        where = f"{type(self).__name__}.set_params"
        self.config = with_values(config, values, where) if values else config
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "bins_") and hasattr(self, "preprocessor_")

    @property
    def head(self) -> str:
        return self.config.model.head

    @property
    def family(self) -> SurvivalFamily:
        """The survival family (``model.head``): loss, risk, curves (``survival.family``)."""
        return get_family(self.config.model.head)

    # -------------------------------------------------------------- fitting
    def fit(
        self,
        cohort: Cohort,
        y: Any = None,
        *,
        val_cohort: Cohort | None = None,
        progress: Progress | None = None,
    ) -> ModalSurv:
        """Fit on ``cohort``; early stopping on ``val_cohort`` or on an inner split of it.

        ``y`` is accepted for scikit-learn's ``fit(X, y)`` protocol: the labels are the
        cohort's own (``cohort.survival_array()``), and a ``y`` that differs is refused.
        With ``val_cohort`` given (e.g. the ``outer_fold`` replication protocol), every
        row of ``cohort`` is used for training and fitting the preprocessors and bins.
        """
        check_cohort(cohort, "ModalSurv.fit")
        check_labels(cohort, y)
        cfg = self.config
        self.fit_result_, self.fit_results_, self.training_meta_ = None, [], None
        if len(cohort) < (1 if val_cohort is not None else 2):
            raise DataError(f"ModalSurv.fit needs at least 2 patients (one for the inner"
                            f" validation split); the cohort has {len(cohort)} patient(s)",
                            field="cohort")  # fmt: skip
        mods = list(cfg.model.modalities or cohort.modalities)
        if not mods:
            raise DataError("ModalSurv.fit: the cohort has no modality (no features)",
                            field="modalities")  # fmt: skip
        cohort = cohort.select(mods)
        rotate = val_cohort is None and cfg.train.member_splits == "rotate" and cfg.train.n_init > 1
        if rotate:  # every member its own validation fold; fitting sees the whole cohort
            train, val = cohort, None
        elif val_cohort is None:
            tr, va = inner_split(cohort.event, cfg.train.val_fraction, cfg.seed)
            train, val = cohort.subset(tr), cohort.subset(va)
        else:
            train, val = cohort, val_cohort.select([m for m in mods if m in val_cohort.features])
        if train.n_events == 0:
            raise LabelError(f"the training cohort ({len(train)} patients) has no event, all"
                             " are censored: nothing to learn from", field="event")  # fmt: skip

        self.modalities_ = mods
        self.preprocessor_ = Preprocessor(cfg.preprocess).fit(train)
        self.bins_ = TimeBins(n_bins=cfg.model.n_bins, scheme=cfg.model.bin_scheme).fit(
            train.time, train.event
        )
        ref = cfg.train.risk_reference
        self.t_ref_ = float(np.median(train.time) if ref == "median" else np.max(train.time))
        self.finetune_ = Finetune.plan(cfg, self.preprocessor_, train)

        pp = self.preprocessor_
        shape = cohort_shape(train, pp)
        cfg = self.fitted_config_ = resolve(cfg, shape)  # "auto" values: train.defaults
        train_t = self._tensors(pp.transform(train), with_bins=True)
        val_t = None
        if val is not None and len(val):
            val_t = self._tensors(pp.transform(val), with_bins=True)
        splits = []
        if rotate:
            splits = member_splits(train.event, cfg.train.val_fraction, cfg.seed, cfg.train.n_init)
            lost = [k for k, (tr, _) in enumerate(splits) if not train.event[tr].any()]
            if lost and self.family.loss_needs_events:  # a lone event validates some member
                raise LabelError(f"seed member {lost[0]} would train on none of the cohort's"
                                 f" {train.n_events} event(s), which all lie in its rotating"
                                 f" validation fold, and a {cfg.model.head} loss needs one:"
                                 " set train.member_splits: shared (or n_init: 1), or add"
                                 " events", field="event")  # fmt: skip
        nets, self.fit_results_ = [], []
        # the members' seeding must not fix the caller's later random draws
        with torch_threads(resolved_threads(cfg, shape)), global_rng_kept():
            for k in range(cfg.train.n_init):
                seed_k = member_seed(cfg.seed, k)
                set_seed(seed_k)
                net = _build_net(pp.dims, pp.bag, cfg, self.bins_.n_bins)
                if self.finetune_ is not None:  # the encoder becomes part of the network
                    self.finetune_.attach(net, seed_k)
                    if k == 0:
                        self.finetune_.announce(net, progress, int(cfg.train.batch_size))
                tr_k, va_k = train_t, val_t
                if splits:
                    tr_k, va_k = (train_t.take(torch.from_numpy(i)) for i in splits[k])
                self.fit_results_.append(
                    fit_network(net, tr_k, va_k, cfg, self.cuts, self.t_ref_, seed_k, progress)
                )
                nets.append(net.to("cpu").eval())
        self.fit_result_ = self.fit_results_[0]
        self.net_ = nets[0] if len(nets) == 1 else _ensemble(nets)
        self.net_.eval()
        per_member = len(nets) > 1 and self.family.fits_members  # Cox: one centre each
        members = self.predict_member_outputs(train) if per_member else None
        self.fitted_ = self.family.fit_after(train.time, train.event, self.predict_outputs(train),
                                             members)  # fmt: skip
        return self

    # -------------------------------------------------------------- internals
    def _tensors(self, processed: Cohort, with_bins: bool = False) -> Tensors:
        pp = self.preprocessor_
        bin_index = bin_event = None
        if with_bins:
            bin_index, bin_event = self.bins_.transform(processed.time, processed.event)
        out = to_tensors(processed, pp.modalities, pp.dims, pp.bag, bin_index, bin_event)
        if getattr(self, "finetune_", None) is not None:
            from modalsurv.nn.encoder_adapter import ROWS

            out.x[ROWS] = self.finetune_.rows(processed)
        return out

    def _outputs(self, cohort: Cohort, key: str, batch_dim: int = 0) -> np.ndarray:
        """The network output ``key`` for every patient (batches joined on ``batch_dim``)."""
        return self._pass(cohort, {key: batch_dim})[key]

    def _pass(self, cohort: Cohort, keys: dict[str, int]) -> dict[str, np.ndarray]:
        """Network outputs ``keys`` (name → the dim its batches join on) for every patient,
        from one pass over the cohort."""
        self._check_fitted()
        check_cohort(cohort, f"{type(self).__name__}.predict")
        data = self._tensors(self.preprocessor_.transform(cohort))
        device = resolve_device(self.config.train.device, fallback=True)
        self.net_.to(device).eval()
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        with torch.no_grad():
            for start in range(0, len(data), 512):
                idx = torch.arange(start, min(start + 512, len(data)))
                out = forward(self.net_, data.take(idx).to(device))
                for key in keys:
                    val = out.get(key)
                    if val is None and key == "weights":
                        val = out.get("gates")
                    if val is None and key == "weights":
                        raise ConfigError(
                            f"model.fusion {self.config.model.fusion!r} produces no modality"
                            " weights: gate weights come from a fusion that weighs the"
                            " modalities (e.g. 'cross_attention_gated', 'gated')"
                        )
                    if val is None:
                        raise ValueError(f"the network produces no output {key!r}")
                    outs[key].append(val.detach().float().cpu())
        self.net_.to("cpu")
        return {k: torch.cat(v, dim=keys[k]).numpy().astype(np.float64) for k, v in outs.items()}

    def _member_keys(self, key: str) -> tuple[str, int]:
        """(output name, batch dim) of ``key`` per seed member: ``member_<key>`` (S x N x
        ...) for a SeedEnsemble, else ``key`` itself (one member)."""
        if getattr(self.net_, "members", None) is not None:  # a SeedEnsemble
            return f"member_{key}", 1
        return key, 0

    def _member_outputs(self, cohort: Cohort, key: str) -> np.ndarray:
        """``S x N x ...``: output ``key`` of each seed member (S = 1 for one network)."""
        name, dim = self._member_keys(key)
        out = self._outputs(cohort, name, batch_dim=dim)
        return out if dim == 1 else out[None]

    def predict_outputs(self, cohort: Cohort) -> np.ndarray:
        """The network's raw output (``N x n_outputs``: what the family's functions take)."""
        return self._outputs(cohort, "logits")

    # -------------------------------------------------------------- predictions
    def predict_pmf(self, cohort: Cohort) -> np.ndarray:
        """``N x (K+1)`` probabilities: K bins plus the mass beyond the last cut (Cox: from
        the Breslow survival at the bin cuts)."""
        return self.family.pmf(self.predict_outputs(cohort), self.cuts, self.fitted_)

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Higher = worse prognosis: the family's risk (DeepHit and logistic hazard:
        ``1 - S(t_ref)`` or ``-RMST`` over the bin grid, ``train.risk_score``; Cox: the
        log-risk)."""
        return self.family.risk(self.predict_outputs(cohort), self.cuts, self.t_ref_,
                                self.config.train.risk_score, self.fitted_)  # fmt: skip

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``N x T`` survival probabilities at ``times`` (linear between cuts; Cox: step)."""
        times = curves.check_times(times)
        return self.family.survival(self.predict_outputs(cohort), self.cuts, times, self.fitted_)

    def predict_expected_time(self, cohort: Cohort) -> np.ndarray:
        """Expected survival time on the bin grid (not used for ranking: see module doc)."""
        return np.asarray(
            curves.expected_time(self.predict_pmf(cohort), self.cuts), dtype=np.float64
        ).reshape(-1)

    # -------------------------------------------------------------- seed members
    def predict_member_outputs(self, cohort: Cohort) -> np.ndarray:
        """``S x N x n_outputs``: the raw output of each of the ``train.n_init`` seed
        members (what :meth:`predict_outputs` mixes into one)."""
        return self._member_outputs(cohort, "logits")

    def predict_embeddings(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
        """``(S x N x M x H, N x M)``: each seed member's per-modality embeddings (the
        projections into the latent space, before the fusion; modalities in
        :attr:`embedding_modalities` order) and which modality each patient really had."""
        name, dim = self._member_keys("embeddings")
        out = self._pass(cohort, {name: dim, "present": 0})  # one pass for both
        emb = out[name] if dim == 1 else out[name][None]
        return emb, out["present"] > 0.5

    @property
    def embedding_modalities(self) -> list[str]:
        """The modality order of :meth:`predict_embeddings` and :meth:`gate_weights`."""
        self._check_fitted()
        return list(getattr(self.net_, "modalities", self.preprocessor_.modalities))

    def gate_weights(self, cohort: Cohort) -> pd.DataFrame:
        """Per-patient modality weights of the gated fusion (rows: patients)."""
        w = self._outputs(cohort, "weights")
        mods = list(getattr(self.net_, "modalities", self.preprocessor_.modalities))
        return pd.DataFrame(w, index=pd.Index(cohort.ids, name="patient"), columns=mods)

    # -------------------------------------------------------------- persistence
    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        """(weights, JSON metadata, arrays): everything needed to rebuild, no pickle."""
        self._check_fitted()
        pp_meta, arrays = self.preprocessor_.get_state()
        arrays = {f"preprocess/{k}": v for k, v in arrays.items()}
        bins_meta = split_arrays(self.bins_.to_dict(), arrays, "bins/")
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            # the config as trained: "auto" values resolved (train.defaults)
            "config": getattr(self, "fitted_config_", self.config).model_dump(mode="json"),
            "modalities": self.modalities_,
            "t_ref": self.t_ref_,
            "bins": bins_meta,
            "preprocess": pp_meta,
            "versions": library_versions(),
        }
        if getattr(self, "fit_result_", None) is not None:
            meta["training"] = {
                "best_epoch": self.fit_result_.best_epoch,
                "monitor": self.fit_result_.monitor,
                # -inf when no epoch scored (every score NaN): null, as strict JSON has it
                "best_score": (self.fit_result_.best_score
                               if np.isfinite(self.fit_result_.best_score) else None),
                "epochs_run": len(self.fit_result_.history),
                "member_best_epochs": [r.best_epoch for r in self.fit_results_],
            }
        elif getattr(self, "training_meta_", None) is not None:  # a resumed run saves it
            meta["training"] = self.training_meta_
        if getattr(self, "finetune_", None) is not None:
            meta["finetune"] = self.finetune_.record()
        arrays.update(self.fitted_)  # the family's own keys, e.g. breslow/time
        weights = {
            k: v.detach().cpu().clone().contiguous() for k, v in self.net_.state_dict().items()
        }
        return weights, meta, arrays

    @classmethod
    def from_state(
        cls, weights: dict[str, torch.Tensor], meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> ModalSurv:
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format')!r}")
        out = cls(RunConfig.model_validate(meta["config"]))
        out.fitted_config_ = out.config
        out.modalities_ = list(meta["modalities"])
        out.training_meta_ = meta.get("training")
        out.t_ref_ = float(meta["t_ref"])
        pp_arrays = {
            k[len("preprocess/") :]: v for k, v in arrays.items() if k.startswith("preprocess/")
        }
        out.preprocessor_ = Preprocessor.from_state(meta["preprocess"], pp_arrays)
        out.bins_ = TimeBins.from_dict(join_arrays(meta["bins"], arrays))
        out.fitted_ = {k: np.asarray(v) for k, v in arrays.items()
                       if not k.startswith(("preprocess/", "bins/"))}  # fmt: skip
        pp = out.preprocessor_
        out.finetune_ = Finetune.restore(meta.get("finetune"), out.config, pp)
        nets = [
            _build_net(pp.dims, pp.bag, out.config, out.bins_.n_bins)
            for _ in range(out.config.train.n_init)
        ]
        if out.finetune_ is not None:
            for k, net in enumerate(nets):
                out.finetune_.attach(net, member_seed(out.config.seed, k))
        out.net_ = nets[0] if len(nets) == 1 else _ensemble(nets)
        out.net_.load_state_dict(weights)
        out.net_.eval()
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``state.json`` and ``state.npz`` (each atomically).

        ``state.json`` is written last, so a directory with it holds a complete model.
        """
        directory = Path(directory)
        write_state(directory, "model", "state", *self.export_state())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ModalSurv:
        """Rebuild a saved ModalSurv; never unpickles (safetensors + JSON + plain npz). A
        folder holding the stacked default is refused: ``modalsurv.load_model`` reads
        either kind."""
        out = rebuild(Path(directory), "model", "state")
        if not isinstance(out, ModalSurv):
            raise ConfigError(f"{directory} holds the stacked default (StackedSurv), not a"
                              " plain ModalSurv: load it with modalsurv.load_model (either"
                              " kind) or StackedSurv.load")  # fmt: skip
        return out


def rebuild(directory: Path, model_stem: str, state_stem: str) -> Any:
    """A saved model from its files (a ModalSurv, or a ``train.stacking.StackedSurv`` when
    its state says so); a file that does not fit the rest (edited, truncated, from another
    model) is a FeatureError naming the folder, never a raw KeyError."""
    state = read_state(directory, model_stem, state_stem)
    try:
        if state[1].get("kind") == "stack":
            from modalsurv.train.stacking import StackedSurv  # the stack holds ModalSurvs

            return StackedSurv.from_state(*state)
        return ModalSurv.from_state(*state)
    except DataError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise FeatureError(f"saved model {model_stem}/{state_stem} is inconsistent (a file was"
                           f" edited or replaced): {type(err).__name__}: {err}",
                           path=directory / f"{model_stem}.safetensors") from err  # fmt: skip


def write_state(
    directory: Path,
    model_stem: str,
    state_stem: str,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> None:
    """Weights as safetensors, arrays as a pickle-free npz, metadata as JSON (last)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / f"{model_stem}.safetensors") as tmp:
        save_file(weights, str(tmp))
    with atomic_path(directory / f"{state_stem}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_text(directory / f"{state_stem}.json", json.dumps(meta, indent=1))


def read_state(
    directory: Path, model_stem: str, state_stem: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`write_state` (``np.load(allow_pickle=False)``, safetensors)."""
    from safetensors.torch import load_file

    path = directory / f"{state_stem}.json"
    if not path.exists():
        raise FeatureError("saved model state is missing (the folder is incomplete)", path=path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FeatureError(f"cannot read saved model state: {err}", path=path) from None
    if not isinstance(meta, dict):
        raise FeatureError("saved model state must be a JSON object", path=path)
    path = directory / f"{model_stem}.safetensors"
    try:
        weights = load_file(str(path))
    except Exception as err:  # SafetensorError, OSError: truncated, pickled, missing
        raise FeatureError(f"cannot read model weights (not a complete safetensors file):"
                           f" {err}", path=path) from None  # fmt: skip
    path = directory / f"{state_stem}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # BadZipFile, OSError, ValueError (pickled content)
        raise FeatureError(f"cannot read saved model arrays: {err}", path=path) from None
    return weights, meta, arrays
