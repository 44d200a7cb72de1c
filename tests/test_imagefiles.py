"""Image files outside the Butler: layouts, mixed sizes and channels, unreadable files, labels."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from lsst.meas.ml.imagefiles import (
    ImageFileError,
    LabelFileError,
    expand_images,
    file_id,
    load_images,
    match_labels,
    read_image_file,
    read_labels,
)
from PIL import Image


def test_layouts(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.normal(size=(5, 20, 20)).astype(np.float32)
    fits.PrimaryHDU(chw).writeto(tmp_path / "a.fits")
    np.save(tmp_path / "b.npy", chw)
    np.save(tmp_path / "c.npy", np.moveaxis(chw[:3], 0, -1))
    Image.fromarray((rng.uniform(size=(20, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "d.png")
    Image.fromarray((rng.uniform(size=(20, 20)) * 255).astype(np.uint8)).save(tmp_path / "e.jpg")
    assert np.array_equal(read_image_file(tmp_path / "a.fits"), chw)
    assert np.array_equal(read_image_file(tmp_path / "b.npy"), chw)
    assert np.array_equal(read_image_file(tmp_path / "c.npy"), chw[:3])
    png = read_image_file(tmp_path / "d.png")
    assert png.shape == (3, 20, 20) and 0 <= png.min() and png.max() <= 1
    assert read_image_file(tmp_path / "e.jpg").shape == (1, 20, 20)
    assert file_id("x/obj.1.fits.gz") == "obj.1"


def test_mixed_sizes_are_centred_and_flagged(tmp_path):
    np.save(tmp_path / "big.npy", np.arange(2 * 24 * 24, dtype=np.float32).reshape(2, 24, 24))
    np.save(tmp_path / "s1.npy", np.ones((2, 20, 20), np.float32))
    small = np.ones((2, 16, 16), np.float32)
    small[0, 3, 3] = np.nan
    np.save(tmp_path / "s2.npy", small)
    np.save(tmp_path / "s3.npy", np.ones((2, 20, 20), np.float32))
    s = load_images(str(tmp_path / "*.npy"))
    assert s.size == 20 and s.ids == ["big", "s1", "s2", "s3"]
    assert list(s.resized) == [True, False, True, False]
    assert np.array_equal(
        s.images[0], np.arange(2 * 24 * 24, dtype=np.float32).reshape(2, 24, 24)[:, 2:22, 2:22]
    )
    assert s.bad[2, :, 0, 0].all() and not s.bad[2, 1, 10, 10] and s.bad[2, 0, 5, 5]
    assert not s.bad[1].any()
    with pytest.raises(ImageFileError, match="big.npy is 24x24"):
        load_images(tmp_path, resize="error", size=20)


def test_channel_mismatch_and_unreadable_files(tmp_path, caplog):
    np.save(tmp_path / "a.npy", np.ones((3, 8, 8), np.float32))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    s = load_images(tmp_path)
    assert len(s) == 1 and s.skipped and "broken.png" in s.skipped[0][0]
    assert "broken.png" in caplog.text
    np.save(tmp_path / "b.npy", np.ones((4, 8, 8), np.float32))
    with pytest.raises(ImageFileError, match="b.npy has 4 channel"):
        load_images(tmp_path)
    with pytest.raises(ImageFileError, match="No image file matches"):
        expand_images(str(tmp_path / "*.jpeg"))
    with pytest.raises(ImageFileError, match="could be read"):
        load_images(tmp_path / "broken.png")


def test_labels(tmp_path):
    t = Table({"ID": ["a", "b", "c", "d"], "LABEL": ["E", "", "Sa", "E"]})
    t.write(tmp_path / "l.csv")
    labels = read_labels(tmp_path / "l.csv", "ID", "LABEL")
    assert labels == {"a": "E", "b": None, "c": "Sa", "d": "E"}
    Table({"objid": [1, 2], "cls": [0.0, np.nan]}).write(tmp_path / "n.parquet")
    assert read_labels(tmp_path / "n.parquet", "objid", "cls") == {"1": "0", "2": None}
    assert match_labels(["a", "z"], labels) == ["E", None]
    with pytest.raises(LabelFileError, match="No id"):
        match_labels(["x", "y"], labels, "l.csv")
    with pytest.raises(LabelFileError, match="no column 'nope'"):
        read_labels(tmp_path / "l.csv", "ID", "nope")


def test_same_stem_twice_and_conflicting_labels(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "g1.npy", np.ones((1, 4, 4), np.float32))
    np.save(tmp_path / "b" / "g1.npy", np.ones((1, 4, 4), np.float32))
    with pytest.raises(ImageFileError, match="same id 'g1'"):
        load_images([str(tmp_path / "a"), str(tmp_path / "b")])
    Table({"ID": ["g1", "g1"], "LABEL": ["E", "Sa"]}).write(tmp_path / "l.csv")
    with pytest.raises(LabelFileError, match="two labels"):
        read_labels(tmp_path / "l.csv", "ID", "LABEL")
