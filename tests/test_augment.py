"""The shared augmentations: exact symmetries, masks kept binary, noise and blur at the asked strength."""

import math

import numpy as np
import pytest
import torch
from lsst.meas.ml.augment import (
    EXTINCTION_COEFFICIENTS,
    AugmentConfig,
    augment,
    blur,
    dihedral,
    estimate_noise,
    geometric,
    reddening_scale,
)


def _gal(n=4, c=3, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(s) - 12.0, torch.arange(s) - 18.0, indexing="ij")
    core = torch.exp(-0.5 * (xx**2 / 9 + yy**2 / 4))
    x = core.expand(n, c, s, s).clone() + 0.01 * torch.randn(n, c, s, s, generator=g)
    return x


def test_dihedral_is_exact_and_invertible():
    x = _gal()
    k = torch.tensor([0, 1, 2, 3])
    flip = torch.tensor([False, True, False, True])
    y = dihedral(x, k, flip)
    assert torch.equal(y[0], x[0])
    assert torch.equal(y[2], torch.rot90(x[2], 2, dims=(-2, -1)))
    # Undo: turn back, then flip.
    back = torch.flip(torch.rot90(y[1], -1, dims=(-2, -1)), dims=(-1,))
    assert torch.equal(back, x[1])
    assert torch.allclose(y.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))


def test_geometric_identity_and_quarter_turn_match_exact_ones():
    x = _gal(n=2)
    same = geometric(x, torch.zeros(2), torch.ones(2), torch.zeros(2, 2), 3)
    assert torch.allclose(same, x, atol=1e-5)
    turned = geometric(x, torch.full((2,), math.pi / 2), torch.ones(2), torch.zeros(2, 2), 3)
    exact = dihedral(x, torch.ones(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool))
    exact_cw = dihedral(x, torch.full((2,), 3, dtype=torch.long), torch.zeros(2, dtype=torch.bool))
    assert min(float((turned - exact).abs().max()), float((turned - exact_cw).abs().max())) < 1e-4


def test_integer_shift_moves_the_peak():
    x = _gal(n=1, c=1)
    moved = geometric(x, torch.zeros(1), torch.ones(1), torch.tensor([[3.0, -2.0]]), 1)
    peak = np.unravel_index(int(x[0, 0].argmax()), x.shape[-2:])
    peak2 = np.unravel_index(int(moved[0, 0].argmax()), x.shape[-2:])
    assert (peak2[0] - peak[0], peak2[1] - peak[1]) == (-2, 3)


def test_masks_stay_binary_and_images_get_photometric_changes():
    x = _gal(n=8, c=5)
    x[:, 3:] = (x[:, 3:] > 0.5).float()
    g = torch.Generator().manual_seed(3)
    y = augment(x, AugmentConfig.strong(), n_image_channels=3, bands=["g", "r", "i"], generator=g)
    assert y.shape == x.shape
    masks = y[:, 3:]
    assert torch.all((masks == 0) | (masks == 1))
    assert not torch.allclose(y[:, :3], x[:, :3])


def test_reproducible_with_a_generator_and_crop():
    x = _gal(n=3)
    cfg = AugmentConfig(crop=24)
    a = augment(x, cfg, generator=torch.Generator().manual_seed(1))
    b = augment(x, cfg, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 24, 24)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="larger"):
        augment(x, AugmentConfig(crop=64))
    assert augment(x[:0], cfg).shape == (0, 3, 24, 24)


def test_noise_level_matches_the_stamp_noise():
    g = torch.Generator().manual_seed(0)
    x = 2.0 * torch.randn(64, 1, 48, 48, generator=g)
    est = estimate_noise(x)
    assert torch.allclose(est, torch.full_like(est, 2.0), rtol=0.1)
    cfg = AugmentConfig(
        rotate_flip=False,
        jitter=0,
        scale=(1, 1),
        blur_sigma=(0, 0),
        noise=(1.0, 1.0),
        max_ebv=0,
        band_scatter=0,
    )
    y = augment(x, cfg, generator=g)
    # Independent noise of the same level: the variance doubles.
    assert float(y.var()) == pytest.approx(8.0, rel=0.1)


def test_blur_keeps_flux_and_widens():
    x = torch.zeros(2, 1, 41, 41)
    x[:, 0, 20, 20] = 1.0
    y = blur(x, torch.tensor([0.0, 2.0]))
    assert torch.equal(y[0], x[0])
    assert float(y[1].sum()) == pytest.approx(1.0, rel=1e-4)
    rr = (torch.arange(41) - 20.0) ** 2
    var = float((y[1, 0].sum(dim=0) * rr).sum())
    assert var == pytest.approx(4.0, rel=0.05)


def test_reddening_follows_the_extinction_law():
    s = reddening_scale(1000, ["g", "i"], 2, 0.1, 0.0, torch.Generator().manual_seed(0))
    mag = -2.5 * torch.log10(s)
    ratio = mag[:, 0] / mag[:, 1].clamp_min(1e-9)
    ok = mag[:, 1] > 1e-4
    assert torch.allclose(
        ratio[ok], torch.tensor(EXTINCTION_COEFFICIENTS["g"] / EXTINCTION_COEFFICIENTS["i"]), rtol=1e-3
    )
    assert float(mag.max()) <= 0.1 * EXTINCTION_COEFFICIENTS["g"] + 1e-6


def test_noise_keeps_its_level_through_any_angle_rotation():
    x = torch.zeros(32, 2, 40, 40)
    cfg = AugmentConfig(
        rotate_any=True,
        jitter=1.5,
        scale=(0.9, 1.1),
        blur_sigma=(0, 0),
        noise=(1.0, 1.0),
        max_ebv=0,
        band_scatter=0,
    )
    y = augment(x, cfg, variance=torch.full((32, 2), 4.0), generator=torch.Generator().manual_seed(2))
    assert float(y.var()) == pytest.approx(4.0, rel=0.05)
