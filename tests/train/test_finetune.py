"""Fine-tuning the tile / volume encoder inside ModalSurv.

One small synthetic CHIMERA folder with real slides and MRI, extracted once with a tiny
ViT (timm vit_tiny_patch16_224 at 32 px, 2 blocks) and a MedicalNet ResNet-10 on
8×16×16 volumes, with the image cache on; every test trains for an epoch or two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modalsurv.config import RunConfig, dump_config, with_values
from modalsurv.data.sources import load_data
from modalsurv.data.synthetic import make_cohort, write_chimera
from modalsurv.errors import ConfigError, FeatureError
from modalsurv.features import encoders as enc
from modalsurv.features.extract import run_extract
from modalsurv.features.mri import MriConfig
from modalsurv.features.tile_cache import ImageCache, MemoryImages
from modalsurv.io.store import FeatureStore
from modalsurv.nn.encoder_adapter import ROWS, TileAdapter
from modalsurv.train import finetune as ft
from modalsurv.train.estimator import ModalSurv, _build_net, member_seed
from modalsurv.train.preprocess import Preprocessor
from modalsurv.train.trainer import batch_loss, forward, make_optimizer

pytest.importorskip("peft")

VIT = {"tile_encoder": "timm:vit_tiny_patch16_224",
       "tile_encoder_kwargs": {"img_size": 32, "depth": 2}}  # fmt: skip
EXTRACT = {**VIT, "tile_size": 32, "max_tiles": 8, "batch_size": 16, "workers": 1,
           "min_tissue": 0.25, "mri": MriConfig(size=(8, 16, 16)), "allow_random_weights": True,
           "volume_encoder": "medicalnet_resnet10"}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ft")
    cohort, _ = make_cohort(n=14, seed=0, max_tiles=4, tile_dim=8, slide_dim=8, mri_dim=8,
                            n_genes=12, missing={"wsi": 0.0, "slide": 0.0, "mri": 0.1,
                                                 "rna": 0.0})  # fmt: skip
    root = write_chimera(cohort, base / "c", task=1, slide_px=512, mpp=0.5,
                         mri_shape=(8, 24, 24), max_slides=1)  # fmt: skip
    rep = run_extract("chimera-task1", root, base / "store", **EXTRACT, tile_cache=True,
                      volume_cache=True)  # fmt: skip
    assert rep.ok and rep.n_tiles > 0
    return {"root": root, "store": base / "store", "base": base}


def config(folder: dict[str, Path], enc_: str = "wsi", mode: str = "lora", **over: object
           ) -> RunConfig:  # fmt: skip
    values = {"data.source": "chimera", "data.name": "task1", "data.path": str(folder["root"]),
              "data.features": str(folder["store"]), "model.modalities": ["clinical", enc_],
              "model.latent_dim": 8, "model.hidden_dim": 8, "model.attention_pool_dim": 8,
              "model.n_heads": 2, "model.n_bins": 4, "train.epochs": 2, "train.patience": 2,
              "train.n_init": 1, "train.batch_size": 6, "train.device": "cpu",
              "train.modality_dropout": 0.0, "finetune.encoder": enc_, "finetune.mode": mode,
              "finetune.tiles_per_step": 3, "finetune.lr": 1e-2, "baselines": [],
              "model.stack": "none"}  # fmt: skip
    # model.stack none: the plain network is what these tests fine-tune (7 patients are
    # too few for the stack's inner folds)
    values.update(over)
    return with_values(RunConfig(), values)


@pytest.fixture(scope="module")
def cohort(folder: dict[str, Path]):
    return load_data(config(folder).data).cohort


# ---------------------------------------------------------------------------- the cache
def test_extract_caches_the_images_the_features_were_made_from(folder, cohort) -> None:
    store, cache = FeatureStore(folder["store"]), ImageCache(folder["store"] / "image_cache")
    record = json.loads((folder["store"] / "extraction.json").read_text())
    assert record["image_cache"]["modalities"] == ["mri", "wsi"]
    assert cache.entry("wsi")["encoder"]["checksum"] == record["tile_encoder"]["checksum"]
    assert cache.entry("mri")["settings"] == record["mri"]
    tile = enc.get_tile_encoder(VIT["tile_encoder"], None, **VIT["tile_encoder_kwargs"])
    vol = enc.get_volume_encoder("medicalnet_resnet10")
    for pid in cohort.ids[:3]:
        x, c = store.read("wsi", pid)
        tiles = cache.tiles(pid)
        assert tiles.dtype == np.uint8 and tiles.shape == (len(x), 32, 32, 3)
        np.testing.assert_array_equal(cache.coords(pid), c)  # the store's bag, row for row
        np.testing.assert_allclose(tile.encode(tiles), x, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(cache.tiles(pid, np.array([2, 0])), tiles[[2, 0]])
    mri_ids = [p for p in cohort.ids if cache.has("mri", p)]
    assert mri_ids and set(mri_ids) <= set(store.patients("mri"))
    v = cache.volumes(mri_ids[0])
    assert v.shape == (3, 8, 16, 16) and v.dtype == np.float32
    np.testing.assert_allclose(vol.encode(v[:, None]).reshape(-1),
                               store.read("mri", mri_ids[0])[0], rtol=1e-4, atol=1e-5)  # fmt: skip


def test_a_store_without_cache_gets_only_its_images_cached_later(folder, tmp_path) -> None:
    out = tmp_path / "s"
    run_extract("chimera-task1", folder["root"], out, **EXTRACT, limit=3)
    rep = run_extract("chimera-task1", folder["root"], out, **EXTRACT, limit=3, tile_cache=True)
    assert rep.done == [] and len(rep.cached) == 3 and rep.ok  # tiled again, not re-encoded
    cache, ref = ImageCache(out / "image_cache"), ImageCache(folder["store"] / "image_cache")
    for pid in rep.cached:
        np.testing.assert_array_equal(cache.tiles(pid), ref.tiles(pid))
    again = run_extract("chimera-task1", folder["root"], out, **EXTRACT, limit=3, tile_cache=True)
    assert again.cached == [] and len(again.skipped) == 3
    with pytest.raises(FeatureError, match="refusing to mix"):  # the cache keeps one encoder
        ImageCache(out / "image_cache").begin("wsi", {"name": "x", "checksum": "other"},
                                              {"tile_size": 32})  # fmt: skip


# ---------------------------------------------------------------------------- the network
def _plan_and_net(folder, cohort, enc_: str, mode: str, **over: object):
    cfg = config(folder, enc_, mode, **over)
    data = cohort.select(["clinical", enc_])
    pp = Preprocessor(cfg.preprocess).fit(data)
    plan = ft.Finetune.plan(cfg, pp, data)
    net = _build_net(pp.dims, pp.bag, cfg, 4)
    plan.attach(net, member_seed(cfg.seed, 0))
    from modalsurv.train.trainer import to_tensors

    bins = np.minimum((np.argsort(np.argsort(data.time)) * 4) // len(data), 3)
    t = to_tensors(pp.transform(data), pp.modalities, pp.dims, pp.bag, bins)
    t.x[ROWS] = plan.rows(pp.transform(data))
    return cfg, plan, net, t


# an adapter on the patch embedding sits before every block: its gradient must flow back
# through blocks that would otherwise run without autograd
BEFORE_BLOCKS = {"finetune.lora_targets": ["patch_embed.proj", "blocks.1.attn.qkv"]}


@pytest.mark.parametrize(("enc_", "mode", "over"), [
    ("wsi", "lora", {}), ("wsi", "last_k", {"finetune.last_k": 1}), ("mri", "last_stage", {}),
    ("wsi", "lora", BEFORE_BLOCKS)], ids=["lora", "last_k", "last_stage", "lora_before_blocks"])  # fmt: skip
def test_gradients_reach_the_encoder_and_frozen_layers_stay_bit_identical(
        folder, cohort, enc_: str, mode: str, over: dict) -> None:  # fmt: skip
    cfg, _, net, t = _plan_and_net(folder, cohort, enc_, mode, **over)
    adapter = net.encoders[enc_]
    before = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(before)
    opt = make_optimizer(torch.optim.AdamW, net, cfg.train.lr, cfg.train.weight_decay)
    assert opt.param_groups[1]["lr"] == cfg.finetune.lr  # the encoder's own learning rate
    net.train()
    for _ in range(2):  # LoRA: B starts at zero, so A gets its first gradient on step 2
        opt.zero_grad()
        batch_loss(forward(net, t)["logits"], t, cfg).backward()
        opt.step()
    grads = {n: p.grad for n, p in adapter.model.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in trainable)
    assert all(grads[n] is None for n in grads if n not in trainable)
    after = adapter.model.state_dict()
    frozen = [k for k in before if k not in trainable]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trainable)
    if mode == "last_k":  # the last block and the final norm train; block 0 runs unrecorded
        assert adapter.blocks[0].n_frozen == 1
        assert all(n.startswith(("blocks.1.", "norm.")) for n in trainable)


def test_an_untrained_adapter_reproduces_the_frozen_features_of_a_subsampled_bag(
        folder, cohort) -> None:  # fmt: skip
    """Bags capped below the cache's length (data.params.max_tiles) are mapped onto the
    cached tiles the loader kept (tile_subset): re-encoding gives the stored features."""
    cfg = config(folder, **{"data.params": {"max_tiles": 5, "seed": 3}})
    small = load_data(cfg.data).cohort.select(["clinical", "wsi"])
    assert small.bag_mask["wsi"].sum(1).max() == 5
    pp = Preprocessor(cfg.preprocess).fit(small)
    plan = ft.Finetune.plan(cfg, pp, small)
    adapter = plan.adapter(0).eval()  # LoRA B = 0: the frozen encoder
    processed = pp.transform(small)
    rows = plan.rows(processed)
    x = torch.from_numpy(processed.features["wsi"])
    mask = torch.from_numpy(processed.bag_mask["wsi"])
    with torch.no_grad():
        out = adapter(x, mask, rows)
    np.testing.assert_allclose(out[mask].numpy(), x[mask].numpy(), rtol=1e-3, atol=1e-3)


def test_lora_dropout_trains_while_the_encoder_stays_in_eval_mode(folder, cohort) -> None:
    _, _, net, _ = _plan_and_net(folder, cohort, "wsi", "lora", **{"finetune.lora_dropout": 0.9})
    adapter = net.encoders["wsi"]
    net.train()
    drops = [m for n, m in adapter.model.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(m.training for m in drops) and not adapter.model.training
    net.eval()
    assert not any(m.training for m in drops)


def test_fine_tuning_with_the_auto_batch_size_announces_and_trains(folder, cohort) -> None:
    """The memory estimate reads the resolved batch size (it multiplied the string
    "auto" and failed whenever a progress callback was given, as the CLI always does)."""
    said: list[dict] = []
    cfg = config(folder, **{"train.batch_size": "auto"})
    ModalSurv(cfg).fit(cohort, progress=lambda event, **info: said.append({"event": event,
                                                                           **info}))  # fmt: skip
    announced = [e for e in said if e["event"] == "stage" and "memory estimate" in e["message"]]
    assert len(announced) == 1 and announced[0]["finetune"]["samples_per_step"] > 0


def test_memory_estimate_is_announced_before_training(folder, cohort) -> None:
    _, plan, net, _ = _plan_and_net(folder, cohort, "wsi", "lora")
    said: list[dict] = []
    plan.announce(net, lambda event, **info: said.append({"event": event, **info}))
    assert said[0]["event"] == "stage" and "memory estimate" in said[0]["message"]
    est = said[0]["finetune"]
    assert est["activations"] > 0 and est["weights"] > 0
    assert 0 < est["trainable_params"] < est["total_params"]
    net.encoders["wsi"].blocks[0].use_checkpoint = False
    assert plan.estimate(net)["activations"] > est["activations"]  # checkpointing saves


# ---------------------------------------------------------------------------- the estimator
def test_lora_adapters_save_and_load_with_equal_predictions(folder, cohort, tmp_path) -> None:
    m = ModalSurv(config(folder)).fit(cohort)
    saved = m.save(tmp_path / "m")
    from safetensors.torch import load_file

    keys = [k for k in load_file(str(saved / "model.safetensors")) if k.startswith("encoders.")]
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)  # adapters only
    lora_b = load_file(str(saved / "model.safetensors"))[next(k for k in keys if "lora_B" in k)]
    assert lora_b.abs().sum() > 0  # the adapters learned something
    state = json.loads((saved / "state.json").read_text())
    assert state["finetune"]["encoder"]["spec"] == VIT["tile_encoder"]
    assert state["finetune"]["encoder"]["checksum"].startswith("random-init:")
    again = ModalSurv.load(saved)
    np.testing.assert_array_equal(again.predict_risk(cohort), m.predict_risk(cohort))


def test_fine_tuned_mri_encoder_predicts_the_same_after_reload(folder, cohort, tmp_path) -> None:
    m = ModalSurv(config(folder, "mri", "last_stage", **{"train.epochs": 1})).fit(cohort)
    again = ModalSurv.load(m.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.predict_risk(cohort), m.predict_risk(cohort))
    with ft.images(MemoryImages()):  # predicting without the images is refused
        with pytest.raises(FeatureError, match="lacks"):
            again.predict_risk(cohort)


@pytest.mark.parametrize(("enc_", "mode"), [("wsi", "lora"), ("mri", "last_stage")])
def test_no_test_fold_image_is_read_during_training(folder, cohort, monkeypatch, enc_: str,
                                                   mode: str) -> None:  # fmt: skip
    """A spy on the cache reader: within each outer fold's fit only that fold's training
    patients are read; the test patients are read afterwards, by the finished model."""
    from modalsurv.train import cv as cv_mod

    reads: list[tuple[str, str]] = []
    phase: dict[str, set[str] | None] = {"train": None}

    def spying(real):
        def spy(self, patient, *args):
            training = phase["train"]
            reads.append(("fit" if training is not None else "predict", str(patient)))
            assert training is None or str(patient) in training, \
                f"test patient {patient} read in training"
            return real(self, patient, *args)

        return spy

    real_fit = ModalSurv.fit

    def fit(self, c, *a, **kw):
        phase["train"] = set(map(str, c.ids))
        try:
            return real_fit(self, c, *a, **kw)
        finally:
            phase["train"] = None

    monkeypatch.setattr(ImageCache, "tiles", spying(ImageCache.tiles))
    monkeypatch.setattr(ImageCache, "volumes", spying(ImageCache.volumes))
    monkeypatch.setattr(ModalSurv, "fit", fit)
    cfg = config(folder, enc_, mode, **{"train.epochs": 1, "cv.folds": 2})
    res = cv_mod.cross_validate(cohort, cfg)
    assert {w for w, _ in reads} == {"fit", "predict"}  # read in training, and after it
    assert sorted(res.predictions["patient"]) == sorted(map(str, cohort.ids))


def test_frozen_is_the_default_and_changes_nothing(folder, cohort) -> None:
    plain = config(folder, mode="frozen", **{"train.epochs": 1})
    assert "finetune:" not in dump_config(RunConfig())
    frozen = with_values(RunConfig(), {"finetune.mode": "frozen"})
    assert dump_config(frozen) == dump_config(RunConfig())  # omitted when it is the default
    a = ModalSurv(plain).fit(cohort)
    assert a.finetune_ is None and not len(a.net_.encoders)
    b = ModalSurv(with_values(plain, {"finetune.tiles_per_step": 99})).fit(cohort)  # ignored
    np.testing.assert_array_equal(a.predict_risk(cohort), b.predict_risk(cohort))


def test_configuration_errors_name_the_fix(folder, cohort, tmp_path) -> None:
    with pytest.raises(ConfigError, match="LoRA adapts a ViT"):
        with_values(RunConfig(), {"finetune.encoder": "mri", "finetune.mode": "lora"})
    cfg = config(folder, **{"finetune.cache": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="--tile-cache"):
        ModalSurv(cfg).fit(cohort)
    with pytest.raises(ConfigError, match="match no module"):
        ModalSurv(config(folder, **{"finetune.lora_targets": ["nope"]})).fit(cohort)


def test_the_challenge_re_encodes_the_case_with_the_adapted_encoder(folder, cohort,
                                                                   tmp_path) -> None:  # fmt: skip
    """A run folder whose fold model fine-tuned the tile encoder answers a case from its raw
    slide: the tiles cut at inference are the cached ones, so the risk is the model's."""
    from modalsurv.challenge.answer import predict_case
    from modalsurv.challenge.model import ChallengeModel
    from modalsurv.challenge.sockets import case_to_input, read_case
    from modalsurv.train.ensemble import FoldEnsemble

    cfg = config(folder, **{"train.epochs": 1, "data.params": {"max_tiles": 500}})
    m = ModalSurv(cfg).fit(cohort)
    run = tmp_path / "run"
    FoldEnsemble([m]).save(run / "models" / "repeat_0")
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "extraction.json").write_text((folder["store"] / "extraction.json").read_text())
    model = ChallengeModel.load(run, "task1")
    assert model.adapted == {"wsi"}
    pid = str(cohort.ids[0])
    case = read_case(case_to_input(folder["root"], "task1", pid, tmp_path / "in"), "task1")
    result = predict_case(model, case)
    assert result.n_tiles == int(cohort.bag_mask["wsi"][0].sum())
    np.testing.assert_allclose(result.risk, m.predict_risk(cohort[[0]])[0], rtol=1e-5)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA), "cpu"])
def test_one_mixed_precision_fine_tuning_step(folder, cohort, monkeypatch, device) -> None:
    """``finetune.mixed_precision``: the encoder's matmuls run in bfloat16. The adapter
    enables autocast on CUDA only (bf16 is slower on CPUs); the CPU case forces the same
    autocast there to check the step itself. A ViT's residual stream stays float32 under
    autocast (LayerNorm, the additions), so the check looks at a Linear inside a block."""
    if device == "cpu":
        monkeypatch.setattr(TileAdapter, "_autocast",
                            lambda self, dev: torch.autocast("cpu", dtype=torch.bfloat16))  # fmt: skip
    cfg, _, net, t = _plan_and_net(folder, cohort, "wsi", "lora",
                                      **{"train.device": device})  # fmt: skip
    net.to(device).train()
    batch = t.to(torch.device(device))
    seen = []
    adapter: TileAdapter = net.encoders["wsi"]
    hook = adapter.model.blocks[0].mlp.fc1.register_forward_hook(
        lambda mod, inp, out: seen.append(out.dtype))  # fmt: skip
    opt = make_optimizer(torch.optim.AdamW, net, cfg.train.lr, cfg.train.weight_decay)
    loss = batch_loss(forward(net, batch)["logits"], batch, cfg)
    loss.backward()
    opt.step()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16} and torch.isfinite(loss)
    assert all(p.grad is not None for p in adapter.trainable_parameters())
    assert all(p.dtype == torch.float32 for p in adapter.trainable_parameters())


def test_a_loaded_model_finds_its_encoder_weights_by_name_and_checks_them(tmp_path) -> None:
    from types import SimpleNamespace

    from modalsurv.errors import WeightsError

    model = enc.get_tile_encoder(VIT["tile_encoder"], None, **VIT["tile_encoder_kwargs"]).model
    (tmp_path / "w").mkdir()
    torch.save(model.state_dict(), tmp_path / "w" / "vit.pth")
    entry = {"spec": VIT["tile_encoder"], "kwargs": VIT["tile_encoder_kwargs"], "dim": 192,
             "name": VIT["tile_encoder"], "weights_name": "vit.pth",
             "weights": str(tmp_path / "moved" / "vit.pth"),
             "checksum": enc.sha256_file(tmp_path / "w" / "vit.pth")}  # fmt: skip
    plan = ft.Finetune(RunConfig(), entry, {}, SimpleNamespace(steps={"wsi": None}))
    with pytest.raises(WeightsError, match="weight_folders"):  # not at the recorded path
        plan.build_encoder()
    with ft.weight_folders([tmp_path / "w"]):
        assert plan.build_encoder().checksum == entry["checksum"]
        plan.entry["checksum"] = "0" * 64
        with pytest.raises(WeightsError, match="not the ones the features were extracted"):
            plan.build_encoder()


def test_a_run_without_the_image_cache_is_refused_before_its_folder_is_written(
        folder, cohort, tmp_path) -> None:  # fmt: skip
    """Was: config.yaml (and a lock) were written into the new run folder, then the
    first fold's fit refused the config; now nothing of the folder exists."""
    from modalsurv.runs import train_run

    out = tmp_path / "run"
    cfg = config(folder, **{"finetune.cache": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="--tile-cache"):
        train_run(cfg, out, cohort=cohort)
    assert not out.exists()


def test_the_cli_binds_the_cohorts_image_cache(folder) -> None:
    from modalsurv.cli import _bind_images

    with _bind_images(f"chimera-task1:{folder['root']}", folder["store"], None) as src:
        assert isinstance(src, ImageCache) and src.root == folder["store"] / "image_cache"
        assert ft.current_source(RunConfig()) is src  # what a loaded model reads now
    with _bind_images("synthetic", None, None) as src:
        assert src is None  # no store, no cache: nothing bound
    assert ft.current_source(RunConfig()) is None


def test_training_finds_an_image_cache_written_with_cache_dir(tmp_path) -> None:
    """``extract --cache-dir`` writes the cache away from the store and records where;
    training looks there, unless the store holds its own ``image_cache`` (a store copied
    with its cache keeps working after the recorded path is gone)."""
    from modalsurv.config import DataConfig

    store, elsewhere = tmp_path / "store", tmp_path / "cache"
    store.mkdir()
    elsewhere.mkdir()
    (store / "extraction.json").write_text(json.dumps({"image_cache": {"path": str(elsewhere)}}))
    data = DataConfig(source="chimera", name="task1", path=str(tmp_path), features=str(store))
    assert ft.data_cache_folder(data) == elsewhere
    (store / "image_cache").mkdir()
    assert ft.data_cache_folder(data) == store / "image_cache"
    assert ft.data_cache_folder(DataConfig()) is None  # no store


def _stale_copy(folder: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(cohort folder, store): copies whose patient 1000 has another slide, re-extracted
    (--reextract-changed) without the image cache, which keeps the old slide's tiles."""
    import shutil

    root, store = tmp_path / "c", tmp_path / "store"
    shutil.copytree(folder["root"], root)
    shutil.copytree(folder["store"], store)
    images = root / "pathology" / "images"
    for suffix in ("", "_tissue"):  # patient 1000's slide is now another one
        shutil.copyfile(images / "1001" / f"1001_0{suffix}.tif",
                        images / "1000" / f"1000_0{suffix}.tif")  # fmt: skip
    rep = run_extract("chimera-task1", root, store, **EXTRACT, reextract_changed=True)
    assert "1000" in rep.done
    return root, store


def test_a_cache_older_than_the_re_extracted_features_is_refused(folder, tmp_path) -> None:
    """Was: a slide replaced and re-extracted (--reextract-changed) without the cache left
    the old slide's tiles cached under the patient's id; with as many tiles as the new bag,
    fine-tuning re-encoded the old slide's tiles in place of the new one's, silently. The
    sidecar's source fingerprint is now compared with the store's."""
    root, store = _stale_copy(folder, tmp_path)
    cache = ImageCache(store / "image_cache")
    new_feats = FeatureStore(store).read("wsi", "1000")[0]
    assert cache.n_tiles("1000") == len(new_feats)  # the tile count gives no hint
    tile = enc.get_tile_encoder(VIT["tile_encoder"], None, **VIT["tile_encoder_kwargs"])
    assert not np.allclose(tile.encode(cache.tiles("1000")), new_feats, atol=1e-3)  # stale
    cfg = config(folder, **{"data.path": str(root), "data.features": str(store)})
    fresh = load_data(cfg.data).cohort.select(["clinical", "wsi"])
    pp = Preprocessor(cfg.preprocess).fit(fresh)
    with pytest.raises(FeatureError, match="other source files.*1000"):
        ft.Finetune.plan(cfg, pp, fresh)
    others = fresh[[i for i, p in enumerate(fresh.ids) if str(p) != "1000"]]
    plan = ft.Finetune.plan(cfg, Preprocessor(cfg.preprocess).fit(others), others)
    with pytest.raises(FeatureError, match="other source files"):  # predicting it: refused
        plan.rows(fresh)
    again = run_extract("chimera-task1", root, store, **EXTRACT, tile_cache=True)  # the fix
    assert again.cached == ["1000"]
    assert ft.Finetune.plan(cfg, pp, fresh) is not None


def test_a_cache_of_other_tile_settings_is_refused(folder, cohort, tmp_path) -> None:
    """Was: only the encoder checksum was compared, so ``finetune.cache`` naming the cache
    of a store tiled at another size (same encoder, same slides, as many tiles) trained on
    48-px tiles in place of the 32-px ones the features were made from, silently."""
    other = tmp_path / "other"
    rep = run_extract("chimera-task1", folder["root"], other, **{**EXTRACT, "tile_size": 48},
                      tile_cache=True)  # fmt: skip
    assert rep.ok
    cache = ImageCache(other / "image_cache")
    ids = [str(p) for p in cohort.ids]
    assert cache.tiles(ids[0]).shape[1] == 48
    assert all(cache.n_tiles(p) >= int(k) for p, k in
               zip(ids, cohort.bag_mask["wsi"].sum(1)))  # the tile counts give no hint  # fmt: skip
    cfg = config(folder, **{"finetune.cache": str(other / "image_cache")})
    data = cohort.select(["clinical", "wsi"])
    pp = Preprocessor(cfg.preprocess).fit(data)
    with pytest.raises(FeatureError, match="other settings.*tile_size"):
        ft.Finetune.plan(cfg, pp, data)
    assert ft.Finetune.plan(config(folder), pp, data) is not None  # its own cache: accepted


def test_the_cli_refuses_a_stale_cache_before_the_run_folder_is_written(folder, tmp_path
                                                                         ) -> None:  # fmt: skip
    """Was: the cache's fingerprints were first compared inside the first fold's fit, after
    ``modalsurv train`` had made the run folder and written config.yaml into it: a stale
    cache left an error and a half-made run folder. Now refused before anything is written."""
    from typer.testing import CliRunner

    from modalsurv.cli import app

    root, store = _stale_copy(folder, tmp_path)
    cfg = config(folder, **{"data.path": str(root), "data.features": str(store),
                            "train.epochs": 1, "cv.folds": 2})  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(dump_config(cfg))
    out = tmp_path / "runs" / "ft"
    res = CliRunner().invoke(app, ["train", str(path), "--out", str(out)])
    said = " ".join(res.output.split())
    assert res.exit_code != 0 and "other source files" in said and "1000" in said, res.output
    assert not out.exists() and not (tmp_path / "runs").exists()
    from modalsurv.runs import train_run  # the Python API: the same, before the folder

    with pytest.raises(FeatureError, match="other source files"):
        train_run(cfg, out)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_a_cache_of_other_settings_is_refused_before_the_run_folder_is_written(
        folder, tmp_path) -> None:  # fmt: skip
    """Was: ``train_run`` checked only that the cache existed; its tile settings were
    compared in the first fold's fit, after config.yaml was written into the run folder."""
    import shutil

    from modalsurv.runs import train_run

    other = tmp_path / "cache"
    shutil.copytree(folder["store"] / "image_cache", other)
    rec = json.loads((other / "cache.json").read_text())
    rec["modalities"]["wsi"]["settings"]["tile_size"] = 48
    (other / "cache.json").write_text(json.dumps(rec))
    cfg = config(folder, **{"finetune.cache": str(other), "cv.folds": 2})
    cohort = load_data(cfg.data).cohort
    out = tmp_path / "run"
    with pytest.raises(FeatureError, match="other settings.*tile_size"):
        train_run(cfg, out, cohort=cohort)
    assert not out.exists()
    with pytest.raises(FeatureError, match="other settings.*tile_size"):
        ft.check_images(cfg, cohort)
    ft.check_images(config(folder), cohort)  # its own cache: accepted


def test_mri_evaluation_reads_the_cache_in_encode_batch_chunks(folder, cohort, monkeypatch
                                                                ) -> None:  # fmt: skip
    """Was: evaluating the MRI adapter read every present patient's volumes of the batch at
    once (a prediction batch of 256: ~384 MB); now ``encode_batch`` patients a read, with
    the very features of encoding the batch at once."""
    cfg = config(folder, "mri", "last_stage", **{"finetune.encode_batch": 2})
    data = cohort.select(["clinical", "mri"])
    pp = Preprocessor(cfg.preprocess).fit(data)
    plan = ft.Finetune.plan(cfg, pp, data)
    adapter = plan.adapter(0).eval()
    processed = pp.transform(data)
    rows = plan.rows(processed)
    x = torch.from_numpy(processed.features["mri"])
    present = torch.from_numpy(processed.present["mri"])
    reads: list[int] = []
    real = ft.Feed.volumes
    monkeypatch.setattr(ft.Feed, "volumes", lambda self, r: reads.append(len(r)) or real(self, r))
    with torch.no_grad():
        out = adapter(x, present, rows)
        whole = adapter.encode(real(plan.feed, rows[present].tolist()), torch.device("cpu"))
    assert len(reads) > 1 and max(reads) <= 2 and sum(reads) == int(present.sum())
    assert torch.equal(out[present], whole.to(out.dtype))
