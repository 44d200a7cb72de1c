"""Images as lsst.images types in the Butler, and the PixelPlanes view the stamp code reads."""

from __future__ import annotations

import astropy.units as u
import lsst.images as li
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from lsst.meas.ml.butler import RepoConfigError, check_repo, create_repo, open_repo, setup_repo
from lsst.meas.ml.images import Box, ImageError, PixelPlanes
from lsst.meas.ml.stack_images import read_afw_masked_image, to_masked_image, to_visit_image

IDENTITY = dict(
    instrument="MLSim",
    visit=42,
    detector_id=1,
    detector_name="R00_S01",
    physical_filter="MLSim-r",
    mjd=60500.1,
    exposure_time=30.0,
)


def make_planes(wcs, shape=(80, 100), xy0=(1000, 2000)):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.int32)
    mask[:, 7] |= 1  # BAD column
    mask[3, 3] |= 1 << 1  # SAT
    variance = np.full(shape, 2.0, dtype=np.float32)
    psf = np.outer(np.hanning(7), np.hanning(7)).astype(np.float32)
    psf /= psf.sum()
    return PixelPlanes(image, mask, variance, wcs=wcs, psf=psf, band="r", xy0=xy0)


def sip_wcs(shape=(4000, 4000)):
    """A TAN-SIP WCS whose distortion moves the corners by about two pixels."""
    header = {
        "CTYPE1": "RA---TAN-SIP",
        "CTYPE2": "DEC--TAN-SIP",
        "CRPIX1": shape[1] / 2,
        "CRPIX2": shape[0] / 2,
        "CRVAL1": 150.1,
        "CRVAL2": 2.2,
        "CD1_1": -5.5e-5,
        "CD1_2": 1e-6,
        "CD2_1": 1e-6,
        "CD2_2": 5.5e-5,
        "A_ORDER": 2,
        "B_ORDER": 2,
        "A_2_0": 2e-7,
        "A_0_2": -1e-7,
        "A_1_1": 5e-8,
        "B_2_0": -1e-7,
        "B_0_2": 2e-7,
        "B_1_1": 3e-8,
        "NAXIS1": shape[1],
        "NAXIS2": shape[0],
    }
    return WCS(fits.Header(header))


def test_box_geometry_and_stack_box():
    box = Box(10, 20, 30, 40)
    assert box.shape == (40, 30) and box.x1 == 40 and box.y1 == 60
    stack = box.to_stack()
    assert (stack.x.start, stack.y.start, stack.x.size, stack.y.size) == (10, 20, 30, 40)
    assert Box.coerce(stack) == box
    assert box.intersection(Box(35, 55, 10, 10)) == Box(35, 55, 5, 5)


def test_planes_validate_shapes(simple_wcs):
    with pytest.raises(ImageError, match="must have one shape"):
        PixelPlanes(np.zeros((4, 5)), mask=np.zeros((5, 4)))
    with pytest.raises(ImageError, match="odd sides"):
        PixelPlanes(np.zeros((4, 5)), psf=np.ones((4, 4)))


def test_mask_planes_in_either_spelling(simple_wcs):
    planes = PixelPlanes.from_image(to_visit_image(make_planes(simple_wcs), **IDENTITY))
    assert "SATURATED" in planes.mask_planes and "SAT" not in planes.mask_planes
    assert planes.get_plane_bitmask("SAT") == planes.get_plane_bitmask("SATURATED")
    assert planes.has_plane("CR") and planes.has_plane("COSMIC_RAY")
    with pytest.raises(ImageError, match="Unknown mask plane 'NOPE'"):
        planes.get_plane_bitmask("NOPE")
    bad = (planes.mask & planes.get_plane_bitmask("BAD")) != 0
    assert bad[:, 7].all() and bad.sum() == 80


def test_visit_image_butler_round_trip_and_bbox_read(tmp_path, simple_wcs):
    from lsst.daf.butler import DatasetType

    original = make_planes(simple_wcs)
    butler = create_repo(tmp_path / "repo")
    butler.registry.registerRun("r")
    for name, storage_class in (("vi", "VisitImage"), ("di", "DifferenceImage"), ("tm", "MaskedImageV2")):
        butler.registry.registerDatasetType(DatasetType(name, (), storage_class, universe=butler.dimensions))
    butler.put(to_visit_image(original, **IDENTITY), "vi", run="r")
    butler.put(to_visit_image(original, difference=True, **IDENTITY), "di", run="r")
    butler.put(to_masked_image(original), "tm", run="r")
    vi = butler.get("vi", collections="r")
    assert isinstance(vi, li.VisitImage) and vi.band == "r" and vi.unit == u.nJy
    assert isinstance(butler.get("di", collections="r"), li.DifferenceImage)
    planes = PixelPlanes.from_image(vi)
    assert np.array_equal(planes.image, original.image) and planes.xy0 == original.xy0
    assert abs(planes.psf_fwhm_pixels() - original.psf_fwhm_pixels()) < 0.05 * original.psf_fwhm_pixels()
    for name in ("vi", "tm"):
        cut = butler.get(name, collections="r", parameters={"bbox": Box(1010, 2005, 20, 10).to_stack()})
        cut = PixelPlanes.from_image(cut)
        assert cut.xy0 == (1010, 2005)
        assert np.array_equal(cut.image, original.image[5:15, 10:30])
        assert np.allclose(cut.pixel_to_sky([1020.0], [2010.0]), original.pixel_to_sky([1020.0], [2010.0]))


def test_sky_positions_at_detector_corners_match_the_sky_projection():
    """The full WCS (SIP included) agrees with lsst.images' SkyProjection to far better than 1 mas."""
    shape = (4000, 4000)
    wcs = sip_wcs(shape)
    planes = PixelPlanes(
        np.zeros(shape, np.float32), wcs=wcs, psf=np.ones((3, 3), np.float32) / 9, band="r", xy0=(0, 0)
    )
    visit_image = to_visit_image(planes, **IDENTITY)
    xs = np.array([0.0, shape[1] - 1.0, 0.0, shape[1] - 1.0])
    ys = np.array([0.0, 0.0, shape[0] - 1.0, shape[0] - 1.0])
    ours = PixelPlanes.from_image(visit_image).pixel_to_sky(xs, ys)
    ref = visit_image.sky_projection.pixel_to_sky(x=xs, y=ys)
    sep = np.hypot((ours[0] - ref.ra.deg) * np.cos(np.radians(ref.dec.deg)), ours[1] - ref.dec.deg) * 3.6e6
    assert sep.max() < 1.0  # mas
    # The same corners through the astropy WCS the simulation uses (SIP applied).
    astropy_sky = planes.pixel_to_sky(xs, ys)
    sep = (
        np.hypot(
            (astropy_sky[0] - ref.ra.deg) * np.cos(np.radians(ref.dec.deg)), astropy_sky[1] - ref.dec.deg
        )
        * 3.6e6
    )
    assert sep.max() < 1.0
    # SIP matters here: a TAN-only WCS is off by far more than 1 mas at the corners.
    tan = wcs.deepcopy()
    tan.sip = None
    ra, dec = tan.wcs_pix2world(xs, ys, 0)
    assert (np.hypot((ra - ref.ra.deg) * np.cos(np.radians(dec)), dec - ref.dec.deg) * 3.6e6).max() > 10.0


def test_non_lsst_images_object_is_a_clear_error():
    class ExposureF:  # what a full-stack repository hands out without a converter
        pass

    with pytest.raises(ImageError, match="Expected an lsst.images masked image.*read_afw_masked_image"):
        PixelPlanes.from_image(ExposureF())


def test_afw_written_file_reads_without_afw(tmp_path, simple_wcs):
    """The afw-free route for files the stack wrote: image, mask, variance and WCS."""
    original = make_planes(simple_wcs)
    header = simple_wcs.to_header()
    header["LTV1"], header["LTV2"] = -original.xy0[0], -original.xy0[1]
    header["BUNIT"] = "nJy"
    mask_header = fits.Header({"EXTNAME": "MASK", "MP_BAD": 0, "MP_SAT": 1})
    hdus = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(original.image, header=header, name="IMAGE"),
            fits.ImageHDU(original.mask, header=mask_header),
            fits.ImageHDU(
                original.variance,
                header=fits.Header({"LTV1": header["LTV1"], "LTV2": header["LTV2"]}),
                name="VARIANCE",
            ),
        ]
    )
    for hdu in hdus[2:]:
        hdu.header["LTV1"], hdu.header["LTV2"] = header["LTV1"], header["LTV2"]
    path = tmp_path / "calexp.fits"
    hdus.writeto(path)
    read = PixelPlanes.from_image(read_afw_masked_image(str(path), li.GeneralFrame(unit=u.pix)))
    assert read.xy0 == original.xy0 and np.array_equal(read.image, original.image)
    assert ((read.mask & read.get_plane_bitmask("SAT")) != 0).sum() == 1
    assert np.allclose(read.pixel_to_sky([1010.0], [2010.0]), original.pixel_to_sky([1010.0], [2010.0]))


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


def test_stamps_read_through_the_butler_bbox_parameter(tiny_repo):
    """cut_stamps with a reader that asks the Butler for only the needed box, and
    with the lsst.images object itself, gives the stamps cut from the whole image."""
    from lsst.daf.butler import Butler
    from lsst.meas.ml.cutouts import cut_stamps, multiband_stack

    butler = Butler.from_config(str(tiny_repo), collections="MLSim/defaults")
    ref = butler.query_datasets("visit_image", explain=False)[0]
    whole = butler.get(ref)
    planes = PixelPlanes.from_image(whole)
    x = np.array([20.0, 80.5, 3.0])
    y = np.array([30.0, 60.0, 150.0])
    expected = cut_stamps(planes, x, y, 11, bad_mask_bits=["BAD", "SAT"])
    asked = []

    def reader(box):
        asked.append(box)
        return butler.get(ref, parameters={"bbox": box.to_stack()})

    through_butler = cut_stamps(reader, x, y, 11, bbox=planes.bbox, bad_mask_bits=["BAD", "SAT"])
    direct = cut_stamps(whole, x, y, 11, bad_mask_bits=["BAD", "SAT"])
    assert asked and asked[0].width < planes.bbox.width  # only the union of the stamps was read
    for got in (through_butler, direct):
        np.testing.assert_array_equal(got.data, expected.data)
        np.testing.assert_array_equal(got.bad, expected.bad)
    stack = multiband_stack({whole.band: whole}, x, y, 11, object_mask="detected")
    assert stack.data.shape[0] == 3 and np.isfinite(stack.data).all()
