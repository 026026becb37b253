"""Pydantic models for every command, loaded from YAML.

Unknown keys are rejected with their full key path (``model.fusoin``), so a typo never
silently falls back to a default. The resolved config (defaults filled in) is saved with
every run folder, which together with ``seed`` makes a run reproducible.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from modalsurv.errors import ConfigError
from modalsurv.utils import read_yaml_mapping, yaml_value


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes True/False itself (not as the number 1/0)."""
    import typing

    if annotation is bool:
        return True
    return any(_admits_bool(a) for a in typing.get_args(annotation))


class Strict(BaseModel):
    # no inf or NaN in any float: JSON (config.yaml, trial ids) would turn them into null
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: Any) -> Any:
        """``preprocess.bag_pca: true`` was read as 1 component (pydantic takes a bool for
        an int): a boolean is refused wherever the field does not take one."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            if not _admits_bool(cls.model_fields[info.field_name].annotation):
                raise ValueError(f"{value!r} is a boolean, which this key does not take"
                                 " (YAML also reads yes/no/on/off as booleans: quote a word"
                                 " meant as text)")  # fmt: skip
        return value


class PreprocessConfig(Strict):
    """Per-modality preprocessing, always fitted on the training part of a fold only."""

    rna_log1p: bool | Literal["auto"] = Field(
        "auto",
        description="log1p on RNA; 'auto': only when the training values look raw (all >= 0,"
        " max > 50, i.e. counts/TPM), not for data already log-scaled",
    )
    rna_top_variance_genes: int | None = Field(2000, ge=1)
    rna_pca: int | None = Field(64, ge=1)
    vector_pca: PositiveInt | Literal["auto"] | None = Field(
        "auto",
        description="PCA of wide embedding vectors (over vector_pca_min_dim), fitted on the"
        " training rows: a number of components, 'auto' (the components above the"
        " Marchenko-Pastur noise edge, train.transforms.signal_rank) or None (off); how the"
        " default was chosen: docs/benchmarks.md",
    )
    vector_pca_min_dim: int = Field(256, ge=1, description="apply vector_pca only above this D")
    bag_pca: PositiveInt | Literal["auto"] | None = Field(
        "auto",
        description="PCA of tile embeddings, fitted on the valid training tiles: a number of"
        " components (bags no wider are only standardised), 'auto' (the components above"
        " the Marchenko-Pastur noise edge, train.transforms.signal_rank) or None (off)",
    )
    standardize: bool = True
    clinical_numeric: Literal["standard", "rank_gauss", "auto"] = Field(
        "standard",
        description="numeric clinical columns: 'standard' (median-imputed, standardised),"
        " 'rank_gauss' (every column with more than two values mapped through its training"
        " quantiles to a normal score first) or 'auto' (rank-Gauss only for heavy-tailed"
        " columns: |skewness| > 1 with at least 20 distinct values)",
    )
    clinical_integer_levels: int | None = Field(
        None,
        ge=3,
        description="a clinical column whose training values are integers with 3 to this"
        " many distinct values (a category stored as a code) also gets one indicator per"
        " level, beside the code; None: off",
    )
    clinical_modalities: list[str] = Field(default_factory=lambda: ["clinical"])
    rna_modalities: list[str] = Field(default_factory=lambda: ["rna"])


class ModelConfig(Strict):
    """ModalSurvNet: projections -> fusion -> head."""

    modalities: list[str] | None = Field(None, min_length=1,
                                         description="None: every modality in the cohort")
    latent_dim: int = Field(128, ge=1)
    hidden_dim: int = Field(256, ge=1)
    projection_layers: int = Field(1, ge=1, le=4)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    layer_norm: bool = True
    attention_pool_dim: int = Field(128, ge=1)
    fusion: str = "cross_attention_gated"
    n_heads: int = Field(4, ge=1)
    head: str = Field(
        "deephit",
        description="survival family of the output layer (survival.family):"
        " deephit | cox | logistic_hazard",
    )
    n_bins: int = Field(30, ge=2)
    bin_scheme: Literal["equidistant", "quantile"] = "quantile"
    stack: list[str] | Literal["none"] | None = Field(
        default_factory=lambda: ["modalsurv", "modalsurv_cox", "modalsurv_clinical",
                                 "coxph_clinical", "coxnet", "rsf"],
        description="the stacked default (train.stacking): these candidates are fitted on the"
        " training part of each outer fold and weighed on their inner out-of-fold risks"
        " (non-negative Cox weights); names: modalsurv, modalsurv_clinical, modalsurv_cox,"
        " coxph_clinical, coxnet, rsf. 'none' (or null): the plain ModalSurv network of the"
        " paper",
    )
    linear_skip: bool = Field(
        True,
        description="add a linear function of every vector modality (zero when the modality"
        " is absent) to the output: a shift of all bin logits (discrete families), a"
        " log-risk term (Cox); small cohorts mostly carry linear signal that the deep path"
        " fits slowly",
    )

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, v: str) -> str:
        """Checked when the config is read, not at the first fit minutes later."""
        from modalsurv.nn.fusion import FUSIONS

        if v not in FUSIONS:
            raise ValueError(f"unknown fusion {v!r}; known fusions: {sorted(FUSIONS)}")
        return v

    @field_validator("head")
    @classmethod
    def _known_family(cls, v: str) -> str:
        from modalsurv.survival.family import family_names

        if v not in family_names():
            raise ValueError(f"unknown survival family {v!r}; known: {family_names()}")
        return v

    @field_validator("stack")
    @classmethod
    def _known_candidates(cls, v: list[str] | str | None) -> list[str] | str:
        if v is None or v == "none":
            return "none"
        known = ("modalsurv", "modalsurv_clinical", "modalsurv_cox", "coxph_clinical", "coxnet",
                 "rsf")
        bad = [c for c in v if c not in known]
        if bad or not v:
            raise ValueError(f"unknown stack candidates {bad}; known: {list(known)}"
                             if bad else "an empty stack: use 'none' for the plain ModalSurv")
        if len(set(v)) != len(v):
            raise ValueError(f"stack candidates repeat: {v}")
        return list(v)

    @model_validator(mode="after")
    def _heads_divide_latent(self) -> ModelConfig:
        from modalsurv.nn.fusion import FUSIONS, CrossAttentionFusion

        if issubclass(FUSIONS[self.fusion], CrossAttentionFusion) and self.latent_dim % self.n_heads:
            raise ValueError(f"latent_dim {self.latent_dim} must be divisible by n_heads"
                             f" {self.n_heads} for fusion {self.fusion!r}")  # fmt: skip
        return self


class LossConfig(Strict):
    """DeepHit: alpha weighs the likelihood, 1 - alpha the ranking term (pycox convention)."""

    alpha: float = Field(0.2, ge=0.0, le=1.0)
    sigma: float = Field(
        1.0,
        gt=0.0,
        description="scale of DeepHit's ranking term exp(-(F_i - F_j) / sigma); 1.0 since"
        " this round (was pycox's 0.1: better on 9 of 11 tuning cohort-folds;"
        " docs/benchmarks.md)",
    )
    cox_ties: Literal["efron", "breslow"] = "efron"


class TrainConfig(Strict):
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="patients per training step: a number (>= 2), or 'auto': 32 up to 1,600"
        " training patients, then the power of two nearest n / 25, at most 256"
        " (train.defaults.batch_size; how it was chosen: docs/benchmarks.md)",
    )
    epochs: int = Field(100, ge=1)
    patience: int = Field(15, ge=1)
    n_init: int = Field(
        5,
        ge=1,
        description="networks trained from different seeds and averaged by the survival"
        " family (a PMF mixture for DeepHit and logistic hazard, the mean log-risk for"
        " Cox): less variance on small cohorts",
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    member_splits: Literal["shared", "rotate"] = Field(
        "rotate",
        description="inner validation of the seed-ensemble members: 'shared' (one split, the"
        " validation rows never train any member) or 'rotate' (member k validates on fold k"
        " of a stratified round(1 / val_fraction)-fold split of the training cohort, so every"
        " row trains most members; preprocessors and bins are then fitted on the whole"
        " training cohort, the outer test rows stay untouched). With n_init=1 there is one"
        " inner split either way",
    )
    monitor: Literal["cindex", "loss"] = Field(
        "cindex",
        description="early stopping on the validation C-index (the method's protocol, default) or"
        " the validation loss (smoother on small validation splits); falls back as the trainer"
        " documents",
    )
    grad_clip: float | None = Field(1.0, gt=0.0)
    balanced_sampler: bool = False
    modality_dropout: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="per-sample chance to hide a present modality in training (never all),"
        " so the model learns to predict from any subset of modalities",
    )
    tile_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="per-step chance to hide each valid tile of a bag in training (at least"
        " one kept): instance dropout against attention pooling memorising patients by"
        " their tiles",
    )
    risk_reference: Literal["median", "max"] = Field(
        "median", description="reference time for risk = 1 - S(t_ref): training time quantile"
    )
    risk_score: Literal["survival", "rmst"] = Field(
        "survival",
        description="ranking score of discrete families: 'survival' = 1 - S(t_ref); 'rmst' = minus the"
        " restricted mean survival time up to the last bin edge (the area under the whole"
        " predicted curve, mass beyond the grid counted at its end)",
    )
    device: str = "auto"
    mixed_precision: bool = Field(
        False,
        description="bfloat16 autocast of the training forward pass (tensor cores on a GPU;"
        " on a CPU without bfloat16 units it is slower). The loss, the optimiser, the"
        " validation pass and prediction stay in float32 (docs/benchmarks.md, GPU table)",
    )
    threads: int | Literal["auto"] = Field(
        "auto",
        description="CPU threads while training: a number, or 'auto' (one thread when a step's"
        " widest matmul is small, as for tabular cohorts and tiles reduced by bag_pca; else"
        " torch's setting): train.defaults. Another count sums in another order, so the"
        " same seed gives numbers that differ in their last digits (1e-8 seen, no figure)",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_at_least_two(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 2:
            raise ValueError("train.batch_size must be 'auto' or at least 2")
        return v

    @field_validator("threads")
    @classmethod
    def _threads_positive(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 1:
            raise ValueError("train.threads must be 'auto' or at least 1")
        return v


class CVConfig(Strict):
    folds: int = Field(5, ge=2)
    repeats: int = Field(1, ge=1)
    selection: Literal["inner", "outer_fold"] = Field(
        "inner",
        description="'outer_fold' replicates the original protocol (early stopping on the "
        "reported fold): its numbers are optimistic and labelled so",
    )
    train_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="share of each outer fold's training part used (stratified on event; "
        "the test folds do not change): data-scaling curves",
    )
    groups: str | None = Field(
        None,
        description="leave-one-group-out outer folds: a column of the cohort's meta (e.g."
        " 'site', which CHIMERA task 3 sets to 3A / 3B); each of its values is held out once,"
        " so the number of folds is the number of groups (cv.folds is not used) and every"
        " inner validation split stays inside the training groups. None: stratified k-fold",
    )

    @model_validator(mode="after")
    def _groups_are_not_repeated(self) -> CVConfig:
        if self.groups is not None and self.repeats > 1:
            raise ValueError(f"cv.repeats = {self.repeats} with cv.groups: leave-one-group-out"
                             " folds are the same in every repeat (only the training seeds"
                             " would differ, and the paired test would count each fold"
                             " several times); use repeats: 1")  # fmt: skip
        return self


FINETUNE_MODES = {"wsi": ("frozen", "last_k", "all", "lora"),
                  "mri": ("frozen", "last_stage", "all")}  # fmt: skip


class FinetuneConfig(Strict):
    """Training an image encoder inside ModalSurv instead of using its frozen features
    (``train.finetune``); the default, ``frozen``, changes nothing. Needs the image cache
    that ``modalsurv extract --tile-cache / --volume-cache`` writes."""

    encoder: Literal["wsi", "mri"] = Field(
        "wsi",
        description="whose encoder is adapted: 'wsi' (the tile encoder of the extraction"
        " record: a ViT preset or timm model) or 'mri' (the MedicalNet 3-D ResNet)",
    )
    mode: Literal["frozen", "last_k", "last_stage", "all", "lora"] = Field(
        "frozen",
        description="'frozen': the stored features (default); wsi: 'last_k' (the last k"
        " transformer blocks and the final norm / pooler train), 'lora' (low-rank adapters"
        " on lora_targets, through peft), 'all'; mri: 'last_stage' (layer4 trains), 'all'",
    )
    lr: float = Field(1e-5, gt=0.0, description="learning rate of the encoder's parameters"
                      " (the rest of the network keeps train.lr)")
    weight_decay: float = Field(0.0, ge=0.0, description="weight decay of the encoder's"
                                " parameters")
    last_k: int = Field(2, ge=1, description="mode 'last_k': how many final blocks train")
    tiles_per_step: int = Field(
        16, ge=1,
        description="wsi: tiles of each patient's bag re-encoded per training step (a seeded"
        " subset of its valid tiles); the others keep their frozen features. Evaluation and"
        " prediction re-encode every tile",
    )
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0.0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["attn.qkv", "attn.proj"],
        description="module names (suffixes) that get LoRA adapters: a timm ViT's attention"
        " projections by default",
    )
    grad_checkpointing: bool = Field(True, description="recompute the trained blocks'"
                                     " activations in the backward pass (less memory)")
    mixed_precision: bool = Field(True, description="bfloat16 autocast of the encoder on"
                                  " CUDA (ignored on the CPU)")
    encode_batch: int = Field(64, ge=1, description="tiles (volumes) per encoder call when"
                              " every tile is re-encoded (evaluation, prediction)")
    cache: str | None = Field(
        None,
        description="the image cache folder; None: FEATURE_STORE/image_cache of the data"
        " (data.features, or data.path of a store source)",
    )

    @model_validator(mode="after")
    def _mode_fits_encoder(self) -> FinetuneConfig:
        if self.mode not in FINETUNE_MODES[self.encoder]:
            hint = {"lora": "LoRA adapts a ViT's attention (encoder wsi)",
                    "last_k": "the 3-D ResNet trains its last stage: mode last_stage",
                    "last_stage": "a ViT trains its last blocks: mode last_k"}.get(self.mode, "")  # fmt: skip
            raise ValueError(f"mode {self.mode!r} does not apply to encoder {self.encoder!r}"
                             f" (modes: {list(FINETUNE_MODES[self.encoder])}); {hint}")
        return self

    @property
    def active(self) -> bool:
        return self.mode != "frozen"


class SearchConfig(Strict):
    """Optional inner hyperparameter search (``train.search`` module, Optuna's TPE sampler), run on
    the training part of each outer fold before the model is fitted; off by default."""

    trials: int = Field(0, ge=0, description="trials per outer fold; 0: no search")
    timeout: float | None = Field(
        None, gt=0, description="seconds per outer fold's search (the trial running when it"
        " expires finishes); None: only the trial count limits it. How many trials fit depends"
        " on the machine, so a search it stops is not reproducible elsewhere (warned)")
    inner_folds: int = Field(3, ge=2, description="inner CV folds scoring each trial (Harrell C)")
    n_init: int = Field(1, ge=1, description="seed members of each trial's networks (the final"
                        " model keeps train.n_init)")
    prune: bool = Field(True, description="stop a trial after an inner fold when its mean C"
                        " so far is below the median of earlier trials at that fold")
    lr: tuple[float, float] = (1e-4, 3e-3)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    dropout: tuple[float, float] = (0.0, 0.5)
    latent_dim: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])
    epochs: tuple[int, int] = (20, 200)

    @model_validator(mode="after")
    def _ranges(self) -> SearchConfig:
        for name in ("lr", "weight_decay", "dropout", "epochs"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"search.{name}: the range ({lo}, {hi}) is empty")
        if self.lr[0] <= 0 or self.weight_decay[0] <= 0:
            raise ValueError("search.lr and search.weight_decay are searched on a log scale:"
                             " their lower ends must be > 0")
        if not (0 <= self.dropout[0] and self.dropout[1] < 1):
            raise ValueError(f"search.dropout must lie in [0, 1); found {self.dropout}")
        if self.epochs[0] < 1:
            raise ValueError(f"search.epochs must be >= 1; found {self.epochs}")
        if not self.latent_dim or min(self.latent_dim) < 1:
            raise ValueError(f"search.latent_dim: one or more sizes >= 1; found {self.latent_dim}")
        return self


class DataConfig(Strict):
    """Where the cohort comes from."""

    source: Literal["synthetic", "public", "chimera", "manifest", "store"] = "synthetic"
    name: str | None = Field(None, description="public cohort name, or chimera task ('task1')")
    path: str | None = None
    features: str | None = Field(
        None,
        description="feature store (what 'modalsurv extract' wrote) whose image modalities"
        " join the CHIMERA folder's clinical and RNA data by patient id",
    )
    params: dict[str, Any] = Field(default_factory=dict)


def check_data_params(data: DataConfig, source: str = "<dict>", key: str = "data") -> None:
    """Refuse ``data.params`` keys the source's loader does not take (ConfigError naming
    them and the accepted ones), when a config is read rather than at fit time.

    Not a pydantic validator on purpose: a saved model's config is validated again on
    load, and loading a model must not depend on a data loader's signature."""
    from modalsurv.data.sources import loader_parameters, loader_scalar_types, param_value_problems

    accepted = loader_parameters(data.source)
    unknown = [] if accepted is None else sorted(set(data.params) - accepted)
    if unknown:
        raise ConfigError(f"invalid config {source}:\n  {key}.params: unknown key(s) {unknown}"
                          f" for source {data.source!r}; accepted: {sorted(accepted or ())}")
    # a value of the wrong type (YAML reads 1e3 as a string) failed inside the loader
    types = loader_scalar_types(data.source)
    for name, value in data.params.items():
        want = types.get(name)
        if want is None or value is None:
            continue
        ok = (isinstance(value, want) and not (want is int and isinstance(value, bool))) or (
            want is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise ConfigError(f"invalid config {source}:\n  {key}.params.{name}: expected"
                              f" {want.__name__}, got {value!r} ({type(value).__name__};"
                              " YAML reads 1e3 as text: write 1000)")  # fmt: skip
    bad = param_value_problems(data)
    if bad:
        raise ConfigError(f"invalid config {source}:\n" + "\n".join(f"  {key}.params.{b}"
                                                                   for b in bad))


class RunConfig(Strict):
    """Everything a `modalsurv train` run needs; saved resolved in the run folder."""

    seed: int = Field(0, ge=0, lt=2**31, description="the one seed, 0 <= seed < 2**31: the"
                      " fold, member and search seeds derived from it (seed + offsets) stay"
                      " below 2**32, the most NumPy and scikit-learn take")
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    baselines: list[str] = Field(default_factory=lambda: ["coxph_clinical", "coxnet", "rsf"])
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)

    @model_serializer(mode="wrap")
    def _omit_default_finetune(self, handler: Any) -> dict[str, Any]:
        """The ``finetune`` section is written only when it differs from the default
        (frozen), so a frozen run's config.yaml, saved models and grid trial ids stay
        exactly what they were before the section existed."""
        out = handler(self)
        if self.finetune == FinetuneConfig():
            out.pop("finetune", None)
        return out

    @model_validator(mode="after")
    def _searched_sizes_fit_the_heads(self) -> RunConfig:
        """Refused when the config is read, not at the trial that draws the size."""
        from modalsurv.nn.fusion import FUSIONS, CrossAttentionFusion

        attention = issubclass(FUSIONS[self.model.fusion], CrossAttentionFusion)
        odd = [d for d in self.search.latent_dim if d % self.model.n_heads]
        if self.search.trials > 0 and odd and attention:  # heads split only attention
            raise ValueError(f"search.latent_dim {odd} not divisible by model.n_heads"
                             f" {self.model.n_heads}")
        return self

    @model_validator(mode="after")
    def _stack_needs_inner_selection(self) -> RunConfig:
        if self.model.stack != "none" and self.cv.selection == "outer_fold":
            raise ValueError("model.stack weighs its candidates on inner validation folds;"
                             " cv.selection: outer_fold early-stops on the reported fold"
                             " instead: set model.stack: none for that protocol")
        if self.model.stack != "none" and self.finetune.active:
            raise ValueError(f"finetune.mode: {self.finetune.mode} adapts the encoder inside the"
                             " plain network; the stacked default would fine-tune it once per"
                             " candidate: set model.stack: none to fine-tune")
        return self

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, v: list[str]) -> list[str]:
        from modalsurv.train.baselines import BASELINES  # the one list of names

        bad = [b for b in v if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baselines {bad}; known: {sorted(BASELINES)}")
        if len(set(v)) != len(v):  # each would score every fold twice
            raise ValueError(f"baselines repeat: {v}")
        return v


def _section(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the section at ``loc`` (``("model",)`` -> ModelConfig), or None
    where the path leaves the models (a list item, ``data.params``)."""
    import typing

    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation))
                 if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
        if not inner:
            return None
        model = inner[0]
    return model


def _did_you_mean(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """`` (did you mean model.fusion?)`` for an unknown key: a close name in its own
    section, else the sections of ``model`` that have that very key (``train.dropout``:
    model.dropout); empty when nothing is close."""
    import difflib

    here, key = _section(model, loc[:-1]), str(loc[-1])
    if here is None:
        return ""
    prefix = "".join(f"{p}." for p in loc[:-1])
    close = difflib.get_close_matches(key, list(here.model_fields), n=1, cutoff=0.75)
    if close:
        return f" (did you mean {prefix}{close[0]}?)"
    top = [name for name in model.model_fields if key in getattr(_section(model, (name,)),
                                                                 "model_fields", {})]  # fmt: skip
    return f" (did you mean {' or '.join(f'{t}.{key}' for t in top)}?)" if top else ""


#: a number in exponent notation, which YAML 1.1 (PyYAML) reads as text unless it has a
#: dot and a signed exponent (1.0e+3)
_EXPONENT = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+\s*")


def format_validation_error(err: ValidationError, what: str, source: str,
                            model: type[BaseModel] | None = None) -> str:  # fmt: skip
    """One line per offending key path (``model.fusoin: unknown key (did you mean
    model.fusion?)``, the suggestion where ``model``, the class validated, is given)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            hint = "" if model is None else _did_you_mean(model, tuple(e["loc"]))
            lines.append(f"{key}: unknown key{hint}")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            got = e.get("input")
            if e["type"] == "string_type" and isinstance(got, bool):  # [clinical, no]
                msg += " (YAML reads yes/no/on/off as booleans: quote a word meant as text)"
            elif e["type"] == "list_type" and isinstance(got, str):  # --set baselines=rsf
                msg += " (a list is written [a, b])"
            elif e["type"] == "int_parsing" and isinstance(got, str) and _EXPONENT.fullmatch(got):
                msg += " (YAML reads 1e3 as text: write the digits, 1000)"  # epochs: 1e2
            lines.append(f"{key}: {msg}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return f"invalid {what} {source}:\n  " + "\n  ".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "<dict>") -> RunConfig:
    """Validate a dict into a RunConfig; errors name every offending key path."""
    try:
        config = RunConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "config", source, RunConfig)) from None
    check_data_params(config.data, source)
    return config


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML file into a RunConfig."""
    return parse_config(read_yaml_mapping(path, "config file"), str(path))


def with_values(config: RunConfig, values: dict[str, Any], source: str = "--set") -> RunConfig:
    """``{"train.epochs": 3, "model.fusion": "concat"}`` applied to a copy of a config and
    validated like a file (an unknown key path is rejected with its name)."""
    data = config.model_dump(mode="json")
    for key, value in values.items():
        path = [k for k in key.strip().split(".") if k]
        if not path:
            raise ConfigError(f"{source}: empty key")
        node = data
        for i, k in enumerate(path[:-1]):
            child = node.get(k)
            if not isinstance(child, dict):
                if k in node and child is not None:
                    raise ConfigError(f"{source}: {'.'.join(path[: i + 1])} is not a section")
                child = node[k] = {}
            node = child
        node[path[-1]] = value
    return parse_config(data, source)


def set_values(config: RunConfig, assignments: list[str], source: str = "--set") -> RunConfig:
    """``["train.epochs=3", "model.fusion=concat", "baselines=[rsf]"]`` applied to a config.

    Values are read as YAML (``3`` an int, ``[a, b]`` a list, ``null`` None, ``true``), so
    any field can be set from the command line; the result is validated like a file (an
    unknown key path is rejected with its name)."""
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip(". "):
            raise ConfigError(f"{source}: {item!r} is not key=value (e.g. train.epochs=3)")
        try:
            value = yaml_value(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{source} {key}: {raw!r} is not a valid YAML value ({problem});"
                              " quote text, write lists as [a, b]") from None  # fmt: skip
        if raw.count("#") > json.dumps(value, default=str).count("#"):  # "run #2": a comment
            raise ConfigError(f"{source} {key}: {raw!r} reads as {value!r}, YAML taking"
                              " '#' after a space (or first) as the start of a comment; quote"
                              f""" the value ({key}="'...'")""")  # fmt: skip
        values[key.strip()] = value
    return with_values(config, values, source)


def absolute_data_paths(config: RunConfig) -> RunConfig:
    """A copy whose ``data.path`` and ``data.features`` are absolute and normalised
    (relative ones are read against the working directory, as when the data is loaded).

    Why: a run folder records where its data came from and a resume compares that record;
    ``chimera``, ``./chimera/`` and ``/home/me/chimera`` are one folder and must not make a
    resume refuse, nor leave config.yaml pointing elsewhere when read from another
    directory."""
    import os

    data = config.data
    fixed = {k: os.path.abspath(os.path.expanduser(v))
             for k in ("path", "features") if (v := getattr(data, k)) is not None}  # fmt: skip
    if all(getattr(data, k) == v for k, v in fixed.items()):
        return config
    return config.model_copy(update={"data": data.model_copy(update=fixed)})


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
