"""Tile / volume encoders inside the network (nn.encoder_adapter), on a tiny randomly
initialised ViT and an in-memory feed: no weights are downloaded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from modalsurv.config import FinetuneConfig
from modalsurv.features import encoders as enc
from modalsurv.nn.encoder_adapter import AffineMap, TileAdapter, VolumeAdapter

pytest.importorskip("timm")


class _Feed:
    """Random uint8 tiles per row; remembers how many tiles each call asked for."""

    def __init__(self, n_rows: int, k: int, size: int) -> None:
        rng = np.random.default_rng(0)
        self.bags = [rng.integers(0, 256, (k, size, size, 3), dtype=np.uint8)
                     for _ in range(n_rows)]  # fmt: skip
        self.asked: list[int] = []

    def tiles(self, rows: Sequence[int], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.asked.extend(len(p) for p in positions)
        return [self.bags[r][np.asarray(p)] for r, p in zip(rows, positions)]

    def volumes(self, rows: Sequence[int]) -> np.ndarray:
        raise AssertionError("no volumes here")


def test_evaluation_reads_a_bag_in_encode_batch_chunks() -> None:
    """Was: evaluation read a patient's whole bag of uint8 tiles at once before encoding
    it in ``encode_batch`` chunks (several 500-tile slides at 448 px: most of a GiB);
    now it reads chunk by chunk, with the same features."""
    tile = enc.get_tile_encoder("timm:vit_tiny_patch16_224", None, img_size=32, depth=2)
    d = tile.dim
    affine = AffineMap(np.zeros(d), np.ones(d))
    cfg = FinetuneConfig(encoder="wsi", mode="last_k", last_k=1, encode_batch=4)
    adapter = TileAdapter(tile, affine, cfg, seed=0).eval()
    feed = _Feed(n_rows=2, k=10, size=32)
    adapter.feed = feed
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :10], mask[1, :7] = True, True
    feats = torch.zeros(2, 12, d)
    with torch.no_grad():
        out = adapter(feats, mask, torch.tensor([0, 1]))
    assert feed.asked and max(feed.asked) <= cfg.encode_batch
    assert sum(feed.asked) == int(mask.sum())  # every valid tile, once
    for b, k in ((0, 10), (1, 7)):
        np.testing.assert_allclose(out[b, :k].numpy(), tile.encode(feed.bags[b][:k]),
                                   rtol=1e-4, atol=1e-5)  # the frozen encoder's features  # fmt: skip
    assert not out[~mask].any()  # padding untouched


class _Volumes:
    """Random (S, z, y, x) volumes per row; remembers how many patients each read took."""

    def __init__(self, n_rows: int, s: int = 2, shape: tuple[int, ...] = (8, 16, 16)) -> None:
        rng = np.random.default_rng(0)
        self.vols = rng.normal(size=(n_rows, s, *shape)).astype(np.float32)
        self.asked: list[int] = []

    def volumes(self, rows: Sequence[int]) -> np.ndarray:
        self.asked.append(len(rows))
        return self.vols[np.asarray(rows, dtype=np.int64)]


@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_evaluation_reads_volumes_in_encode_batch_chunks(combine: str) -> None:
    """Was: evaluation read every present patient's volumes of the batch at once (up to a
    prediction batch of 256, ~384 MB at the default size) before encoding them in
    ``encode_batch`` chunks; now it reads ``encode_batch`` patients at a time, with the
    very same features as encoding them all at once."""
    vol = enc.get_volume_encoder("medicalnet_resnet10")
    s = 2
    d = vol.dim * (s if combine == "concat" else 1)
    rng = np.random.default_rng(1)
    affine = AffineMap(rng.normal(size=d), rng.uniform(0.5, 2, size=d))
    cfg = FinetuneConfig(encoder="mri", mode="last_stage", encode_batch=2)
    adapter = VolumeAdapter(vol, affine, cfg, combine).eval()
    feed = _Volumes(n_rows=7, s=s)
    adapter.feed = feed
    present = torch.tensor([True, True, False, True, True, True, False])
    rows = torch.tensor([6, 5, 4, 3, 2, 1, 0])
    feats = torch.full((7, d), 7.0)
    with torch.no_grad():
        out = adapter(feats, present, rows)
        whole = adapter.encode(feed.vols[[6, 5, 3, 2, 1]], torch.device("cpu"))  # all at once
    assert feed.asked == [2, 2, 1]  # encode_batch patients a read, never more
    assert torch.equal(out[present], whole)
    assert torch.equal(out[~present], feats[~present])  # absent rows untouched


@pytest.mark.parametrize("pca", [None, 3])
def test_the_affine_map_zeroes_what_the_scaler_zeroes(pca) -> None:
    """A column constant on the training rows is 0 after the frozen scaler; the fine-tuning
    map repeated the scaler without that, so a re-encoded feature's other value of it
    reached the network through weights no training row moved."""
    from modalsurv.train.finetune import _affine
    from modalsurv.train.transforms import VectorScaler

    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 6))
    train[:, 2] = 0.5  # a unit that never fired on the training rows
    scaler = VectorScaler(pca=pca).fit(train)
    assert scaler.constant_.tolist() == [2]
    test = rng.normal(size=(5, 6))  # column 2 varies here
    got = _affine(scaler)(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(got, scaler.transform(test), rtol=1e-5, atol=1e-5)
