"""FeatureStore: round trips, append, atomicity, provenance, importers, the join with labels."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from modalsurv.errors import DataError, FeatureError
from modalsurv.io.feature_files import load_feature_file, tile_subset
from modalsurv.io.store import FeatureStore
from modalsurv.io.store_read import cohort_from_store, labelled_store_cohort


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "store")


def _bag(rng, k, d=8, dtype=np.float32):
    return rng.standard_normal((k, d)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_round_trip_bag_with_coords(store, dtype):
    rng = np.random.default_rng(0)
    x = _bag(rng, 5, dtype=dtype)
    c = rng.integers(0, 10_000, size=(5, 2))
    store.write("wsi", "p/1", x, coords=c)  # a '/' in an id must not become an h5 path
    got, gc = store.read("wsi", "p/1")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(gc, c)
    assert gc.dtype == np.int64
    assert store.patients("wsi") == ["p/1"]
    meta = store.meta("wsi")
    assert meta["dtype"] == np.dtype(dtype).name
    assert meta["kind"] == "bag" and meta["dim"] == 8 and meta["n_patients"] == 1


def test_round_trip_vector_and_configured_dtype(store):
    rng = np.random.default_rng(1)
    v = rng.standard_normal(16)
    store.set_meta("slide", encoder="titan", checksum="abc", dim=16, dtype="float16")
    store.write("slide", ".hidden", v)
    got, coords = store.read("slide", ".hidden")
    assert coords is None and got.dtype == np.float16 and got.shape == (16,)
    np.testing.assert_array_equal(got, v.astype(np.float16))
    assert store.meta("slide")["encoder"] == "titan"


def test_append_keeps_previous_patients(store):
    rng = np.random.default_rng(2)
    a = {f"a{i}": _bag(rng, 3 + i) for i in range(3)}
    b = {f"b{i}": _bag(rng, 2) for i in range(2)}
    store.write_many("wsi", a)
    store.write_many("wsi", b)
    assert store.patients("wsi") == sorted([*a, *b])
    for pid, x in {**a, **b}.items():
        np.testing.assert_array_equal(store.read("wsi", pid)[0], x)
    # overwrite replaces one patient only
    new = _bag(rng, 4)
    store.write("wsi", "a0", new)
    np.testing.assert_array_equal(store.read("wsi", "a0")[0], new)
    with pytest.raises(FeatureError, match="already stored"):
        store.write("wsi", "a1", new, overwrite=False)


def test_a_truncated_feature_file_is_an_error_naming_it(store):
    rng = np.random.default_rng(4)
    store.write_many("wsi", {"p1": _bag(rng, 3)})
    path = store.path("wsi")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(FeatureError, match="cannot open the feature file") as err:
        store.read("wsi", "p1")
    assert str(err.value.path) == str(path)
    assert err.value.field == "wsi"


def test_crash_mid_write_leaves_previous_file_and_no_temp(store, monkeypatch):
    rng = np.random.default_rng(3)
    first = {"p1": _bag(rng, 3)}
    store.write_many("wsi", first)
    before = store.path("wsi").read_bytes()

    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.write_many("wsi", {"p2": _bag(rng, 3), "p3": _bag(rng, 3)})
    monkeypatch.undo()
    assert calls["n"] == 2
    assert store.path("wsi").read_bytes() == before
    assert store.patients("wsi") == ["p1"]
    leftovers = [p.name for p in store.root.iterdir() if p.suffix == ".tmp"]
    assert leftovers == []


def test_a_killed_writers_temporary_copy_is_removed_by_the_next_writer(store):
    """kill -9 inside the atomic write leaves ``.wsi.h5.<random>.tmp`` (no handler runs);
    the next writer of that modality holds the lock, so it is stale: removed. Another
    modality's temporary file may belong to a live writer: left alone."""
    rng = np.random.default_rng(4)
    store.write_many("wsi", {"p1": _bag(rng, 3)})
    stale = store.root / f".{store.path('wsi').name}.k1ll3d.tmp"
    stale.write_bytes(store.path("wsi").read_bytes())
    other = store.root / f".{store.path('mri').name}.l1ve.tmp"
    other.write_bytes(b"another writer's copy")
    store.write_many("wsi", {"p2": _bag(rng, 3)})
    assert not stale.exists() and other.exists()
    assert store.patients("wsi") == ["p1", "p2"]


def test_incomplete_patient_is_not_counted(store):
    store.write("wsi", "p1", np.ones((2, 8), np.float32))
    with h5py.File(store.path("wsi"), "a") as f:  # e.g. a foreign tool's half-written entry
        f["patients/p1"].attrs["complete"] = False
    assert store.patients("wsi") == []
    assert not store.has("wsi", "p1")
    assert not store.load("wsi", ["p1"]).present.any()
    with pytest.raises(FeatureError, match="no complete features"):
        store.read("wsi", "p1")


def test_encoder_mixing_refused(store):
    x = np.ones((2, 8), np.float32)
    store.write("wsi", "p1", x, encoder="uni", checksum="aaa")
    with pytest.raises(FeatureError, match="encoder"):
        store.write("wsi", "p2", x, encoder="conch")
    with pytest.raises(FeatureError, match="checksum"):
        store.write("wsi", "p2", x, encoder="uni", checksum="bbb")
    with pytest.raises(FeatureError, match="encoder"):
        store.set_meta("wsi", encoder="conch")
    with pytest.raises(FeatureError, match="dim"):
        store.write("wsi", "p2", np.ones((2, 9), np.float32), encoder="uni")
    with pytest.raises(FeatureError, match="bag"):
        store.write("wsi", "p2", np.ones(8, np.float32))
    store.write("wsi", "p2", x, encoder="uni", checksum="aaa")  # same provenance: fine
    assert store.patients("wsi") == ["p1", "p2"]


def test_write_rejects_bad_values(store):
    with pytest.raises(FeatureError, match="NaN or inf") as e:
        store.write("wsi", "p1", np.array([[1e6, 0.0]]), dtype="float16")  # fp16 overflow
    assert e.value.patient == "p1"
    with pytest.raises(FeatureError, match="coords"):
        store.write("wsi", "p1", np.ones((3, 2)), coords=np.ones((2, 2), int))
    with pytest.raises(FeatureError, match="at least one tile"):
        store.write("wsi", "p1", np.ones((0, 2)))
    assert not store.exists("wsi")


def test_import_h5_trident_and_clam(store, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 6, 8)).astype(np.float32)  # TRIDENT-style 1 x K x D
    c = rng.integers(0, 100, (6, 2))
    with h5py.File(tmp_path / "s1.h5", "w") as f:
        f["features"] = x
        f["coords"] = c
    with h5py.File(tmp_path / "s2.h5", "w") as f:  # CLAM-style K x D
        f["features"] = x[0, :4]
        f["coords"] = c[:4]
    store.import_h5("wsi", "p1", tmp_path / "s1.h5")
    store.import_h5("wsi", "p2", tmp_path / "s2.h5")
    got, gc = store.read("wsi", "p1")
    np.testing.assert_array_equal(got, x[0])
    np.testing.assert_array_equal(gc, c)
    assert store.read("wsi", "p2")[0].shape == (4, 8)

    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["feats"] = x
    with pytest.raises(FeatureError, match="'features'") as e:
        store.import_h5("wsi", "p3", tmp_path / "bad.h5")
    assert e.value.path.endswith("bad.h5") and e.value.patient == "p3"


def test_import_pt_good_and_bad(store, tmp_path):
    good = torch.randn(5, 8, dtype=torch.float16)
    torch.save(good, tmp_path / "p1.pt")
    store.import_pt("wsi", "p1", tmp_path / "p1.pt")
    np.testing.assert_array_equal(store.read("wsi", "p1")[0], good.numpy())
    assert store.meta("wsi")["dtype"] == "float16"

    torch.save(torch.randn(5, 7), tmp_path / "wrong_dim.pt")
    with pytest.raises(FeatureError) as e:
        store.import_pt("wsi", "p2", tmp_path / "wrong_dim.pt")
    assert e.value.patient == "p2" and e.value.path.endswith("wrong_dim.pt")
    assert "dim must be 8" in str(e.value)

    torch.save(torch.randn(2, 5, 8), tmp_path / "wrong_ndim.pt")
    with pytest.raises(FeatureError) as e:
        store.import_pt("wsi", "p3", tmp_path / "wrong_ndim.pt")
    assert e.value.patient == "p3" and "wrong_ndim.pt" in str(e.value)

    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(FeatureError, match="cannot read") as e:
        store.import_pt("wsi", "p4", tmp_path / "junk.pt")
    assert e.value.patient == "p4"
    assert store.patients("wsi") == ["p1"]


def test_pt_dict_and_npy_files(tmp_path):
    torch.save({"features": torch.ones(3, 4), "coords": torch.zeros(3, 2)}, tmp_path / "d.pt")
    x, c = load_feature_file(tmp_path / "d.pt", "p")
    assert x.shape == (3, 4) and c.shape == (3, 2)
    np.save(tmp_path / "v.npy", np.arange(4.0))
    x, c = load_feature_file(tmp_path / "v.npy", "p")
    assert x.shape == (4,) and c is None
    with pytest.raises(FeatureError, match="not found"):
        load_feature_file(tmp_path / "none.pt", "p")


def test_to_cohort_padding_masks_absent(store):
    rng = np.random.default_rng(5)
    bags = {"a": _bag(rng, 3, dtype=np.float16), "b": _bag(rng, 5, dtype=np.float16)}
    store.write_many("wsi", bags)
    store.write_many("mri", {"a": rng.standard_normal(4), "c": rng.standard_normal(4)})
    labels = pd.DataFrame(
        {"time": [1.0, 2.0, 3.0], "event": [1, 0, 1], "site": ["x", "y", "x"]},
        index=pd.Index(["a", "b", "c"], name="patient"),
    )
    co = cohort_from_store(store, labels, ["wsi", "mri"])
    assert co.features["wsi"].shape == (3, 5, 8) and co.features["wsi"].dtype == np.float32
    np.testing.assert_array_equal(co.bag_mask["wsi"].sum(1), [3, 5, 0])
    np.testing.assert_array_equal(co.present["wsi"], [True, True, False])
    np.testing.assert_array_equal(co.present["mri"], [True, False, True])
    np.testing.assert_array_equal(co.features["wsi"][0, :3], bags["a"].astype(np.float32))
    assert not co.features["wsi"][0, 3:].any() and not co.features["wsi"][2].any()
    assert not co.features["mri"][1].any()
    assert list(co.meta["site"]) == ["x", "y", "x"]

    with pytest.raises(FeatureError, match="no features stored"):
        cohort_from_store(store, labels, ["rna"])


def test_max_tiles_subsampling_is_deterministic(store):
    rng = np.random.default_rng(6)
    x = _bag(rng, 20)
    c = np.arange(40).reshape(20, 2)
    store.write_many("wsi", {"a": x, "b": x[:2]}, coords={"a": c})
    one = store.load("wsi", ["a", "b"], max_tiles=7, seed=3, with_coords=True)
    two = store.load("wsi", ["b", "a"], max_tiles=7, seed=3)
    other = store.load("wsi", ["a"], max_tiles=7, seed=4)
    assert one.x.shape == (2, 7, 8)
    np.testing.assert_array_equal(one.mask.sum(1), [7, 2])
    np.testing.assert_array_equal(one.x[0], two.x[1])  # order-independent per patient
    idx = tile_subset("a", 20, 7, 3)
    np.testing.assert_array_equal(one.x[0], x[idx])
    np.testing.assert_array_equal(one.coords[0], c[idx])
    assert not np.array_equal(other.x[0], one.x[0])
    with pytest.raises(DataError):
        store.load("wsi", ["a"], max_tiles=0)


def test_load_into_existing_buffer(store):
    rng = np.random.default_rng(7)
    store.write_many(
        "wsi", {"a": _bag(rng, 3, dtype=np.float16), "b": _bag(rng, 2, dtype=np.float16)}
    )
    fresh = store.load("wsi", ["b", "zz", "a"])
    buf = np.full((3, 6, 8), 7.0, dtype=np.float32)  # stale content everywhere
    got = store.load("wsi", ["b", "zz", "a"], out=buf)
    assert got.x is buf and got.mask.shape == (3, 6)
    np.testing.assert_array_equal(buf[:, :3], fresh.x)
    assert not buf[:, 3:].any()
    np.testing.assert_array_equal(got.mask[:, :3], fresh.mask)
    with pytest.raises(FeatureError, match="out must be"):
        store.load("wsi", ["a"], out=np.zeros((1, 2, 8), np.float32))  # K too small
    # vectors: an absent patient's row of the buffer is zeroed, not left stale
    store.write_many("mri", {"a": np.arange(4.0), "b": -np.arange(4.0)})
    vbuf = np.full((3, 4), 7.0, dtype=np.float32)
    got = store.load("mri", ["b", "zz", "a"], out=vbuf)
    assert got.x is vbuf and got.present.tolist() == [True, False, True]
    np.testing.assert_array_equal(vbuf, [-np.arange(4.0), np.zeros(4), np.arange(4.0)])


def test_declared_provenance_binds_even_before_first_patient(store):
    store.set_meta("mri", encoder="medicalnet", dim=4, dtype="float32")
    with pytest.raises(FeatureError, match="encoder"):
        store.write("mri", "p1", np.ones(4), encoder="other")
    with pytest.raises(FeatureError, match="dim"):
        store.write("mri", "p1", np.ones(5))
    store.set_meta("mri", encoder="resnet3d", dim=4)  # nothing stored yet: relabel is fine
    store.write("mri", "p1", np.ones(4), encoder="resnet3d")
    assert store.meta("mri")["encoder"] == "resnet3d"


def test_load_labelled_cohort_reads_labels_csv(store):
    store.write_many("slide", {"001": np.ones(4), "002": np.zeros(4)})
    with pytest.raises(DataError, match="labels CSV not found"):
        labelled_store_cohort(store.root)
    with pytest.raises(DataError, match="feature store folder not found") as err:
        labelled_store_cohort(store.root / "nope")  # was "labels CSV not found" inside it
    assert err.value.path == str(store.root / "nope")
    (store.root / "labels.csv").write_text("patient,time,event,site\n001,5,1,a\n003,2,0,b\n")
    co = labelled_store_cohort(store.root)
    assert list(co.ids) == ["001", "003"]  # ids stay strings: leading zeros kept
    np.testing.assert_array_equal(co.present["slide"], [True, False])
    assert list(co.meta["site"]) == ["a", "b"]


def test_labels_keep_na_as_a_patient_id_and_label_errors_name_the_file(store):
    store.write_many("slide", {"NA": np.ones(4), "002": np.zeros(4)})
    (store.root / "labels.csv").write_text("patient,time,event\nNA,5,1\n002,2,0\n")
    co = labelled_store_cohort(store.root)
    assert list(co.ids) == ["NA", "002"] and co.present["slide"].all()
    bad = store.root / "bad.csv"
    bad.write_text("patient,time,event\nNA,,1\n002,2,0\n")
    with pytest.raises(DataError, match="time") as exc:
        labelled_store_cohort(store.root, bad)
    assert exc.value.path == str(bad) and exc.value.patient == "NA"
    empty = FeatureStore(store.root.parent / "empty")
    empty.root.mkdir()
    (empty.root / "labels.csv").write_text("patient,time,event\n001,5,1\n")
    with pytest.raises(DataError, match="no modality"):
        labelled_store_cohort(empty.root)


# ---------------------------------------------------------------------------- packed layout
def _twins(tmp_path, kind, dtype, n=7, d=8):
    """Two stores with the same patients: ``plain`` (per-patient datasets) and ``packed``."""
    rng = np.random.default_rng(11)
    if kind == "bag":
        feats = {f"p{i}": _bag(rng, int(k), d, dtype) for i, k in enumerate(rng.integers(1, 12, n))}
        coords = {p: rng.integers(0, 999, (len(x), 2)) for p, x in feats.items() if p != "p2"}
    else:
        feats = {f"p{i}": rng.standard_normal(d).astype(dtype) for i in range(n)}
        coords = {}
    plain, packed = FeatureStore(tmp_path / "plain"), FeatureStore(tmp_path / "packed")
    for s in (plain, packed):
        s.write_many(
            "m", dict(list(feats.items())[:4]), {p: c for p, c in coords.items() if p < "p4"}
        )
        s.write_many(
            "m", dict(list(feats.items())[4:]), {p: c for p, c in coords.items() if p >= "p4"}
        )
    packed.pack("m")
    return plain, packed, feats, coords


_QUERIES = [
    {"ids": ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]},  # the whole pack, in order
    {"ids": ["p5", "p1", "zz", "p0", "p6"]},  # reordered, with an absent patient
    {"ids": ["p6", "p5", "p4", "p3", "p2", "p1", "p0"]},  # every row, reversed
    {"ids": ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "zz"]},  # one run, then an absent one
    {"ids": ["p3", "p4"], "with_coords": True},
    {"ids": ["p6", "p0", "p1", "p2", "zz"], "max_tiles": 4, "seed": 3, "with_coords": True},
    {"ids": ["p0", "p1", "p2", "p3", "p4", "p5", "p6"], "max_tiles": 5, "seed": 1},
    {"ids": []},
]


def _same(a, b):
    for field in ("x", "present", "mask", "coords"):
        u, v = getattr(a, field), getattr(b, field)
        assert (u is None) == (v is None), field
        if u is not None:
            assert u.dtype == v.dtype and u.shape == v.shape, field
            np.testing.assert_array_equal(u, v, err_msg=field)


@pytest.mark.parametrize("kind", ["bag", "vector"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_pack_loads_bit_identical_to_plain(tmp_path, kind, dtype):
    plain, packed, feats, coords = _twins(tmp_path, kind, dtype)
    with h5py.File(packed.path("m"), "r") as f:
        assert f["packed/features"].chunks is None and f["packed/features"].id.get_offset()
        assert list(f["packed/patients"].asstr()[()]) == sorted(feats)
        assert all("features" not in g and "packed_row" in g.attrs for g in f["patients"].values())
        assert ("packed/coords" in f) == (kind == "bag")
    assert packed.patients("m") == plain.patients("m") and packed.meta("m") == plain.meta("m")
    assert packed.has("m", "p3") and not packed.has("m", "zz")
    for pid, x in feats.items():
        got, c = packed.read("m", pid)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, x)
        if pid in coords:
            np.testing.assert_array_equal(c, coords[pid])
        else:
            assert c is None
    for q in _QUERIES:
        kw = {k: v for k, v in q.items() if k != "ids"}
        if kind == "vector" and ("max_tiles" in kw or "with_coords" in kw):
            continue
        for want in (np.float16, np.float32):
            _same(
                packed.load("m", q["ids"], dtype=want, **kw),
                plain.load("m", q["ids"], dtype=want, **kw),
            )
        shape = (len(q["ids"]), 13, 8) if kind == "bag" else (len(q["ids"]), 8)
        for buf_dtype in (np.float16, np.float32):
            ref = plain.load("m", q["ids"], out=np.full(shape, 5, buf_dtype), **kw)
            got = packed.load("m", q["ids"], out=np.full(shape, 5, buf_dtype), **kw)
            _same(got, ref)


def test_pack_in_small_batches_zeroes_each_batchs_padding(tmp_path, monkeypatch):
    """Packing goes through the rows a batch at a time (``PACK_BATCH_BYTES``); a short bag
    written into a slot where the previous batch had a long one must not keep its tiles."""
    from modalsurv.io import store_write

    rng = np.random.default_rng(2)
    lengths = [9, 1, 8, 2, 7, 3]  # long and short bags alternate across batches of 2
    feats = {f"p{i}": _bag(rng, k) for i, k in enumerate(lengths)}
    coords = {p: rng.integers(1, 999, (len(x), 2)) for p, x in feats.items()}
    store = FeatureStore(tmp_path / "s")
    store.write_many("m", feats, coords)
    monkeypatch.setattr(store_write, "PACK_BATCH_BYTES", 2 * 9 * 8 * 4)  # two rows a batch
    store.pack("m")
    with h5py.File(store.path("m"), "r") as f:
        x, c = f["packed/features"][()], f["packed/coords"][()]
    assert x.shape == (6, 9, 8)
    for row, k in enumerate(lengths):
        np.testing.assert_array_equal(x[row, :k], feats[f"p{row}"])
        assert not x[row, k:].any() and not c[row, k:].any()


def test_pack_memmap_view_is_read_only_and_survives_replacement(tmp_path):
    plain, packed, _, _ = _twins(tmp_path, "bag", np.float16)
    ids = packed.patients("m")
    view = packed.load("m", ids, dtype=np.float16, with_coords=True)
    assert not view.x.flags.writeable and not view.x.flags.owndata  # a map, not a copy
    with pytest.raises(ValueError, match="read-only"):
        view.x[0, 0, 0] = 1
    _same(view, plain.load("m", ids, dtype=np.float16, with_coords=True))
    before = np.array(view.x)
    packed.write("m", "p0", np.zeros((3, 8), np.float16))  # renames a new file over the path
    packed.pack("m")
    np.testing.assert_array_equal(view.x, before)  # the old inode lives while mapped
    # other dtype or a subset: a fresh, writable array
    cast = packed.load("m", ids, dtype=np.float32)
    assert cast.x.flags.writeable and cast.x.flags.owndata


def test_write_after_pack_then_repack(tmp_path):
    plain, packed, _, _ = _twins(tmp_path, "bag", np.float32)
    rng = np.random.default_rng(12)
    new = {"p3": _bag(rng, 15), "q9": _bag(rng, 2)}  # overwrite one (longer than Kmax), add one
    new_coords = {"q9": np.array([[1, 2], [3, 4]])}
    for s in (plain, packed):
        s.write_many("m", new, new_coords)
    with h5py.File(packed.path("m"), "r") as f:
        assert "exact" not in f["packed"].attrs
        assert "packed_row" not in f["patients/p3"].attrs and "features" in f["patients/p3"]
    ids = ["q9", "p3", "p0", "zz", "p1", "p2"]
    assert packed.patients("m") == plain.patients("m")
    np.testing.assert_array_equal(packed.read("m", "p3")[0], new["p3"])
    for kw in ({}, {"with_coords": True}, {"max_tiles": 3, "seed": 2, "with_coords": True}):
        for want in (np.float16, np.float32):
            _same(packed.load("m", ids, dtype=want, **kw), plain.load("m", ids, dtype=want, **kw))
    all_ids = packed.patients("m")
    _same(packed.load("m", all_ids, dtype=np.float32), plain.load("m", all_ids, dtype=np.float32))
    packed.pack("m")  # the new patients join the pack, the stale row goes
    with h5py.File(packed.path("m"), "r") as f:
        assert f["packed/features"].shape == (8, 15, 8) and f["packed"].attrs["exact"]
        assert "features" not in f["patients/p3"] and "features" not in f["patients/q9"]
    got = packed.load("m", all_ids, dtype=np.float32, with_coords=True)
    assert not got.x.flags.writeable  # the whole new pack in order: the map itself
    _same(got, plain.load("m", all_ids, dtype=np.float32, with_coords=True))


def test_pack_is_idempotent_and_reclaims_space(tmp_path):
    store = FeatureStore(tmp_path / "s")
    rng = np.random.default_rng(13)

    def bags():
        return {f"p{i}": _bag(rng, 200, 16) for i in range(10)}  # equal sizes: no padding

    store.write_many("m", bags())
    unpacked = store.path("m").stat().st_size
    store.pack("m")
    fresh = store.path("m").stat().st_size
    assert fresh <= 1.05 * unpacked  # no second copy of the data kept
    ident = store.path("m").stat().st_ino, store.path("m").read_bytes()
    store.pack("m")  # nothing changed: the file is not rewritten
    assert (store.path("m").stat().st_ino, store.path("m").read_bytes()) == ident
    for _ in range(2):  # each overwrite leaves the old datasets' space behind
        store.write_many("m", bags())
    grown = store.path("m").stat().st_size
    assert grown > 1.5 * fresh
    store.pack("m")
    assert store.path("m").stat().st_size <= 1.05 * fresh


def test_crash_during_pack_leaves_previous_file(store, monkeypatch):
    rng = np.random.default_rng(14)
    store.write_many("wsi", {"a": _bag(rng, 3), "b": _bag(rng, 5)}, {"a": np.ones((3, 2), int)})
    before = store.path("wsi").read_bytes()
    real = h5py.Group.create_dataset

    def flaky(self, name, *args, **kwargs):
        if name == "lengths":  # after the big datasets were created
            raise RuntimeError("simulated crash")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.pack("wsi")
    monkeypatch.undo()
    assert store.path("wsi").read_bytes() == before
    assert [p.name for p in store.root.iterdir() if p.suffix == ".tmp"] == []
    store.pack("wsi")  # and a later pack works
    np.testing.assert_array_equal(store.load("wsi", ["a", "b"]).mask.sum(1), [3, 5])


def test_pack_drops_incomplete_groups_and_keeps_attrs(store):
    store.write_many("wsi", {"a": np.ones((2, 8), np.float32), "b": np.ones((3, 8), np.float32)},
                     encoder="uni", checksum="abc")  # fmt: skip
    with h5py.File(store.path("wsi"), "a") as f:
        f["patients/b"].attrs["complete"] = False
    store.pack("wsi")
    with h5py.File(store.path("wsi"), "r") as f:
        assert list(f["patients"]) == ["a"] and f["packed/features"].shape == (1, 2, 8)
        assert f.attrs["format"] == "modalsurv.featurestore" and f.attrs["modality"] == "wsi"
    meta = store.meta("wsi")
    assert (meta["encoder"], meta["checksum"], meta["n_patients"]) == ("uni", "abc", 1)
    assert store.patients("wsi") == ["a"] and not store.load("wsi", ["b"]).present.any()


def test_overwrite_false_refuses_a_complete_patient_but_replaces_an_incomplete_one(store):
    """An incomplete group is what a crash between group and ``complete`` leaves: it holds
    no patient yet, so ``overwrite=False`` may write it; a complete one is refused."""
    store.write_many("mri", {"a": np.ones(3), "b": np.ones(3)})
    with h5py.File(store.path("mri"), "a") as f:
        f["patients/b"].attrs["complete"] = False
    store.write_many("mri", {"b": np.full(3, 2.0)}, overwrite=False)
    np.testing.assert_array_equal(store.read("mri", "b")[0], np.full(3, 2.0))
    with pytest.raises(FeatureError, match="already stored"):
        store.write_many("mri", {"a": np.zeros(3)}, overwrite=False)
    np.testing.assert_array_equal(store.read("mri", "a")[0], np.ones(3))


def test_labels_matching_no_store_id_are_refused_with_examples(tmp_path):
    from modalsurv.errors import LabelError

    store = FeatureStore(tmp_path)
    store.write_many("slide", {"1000": np.ones(3, np.float32), "1001": np.zeros(3, np.float32)})
    labels = pd.DataFrame({"patient": ["001000", "001001"], "time": [3.0, 4.0], "event": [1, 0]})
    with pytest.raises(LabelError, match="no patient id of the labels matches") as err:
        cohort_from_store(store, labels, ["slide"])
    assert "001000" in str(err.value) and "'1000'" in str(err.value)
    ok = cohort_from_store(store, labels.assign(patient=["1000", "x"]), ["slide"])  # one match is fine
    assert ok.present["slide"].tolist() == [True, False]


def test_missing_values_are_stored_only_when_declared(store):
    """Raw RNA on the union of genes marks a gene a profile lacks with NaN (``missing``);
    any other writer's NaN is refused, and inf always is."""
    row = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    with pytest.raises(FeatureError, match="NaN or inf"):
        store.write_many("rna", {"p1": row}, encoder="raw:genes")
    store.write_many("rna", {"p1": row}, encoder="raw:genes", missing=True)
    np.testing.assert_array_equal(store.read("rna", "p1")[0], row)
    with pytest.raises(FeatureError, match="contain inf"):
        store.write_many("rna", {"p2": np.array([1.0, np.inf, 0.0])}, encoder="raw:genes",
                         missing=True)  # fmt: skip


def test_a_store_from_before_settings_were_recorded_takes_no_features_made_with_settings(store):
    """Its features' settings are unknown: extraction with any settings would mix them in
    and relabel the modality as if they had been made that way."""
    store.write_many("wsi", {"p1": np.ones((3, 4), np.float32)}, encoder="e")  # no settings
    with pytest.raises(FeatureError, match="before extraction settings were recorded"):
        store.set_meta("wsi", encoder="e", dim=4, settings={"mpp": 1.0})
    assert store.meta("wsi").get("settings") is None  # not relabelled


def _damaged_pack(store, edit):
    """A packed bag store of a, b, c with ``edit(file)`` applied by hand."""
    rng = np.random.default_rng(21)
    store.write_many("wsi", {p: _bag(rng, k) for p, k in (("a", 2), ("b", 4), ("c", 3))})
    store.pack("wsi")
    with h5py.File(store.path("wsi"), "r+") as f:
        edit(f)


def _point_b_past_the_pack(f):
    f["patients/b"].attrs["packed_row"] = 7
    del f["packed"].attrs["exact"]


def _list_one_more_patient(f):  # an exact pack whose patient list outruns its rows
    del f["packed/patients"]
    f["packed"].create_dataset("patients", data=np.array(["a", "b", "c", "d"], dtype=object),
                               dtype=h5py.string_dtype())  # fmt: skip


def _lengthen_bag_b(f):  # a bag length beyond the pack's width
    lengths = f["packed/lengths"][()]
    lengths[1] = 99
    f["packed/lengths"][...] = lengths


@pytest.mark.parametrize(("edit", "who"), [(_point_b_past_the_pack, "b"),
                                            (_list_one_more_patient, "d"),
                                            (_lengthen_bag_b, "b")])  # fmt: skip
def test_a_packed_index_disagreeing_with_the_file_is_named_not_read_past(store, edit, who):
    """Reading past /packed/features reads whatever bytes follow it: an IndexError naming
    nothing, or worse another patient's features handed out silently."""
    _damaged_pack(store, edit)
    with pytest.raises(FeatureError) as err:
        store.load("wsi", ["a", "b", "c", "d"])
    assert err.value.path == str(store.path("wsi"))
    assert err.value.patient == who and err.value.field == "wsi"


def test_packing_a_file_whose_patient_points_past_the_pack_names_it(store):
    _damaged_pack(store, _point_b_past_the_pack)
    with pytest.raises(FeatureError, match="outside the pack") as err:
        store.pack("wsi")
    assert err.value.path == str(store.path("wsi")) and err.value.patient == "b"


@pytest.mark.parametrize("row", [7, -1])
def test_reading_one_patient_whose_packed_row_is_outside_the_pack_names_it(store, row):
    """``read`` (one patient) went straight to the pack row: past the pack an IndexError
    naming nothing, a negative row another patient's features, silently."""

    def point_b(f):
        f["patients/b"].attrs["packed_row"] = row

    _damaged_pack(store, point_b)
    with pytest.raises(FeatureError, match="outside the pack") as err:
        store.read("wsi", "b")
    assert err.value.path == str(store.path("wsi")) and err.value.patient == "b"
    assert store.read("wsi", "a")[0].shape[0] == 2  # the others still read


def _nan_vector(store):
    store.write_many("rna", {"p1": np.array([1.0, np.nan], np.float32)})


def _dim_mismatch(store):
    store.write_many("rna", {"p1": np.ones(2, np.float32), "p2": np.ones(3, np.float32)})


def _empty_bag(store):
    store.write_many("rna", {"p1": np.ones((0, 2), np.float32)})


def _bag_among_vectors(store):
    store.write_many("rna", {"p1": np.ones(2, np.float32), "p2": np.ones((3, 2), np.float32)})


def _coords_without_features(store):
    store.write_many("rna", {"p1": np.ones((3, 2), np.float32)}, {"p9": np.ones((3, 2), int)})


@pytest.mark.parametrize(
    "bad", [_nan_vector, _dim_mismatch, _empty_bag, _bag_among_vectors, _coords_without_features]
)
def test_write_many_errors_without_sources_name_the_store_file_and_modality(store, bad):
    with pytest.raises(FeatureError) as e:
        bad(store)
    assert e.value.path == str(store.path("rna"))
    assert e.value.field == "rna"
    assert e.value.patient in ("p1", "p2", "p9")


def test_write_many_with_sources_still_names_the_source_file(store, tmp_path):
    src = tmp_path / "p1.npy"
    with pytest.raises(FeatureError) as e:
        store.write_many("rna", {"p1": np.array([np.inf])}, sources={"p1": src})
    assert e.value.path == str(src)


def test_write_many_refuses_ids_equal_as_text(store):
    with pytest.raises(FeatureError, match="'1'.*more than once") as e:
        store.write_many("rna", {1: np.ones(2, np.float32), "1": np.zeros(2, np.float32)})
    assert e.value.path == str(store.path("rna"))
    assert e.value.patient == "1"
    assert not store.exists("rna")


@pytest.mark.parametrize("packed", [False, True])
def test_loading_an_empty_patient_id_names_the_store_file(store, packed):
    store.write("rna", "p1", np.ones(2, np.float32))
    if packed:
        store.pack("rna")
    with pytest.raises(DataError, match="empty patient id") as e:
        store.load("rna", ["p1", ""])
    assert e.value.path == str(store.path("rna"))
