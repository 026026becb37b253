"""The stacked default: ModalSurv, ModalSurv on clinical data only and the classical peers,
weighed on out-of-fold risks from the training part only.

Why: a lab that runs ``modalsurv train`` with the defaults should never get a worse model
than the classical baseline it would otherwise fit, and should get a better one where
the data carry signal a linear model cannot use. No single model is best on every cohort
(a tuned Coxnet on small clinical + expression cohorts, a random survival forest on large
tabular ones, the network where the signal is non-linear or spread over modalities), so
the default fits several and lets the training part decide (``model.stack``; ``none`` is
the plain ModalSurv of the paper). The default candidates: ModalSurv (DeepHit head),
ModalSurv with a Cox head (``modalsurv_cox``: a different ranking of the same inputs,
often the better one), ModalSurv on clinical data only, and the classical peers a lab
would otherwise fit: a ridge Cox model on the clinical variables, Coxnet and RSF.

Protocol, all inside the training part of an outer fold (the outer test rows are never
seen by anything here):

1. Inner folds: the ``F = round(1 / train.val_fraction)`` rotating member splits
   (``estimator.member_splits``). Each ModalSurv candidate is a seed ensemble whose member
   ``k`` trains on the other folds and early-stops on fold ``k`` (``train.member_splits:
   rotate``); the clinical Cox model, Coxnet and the random survival forest are fitted
   once per inner fold on the same folds, on feature matrices (``baselines.FeatureMatrix``:
   the same preprocessing as the baselines) fitted on the training part.
2. Out-of-fold risks: every training row gets, from each candidate, the risk of the inner
   model(s) that did not train on it. For a network member that early-stopped on that very
   fold, the risk at its own best epoch is optimistic (its epoch was chosen on those rows'
   labels); the stack reads it instead at the *median best epoch of the other members*,
   which were chosen on other rows (``oof="cross"``; the trainer keeps every epoch's
   validation risk, ``FitResult.val_risks``). On two small tuning cohorts (wpbc,
   gse1992; 5 folds) the within-fold C of a member at its own best epoch overstated the
   cross-selected one by 0.06 and 0.04 on average (0.12 on one fold).
3. Scales: each inner model's risks are standardised by the mean and standard deviation
   of its own out-of-fold risks (``standardise="model"``), so members stopped at different
   epochs (DeepHit risks near 0.5 after one epoch, spread wide after twenty) become
   comparable; at prediction a candidate's score is the mean of its inner models'
   standardised risks (the test-time counterpart of its out-of-fold score).
4. Weights: each candidate is first screened on its own: it enters only if a Cox model
   on its standardised out-of-fold score alone (coefficient >= 0) beats no model by a
   likelihood ratio of ``LR_THRESHOLD`` (3.84, the 95 % point of chi-square with one
   degree of freedom), so a candidate that carries no signal gets weight 0. The kept
   candidates get one Cox model on their scores, fitted by maximising the partial
   likelihood (Breslow ties) under non-negative coefficients, with a weak ridge
   (``RIDGE``, finite under separation) and a pull towards equal coefficients
   (``SHRINK``): with a few dozen events the weights stay near the equal-weight average,
   which no noisy estimate beats reliably; with hundreds the data decide. The partial
   likelihood and not a smoothed C-index, because it is convex in the coefficients, uses
   every risk set, and its coefficients are at once the weights and a calibrated scale.
   Reported weights are the coefficients divided by their sum (non-negative, summing to
   1). On the tuning cohorts (docs/benchmarks.md) this beat backward elimination by
   likelihood ratio (-0.005 C on average, -0.03 on one small cohort), equal weights
   (-0.008) and picking the best candidate by its out-of-fold C (-0.012). Under
   ``MIN_EVENTS`` events among the rows with every out-of-fold score (``train.n_init``
   below the inner folds on a small cohort) nothing can be weighed: the candidates get
   equal coefficients with one common scale fitted on those rows (``equal_weights``),
   said in a warning, ``metrics.json`` (``fallback``) and the weights table.
5. Curves: the stacked score ``eta = sum_k beta_k z_k`` is a Cox log-risk; a Breslow
   baseline hazard is fitted on the training rows' out-of-fold ``eta``, so
   ``S(t | x) = exp(-H0(t) exp(eta(x)))``: monotone in t, decreasing in the risk, and the
   stack predicts like any Cox-family model (``FoldEnsemble``, challenge answers). When
   under half the training rows have out-of-fold scores (one inner split:
   ``train.n_init`` below the inner folds), the baseline is fitted on every training
   row's own score instead: one on a fifth of the rows steps only at their event times.

The cost over a plain ModalSurv: two more seed ensembles (the Cox head; clinical only,
cheaper) and ``F`` fits of each classical peer; the network candidates' out-of-fold risks
are free.

Where each part lives: the candidates and their out-of-fold risks (steps 1-2) in
``train.stack_candidates``; the standardisation, screen and weights (steps 3-4, with
``LR_THRESHOLD``, ``RIDGE``, ``SHRINK`` and ``MIN_SCALE``) in ``train.stack_weights``;
here the estimator that runs the protocol, the curves (step 5), saving and loading.
"""

from __future__ import annotations

import time
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from modalsurv.cohort import Cohort
from modalsurv.config import RunConfig
from modalsurv.errors import ConfigError, DataError, DataWarning, LabelError
from modalsurv.survival import curves
from modalsurv.survival.bins import TimeBins
from modalsurv.survival.cox import breslow
from modalsurv.survival.family import SurvivalFamily, get_family
from modalsurv.survival.metrics import concordance_index
from modalsurv.train.baselines import FeatureMatrix
from modalsurv.train.estimator import (
    FORMAT_VERSION,
    FittedCheck,
    ModalSurv,
    check_cohort,
    check_labels,
    library_versions,
    member_splits,
    rebuild,
    write_state,
)
from modalsurv.train.preprocess import join_arrays, split_arrays
from modalsurv.train.stack_candidates import (
    Candidate,
    ClinicalCoxCandidate,
    CoxnetCandidate,
    ForestCandidate,
    NeuralCandidate,
    candidate_configs,
    make_candidate,
    n_inner_folds,
    stack_names,
)
from modalsurv.train.stack_weights import LR_THRESHOLD, equal_weights, fit_weights, standardise
from modalsurv.utils import Progress

#: fewest events among the rows with every out-of-fold risk to fit the weights on
MIN_EVENTS = 5


def _cindex(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    try:
        return float(concordance_index(time, event, risk))
    except (ValueError, ZeroDivisionError):
        return float("nan")


# ---------------------------------------------------------------------- the estimator
class StackedSurv(FittedCheck, BaseEstimator):
    """The stacked default (module docstring): ``fit`` / ``predict_*`` / ``save`` / ``load``,
    the same API as :class:`ModalSurv`, predicting as a Cox-family model.

    Fitted attributes: ``candidates_`` (name → candidate), ``beta_`` (coefficient per
    candidate), ``means_`` / ``scales_`` (name → per-inner-model standardisation),
    ``fitted_`` (Breslow baseline), ``bins_`` (time grid for PMFs), ``t_ref_``,
    ``modalities_``, ``preprocessor_`` (the widest candidate's, for readers of its
    inputs), ``stack_info_`` (weights, elimination, out-of-fold C of each candidate;
    saved) and ``timings_`` (seconds per candidate and for the weights; not saved)."""

    get_params = ModalSurv.get_params
    set_params = ModalSurv.set_params

    def __init__(self, config: RunConfig | None = None) -> None:
        self.config = config or RunConfig()

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "beta_")

    @property
    def head(self) -> str:
        return "cox"

    @property
    def family(self) -> SurvivalFamily:
        return get_family("cox")

    # -------------------------------------------------------------- fitting
    def fit(self, cohort: Cohort, y: Any = None, *, val_cohort: Cohort | None = None,
            progress: Progress | None = None, oof: str = "cross",
            standardise_by: str = "model") -> StackedSurv:  # fmt: skip
        """Fit every candidate on ``cohort`` and weigh them on out-of-fold risks."""
        check_cohort(cohort, "StackedSurv.fit")
        check_labels(cohort, y)
        if val_cohort is not None:
            raise ConfigError("the stacked default (model.stack) chooses its weights on inner"
                              " validation folds and cannot early-stop on a given validation"
                              " cohort (cv.selection: outer_fold); set model.stack: none")
        cfg = self.config
        if len(cohort) < 2 * n_inner_folds(cfg):
            raise DataError(f"the stacked default needs at least {2 * n_inner_folds(cfg)}"
                            f" patients to train on ({n_inner_folds(cfg)} inner folds); this"
                            f" training part has {len(cohort)} (in cross-validation, the"
                            " cohort less its outer test fold); add patients, lower cv.folds"
                            " or set model.stack: none", field="cohort")  # fmt: skip
        if cohort.n_events == 0:
            raise LabelError(f"the training cohort ({len(cohort)} patients) has no event, all"
                             " are censored: nothing to learn from", field="event")  # fmt: skip
        configs = candidate_configs(cfg, cohort)
        if not configs:
            if not stack_names(cfg):
                raise ConfigError("model.stack is 'none': that is the plain ModalSurv; fit"
                                  " ModalSurv(config), or name candidates in model.stack")
            raise ConfigError(f"model.stack names no candidate this cohort can use"
                              f" ({stack_names(cfg)}; its modalities: {cohort.modalities})")
        splits = member_splits(cohort.event, cfg.train.val_fraction, cfg.seed, n_inner_folds(cfg))
        features = None
        if any(c is None for c in configs.values()):
            features = FeatureMatrix(cfg).fit(cohort)
        self.candidates_: dict[str, Candidate] = {}
        seconds: dict[str, float] = {}
        failed: dict[str, str] = {}
        for name, ccfg in configs.items():
            t0 = time.perf_counter()
            cand = make_candidate(name, ccfg)
            if progress is not None:
                progress("stack_candidate", name=name)
            try:
                cand.fit(cohort, features, splits, cfg.seed, progress)
            except (ArithmeticError, ValueError) as err:  # a peer failing must not cost the run
                if cand.kind == "neural":
                    raise
                failed[name] = f"{type(err).__name__}: {err}"
                continue
            self.candidates_[name] = cand
            seconds[name] = time.perf_counter() - t0
        if not self.candidates_:  # every candidate a classical peer, and each one failed
            raise DataError("stacked default: every candidate failed on this training part ("
                            + "; ".join(f"{n}: {why}" for n, why in failed.items())
                            + "); add a ModalSurv candidate to model.stack or use"
                            " model.stack: none", field="model.stack")  # fmt: skip
        t0 = time.perf_counter()
        names = list(self.candidates_)
        cols, self.means_, self.scales_ = [], {}, {}
        for name in names:
            z, mu, sd = standardise(self.candidates_[name].oof(oof), len(cohort), standardise_by)
            cols.append(z)
            self.means_[name], self.scales_[name] = mu, sd
        zoof = np.column_stack(cols)
        rows = np.flatnonzero(np.isfinite(zoof).all(axis=1))
        fallback = None
        if cohort.event[rows].sum() >= MIN_EVENTS:
            beta, record = fit_weights(zoof[rows], cohort.time[rows], cohort.event[rows])
        else:  # e.g. train.n_init: 1, one inner split: too few rows to weigh anything on
            beta, how = equal_weights(zoof[rows], cohort.time[rows], cohort.event[rows])
            fallback = (f"equal weights ({how}): only {len(rows)} training rows with"
                        f" {int(cohort.event[rows].sum())} events had every candidate's"
                        f" out-of-fold risk, {MIN_EVENTS} events are needed to weigh the"
                        " candidates (train.n_init below the inner folds?)")  # fmt: skip
            warnings.warn(f"stacked default: {fallback}", DataWarning, stacklevel=2)
            record = {"log_pl": float("nan"), "dropped": []}
        alone = record.get("kept_alone")
        if alone is not None and alone["constant"]:  # nothing else ranked even as well
            warnings.warn(f"stacked default: no candidate's out-of-fold risk passed the screen"
                          f" (likelihood ratio >= {LR_THRESHOLD:g}); kept"
                          f" {names[alone['column']]!r} alone (best out-of-fold C-index,"
                          f" {alone['cindex']:.3f}), whose risk is constant: every patient"
                          " gets the same prediction", DataWarning, stacklevel=2)  # fmt: skip
        self.beta_ = {n: float(b) for n, b in zip(names, beta)}
        self.bins_ = TimeBins(n_bins=cfg.model.n_bins, scheme=cfg.model.bin_scheme).fit(
            cohort.time, cohort.event)
        self.t_ref_ = float(np.median(cohort.time) if cfg.train.risk_reference == "median"
                            else np.max(cohort.time))  # fmt: skip
        if cohort.event[rows].any() and 2 * len(rows) >= len(cohort):
            eta, time_, event_ = zoof[rows] @ beta, cohort.time[rows], cohort.event[rows]
        else:
            # no honest row with an event, or honest rows for under half the training part
            # (train.n_init below the inner folds: one inner split): a baseline on so few
            # rows steps only at their event times (S = 1 until the first), so it is fitted
            # on every training row's own score instead
            eta = self.predict_outputs(cohort)[:, 0]
            time_, event_ = cohort.time, cohort.event
        t, h = breslow(time_, event_, eta)
        self.fitted_ = {"breslow/time": t, "breslow/cumhaz": h}
        seconds["weights"] = time.perf_counter() - t0
        self.timings_ = seconds  # not saved: a resumed run must write the same bytes
        total = float(beta.sum())
        self.stack_info_ = {
            "candidates": names,
            "weights": {n: float(b) / total for n, b in zip(names, beta)},
            "scale": total,
            "dropped": [names[d["column"]] for d in record["dropped"]],
            "lr_dropped": [d["lr"] for d in record["dropped"]],
            "oof_cindex": {n: _cindex(cohort.time[rows], cohort.event[rows], zoof[rows, j])
                           for j, n in enumerate(names)},
            "oof_cindex_stack": _cindex(cohort.time[rows], cohort.event[rows],
                                        zoof[rows] @ beta),
            "oof_rows": len(rows),
            "fallback": fallback,
            # no candidate passed the screen: the one kept alone by out-of-fold C-index
            "kept_alone": None if alone is None else names[alone["column"]],
            "failed": failed,
            "oof": oof,
            "standardise": standardise_by,
        }  # fmt: skip
        self._set_inputs()
        return self

    def _set_inputs(self) -> None:
        """``modalities_`` / ``preprocessor_`` from the widest candidate (what reads inputs)."""
        neural = [c for c in self.candidates_.values() if isinstance(c, NeuralCandidate)]
        widest = max(neural, key=lambda c: len(c.model.modalities_), default=None)
        peers = [c for c in self.candidates_.values() if not isinstance(c, NeuralCandidate)]
        if widest is not None:
            self.modalities_ = list(widest.model.modalities_)
            self.preprocessor_ = widest.model.preprocessor_
        else:
            widest_peer = max(peers, key=lambda c: len(c.features.pre.modalities)
                              if c.features is not None and c.features.pre is not None else 0)
            features = widest_peer.features
            assert features is not None and features.pre is not None
            self.modalities_ = list(features.pre.modalities)
            self.preprocessor_ = features.pre

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the last cohort's cached scores (a weak reference cannot be
        pickled, and a cache need not travel): a fold model comes back from a Ray worker
        after it has predicted its test part."""
        state = dict(super().__getstate__())
        state.pop("_memo", None)
        return state

    # -------------------------------------------------------------- predictions
    def candidate_scores(self, cohort: Cohort) -> dict[str, np.ndarray]:
        """Each candidate's standardised score (the mean of its inner models'). The last
        cohort's scores are remembered (a run asks for risk, curves and PMF in a row)."""
        self._check_fitted()
        check_cohort(cohort, "StackedSurv.predict")
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0]() is cohort:
            return memo[1]
        out = {}
        for name, cand in self.candidates_.items():
            r = cand.model_risks(cohort)
            out[name] = ((r - self.means_[name][:, None]) / self.scales_[name][:, None]).mean(0)
        self._memo = (weakref.ref(cohort), out)
        return out

    def candidate_model(self, name: str) -> ModalSurv | None:
        """The fitted ModalSurv behind a network candidate (None for a classical peer)."""
        cand = self.candidates_.get(name)
        return cand.model if isinstance(cand, NeuralCandidate) else None

    def predict_outputs(self, cohort: Cohort) -> np.ndarray:
        """``N x 1``: the stacked Cox log-risk ``sum_k beta_k z_k``."""
        scores = self.candidate_scores(cohort)
        eta = sum((self.beta_[n] * s for n, s in scores.items() if self.beta_[n] > 0),
                  np.zeros(len(cohort)))  # fmt: skip
        return np.asarray(eta, dtype=np.float64)[:, None]

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Higher = worse: the stacked log-risk."""
        return self.predict_outputs(cohort)[:, 0]

    def predict_survival(self, cohort: Cohort, times: np.ndarray) -> np.ndarray:
        """``N x T``: ``exp(-H0(t) exp(eta))`` with the Breslow baseline (a step function)."""
        times = curves.check_times(times)
        return self.family.survival(self.predict_outputs(cohort), self.cuts, times, self.fitted_)

    def predict_pmf(self, cohort: Cohort) -> np.ndarray:
        return self.family.pmf(self.predict_outputs(cohort), self.cuts, self.fitted_)

    def predict_expected_time(self, cohort: Cohort) -> np.ndarray:
        return np.asarray(curves.expected_time(self.predict_pmf(cohort), self.cuts),
                          dtype=np.float64).reshape(-1)  # fmt: skip

    # -------------------------------------------------------------- members
    def predict_member_outputs(self, cohort: Cohort) -> np.ndarray:
        """``J x N x 1``: the stack's log-risk of each inner model ``j`` (every candidate
        read at its ``j``-th inner model: the network's ``j``-th seed member, the peers'
        ``j``-th inner fit; a candidate with another count enters with its mean). Their mean
        is :meth:`predict_outputs` exactly, so their spread is the stack's per-patient
        uncertainty on its own scale (``train.members``)."""
        self._check_fitted()
        check_cohort(cohort, "StackedSurv.predict")
        per = {}
        for name, cand in self.candidates_.items():
            if self.beta_[name] <= 0:
                continue
            r = cand.model_risks(cohort)
            per[name] = (r - self.means_[name][:, None]) / self.scales_[name][:, None]
        n_members = max((z.shape[0] for z in per.values()), default=1)
        eta = np.zeros((n_members, len(cohort)))
        for name, z in per.items():
            eta += self.beta_[name] * (z if z.shape[0] == n_members else z.mean(0)[None])
        return eta[:, :, None]

    @property
    def n_members(self) -> int:
        """Inner models the stack's member predictions come from."""
        self._check_fitted()
        return max((len(self.means_[n]) for n in self.candidates_ if self.beta_[n] > 0),
                   default=1)  # fmt: skip

    # -------------------------------------------------------------- the fusion network
    def _fusion(self, what: str) -> ModalSurv:
        model = self.candidate_model("modalsurv")
        if model is None:
            raise ValueError(f"{what}: the stack has no ModalSurv fusion candidate")
        return model

    @property
    def embedding_modalities(self) -> list[str]:
        """The fusion candidate's modalities, in its embeddings' order."""
        return self._fusion("embedding_modalities").embedding_modalities

    def predict_embeddings(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
        """The fusion candidate's per-modality embeddings (``ModalSurv.predict_embeddings``)."""
        return self._fusion("predict_embeddings").predict_embeddings(cohort)

    def gate_weights(self, cohort: Cohort) -> Any:
        """The fusion candidate's per-patient modality weights (``ModalSurv.gate_weights``)."""
        return self._fusion("gate_weights").gate_weights(cohort)

    # -------------------------------------------------------------- persistence
    def export_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, np.ndarray]]:
        """(weights, JSON metadata, arrays) of every candidate and the stack; no pickle."""
        self._check_fitted()
        weights: dict[str, torch.Tensor] = {}
        arrays: dict[str, np.ndarray] = {}
        cands = []
        for name, cand in self.candidates_.items():
            w, m, a = cand.export()
            weights.update({f"{name}/{k}": v for k, v in w.items()})
            arrays.update({f"{name}/{k}": v for k, v in a.items()})
            arrays[f"stack/{name}/mean"] = self.means_[name]
            arrays[f"stack/{name}/scale"] = self.scales_[name]
            cands.append({"name": name, "kind": cand.kind, "meta": m})
        features = next((c.features for c in self.candidates_.values()
                         if c.kind in ("coxnet", "rsf")), None)  # fmt: skip
        fmeta = None
        if features is not None:
            fmeta, farrays = features.get_state()
            arrays.update({f"features/{k}": v for k, v in farrays.items()})
        arrays.update(self.fitted_)
        meta = {
            "format": FORMAT_VERSION,
            "kind": "stack",
            "config": self.config.model_dump(mode="json"),
            "t_ref": self.t_ref_,
            "modalities": self.modalities_,
            "bins": split_arrays(self.bins_.to_dict(), arrays, "bins/"),
            "candidates": cands,
            "beta": self.beta_,
            "features": fmeta,
            "stack": self.stack_info_,
            "versions": library_versions(),
        }
        return weights, meta, arrays

    @classmethod
    def from_state(cls, weights: dict[str, torch.Tensor], meta: dict[str, Any],
                   arrays: dict[str, np.ndarray]) -> StackedSurv:  # fmt: skip
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") != "stack":
            raise ValueError(f"not a stacked model state (format {meta.get('format')!r},"
                             f" kind {meta.get('kind')!r})")  # fmt: skip
        out = cls(RunConfig.model_validate(meta["config"]))
        features = None
        if meta.get("features") is not None:
            sub = {k[len("features/"):]: v for k, v in arrays.items() if k.startswith("features/")}
            features = FeatureMatrix.from_state(out.config, meta["features"], sub)
        out.candidates_, out.means_, out.scales_ = {}, {}, {}
        for entry in meta["candidates"]:
            name, kind = entry["name"], entry["kind"]
            pre = f"{name}/"
            sub = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            if kind == "neural":
                w = {k[len(pre):]: v for k, v in weights.items() if k.startswith(pre)}
                cand: Candidate = NeuralCandidate.restore(name, w, entry["meta"], sub)
            elif kind == "coxnet":
                cand = CoxnetCandidate.restore(name, sub, features)
            elif kind == "rsf":
                cand = ForestCandidate.restore(name, entry["meta"], sub, features)
            elif kind == "coxph":
                cand = ClinicalCoxCandidate.restore(name, out.config, entry["meta"], sub)
            else:
                raise ValueError(f"unknown stack candidate kind {kind!r}")
            out.candidates_[name] = cand
            out.means_[name] = np.asarray(arrays[f"stack/{name}/mean"], dtype=np.float64)
            out.scales_[name] = np.asarray(arrays[f"stack/{name}/scale"], dtype=np.float64)
        out.beta_ = {str(k): float(v) for k, v in meta["beta"].items()}
        if set(out.beta_) != set(out.candidates_):
            raise ValueError("the stack's coefficients do not match its candidates")
        out.fitted_ = {k: np.asarray(arrays[k]) for k in ("breslow/time", "breslow/cumhaz")}
        out.bins_ = TimeBins.from_dict(join_arrays(meta["bins"], arrays))
        out.t_ref_ = float(meta["t_ref"])
        out.stack_info_ = dict(meta["stack"])
        out._set_inputs()
        return out

    def save(self, directory: Any) -> Any:
        """``model.safetensors`` + ``state.npz`` + ``state.json`` (last), like ModalSurv."""
        from pathlib import Path

        directory = Path(directory)
        write_state(directory, "model", "state", *self.export_state())
        return directory

    @classmethod
    def load(cls, directory: Any) -> StackedSurv:
        from pathlib import Path

        out = rebuild(Path(directory), "model", "state")
        if not isinstance(out, StackedSurv):
            raise ConfigError(f"{directory} holds a plain ModalSurv, not a stacked model")
        return out


def make_model(config: RunConfig) -> ModalSurv | StackedSurv:
    """What a run fits per outer fold: the stacked default, or with ``model.stack: none``
    the plain :class:`ModalSurv`."""
    return StackedSurv(config) if stack_names(config) else ModalSurv(config)


def load_model(directory: Any) -> ModalSurv | StackedSurv:
    """A saved ModalSurv or StackedSurv, whichever the folder holds."""
    from pathlib import Path

    return rebuild(Path(directory), "model", "state")
