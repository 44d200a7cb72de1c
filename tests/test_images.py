"""The pure-numpy exposure, its FITS layout and its Butler round trip."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from lsst.meas.ml.butler import check_repo, create_repo, open_repo, setup_repo, RepoConfigError
from lsst.meas.ml.fitsio import ExposureReadError, read_exposure, write_exposure
from lsst.meas.ml.images import Box, ImageError, PixelPlanes


def make_exposure(wcs, shape=(80, 100), xy0=(1000, 2000)):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.int32)
    mask[:, 7] |= 1  # BAD column
    variance = np.full(shape, 2.0, dtype=np.float32)
    psf = np.outer(np.hanning(7), np.hanning(7)).astype(np.float32)
    psf /= psf.sum()
    return PixelPlanes(image, mask, variance, wcs=wcs, psf=psf, band="r", xy0=xy0, metadata={"VISIT": 42})


def test_box_geometry():
    a = Box(0, 0, 10, 10)
    assert a.intersection(Box(5, 5, 10, 10)) == Box(5, 5, 5, 5)
    assert a.intersection(Box(20, 20, 3, 3)).is_empty
    assert Box.from_center(10.4, 10.6, 5) == Box(8, 9, 5, 5)
    assert Box.coerce((1, 2, 3, 4)) == Box(1, 2, 3, 4)
    with pytest.raises(ImageError, match="pixel box"):
        Box.coerce("nonsense")


def test_exposure_validates_shapes(simple_wcs):
    with pytest.raises(ImageError, match="mask shape"):
        PixelPlanes(np.zeros((4, 5)), mask=np.zeros((5, 4)))
    with pytest.raises(ImageError, match="variance shape"):
        PixelPlanes(np.zeros((4, 5)), variance=np.zeros((4, 4)))
    with pytest.raises(ImageError, match="odd"):
        PixelPlanes(np.zeros((4, 5)), psf=np.ones((4, 4)))


def test_subset_keeps_sky_coordinates(simple_wcs):
    exp = make_exposure(simple_wcs)
    sub = exp.subset(Box(1010, 2005, 20, 10))
    assert np.array_equal(sub.image, exp.image[5:15, 10:30])
    ra0, dec0 = exp.pixel_to_sky([1020.0], [2010.0])
    ra1, dec1 = sub.pixel_to_sky([1020.0], [2010.0])
    assert np.allclose([ra0, dec0], [ra1, dec1], atol=1e-10)
    with pytest.raises(ImageError, match="not inside"):
        exp.subset(Box(990, 2000, 20, 10))
    assert exp.get_plane_bitmask("BAD", "SAT") == 3
    with pytest.raises(ImageError, match="Unknown mask plane"):
        exp.get_plane_bitmask("NOPE")


def test_fits_layout_round_trip(tmp_path, simple_wcs):
    exp = make_exposure(simple_wcs)
    path = tmp_path / "exp.fits"
    write_exposure(exp, path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF"]
        assert hdul["MASK"].header["MP_BAD"] == 0
        assert hdul[0].header["LTV1"] == -1000
    back = read_exposure(path)
    for name in ("image", "mask", "variance", "psf"):
        assert np.array_equal(getattr(back, name), getattr(exp, name)), name
    assert back.xy0 == exp.xy0 and back.band == "r" and back.metadata["VISIT"] == 42
    assert np.allclose(back.pixel_to_sky([1033.0], [2044.0]), exp.pixel_to_sky([1033.0], [2044.0]))


def test_bbox_read_reads_only_needed_rows(tmp_path, simple_wcs):
    exp = make_exposure(simple_wcs, shape=(400, 300))
    path = tmp_path / "big.fits"
    write_exposure(exp, path)
    box = Box(1100, 2300, 17, 9)
    cut = read_exposure(path, bbox=box)
    assert cut.xy0 == (1100, 2300) and cut.image.shape == (9, 17)
    assert np.array_equal(cut.image, exp.image[300:309, 100:117])
    assert np.allclose(cut.pixel_to_sky([1105.0], [2304.0]), exp.pixel_to_sky([1105.0], [2304.0]))


@pytest.mark.parametrize(
    "box, words", [(Box(990, 2000, 20, 10), "partly outside"), (Box(0, 0, 5, 5), "wholly outside")]
)
def test_bbox_outside_is_a_clear_error(tmp_path, simple_wcs, box, words):
    path = tmp_path / "e.fits"
    write_exposure(make_exposure(simple_wcs), path)
    with pytest.raises(ImageError, match=words):
        read_exposure(path, bbox=box)


def test_corrupt_truncated_and_incomplete_files(tmp_path, simple_wcs):
    good = tmp_path / "good.fits"
    write_exposure(make_exposure(simple_wcs), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExposureReadError, match="truncated.fits.*(truncated|corrupt)"):
        read_exposure(truncated)
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"this is not FITS" * 180)
    with pytest.raises(ExposureReadError, match="garbage.fits.*not a readable FITS"):
        read_exposure(garbage)
    no_var = tmp_path / "novar.fits"
    with fits.open(good) as hdul:
        fits.HDUList([h.copy() for h in hdul if h.name != "VARIANCE"]).writeto(no_var)
    with pytest.raises(ExposureReadError, match=r"missing HDU\(s\) \['VARIANCE'\]"):
        read_exposure(no_var)
    mismatch = tmp_path / "mismatch.fits"
    with fits.open(good) as hdul:
        hdus = [h.copy() for h in hdul]
        hdus[2] = fits.ImageHDU(np.zeros((3, 3), dtype=np.int32), name="MASK")
        fits.HDUList(hdus).writeto(mismatch)
    with pytest.raises(ExposureReadError, match="shapes differ"):
        read_exposure(mismatch)
    with pytest.raises(ExposureReadError, match="no such file"):
        read_exposure(tmp_path / "absent.fits")


def test_invalid_exposure_never_leaves_a_partial_file(tmp_path, simple_wcs):
    exp = make_exposure(simple_wcs)
    exp.variance = np.zeros((3, 3), dtype=np.float32)  # broken after construction
    path = tmp_path / "bad.fits"
    with pytest.raises(ImageError):
        write_exposure(exp, path)
    assert list(tmp_path.iterdir()) == []


def test_butler_round_trip_and_bbox_parameter(tmp_path, simple_wcs):
    from lsst.daf.butler import DatasetType

    butler = create_repo(tmp_path / "repo")
    butler.registry.registerRun("r")
    butler.registry.registerDatasetType(DatasetType("img", (), "MLExposure", universe=butler.dimensions))
    exp = make_exposure(simple_wcs)
    butler.put(exp, "img", run="r")
    back = butler.get("img", collections="r")
    assert np.array_equal(back.image, exp.image) and back.xy0 == exp.xy0
    cut = butler.get("img", collections="r", parameters={"bbox": Box(1010, 2005, 20, 10)})
    assert np.array_equal(cut.image, exp.image[5:15, 10:30])
    assert np.allclose(cut.pixel_to_sky([1020.0], [2010.0]), exp.pixel_to_sky([1020.0], [2010.0]))
    # The Butler wraps formatter errors in a ValueError that keeps our message.
    with pytest.raises(ValueError, match="img.*wholly outside"):
        butler.get("img", collections="r", parameters={"bbox": Box(0, 0, 5, 5)})


def test_corrupt_dataset_in_butler_names_the_dataset(tmp_path, simple_wcs):
    from lsst.daf.butler import DatasetType

    butler = create_repo(tmp_path / "repo")
    butler.registry.registerRun("r")
    butler.registry.registerDatasetType(DatasetType("img", (), "MLExposure", universe=butler.dimensions))
    ref = butler.put(make_exposure(simple_wcs), "img", run="r")
    path = butler.getURI(ref).ospath
    with open(path, "r+b") as fh:  # same size (the Butler checks sizes), garbage header
        fh.write(b"\x00garbage" * 300)
    with pytest.raises(ValueError, match="dataset img.*not a readable FITS"):
        butler.get(ref)


def test_repo_without_plugin_config(tmp_path):
    from lsst.daf.butler import Butler

    Butler.makeRepo(tmp_path / "plain")
    with pytest.raises(RepoConfigError, match="meas-ml setup-repo .*DAF_BUTLER_CONFIG_PATH"):
        open_repo(tmp_path / "plain")
    assert setup_repo(tmp_path / "plain") is True
    assert setup_repo(tmp_path / "plain") is False  # idempotent
    check_repo(Butler.from_config(tmp_path / "plain"))
    with pytest.raises(RepoConfigError, match="No Butler repository"):
        open_repo(tmp_path / "nowhere")


def test_reading_from_a_repo_whose_config_lacks_the_plugin(tmp_path, simple_wcs):
    """Datasets written with the plugin stay readable by any process that imports
    lsst.meas.ml (as every meas_ml task does), whatever the repository's config."""
    import yaml
    from lsst.daf.butler import Butler, DatasetType

    butler = create_repo(tmp_path / "repo")
    butler.registry.registerRun("r")
    butler.registry.registerDatasetType(DatasetType("img", (), "MLExposure", universe=butler.dimensions))
    exp = make_exposure(simple_wcs)
    butler.put(exp, "img", run="r")
    del butler
    path = tmp_path / "repo" / "butler.yaml"
    config = yaml.safe_load(path.read_text())
    config.pop("storageClasses")
    config["datastore"].pop("formatters")
    path.write_text(yaml.safe_dump(config))
    butler = Butler.from_config(str(tmp_path / "repo"))
    assert np.array_equal(butler.get("img", collections="r").image, exp.image)
    with pytest.raises(RepoConfigError, match="formatters"):
        check_repo(butler)
