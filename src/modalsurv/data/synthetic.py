"""CHIMERA-like synthetic cohorts with a known true risk (and a shifted external cohort).

Why: a multimodal survival model can only be checked end to end against a truth. Here
every modality carries a tunable share of the true log-risk, one term is an interaction
between modalities (WSI × RNA), an unobserved frailty adds noise, modalities go missing
at chosen rates and censoring (administrative + random) is calibrated to a target rate.

Modalities (defaults): ``clinical`` (CHIMERA task 1 fields, typed and encoded by
``io.clinical``; raw JSON-ready values are kept in ``meta`` columns ``clinical:<field>``
so ``write_chimera`` can write the real files), ``wsi`` (bags of K ≤ ``max_tiles`` tile
embeddings; the signal lives in a few "aggressive" tiles), ``slide`` (768-d), ``mri``
(2048-d), ``rna`` (``n_genes`` count-like values with a low-rank structure).

The world (tile prototype, embedding directions, gene loadings) is drawn from
``world_seed`` and the patients from ``seed``: an ``external=True`` cohort shares the
same truth but has a site/batch shift (feature offsets and scales, an RNA batch factor,
older patients, shorter follow-up and more censoring). All deterministic in the seeds.

``write_chimera`` writes a cohort as real CHIMERA files. Its raw images carry the same
truth as the features, so a model trained on features *extracted from the images*
(``modalsurv extract``) can learn from them: the WSI and MRI latent factors are kept in
``meta`` columns ``latent:wsi`` / ``latent:mri`` (generator truth for the images, never
features). On a slide a share of the tissue, rising with the WSI latent along the same
logistic as the "aggressive" tile fraction, is rendered as high-grade tumour (crowded,
dark, blue-purple nuclei over a purple tint; the rest is the ordinary IHC picture); in
the mpMRI a focal lesion (dark T2W and ADC, bright HBV) grows and gains contrast with
the MRI latent. Image randomness comes from per-patient generators keyed by ``seed`` and
the patient id, so the files are deterministic.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalsurv.cohort import Cohort
from modalsurv.errors import DataError
from modalsurv.io import clinical as clin
from modalsurv.io.chimera import MRI_SEQUENCES, TASK1_LAYOUT, TASK3_LAYOUT, Layout
from modalsurv.utils import atomic_path, atomic_write_text

DEFAULT_WEIGHTS = {"clinical": 0.8, "wsi": 0.8, "slide": 0.4, "mri": 0.4, "rna": 0.8,
                   "interaction": 0.5}  # fmt: skip
#: ``signal="nonlinear"``: most of the risk is in terms no linear model of the features can
#: use: a product of two MRI latent factors (both measured along their own embedding
#: direction), a step in the share of aggressive tiles (a slide is aggressive or not) and
#: a WSI × RNA product; clinical, slide and RNA keep small linear terms
NONLINEAR_WEIGHTS = {"clinical": 0.5, "wsi": 0.0, "slide": 0.3, "mri": 0.0, "rna": 0.3,
                     "interaction": 1.0, "mri_interaction": 1.0, "wsi_threshold": 1.2}  # fmt: skip
#: the WSI latent above which a slide counts as aggressive (a hot-tile share of ~17 %)
WSI_THRESHOLD = 0.3
SIGNALS = ("linear", "nonlinear")
DEFAULT_MISSING = {"clinical": 0.0, "wsi": 0.1, "slide": 0.1, "mri": 0.15, "rna": 0.2}
RAW_PREFIX = "clinical:"
LATENT_PREFIX = "latent:"  # generator truth kept for write_chimera's images; never a feature
IMAGE_LATENTS = ("wsi", "mri")


def _std(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def _choice(rng: np.random.Generator, levels: list[Any], p: list[float], n: int) -> list[Any]:
    idx = rng.choice(len(levels), size=n, p=np.asarray(p) / np.sum(p))
    return [levels[i] for i in idx]


def _with_missing(rng: np.random.Generator, values: list[Any], rate: float, token: Any
                  ) -> list[Any]:  # fmt: skip
    miss = rng.random(len(values)) < rate
    return [token if m else v for v, m in zip(values, miss)]


# ---------------------------------------------------------------------------- clinical
def _clinical_task1(rng: np.random.Generator, z: np.ndarray, external: bool
                    ) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Raw task 1 fields (strings/ints as in the CHIMERA JSON) driven by latent ``z``."""
    n = len(z)
    age = np.clip(np.round(rng.normal(67 if external else 64, 6, n)), 45, 80).astype(int)
    grade = z + rng.normal(0, 0.5, n)
    isup = np.digitize(grade, np.quantile(grade, [0.25, 0.6, 0.8, 0.9])) + 1
    pairs = {1: [(3, 3)], 2: [(3, 4)], 3: [(4, 3)], 4: [(4, 4), (3, 5), (5, 3)],
             5: [(4, 5), (5, 4), (5, 5)]}  # fmt: skip
    prim, sec = [], []
    for g in isup:
        a, b = pairs[int(g)][rng.integers(len(pairs[int(g)]))]
        prim.append(a)
        sec.append(b)
    tert = [int(min(5, s + 1)) if rng.random() < 0.35 else None for s in sec]
    psa = np.round(np.exp(rng.normal(np.log(8.0) + 0.35 * z, 0.6)) * (1.3 if external else 1),
                   2)  # fmt: skip
    stages = ["2", "2a", "2b", "2c", "3", "3a", "3b", "4"]
    st = np.clip(np.round(2 + 1.6 * (z + rng.normal(0, 0.8, n)) + 1.5), 0, 7).astype(int)
    margins = (rng.random(n) < 1 / (1 + np.exp(-(z - 0.8)))).astype(int)

    def flag(p_one: np.ndarray, miss: float, tokens: tuple[str, str]) -> list[str]:
        vals = [tokens[1] if r < p else tokens[0] for r, p in zip(rng.random(n), p_one)]
        return _with_missing(rng, vals, miss, "x")

    sig = 1 / (1 + np.exp(-(z - 0.5)))
    raw = pd.DataFrame({
        "age_at_prostatectomy": age,
        "primary_gleason": prim,
        "secondary_gleason": sec,
        "tertiary_gleason": tert,
        "ISUP": isup.astype(int),
        "pre_operative_PSA": psa,
        "pT_stage": [stages[i] for i in st],
        "positive_lymph_nodes": flag(0.3 * sig, 0.3, ("0", "1")),
        "capsular_penetration": flag(sig, 0.05, ("0.0", "1.0")),
        "positive_surgical_margins": margins,
        "invasion_seminal_vesicles": flag(0.5 * sig, 0.05, ("0.0", "1.0")),
        "lymphovascular_invasion": flag(0.4 * sig, 0.1, ("0.0", "1.0")),
        "earlier_therapy": _choice(rng, ["none", "unknown", "radiotherapy", "hormones",
                                         "radiotherapy + hormones"], [80, 8, 4, 5, 3], n),
    })  # fmt: skip
    signal = _std(0.8 * isup + 0.5 * np.log(psa) + 0.3 * st + 0.3 * margins)
    return raw, signal


def _clinical_task3(rng: np.random.Generator, z: np.ndarray, external: bool
                    ) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Raw task 3 (bladder) fields driven by latent ``z``."""
    n = len(z)
    t1 = rng.random(n) < 1 / (1 + np.exp(-(z + 0.3)))
    g3 = rng.random(n) < 1 / (1 + np.exp(-(z + 1.0)))
    lvi = rng.random(n) < 0.15 / (1 + np.exp(-z)) * 2
    highest = rng.random(n) < 1 / (1 + np.exp(-(z - 0.5)))
    ext = rng.random(n) < 1 / (1 + np.exp(-z))
    sub = [("T1e" if x else "T1m") if t else None for t, x in zip(t1, ext)]
    inst = rng.integers(0, 30, n)
    raw = pd.DataFrame({
        "age": np.clip(np.round(rng.normal(73 if external else 70, 9, n)), 35, 95).astype(int),
        "sex": _choice(rng, ["Male", "Female"], [80, 20], n),
        "smoking": _with_missing(rng, list(rng.integers(0, 3, n)), 0.1, -1),
        "tumor": _choice(rng, ["Primary", "Recurrent"], [85, 15], n),
        "stage": ["T1HG" if t else "TaHG" for t in t1],
        "substage": sub,
        "grade": ["G3" if g else "G2" for g in g3],
        "reTUR": _choice(rng, ["Yes", "No"], [60, 40], n),
        "LVI": _with_missing(rng, ["Yes" if v else "No" for v in lvi], 0.15, -1),
        "variant": _choice(rng, ["UCC", "UCC + Variant"], [88, 12], n),
        "EORTC": ["Highest risk" if h else "High risk" for h in highest],
        "no_instillations": _with_missing(rng, [int(v) for v in inst], 0.1, -1),
        "BRS": _choice(rng, ["BRS1", "BRS2", "BRS3"], [35, 35, 30], n),
    })  # fmt: skip
    signal = _std(0.8 * t1 + 0.6 * g3 + 0.5 * lvi + 0.4 * highest
                  + 0.3 * np.array([s == "T1e" for s in sub]))  # fmt: skip
    return raw, signal


# ---------------------------------------------------------------------------- times
def _calibrated_censoring(t: np.ndarray, e1: np.ndarray, target: float, admin: float
                          ) -> np.ndarray:  # fmt: skip
    """Censoring times min(admin, E/rate) with ``rate`` found by bisection so that the
    censored fraction is ``target`` (admin censoring alone may already exceed it)."""

    def frac(rate: float) -> float:
        c = np.minimum(admin, e1 / rate) if rate > 0 else np.full_like(t, admin)
        return float(np.mean(c < t))

    if frac(0.0) >= target:
        return np.full_like(t, admin)
    lo, hi = 0.0, 1.0
    while frac(hi) < target and hi < 1e6:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(mid) < target else (lo, mid)
    return np.minimum(admin, e1 / hi)


# ---------------------------------------------------------------------------- cohort
def make_cohort(
    n: int = 200,
    seed: int = 0,
    *,
    weights: Mapping[str, float] | None = None,
    noise: float = 0.5,
    missing: Mapping[str, float] | None = None,
    censoring: float = 0.6,
    max_tiles: int = 64,
    tile_dim: int = 512,
    slide_dim: int = 768,
    mri_dim: int = 2048,
    n_genes: int = 2000,
    rna_rank: int = 8,
    follow_up: float = 120.0,
    external: bool = False,
    task: int = 1,
    world_seed: int = 0,
    modalities: tuple[str, ...] = ("clinical", "wsi", "slide", "mri", "rna"),
    signal: str = "linear",
) -> tuple[Cohort, np.ndarray]:
    """A synthetic cohort and its true log-risk (systematic part, without the frailty).

    ``signal="nonlinear"``: the risk of :data:`NONLINEAR_WEIGHTS` (an MRI factor × factor
    product, a step in the aggressive-tile share, a WSI × RNA product; the MRI embedding
    then carries a second latent factor along its own direction). The default cohorts are
    unchanged by it (the second factor comes from a generator of its own).
    ``weights``: modality → share of the log-risk (plus ``interaction`` for WSI × RNA,
    ``mri_interaction`` and ``wsi_threshold`` for the non-linear terms);
    ``missing``: modality → fraction of patients without it; ``censoring``: target
    censored fraction; times are in months, administrative censoring at ``follow_up``.
    Task 1 ids are ``1000, 1001, ...`` (``5000, ...`` when external); ``task=3`` gives
    bladder (CHIMERA task 3) clinical fields and ids ``3A_###`` (``3B_###`` when external).
    """
    if task not in (1, 3):
        raise DataError(f"task must be 1 or 3; found {task!r}", field="task")
    if n < 2 or max_tiles < 1:
        raise DataError("need n >= 2 patients and max_tiles >= 1", field="n")
    if signal not in SIGNALS:
        raise DataError(f"signal must be one of {SIGNALS}; found {signal!r}", field="signal")
    for key, value in (("seed", seed), ("world_seed", world_seed)):  # was NumPy's unnamed
        if value < 0:  # "expected non-negative integer" (e.g. --data synthetic:300:-1)
            raise DataError(f"{key} must be >= 0; found {value}", field=key)
    w = {**(NONLINEAR_WEIGHTS if signal == "nonlinear" else DEFAULT_WEIGHTS), **(weights or {})}
    miss = {**DEFAULT_MISSING, **(missing or {})}
    rng = np.random.default_rng([seed, 1 if external else 0, task])
    proto, v_slide, v_mri, loadings, base = _world(
        world_seed, tile_dim, slide_dim, mri_dim, rna_rank, n_genes
    )

    lat, raw, sig = _latents(rng, n, external, task)
    if signal == "nonlinear":
        lat["mri2"] = _second_mri_factor(seed, external, task, n)
    log_risk = _log_risk(sig, lat, w, dict.fromkeys(sig, np.ones(n, dtype=bool)))

    # --- features
    feats: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    shift = np.random.default_rng([world_seed, 104729])  # the external site's batch effect
    schema = clin.TASK1 if task == 1 else clin.TASK3
    if "clinical" in modalities:
        feats["clinical"], names["clinical"] = clin.clinical_to_matrix(raw, schema, [])
    if "wsi" in modalities:
        k = rng.integers(max(1, max_tiles // 4), max_tiles + 1, n)
        x = rng.normal(size=(n, max_tiles, tile_dim)).astype(np.float32)
        frac = _hot_fraction(lat["wsi"])
        mk = np.arange(max_tiles)[None, :] < k[:, None]
        hot = (rng.random((n, max_tiles)) < frac[:, None]) & mk
        x += (3.0 * hot)[..., None].astype(np.float32) * proto.astype(np.float32)
        if external:
            x = x * 1.1 + 0.3 * shift.normal(size=tile_dim).astype(np.float32)
        x[~mk] = 0.0
        feats["wsi"], masks["wsi"] = x, mk
    if "slide" in modalities:
        x = rng.normal(size=(n, slide_dim)) + 3.0 * np.outer(lat["slide"], v_slide)
        if external:
            x = x * 1.2 + 0.5 * shift.normal(size=slide_dim)
        feats["slide"] = x.astype(np.float32)
    if "mri" in modalities:
        x = rng.normal(size=(n, mri_dim)) + 3.0 * np.outer(lat["mri"], v_mri)
        if "mri2" in lat:
            x = x + 3.0 * np.outer(lat["mri2"], _second_mri_direction(world_seed, mri_dim))
        if external:
            x = x * 0.9 + 0.5 * shift.normal(size=mri_dim)
        feats["mri"] = x.astype(np.float32)
    if "rna" in modalities:
        factors = rng.normal(size=(n, rna_rank))
        factors[:, 0] = lat["rna"]
        mean = np.exp(base[None, :] + factors @ loadings)
        if external:
            mean = mean * np.exp(shift.normal(0, 0.3, n_genes))[None, :]
        feats["rna"] = rng.poisson(np.minimum(mean, 1e7)).astype(np.float32)
        names["rna"] = [f"G{i:05d}" for i in range(n_genes)]
    for m in feats:
        rate = float(miss.get(m, 0.0))
        present[m] = rng.random(n) >= rate

    # --- times (Weibull PH, months) and calibrated censoring
    t_event = 60.0 * (rng.exponential(size=n) / np.exp(log_risk + noise * rng.normal(size=n))
                      ) ** (1 / 1.3)  # fmt: skip
    target = min(0.95, censoring + (0.1 if external else 0.0))
    admin = follow_up * (0.7 if external else 1.0)
    cens = _calibrated_censoring(t_event, rng.exponential(size=n), target, admin)
    time = np.maximum(np.minimum(t_event, cens), 0.1)
    event = t_event <= cens

    ids = _ids(n, external, task)
    if task == 1:
        site = np.full(n, "external" if external else "internal", dtype=object)
    else:
        site = np.full(n, "3B" if external else "3A", dtype=object)
    meta = pd.DataFrame({"site": site}, index=pd.Index(ids, name="patient"))
    for col in raw.columns:
        meta[RAW_PREFIX + col] = [None if _absent(v) else _plain(v) for v in raw[col]]
    for m in IMAGE_LATENTS:
        meta[LATENT_PREFIX + m] = lat[m]
    cohort = Cohort(ids, time, event, features=feats, present=present, meta=meta,
                    bag_mask=masks, feature_names=names)  # fmt: skip
    return cohort, log_risk


def _ids(n: int, external: bool, task: int) -> list[str]:
    """The patient ids of ``make_cohort``: an external cohort is other patients, so other
    ids (evaluate checks)."""
    if task == 1:
        return [str((5000 if external else 1000) + i) for i in range(n)]
    return [f"{'3B' if external else '3A'}_{i:03d}" for i in range(n)]


def _check_generated(cohort: Cohort, lat: Mapping[str, np.ndarray], seed: int,
                     external: bool, task: int, what: str) -> None:  # fmt: skip
    """Refuse a cohort that is not ``make_cohort(len(cohort), seed, external=..,
    task=..)`` itself: the oracles regenerate the truth from those arguments, so a subset
    (a test fold), an external cohort or another seed silently got the C-index of other
    patients' risk (near chance) instead of an error."""
    n = len(cohort)
    same = [str(p) for p in cohort.ids] == _ids(n, external, task)
    for m in IMAGE_LATENTS:  # the generator truth make_cohort keeps in meta, where kept
        col = LATENT_PREFIX + m
        if same and col in cohort.meta.columns:
            kept = pd.to_numeric(cohort.meta[col], errors="coerce").to_numpy(np.float64)
            same = bool(np.allclose(kept, lat[m], rtol=1e-6, atol=1e-9))
    if not same:
        raise DataError(f"{what}: this cohort is not make_cohort({n}, seed={seed},"
                        f" external={external}, task={task}) (a subset, another seed or"
                        " another cohort?); the truth is regenerated from those arguments,"
                        " so pass the whole cohort make_cohort returned", field="cohort")  # fmt: skip


def _hot_fraction(latent: np.ndarray | float) -> np.ndarray:
    """Expected share of "aggressive" tiles for a WSI latent factor (a logistic: ~2 % at
    -1.5, 12 % at 0, 50 % at +1.7)."""
    return 1 / (1 + np.exp(-(1.2 * np.asarray(latent) - 2.0)))


def _world(world_seed: int, tile_dim: int, slide_dim: int, mri_dim: int, rna_rank: int,
           n_genes: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    """The truth shared by every cohort of a world: tile prototype (unit norm), slide and
    MRI directions, gene loadings (rank × genes) and log base expression."""
    world = np.random.default_rng([world_seed, 7919])
    proto = world.normal(size=tile_dim)
    proto /= np.linalg.norm(proto)
    v_slide = world.normal(size=slide_dim) / np.sqrt(slide_dim)
    v_mri = world.normal(size=mri_dim) / np.sqrt(mri_dim)
    loadings = world.normal(0, 0.35, (rna_rank, n_genes))
    base = world.normal(np.log(50), 1.5, n_genes)
    return proto, v_slide, v_mri, loadings, base


def _latents(rng: np.random.Generator, n: int, external: bool, task: int
             ) -> tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, np.ndarray]]:  # fmt: skip
    """The patients' latent factors, raw clinical fields and per-modality risk signals:
    the first draws of a cohort's generator (shared with ``observable_oracle_cindex``)."""
    lat = {m: rng.normal(size=n) for m in ("clinical", "wsi", "slide", "mri", "rna")}
    raw, s_clin = (_clinical_task1 if task == 1 else _clinical_task3)(rng, lat["clinical"],
                                                                      external)  # fmt: skip
    sig = {"clinical": s_clin, "wsi": lat["wsi"], "slide": lat["slide"], "mri": lat["mri"],
           "rna": lat["rna"]}  # fmt: skip
    return lat, raw, sig


def _second_mri_factor(seed: int, external: bool, task: int, n: int) -> np.ndarray:
    """The second MRI latent factor of ``signal="nonlinear"`` (a generator of its own, so
    the draws of the default cohorts do not move)."""
    return np.random.default_rng([seed, 1 if external else 0, task, 31]).normal(size=n)


def _second_mri_direction(world_seed: int, mri_dim: int) -> np.ndarray:
    return np.random.default_rng([world_seed, 7927]).normal(size=mri_dim) / np.sqrt(mri_dim)


def _log_risk(sig: dict[str, np.ndarray], lat: dict[str, np.ndarray], w: Mapping[str, float],
              seen: Mapping[str, np.ndarray], step: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Centred log-risk from the signals of the modalities ``seen`` per patient; the
    non-linear terms where their weights are set (``step``: the aggressive-slide
    indicator, or an estimate of its probability)."""
    log_risk = sum(w.get(m, 0.0) * sig[m] * seen[m] for m in sig if m in seen)
    both = seen["wsi"] & seen["rna"]
    log_risk = log_risk + w.get("interaction", 0.0) * lat["wsi"] * lat["rna"] * both
    if w.get("mri_interaction", 0.0) and "mri2" in lat:
        log_risk = log_risk + w["mri_interaction"] * lat["mri"] * lat["mri2"] * seen["mri"]
    if w.get("wsi_threshold", 0.0):
        step = (lat["wsi"] > WSI_THRESHOLD).astype(np.float64) if step is None else step
        log_risk = log_risk + w["wsi_threshold"] * step * seen["wsi"]
    return np.asarray(log_risk, dtype=np.float64) - np.mean(log_risk)


def observable_oracle_cindex(
    cohort: Cohort,
    seed: int = 0,
    *,
    weights: Mapping[str, float] | None = None,
    external: bool = False,
    task: int = 1,
    signal: str = "linear",
) -> float:
    """Harrell's C of the true log-risk *without the terms of each patient's missing
    modalities* (made by ``make_cohort(len(cohort), seed, ...)`` with the same arguments).

    Why: the plain oracle also knows the risk carried by modalities a patient does not
    have, which no model can see; this is the tighter ceiling (still optimistic: it uses
    the exact latent factors, not their noisy measurements).
    """
    n = len(cohort)
    rng = np.random.default_rng([seed, 1 if external else 0, task])
    lat, _, sig = _latents(rng, n, external, task)
    _check_generated(cohort, lat, seed, external, task, "observable_oracle_cindex")
    if signal == "nonlinear":
        lat["mri2"] = _second_mri_factor(seed, external, task, n)
    seen = {m: (cohort.present[m] if m in cohort.present else np.zeros(n, dtype=bool))
            for m in sig}  # fmt: skip
    w = {**(NONLINEAR_WEIGHTS if signal == "nonlinear" else DEFAULT_WEIGHTS), **(weights or {})}
    return oracle_cindex(cohort, _log_risk(sig, lat, w, seen))


def measurement_oracle_cindex(
    cohort: Cohort,
    seed: int = 0,
    *,
    weights: Mapping[str, float] | None = None,
    task: int = 1,
    world_seed: int = 0,
    rna_rank: int = 8,
    signal: str = "linear",
) -> float:
    """Harrell's C of the risk an analyst who knows the generator would compute from the
    *features* of an internal cohort made by ``make_cohort(len(cohort), seed, ...)``.

    With ``signal="nonlinear"`` the same analyst also knows the non-linear terms: the two
    MRI factors are read along both directions at once, the aggressive-slide step is
    replaced by its posterior probability, and products use the factor estimates.

    Why: the observable oracle still uses the exact latent factors, but a model only sees
    their noisy measurements: a slide of 16-64 tiles reveals its latent factor through a
    binomial count of "aggressive" tiles, embeddings add noise along their directions,
    RNA adds Poisson and other-factor noise. This estimator is told everything a model
    must learn: the tile prototype, the slide / MRI directions, the gene loadings and base
    expression, the risk weights and the interaction. Per modality it takes the
    posterior mean of the latent factor (WSI: exact Bayes over a grid from the count of
    tiles projecting above half the prototype shift; slide, MRI, RNA: least-squares
    factor scores, calibrated to the latent by a one-parameter regression on this
    cohort's patients with the modality; clinical: the exact signal, whose fields are all
    recorded), then combines them with the true weights over each patient's present
    modalities. It is a practical ceiling for learned models, still optimistic (its
    calibrations see the truth).
    """
    n = len(cohort)
    w = {**(NONLINEAR_WEIGHTS if signal == "nonlinear" else DEFAULT_WEIGHTS), **(weights or {})}
    lat, _, sig = _latents(np.random.default_rng([seed, 0, task]), n, False, task)
    _check_generated(cohort, lat, seed, False, task, "measurement_oracle_cindex")
    if signal == "nonlinear":
        lat["mri2"] = _second_mri_factor(seed, False, task, n)
    dims = {m: cohort.features[m].shape[-1] for m in ("wsi", "slide", "mri", "rna")
            if m in cohort.features}  # fmt: skip
    proto, v_slide, v_mri, loadings, base = _world(
        world_seed, dims.get("wsi", 512), dims.get("slide", 768), dims.get("mri", 2048),
        rna_rank, dims.get("rna", 2000),
    )  # fmt: skip

    def calibrated(latent: np.ndarray, score: np.ndarray, m: str) -> np.ndarray:
        """Fitted on the patients with ``m``: an absent one's zeroed features give a
        far-off score (RNA: ``log(0.5) - base``) that bent the fit and mis-weighted the
        modality against the others."""
        design = np.column_stack([np.ones(n), score])
        have = cohort.present[m]
        return design @ np.linalg.lstsq(design[have], latent[have], rcond=None)[0]

    est = {"clinical": sig["clinical"]}
    step = None
    if "wsi" in cohort.features:
        x, mk = cohort.features["wsi"], cohort.bag_mask["wsi"]
        hot = ((x @ proto.astype(x.dtype)) > 1.5) & mk
        k, total = hot.sum(axis=1), mk.sum(axis=1)
        grid = np.linspace(-5.0, 5.0, 1001)
        p_hot = 1 / (1 + np.exp(-(1.2 * grid - 2.0)))
        loglik = (k[:, None] * np.log(p_hot) + (total - k)[:, None] * np.log1p(-p_hot)
                  - grid**2 / 2)  # fmt: skip
        post = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        est["wsi"] = (post @ grid) / post.sum(axis=1)
        step = (post @ (grid > WSI_THRESHOLD)) / post.sum(axis=1)
    if "slide" in cohort.features:
        est["slide"] = calibrated(lat["slide"], cohort.features["slide"] @ v_slide, "slide")
    if "mri" in cohort.features:
        if "mri2" in lat:
            v2 = _second_mri_direction(world_seed, dims.get("mri", 2048))
            scores = cohort.features["mri"] @ np.linalg.pinv(np.column_stack([v_mri, v2])).T
            est["mri"] = calibrated(lat["mri"], scores[:, 0], "mri")
            est["mri2"] = calibrated(lat["mri2"], scores[:, 1], "mri")
        else:
            est["mri"] = calibrated(lat["mri"], cohort.features["mri"] @ v_mri, "mri")
    if "rna" in cohort.features:
        resid = np.log(cohort.features["rna"] + 0.5) - base
        factors = np.linalg.lstsq(loadings.T, resid.T, rcond=None)[0].T
        est["rna"] = calibrated(lat["rna"], factors[:, 0], "rna")
    seen = {m: cohort.present[m] if m in est else np.zeros(n, dtype=bool) for m in sig}
    est = {m: est.get(m, np.zeros(n)) for m in [*sig, *(["mri2"] if "mri2" in lat else [])]}
    return oracle_cindex(cohort, _log_risk(est, est, w, seen,
                                           np.zeros(n) if step is None else step))


def _absent(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _plain(v: Any) -> Any:
    """numpy scalars → Python (JSON-serialisable)."""
    return v.item() if isinstance(v, np.generic) else v


def oracle_cindex(cohort: Cohort, true_log_risk: np.ndarray) -> float:
    """Harrell's C of the true log-risk: the ceiling a model can reach on this cohort."""
    try:
        from modalsurv.survival.metrics import concordance_index
    except ImportError:
        from sksurv.metrics import concordance_index_censored

        return float(concordance_index_censored(cohort.event, cohort.time, true_log_risk)[0])
    return float(concordance_index(cohort.time, cohort.event, true_log_risk))


# ---------------------------------------------------------------------------- writing
def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1)


@functools.lru_cache(maxsize=1)
def _ihc() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's IHC picture (RGB uint8) and its stain separation (HED), read-only."""
    from skimage import data
    from skimage.color import rgb2hed

    rgb = data.immunohistochemistry()
    hed = rgb2hed(rgb).astype(np.float32)
    rgb.flags.writeable = False
    hed.flags.writeable = False
    return rgb, hed


AGGRESSIVE_VARIANTS = 4


@functools.lru_cache(maxsize=AGGRESSIVE_VARIANTS)
def _aggressive(variant: int) -> np.ndarray:
    """The IHC picture rendered as high-grade tumour (RGB uint8, read-only; one of
    ``AGGRESSIVE_VARIANTS`` nuclei layouts, each made once): crowded, enlarged,
    hyperchromatic (hematoxylin-dark, blue-purple) nuclei with chromatin texture over a
    purple-tinted background with less DAB (membrane) stain."""
    from scipy.ndimage import gaussian_filter
    from skimage.color import hed2rgb

    hed = _ihc()[1]
    rng = np.random.default_rng([variant, 15485863])
    h, w = hed.shape[:2]
    n = max(1, h * w // 210)  # nuclei centres: a Poisson-like scatter, merged where crowded
    bumps = np.zeros((h, w), np.float32)
    bumps[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(0.7, 1.3, n)
    sigma = 3.6
    field = gaussian_filter(bumps, sigma) * np.float32(2 * np.pi * sigma**2)
    nuclei = np.clip((field - 0.5) / 0.2, 0.0, 1.0)
    chromatin = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), 1.0)
    out = hed.copy()
    out[..., 0] = hed[..., 0] * 1.3 + 0.025 + nuclei * (0.10 + 0.05 * chromatin)
    out[..., 1] = hed[..., 1] + 0.01
    out[..., 2] = hed[..., 2] * 0.55
    rgb = (np.clip(hed2rgb(out), 0.0, 1.0) * 255).round().astype(np.uint8)
    rgb.flags.writeable = False
    return rgb


def _slide_image(rng: np.random.Generator, px: int, hot: float | None = None,
                 art: np.random.Generator | None = None, patch: int = 112
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A white slide with the scikit-image IHC tissue (flipped/placed per slide) and its
    tissue mask (non-white pixels of the tissue).

    With ``hot`` (the patient's share of aggressive tissue, in [0, 1]) the slide is cut
    into a grid of ``patch``-px cells (aligned on the slide's origin, so a tiler's tiles
    hold whole cells); of the n cells at least a quarter covered by tissue,
    ``hot × n`` (randomised rounding: exact in expectation) chosen at random by ``art``
    show the tissue rendered as high-grade tumour (``_aggressive``). ``rng`` draws
    exactly what it drew without ``hot``, so placement and flips do not change.
    """
    tissue = _ihc()[0]
    sick = None
    if hot is not None and art is not None:
        sick = _aggressive(int(art.integers(AGGRESSIVE_VARIANTS)))
    size = min(px // 2, tissue.shape[0])
    tissue = tissue[:size, :size]
    sick = sick[:size, :size] if sick is not None else None
    if rng.random() < 0.5:
        tissue = tissue[::-1]
        sick = sick[::-1] if sick is not None else None
    if rng.random() < 0.5:
        tissue = tissue[:, ::-1]
        sick = sick[:, ::-1] if sick is not None else None
    img = np.full((px, px, 3), 255, dtype=np.uint8)
    y, x = rng.integers(0, px - size + 1, 2)
    tissue = np.array(tissue)
    if sick is not None and hot is not None and art is not None:
        # grid cells under the tissue; those at least a quarter covered (the tiles an
        # extractor keeps) share the aggressive tissue, slivers stay ordinary
        cells = [(cy, cx) for cy in range(y // patch * patch, y + size, patch)
                 for cx in range(x // patch * patch, x + size, patch)
                 if (min(cy + patch, y + size) - max(cy, y))
                 * (min(cx + patch, x + size) - max(cx, x)) * 4 >= patch * patch]  # fmt: skip
        k = min(len(cells), int(np.floor(float(hot) * len(cells) + art.random())))
        if k > 0:
            for c in art.choice(len(cells), size=k, replace=False):
                cy, cx = cells[int(c)]
                ys = slice(max(cy - y, 0), min(cy + patch - y, size))
                xs = slice(max(cx - x, 0), min(cx + patch - x, size))
                tissue[ys, xs] = sick[ys, xs]
    img[y : y + size, x : x + size] = tissue
    mask = np.zeros((px, px), dtype=np.uint8)
    darkest = np.minimum(np.minimum(tissue[..., 0], tissue[..., 1]), tissue[..., 2])
    mask[y : y + size, x : x + size] = darkest < 220
    return img, mask


def _write_tiff(path: Path, img: np.ndarray, mpp: float, levels: int) -> None:
    """A tiled pyramidal TIFF (levels as SubIFDs) with µm/pixel in the resolution tags."""
    import tifffile

    rgb = img.ndim == 3
    opts = {"tile": (256, 256), "photometric": "rgb" if rgb else "minisblack",
            "compression": "jpeg" if rgb else "zlib", "resolutionunit": "CENTIMETER"}  # fmt: skip
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        tif.write(img, subifds=levels - 1, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for lv in range(1, levels):
            f = 2**lv
            tif.write(img[::f, ::f], subfiletype=1,
                      resolution=(1e4 / (mpp * f), 1e4 / (mpp * f)), **opts)  # fmt: skip


def _lesion(latent: float) -> tuple[float, float]:
    """The index lesion of an MRI latent factor: (radius relative to the prostate's,
    contrast factor), both rising along one logistic (radius ~0.18 at -2, 0.36 at 0,
    0.63 at +2; contrast 0.5 to 1)."""
    grow = float(1 / (1 + np.exp(-(1.2 * latent - 0.5))))
    return 0.15 + 0.55 * grow, 0.5 + 0.5 * grow


def _write_mri(paths: dict[str, Path], level: float, rng: np.random.Generator,
               shape: tuple[int, int, int], lesion: float | None = None,
               art: np.random.Generator | None = None) -> None:  # fmt: skip
    """Small mpMRI volumes with an ellipsoid "prostate" (intensity set by ``level``).

    With ``lesion`` (the patient's MRI latent factor) the prostate holds a focal lesion,
    placed at random by ``art``, dark on T2W, dark on ADC (restricted diffusion) and
    bright on HBV, whose radius and contrast rise with the latent (``_lesion``).
    ``rng`` draws exactly what it drew without ``lesion``.
    """
    import SimpleITK as sitk

    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = rng.uniform(0.45, 0.7, 3)
    inside = (zz / r[0]) ** 2 + (yy / r[1]) ** 2 + (xx / r[2]) ** 2 <= 1.0
    scales = {"t2w": 400.0, "adc": 1200.0, "hbv": 20.0}
    focus = np.zeros(shape)
    if lesion is not None and art is not None:
        size, strength = _lesion(lesion)
        centre = art.uniform(-1, 1, 3) * (1 - size) * 0.7 * r  # well inside the prostate
        dist = np.sqrt(sum(((g - c) / (size * ri)) ** 2 for g, c, ri in zip((zz, yy, xx),
                                                                            centre, r)))  # fmt: skip
        focus = np.clip((1.0 - dist) / 0.3, 0.0, 1.0) * inside * strength  # soft edge
    contrast = {"t2w": -0.5, "adc": -0.6, "hbv": 1.5}
    for seq in MRI_SEQUENCES:
        vol = rng.normal(0.2, 0.05, shape) * scales[seq]
        vol[inside] += scales[seq] * (1.0 + 0.5 * np.tanh(level))
        vol += focus * contrast[seq] * scales[seq]
        img = sitk.GetImageFromArray(vol.astype(np.float32))
        img.SetSpacing((0.5, 0.5, 3.0))
        with atomic_path(paths[seq]) as tmp:
            sitk.WriteImage(img, str(tmp.with_suffix(".mha")), True)
            tmp.with_suffix(".mha").replace(tmp)
    m = sitk.GetImageFromArray(inside.astype(np.uint8))
    m.SetSpacing((0.5, 0.5, 3.0))
    with atomic_path(paths["mask"]) as tmp:
        sitk.WriteImage(m, str(tmp.with_suffix(".mha")), True)
        tmp.with_suffix(".mha").replace(tmp)


def _latent_column(cohort: Cohort, modality: str) -> np.ndarray:
    """The cohort's ``latent:<modality>`` meta column as floats (NaN where a patient has
    no value, all NaN without the column): a patient without one gets images without
    that signal, as before latents were stored."""
    col = LATENT_PREFIX + modality
    if col not in cohort.meta.columns:
        return np.full(len(cohort), np.nan)
    return pd.to_numeric(cohort.meta[col], errors="coerce").to_numpy(dtype=np.float64)


def write_chimera(
    cohort_or_bundle: Cohort | tuple[Cohort, Any],
    root: str | Path,
    task: int = 1,
    images: bool = True,
    slide_px: int = 1024,
    mpp: float = 0.5,
    mri_shape: tuple[int, int, int] = (12, 48, 48),
    max_slides: int = 3,
    seed: int = 0,
) -> Path:
    """Write a (synthetic) cohort in the real CHIMERA task layout (``io.chimera``).

    Needs the raw clinical values in ``meta`` columns ``clinical:<field>`` (as
    ``make_cohort`` stores them). Writes clinical JSON with labels (task 1: ``BCR`` as
    "0.0"/"1.0" and a leaking ``BCR_PSA`` for events, as in the real data), tile features
    as ``.pt`` (a patient's bag split over 1–``max_slides`` slides; task 3: one slide),
    coordinates ``.npy``, RNA JSON, and with ``images=True`` small pyramidal ``.tif``
    slides + tissue masks and ``.mha`` mpMRI volumes + prostate mask (task 1).
    Reading the folder back with ``io.chimera.read_chimera`` gives the same cohort.

    What the images carry (when the cohort has ``make_cohort``'s ``latent:wsi`` /
    ``latent:mri`` meta columns):

    - slides: the IHC picture on a white slide (flipped and placed at random), cut into
      a grid of 56-µm cells (112 px at 0.5 µm/px, four to a 224-px tile, aligned on the
      slide's origin); of the cells at least a quarter covered by tissue, a share equal to
      the patient's expected aggressive-tile fraction (``_hot_fraction`` of the WSI
      latent: ~2 % at -1.5, 12 % at 0, 50 % at +1.7; randomised rounding per slide) is
      rendered as high-grade tumour. The tissue mask is the non-white part of the
      written tissue. Extracted with EfficientNet-Lite0 (ImageNet), the first principal
      component of the mean-pooled tile features has Spearman ~0.9 with the latent
      (100 patients, 1–3 slides each).
    - mpMRI: an ellipsoid prostate holding a focal lesion (dark T2W, dark ADC, bright
      HBV) whose radius (~0.2 to 0.6 of the prostate's) and contrast rise with the MRI
      latent; the first principal component of random-init MedicalNet ResNet-10 features
      (masked, z-scored crops) has Spearman ~0.9 with it.

    Without those columns (a cohort made elsewhere; per patient: a NaN value) the
    images carry no signal, as before: the tissue is the plain IHC picture and the
    prostate is uniform (its intensity from the mean of the first 8 ``mri`` features,
    which the extractor's z-scoring removes). Either way the patient's own generator
    (``seed``, crc32 of the id) draws placement, flips, shapes and noise, and the signal
    has a second one, so both paths write the same files but for the signal.
    """
    import torch

    cohort = cohort_or_bundle[0] if isinstance(cohort_or_bundle, tuple) else cohort_or_bundle
    layout: Layout = TASK1_LAYOUT if task == 1 else TASK3_LAYOUT
    root = Path(root)
    raw_cols = [c for c in cohort.meta.columns if str(c).startswith(RAW_PREFIX)]
    if not raw_cols:
        raise DataError("write_chimera needs raw clinical values in meta columns"
                        f" '{RAW_PREFIX}<field>' (as make_cohort stores them)",
                        field="meta")  # fmt: skip
    schema = clin.TASK1 if task == 1 else clin.TASK3
    fields = {c[len(RAW_PREFIX) :] for c in raw_cols}
    if not set(schema.names) & fields:
        raise DataError(f"the cohort's clinical fields do not match task {task}",
                        field="clinical")  # fmt: skip
    has_wsi = "wsi" in cohort.features and cohort.is_bag("wsi")
    latents = {m: _latent_column(cohort, m) for m in IMAGE_LATENTS}
    patch = max(16, round(56.0 / mpp))  # 112 px at 0.5 µm/px: a quarter of a 20x tile
    for i, pid in enumerate(cohort.ids):
        pid = str(pid)
        rng = np.random.default_rng([seed, zlib.crc32(pid.encode())])
        # the images' risk signal has its own generator: rng's draws stay as they were
        art = np.random.default_rng([seed, zlib.crc32(pid.encode()), 1])
        rec = {c[len(RAW_PREFIX):]: _plain(v) for c, v in cohort.meta.iloc[i][raw_cols].items()
               if not _absent(v)}  # fmt: skip
        t, e = float(cohort.time[i]), bool(cohort.event[i])
        if task == 1:
            rec["BCR"] = "1.0" if e else "0.0"
            rec["time_to_follow-up/BCR"] = t
            if e:
                rec["BCR_PSA"] = round(0.2 + float(rng.exponential(0.5)), 2)
        else:
            rec["progression"] = int(e)
            rec["Time_to_prog_or_FUend"] = t
            hg = e or bool(rng.random() < 0.2)
            rec["HG_recur"] = int(hg)
            rec["Time_to_HG_recur_or_FUend"] = (
                t if e or not hg else round(t * rng.uniform(0.3, 1), 3)
            )
        atomic_write_text(root / layout.clinical.format(case=pid), _json(rec))

        if "rna" in cohort.features and cohort.present["rna"][i]:
            genes = cohort.feature_names.get("rna") or [f"G{j:05d}" for j in
                                                       range(cohort.dim("rna"))]  # fmt: skip
            vals = {g: float(v) for g, v in zip(genes, cohort.features["rna"][i])}
            atomic_write_text(root / layout.rna[0].format(case=pid), _json(vals))

        if has_wsi and cohort.present["wsi"][i]:
            bag = cohort.features["wsi"][i][cohort.bag_mask["wsi"][i]]
            n_sl = 1 if task == 3 else int(rng.integers(1, min(max_slides, len(bag)) + 1))
            for j, part in enumerate(np.array_split(bag, n_sl)):
                slide = f"{pid}_HE" if task == 3 else f"{pid}_{j}"
                with atomic_path(root / layout.features[0].format(case=pid, slide=slide)) as tmp:
                    torch.save(torch.from_numpy(np.ascontiguousarray(part)), tmp)
                side = int(np.ceil(np.sqrt(len(part))))
                grid = np.stack(np.divmod(np.arange(len(part)), side), 1)[:, ::-1] * 224
                with atomic_path(root / layout.coords[0].format(case=pid, slide=slide)) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, grid.astype(np.int64))
                if images:
                    hot = (None if np.isnan(latents["wsi"][i])
                           else float(_hot_fraction(latents["wsi"][i])))  # fmt: skip
                    img, mask = _slide_image(rng, slide_px, hot, art, patch)
                    folder = root / Path(layout.slides.format(case=pid)).parent
                    _write_tiff(folder / f"{slide}.tif", img, mpp, 3)
                    _write_tiff(folder / f"{slide}{layout.slide_mask_suffixes[0]}",
                                mask[::4, ::4], mpp * 4, 1)  # fmt: skip

        if images and task == 1 and "mri" in cohort.features and cohort.present["mri"][i]:
            level = float(cohort.features["mri"][i][:8].mean())
            paths = {q: root / layout.mri[0].format(case=pid, seq=q) for q in MRI_SEQUENCES}
            paths["mask"] = root / layout.mri_mask[0].format(case=pid)
            lesion = None if np.isnan(latents["mri"][i]) else float(latents["mri"][i])
            _write_mri(paths, level, rng, mri_shape, lesion, art)
    return root
