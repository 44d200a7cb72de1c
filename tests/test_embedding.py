"""Self-supervised galaxy embeddings: the training augmentations, a short MoCo run, the
task through ``pipetask run``, similarity search against NumPy, the image-file mode and
the bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table
from lsst.meas.ml.cli import main
from lsst.meas.ml.embedding.features import EmbeddingInputError, StampBatch, normalise_to_noise
from lsst.meas.ml.embedding.predict import EmbeddingFlag, check_package, predict_embedding
from lsst.meas.ml.embedding.search import (
    ApproximateIndex,
    SearchError,
    exact_search,
    faiss_available,
    numpy_search,
    similar,
)
from lsst.meas.ml.embedding.task import EmbedGalaxiesTask
from lsst.meas.ml.embedding.train import (
    EmbeddingTrainingConfig,
    PretrainingSet,
    make_views,
    retrieval_accuracy,
    telescope_augmentation,
    train_embedding,
)
from lsst.meas.ml.imagefiles import ImageFileError
from lsst.meas.ml.packages import ModelPackage, PackageError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(stamp_size=16, margin=2, widths=(8, 16), proj_dim=16, batch_size=16, threads=1, device="cpu")


def _galaxies(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Noisy exponential disks of random size, shape, brightness and colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size // 2
    out = rng.normal(size=(n, channels, size, size)).astype(np.float32)
    for i in range(n):
        r, q, a = rng.uniform(1, 4), rng.uniform(0.3, 1), rng.uniform(0, np.pi)
        u = xx * np.cos(a) + yy * np.sin(a)
        v = (-xx * np.sin(a) + yy * np.cos(a)) / q
        colour = rng.uniform(0.3, 1.5, size=(channels, 1, 1))
        out[i] += (rng.uniform(10, 80) * np.exp(-np.hypot(u, v) / r))[None] * colour
    return out


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory) -> Path:
    """40 RGB PNG cutouts of 20 pixels."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pngs")
    x = _galaxies(40, 20, 3, seed=1)
    for i, img in enumerate(x):
        rgb = np.clip(np.moveaxis(img, 0, -1) * 3 + 40, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / f"gal{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def png_package(png_dir, tmp_path_factory) -> Path:
    """A package pre-trained with `meas-ml train embedding --images`."""
    out = tmp_path_factory.mktemp("emb_pkg") / "emb.safetensors"
    rc = main(
        [
            "train",
            "embedding",
            "--images",
            str(png_dir / "*.png"),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--stamp-size",
            "16",
            "--margin",
            "2",
            "--widths",
            "8",
            "16",
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--version",
            "test",
        ]
    )
    assert rc == 0
    return out


# ----------------------------------------------------------------------
# Augmentations as training draws them


def test_training_views_apply_every_transform():
    aug = telescope_augmentation(margin=4, stamp_size=24)
    assert aug.rotate_flip and aug.rotate_any and aug.jitter == 4 and aug.crop == 24
    assert aug.blur_sigma[1] > 0 and aug.noise[1] > 0 and aug.max_ebv > 0 and aug.scale != (1.0, 1.0)
    x = torch.from_numpy(_galaxies(64, 32, 6, seed=2))
    gen = torch.Generator().manual_seed(0)
    v1, v2 = make_views(x, aug, list("ugrizy"), gen)
    assert v1.shape == v2.shape == (64, 6, 24, 24)
    assert torch.isfinite(v1).all() and not torch.allclose(v1, v2)

    # Noise is matched to the inputs' variance of 1: a blank stamp gets 0 to 1 sigma (a little
    # less after the resampling of the any-angle rotation and scaling).
    blank = torch.zeros(256, 6, 32, 32)
    w1, _ = make_views(blank, aug, list("ugrizy"), gen)
    std = w1.flatten(1).std(dim=1)
    assert 0.15 < float(std.mean()) < 0.6 and float(std.max()) < 1.05

    # Reddening dims the blue bands more than the red ones (a flat source, mean over draws).
    flat = torch.zeros(512, 6, 32, 32)
    flat[:, :, 12:20, 12:20] = 100.0
    w1, _ = make_views(flat, aug, list("ugrizy"), gen)
    ratio = (w1.sum(dim=(2, 3)) / flat[:, :, 4:28, 4:28].sum(dim=(2, 3))).mean(dim=0)
    assert float(ratio[0]) < float(ratio[5]) < 1.02


# ----------------------------------------------------------------------
# Pre-training


def test_short_pretraining_run_packages_a_normalised_encoder(tmp_path):
    x = _galaxies(80, 20, 6, seed=3)
    data = PretrainingSet(x=x, ids=[str(i) for i in range(80)], bands=list("ugrizy"))
    result = train_embedding(data, EmbeddingTrainingConfig(epochs=3, **SMALL))
    package = result.package
    assert package.family == "embedding" and package.inputs["bands"] == list("ugrizy")
    assert result.n_validation == 8 and result.n_train == 72
    losses = result.report["loss_per_epoch"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert 0.0 <= result.metrics["view_retrieval_top1"] <= 1.0
    path = tmp_path / "p.safetensors"
    package.save(path)
    loaded = ModelPackage.load(path)
    assert loaded.sha256 == package.sha256
    stamps = StampBatch(
        x[:, :, 2:18, 2:18],
        np.zeros(80, np.float32),
        np.zeros(80, bool),
        np.zeros(80, bool),
        np.zeros(80, bool),
    )
    table = predict_embedding(loaded, np.arange(80), stamps, bands=list("ugrizy"))
    emb = np.asarray(table["embedding"])
    # 16 pooled CNN features after 12 aperture entries (6 bands and 6 colours).
    assert emb.shape == (80, 28) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert table.meta["ml_model"]["sha256"] == package.sha256
    # The same views are retrieved better by the trained encoder than by a shuffled embedding.
    model = loaded.build_model()
    acc = retrieval_accuracy(model, torch.from_numpy(x), telescope_augmentation(2, 16), list("ugrizy"))
    assert acc > 2.0 / 80


def test_encoder_centre_pooling_colour_input_and_old_packages():
    from lsst.meas.ml.models import build_model

    torch.manual_seed(0)
    hyper = {"in_channels": 6, "stamp_size": 16, "widths": [8, 16]}
    centre = build_model("embedding_cnn", {**hyper, "pool": "centre", "colour_input": True}).eval()
    mean = build_model("embedding_cnn", {**hyper, "pool": "mean"}).eval()
    assert centre.stem[0].in_channels == 12 and mean.stem[0].in_channels == 6
    # A source at the centre moves the centre-pooled features more than one in a corner.
    empty = torch.zeros(1, 6, 16, 16)
    middle, corner = empty.clone(), empty.clone()
    middle[..., 7:9, 7:9] = 50.0
    corner[..., 0:2, 0:2] = 50.0
    with torch.no_grad():
        base = centre.features(empty)
        d_mid = (centre.features(middle) - base).norm()
        d_corner = (centre.features(corner) - base).norm()
    assert d_mid > 2 * d_corner
    # The colour channels respond to a change of colour at fixed total flux.
    blue, red = empty.clone(), empty.clone()
    blue[:, :3, 6:10, 6:10], blue[:, 3:, 6:10, 6:10] = 40.0, 10.0
    red[:, :3, 6:10, 6:10], red[:, 3:, 6:10, 6:10] = 10.0, 40.0
    with torch.no_grad():
        assert not torch.allclose(centre.features(blue), centre.features(red))
    # Packages without the options (older manifests) build the plain-mean encoder.
    assert build_model("embedding_cnn", hyper).pool == "mean"
    with pytest.raises(ValueError, match="pool"):
        build_model("embedding_cnn", {**hyper, "pool": "max"})


def test_aperture_photometry_part_of_the_representation():
    from lsst.meas.ml.models import build_model

    torch.manual_seed(0)
    hyper = {"in_channels": 6, "stamp_size": 16, "widths": [8, 16], "colour_input": True}
    model = build_model("embedding_cnn", {**hyper, "aperture": 2.0}).eval()
    assert model.aperture_dim == 12 and model.embed_dim == 28
    empty = torch.zeros(1, 6, 16, 16)
    blue, red = empty.clone(), empty.clone()
    blue[:, :3, 6:10, 6:10], blue[:, 3:, 6:10, 6:10] = 40.0, 10.0
    red[:, :3, 6:10, 6:10], red[:, 3:, 6:10, 6:10] = 10.0, 40.0
    with torch.no_grad():
        a_blue, a_red, a_empty = (model.features(v)[0, :12] for v in (blue, red, empty))
    # Brighter in the blue bands, and the colour entries (band minus mean) flip sign.
    assert (a_blue[:3] > a_red[:3]).all() and (a_blue[3:6] < a_red[3:6]).all()
    assert (a_blue[6:9] > 0).all() and (a_red[6:9] < 0).all()
    assert torch.allclose(a_empty, torch.zeros(12))
    # A source off the aperture barely registers.
    corner = empty.clone()
    corner[..., 0:3, 0:3] = 40.0
    with torch.no_grad():
        assert model.features(corner)[0, :6].max() < 0.1 * a_blue[:6].max()
    # Packages written before the option (no "aperture") keep the CNN features only.
    assert build_model("embedding_cnn", hyper).embed_dim == 16
    with pytest.raises(ValueError, match="aperture"):
        build_model("embedding_cnn", {**hyper, "aperture": -1.0})
    # The training settings refuse it before any stamp is cut, as a user error.
    from lsst.meas.ml.embedding.features import EmbeddingInputError
    from lsst.meas.ml.embedding.train import EmbeddingTrainingConfig

    with pytest.raises(EmbeddingInputError, match="aperture"):
        EmbeddingTrainingConfig(aperture=-1.0)


def test_group_standardisation_keeps_a_short_informative_group():
    from lsst.meas.ml.embedding.downstream import ridge_probe

    rng = np.random.default_rng(4)
    n_train, n_test = 20, 400
    signal = rng.normal(size=(n_train + n_test, 2))
    noise = rng.normal(size=(n_train + n_test, 60))
    y = signal @ np.array([1.0, -0.5]) + 0.05 * rng.normal(size=n_train + n_test)
    x = np.concatenate([signal, noise], axis=1)
    tr, te = slice(0, n_train), slice(n_train, None)
    plain = ridge_probe(x[tr], y[tr], x[te])
    grouped = ridge_probe(x[tr], y[tr], x[te], groups=(2, 60))
    err_plain, err_grouped = (np.sqrt(np.mean((p - y[te]) ** 2)) for p in (plain, grouped))
    assert err_grouped < 0.7 * err_plain
    with pytest.raises(ValueError, match="groups"):
        ridge_probe(x[tr], y[tr], x[te], groups=(2, 50))


def test_balanced_logistic_probe_predicts_a_rare_class():
    from lsst.meas.ml.embedding.downstream import logistic_probe

    rng = np.random.default_rng(1)
    common = rng.normal(0.0, 1.0, size=(40, 3))
    rare = rng.normal(0.0, 1.0, size=(3, 3)) + np.array([3.0, 0.0, 0.0])
    x = np.concatenate([common, rare])
    y = np.array([0] * 40 + [1] * 3)
    test = np.array([[4.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
    assert logistic_probe(x, y, test, n_classes=2).tolist() == [1, 0]


def test_supervised_cnn_fine_tunes_a_copy_of_a_given_encoder():
    from lsst.meas.ml.embedding.downstream import supervised_cnn
    from lsst.meas.ml.models import build_model

    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 3, 20, 20)).astype(np.float32)
    y = np.arange(12) % 3
    torch.manual_seed(0)
    encoder = build_model("embedding_cnn", {"in_channels": 3, "stamp_size": 16, "widths": [8, 16]})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    common = dict(task="class", n_classes=3, stamp_size=16, margin=2, steps=3, seed=1)
    common["hyperparameters"] = {"widths": [8, 16]}
    tuned = supervised_cnn(x, y, x, encoder=encoder, **common)
    scratch = supervised_cnn(x, y, x, **common)
    assert tuned.shape == scratch.shape == (12,)
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])
    # The weights it starts from matter: from this encoder, not the seed's fresh one.
    z_tuned = supervised_cnn(x, y.astype(float), x, encoder=encoder, **{**common, "task": "redshift"})
    z_scratch = supervised_cnn(x, y.astype(float), x, **{**common, "task": "redshift"})
    assert not np.allclose(z_tuned, z_scratch)


def test_training_refuses_too_few_or_wrong_size_stamps():
    with pytest.raises(EmbeddingInputError, match="at least 8"):
        train_embedding(
            PretrainingSet(np.zeros((4, 3, 20, 20), np.float32), list("abcd"), None),
            EmbeddingTrainingConfig(**SMALL),
        )
    with pytest.raises(EmbeddingInputError, match="20, 20"):
        train_embedding(
            PretrainingSet(np.zeros((10, 3, 30, 30), np.float32), list("abcdefghij"), None),
            EmbeddingTrainingConfig(**SMALL),
        )


# ----------------------------------------------------------------------
# Similarity search


def test_exact_search_matches_numpy_brute_force():
    rng = np.random.default_rng(4)
    db = rng.normal(size=(5000, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    db[17] = np.nan  # a row that was not embedded never matches
    q = rng.normal(size=(37, 32)).astype(np.float32)
    scores, idx = exact_search(q, db, 10, query_batch=8, database_batch=700)
    ref_s, ref_i = numpy_search(q, db, 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    assert 17 not in idx
    with pytest.raises(SearchError, match="dimension 16"):
        exact_search(q[:, :16], db, 5)


def test_similar_table_and_bad_queries():
    rng = np.random.default_rng(5)
    db = rng.normal(size=(200, 8)).astype(np.float32)
    ids = [f"o{i}" for i in range(200)]
    table = similar(["o3", "o9"], ids, db, k=4)
    assert list(table.colnames) == ["query", "rank", "neighbour", "score"]
    assert len(table) == 8 and "o3" not in set(table[table["query"] == "o3"]["neighbour"])
    _, ref_i = numpy_search(db[3], db, 5)
    assert list(table[table["query"] == "o3"]["neighbour"]) == [ids[j] for j in ref_i[0] if j != 3][:4]
    with pytest.raises(SearchError, match="not in the database"):
        similar(["nope"], ids, db)
    with pytest.raises(SearchError, match="dimension 3"):
        similar(None, ids, db, query_vectors=np.ones((2, 3)))


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu (optional 'search' extra) not installed")
def test_approximate_index_recall_against_exact():
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(100, 32))
    db = (centres[rng.integers(0, 100, 20000)] + 0.3 * rng.normal(size=(20000, 32))).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    _, exact_i = exact_search(q, db, 10)
    index = ApproximateIndex(db, nprobe=8)
    _, approx_i = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx_i, exact_i)])
    assert recall > 0.7
    full = ApproximateIndex(db, nprobe=10_000)  # every list searched: the exact answer
    np.testing.assert_array_equal(full.search(q, 10)[1], exact_i)
    with pytest.raises(SearchError, match="dimension"):
        index.search(q[:, :8], 10)


def test_approximate_index_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(SearchError, match="faiss-cpu"):
        ApproximateIndex(np.ones((10, 4), np.float32))


# ----------------------------------------------------------------------
# Image-file mode and the commands


def test_image_file_mode_predict_similar_and_mosaic(png_dir, png_package, tmp_path, capsys):
    from PIL import Image

    files = tmp_path / "imgs"
    files.mkdir()
    for p in sorted(png_dir.glob("*.png"))[:12]:
        (files / p.name).write_bytes(p.read_bytes())
    (files / "broken.png").write_bytes(b"not a png")
    big = np.zeros((26, 26, 3), np.uint8)
    big[8:18, 8:18] = 200
    Image.fromarray(big).save(files / "big.png")
    out = tmp_path / "emb.parquet"
    rc = main(
        [
            "predict",
            "embedding",
            "--model",
            str(png_package),
            "--images",
            str(files / "*.png"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "1 unreadable file(s) skipped" in capsys.readouterr().out
    table = Table.read(out)
    assert sorted(table["id"]) == sorted([f"gal{i:03d}" for i in range(12)] + ["big"])
    emb = np.asarray(table["embedding"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    resized = dict(zip(table["id"], table["flag_resized"]))
    assert resized["big"] and not resized["gal000"]

    nn_out, mosaic = tmp_path / "nn.parquet", tmp_path / "nn.png"
    rc = main(
        [
            "similar",
            "--embeddings",
            str(out),
            "--query",
            "gal000",
            "gal001",
            "-k",
            "3",
            "--out",
            str(nn_out),
            "--mosaic",
            str(mosaic),
            "--images",
            str(files / "gal*.png"),
            str(files / "big.png"),
        ]
    )
    assert rc == 0
    nn = Table.read(nn_out)
    assert len(nn) == 6 and set(nn["query"]) == {"gal000", "gal001"}
    assert mosaic.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Approximate search through the command: faiss when installed, else a one-line error.
    rc = main(
        ["similar", "--embeddings", str(out), "--query", "gal000", "-k", "3", "--method", "approximate"]
    )
    assert rc == (0 if faiss_available() else 2)


def test_bad_image_inputs(png_dir, png_package, tmp_path, capsys):
    # Mixed channel counts: a clear error naming the file.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in sorted(png_dir.glob("*.png"))[:3]:
        (mixed / p.name).write_bytes(p.read_bytes())
    np.save(mixed / "twoband.npy", np.ones((2, 20, 20), np.float32))
    rc = main(
        [
            "predict",
            "embedding",
            "--model",
            str(png_package),
            "--images",
            str(mixed / "*"),
            "--out",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "twoband.npy" in err and "channel" in err
    with pytest.raises(ImageFileError, match="twoband.npy"):
        from lsst.meas.ml.embedding.train import files_training_set

        files_training_set(str(mixed / "*"), stamp_size=16, margin=2)
    # Another size with --resize error.
    sized = tmp_path / "sized"
    sized.mkdir()
    np.save(sized / "a.npy", np.ones((3, 20, 20), np.float32))
    np.save(sized / "b.npy", np.ones((3, 30, 30), np.float32))
    rc = main(
        [
            "predict",
            "embedding",
            "--model",
            str(png_package),
            "--images",
            str(sized / "*.npy"),
            "--out",
            str(tmp_path / "o.parquet"),
            "--resize",
            "error",
        ]
    )
    assert rc == 2 and "b.npy" in capsys.readouterr().err
    # NaN pixels: kept out of the stamp, counted, flagged; an all-NaN image is not embedded.
    nans = tmp_path / "nans"
    nans.mkdir()
    img = _galaxies(1, 20, 3, seed=7)[0]
    np.save(nans / "clean.npy", img)
    part = img.copy()
    part[:, :10] = np.nan
    np.save(nans / "half.npy", part)
    np.save(nans / "empty.npy", np.full((3, 20, 20), np.nan, np.float32))
    out = tmp_path / "nan.parquet"
    rc = main(
        [
            "predict",
            "embedding",
            "--model",
            str(png_package),
            "--images",
            str(nans / "*.npy"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    t = Table.read(out)
    rows = {i: r for i, r in zip(t["id"], t)}
    assert rows["clean"]["flags"] == 0 and np.isfinite(rows["clean"]["embedding"]).all()
    assert rows["half"]["flag_nan"] and rows["half"]["ml_nan_fraction"] == pytest.approx(0.5)
    assert np.isfinite(rows["half"]["embedding"]).all()
    assert rows["empty"]["flag_offimage"] and np.isnan(rows["empty"]["embedding"]).all()
    assert rows["empty"]["flags"] & int(EmbeddingFlag.OFFIMAGE)
    # A package trained on 3 channels refuses 6-channel inputs.
    with pytest.raises(PackageError, match="3 channel"):
        check_package(ModelPackage.load(png_package), channels=6)


def test_normalisation_is_in_noise_units():
    rng = np.random.default_rng(8)
    x = (5.0 + 2.0 * rng.normal(size=(4, 2, 40, 40))).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    out = normalise_to_noise(x)
    assert np.isfinite(out).all() and out[0, 0, 0, 0] == 0
    assert abs(float(np.median(out))) < 0.1 and 0.8 < float(out.std()) < 1.2


# ----------------------------------------------------------------------
# The task: in memory (empty patch, missing column) and through pipetask run


@pytest.fixture(scope="module")
def repo_package(tiny_repo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb_repo_pkg") / "emb.safetensors"
    rc = main(
        [
            "train",
            "embedding",
            "--repo",
            str(tiny_repo),
            "--collections",
            "MLSim/defaults",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--stamp-size",
            "16",
            "--margin",
            "2",
            "--widths",
            "8",
            "16",
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--version",
            "test",
        ]
    )
    assert rc == 0
    return out


def test_task_run_empty_patch_and_missing_column(tiny_repo, repo_package):
    from lsst.daf.butler import Butler

    butler = Butler.from_config(str(tiny_repo), collections="MLSim/defaults")
    package = ModelPackage.load(repo_package)
    objects = butler.get("object", skymap="mlsim", tract=0)
    coadds = {b: butler.get("deep_coadd", skymap="mlsim", tract=0, patch=0, band=b) for b in "ugrizy"}
    task = EmbedGalaxiesTask()
    table = task.run(coadds=coadds, objectCatalog=objects, model=package, patch=0).embedding
    n0 = int(((np.asarray(objects["patch"]) == 0) & np.asarray(objects["detect_isPrimary"])).sum())
    assert len(table) == n0 > 0
    empty = task.run(coadds=coadds, objectCatalog=objects[:0], model=package, patch=0).embedding
    assert len(empty) == 0 and empty.colnames == table.colnames
    assert np.asarray(empty["embedding"]).shape == (0, 28)  # 12 aperture entries + 16 CNN features
    del coadds["u"]
    flagged = task.run(coadds=coadds, objectCatalog=objects, model=package, patch=0).embedding
    assert flagged["flag_missing_band"].all()
    with pytest.raises(EmbeddingInputError, match="lacks column"):
        task.run(coadds=coadds, objectCatalog=objects["objectId", "x"], model=package, patch=0)


@pytest.mark.slow
def test_pipetask_run_writes_ml_embedding(tiny_repo, repo_package):
    from lsst.daf.butler import Butler

    run = "models/embedding/test"
    output = "u/test/embedding"
    assert main(["register", str(tiny_repo), str(repo_package), "--run", run]) == 0
    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(tiny_repo),
        "-i",
        f"MLSim/defaults,{run}",
        "-o",
        output,
        "-p",
        str(ROOT / "pipelines" / "embedding.yaml"),
        "--register-dataset-types",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    butler = Butler.from_config(str(tiny_repo), collections=output)
    refs = list(butler.query_datasets("ml_embedding"))
    assert len(refs) == 2  # the tiny survey's two patches
    objects = butler.get("object", skymap="mlsim", tract=0)
    sha = ModelPackage.load(repo_package).sha256
    for ref in refs:
        table = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        sel = (np.asarray(objects["patch"]) == ref.dataId["patch"]) & np.asarray(objects["detect_isPrimary"])
        np.testing.assert_array_equal(table["objectId"], objects["objectId"][sel])
        emb = np.asarray(table["embedding"])
        ok = ~np.asarray(table["flag_offimage"])
        np.testing.assert_allclose(np.linalg.norm(emb[ok], axis=1), 1.0, atol=1e-5)
        assert table.meta["ml_model"]["sha256"] == sha
    from lsst.meas.ml.embedding.demo import summarize

    lines = summarize(butler, output)
    assert len(lines) == 1 and lines[0].startswith("ml_embedding tract 0:") and "Hubble type" in lines[0]
