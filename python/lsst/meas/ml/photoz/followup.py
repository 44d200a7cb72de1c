"""Bayesian template-fitting follow-up of galaxies the MBRNN photo-z flags out of distribution.

An object unlike the network's training set (`PhotozFlag.OUT_OF_DISTRIBUTION`)
gets a second, physically grounded estimate: the posterior over redshift of
a fit of SED templates to its fluxes, with the nuisance parameters
marginalised:

* the template: 8 base SEDs (``CWWSB4``: the CWW+Kinney templates as
  extended by Benitez 2004, El, Sbc, Scd, Im, SB3, SB2, plus two young
  BC03 populations of 25 and 5 Myr), as shipped by ``pz-rail-base`` for
  RAIL's BPZ, and linear mixes of neighbouring ones (continuous template
  coordinate ``tau``);
* the dust: a Calzetti (2000) screen, E(B-V) from 0 to 0.3;
* the amplitude: marginalised analytically (flat prior on the flux in the
  reference band, positive; see
  `~lsst.meas.ml.models.photoz_templates.amplitude_marginal_loglike`).

The model fluxes come from a model package of family ``photoz`` and
architecture ``photoz_template_grid`` (`build_template_package`, shipped as
``data/photoz_templates.safetensors``): the templates redshifted on a grid
z = 0, 0.01, ..., 3, reddened, attenuated by the intergalactic medium
(Madau 1995) and integrated through the LSST throughputs
(``speclite`` ``lsst2023-*``) once, at packaging time.

Two samplers, both batched over objects where they can be:

* ``method="grid"`` (default): the posterior evaluated densely on the
  (z, template mix, E(B-V)) grid, in torch, a batch of objects at a time.
  With the amplitude marginalised exactly this *is* the posterior of the
  model (up to the grid resolution, 0.01 in z), so it serves as the
  asymptotically correct answer;
* ``method="mcmc"``: ``emcee``'s ensemble sampler (differential-evolution moves) on
  the continuous parameters (z, tau, E(B-V)), the amplitude still
  marginalised, with the fluxes interpolated trilinearly in the grid; the
  walkers start from draws of the grid posterior.  One ensemble per
  object, each evaluating all its walkers in one vectorised call; the
  diagnostics are the Gelman-Rubin R-hat over walkers, the effective
  sample size from the integrated autocorrelation time and the
  acceptance fraction.

Priors: uniform in z on [0, z_max], uniform over template mixes and
E(B-V).  No magnitude-dependent prior (as BPZ's, fitted on a training
set): the objects followed up are, by selection, unlike the training set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import astropy.units as u
import numpy as np
import torch
from astropy.table import Column, Table

from ..engine import select_device
from ..errors import MeasMlUserError
from ..flags import DescribedFlag
from ..models import photoz_templates as _templates
from ..packages import ModelPackage, PackageError
from .features import PhotozColumns, column_names, column_values, row_count
from .pdf import DEFAULT_COMPACT_LEVELS, pdf_quantiles, summarize_pdf
from .predict import PhotozFlag, object_ids

__all__ = [
    "DEFAULT_TEMPLATE_PACKAGE_PATH",
    "FOLLOWUP_METHODS",
    "FollowupConfig",
    "FollowupError",
    "PhotozBayesFlag",
    "build_template_package",
    "calzetti_k",
    "dc2_validation_path",
    "empty_followup_table",
    "followup_photoz",
    "followup_quality",
    "gelman_rubin",
    "grid_posterior",
    "madau_transmission",
    "mcmc_posterior",
    "redshift_log_prior",
    "select_followup",
    "template_package",
]

_log = logging.getLogger(__name__)

#: The template grid shipped with meas_ml.
DEFAULT_TEMPLATE_PACKAGE_PATH = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "data", "photoz_templates.safetensors"
)

#: Posterior samplers.
FOLLOWUP_METHODS = ("grid", "mcmc")

#: Templates (in order from red to blue) of the ``CWWSB4.list`` of RAIL's BPZ.
CWWSB4_TEMPLATES = (
    "El_B2004a",
    "Sbc_B2004a",
    "Scd_B2004a",
    "Im_B2004a",
    "SB3_B2004a",
    "SB2_B2004a",
    "ssp_25Myr_z008",
    "ssp_5Myr_z008",
)


class FollowupError(MeasMlUserError, ValueError):
    """Raised for unusable follow-up inputs, settings or template packages."""


class PhotozBayesFlag(DescribedFlag):
    """Bits of the ``photoz_bayes_flags`` column, with their descriptions."""

    NO_DATA = 1, "fewer than two usable bands; estimates are NaN"
    MISSING_BAND = (
        2,
        ("at least one band has no usable flux (non-finite, or a non-positive error); fitted without"),
    )
    POOR_FIT = 4, "best-fit chi-square improbable (p < 0.001): the templates do not describe the fluxes"
    NOT_CONVERGED = 8, "MCMC: R-hat above the limit or too few effective samples"
    AT_Z_MAX = 16, "more than 5% of the posterior within 0.1 of the upper end of the redshift range"
    USER_SELECTED = (
        32,
        ("followed up because its id was requested, not because it was flagged out of distribution"),
    )


@dataclasses.dataclass
class FollowupConfig:
    """Settings of the follow-up posterior.

    Attributes
    ----------
    method : `str`
        ``"grid"`` or ``"mcmc"`` (see the module documentation).
    error_floor : `float`
        Fractional flux error added in quadrature (template mismatch and
        calibration), e.g. 0.03 for 3%.
    batch_size : `int`
        Objects per batch of the grid posterior.
    levels : `tuple` [`float`]
        Probability levels of ``photoz_bayes_quantiles``.
    prior : `str`
        ``"magnitude"``: the redshift prior ``p(z | m) ~ z^alpha
        exp(-(z / z_m)^alpha)``, ``z_m = prior_z0 + prior_km (m - 20)``,
        with ``m`` the AB magnitude in the reference band (of the flux, or
        of its error for a non-detection; flat where that band is
        unusable); ``"flat"``: uniform in z.
    prior_alpha, prior_z0, prior_km : `float`
        Parameters of the magnitude prior (default: the maximum-likelihood
        fit to the i magnitudes and redshifts of RAIL's cosmoDC2 training
        file, 10,225 galaxies).
    n_walkers, n_steps, n_burn : `int`
        MCMC: walkers, steps per walker, and steps discarded as burn-in.
    rhat_max : `float`
        MCMC: R-hat above which NOT_CONVERGED is set.
    min_n_eff : `float`
        MCMC: effective sample size below which NOT_CONVERGED is set.
    seed : `int`
        Random seed of the MCMC.
    device : `str`
        ``"auto"`` (CUDA when present), ``"cpu"`` or a torch device.
    """

    method: str = "grid"
    error_floor: float = 0.05
    batch_size: int = 128
    levels: tuple[float, ...] = DEFAULT_COMPACT_LEVELS
    prior: str = "flat"
    prior_alpha: float = 1.5
    prior_z0: float = 0.35
    prior_km: float = 0.08
    n_walkers: int = 32
    n_steps: int = 1000
    n_burn: int = 400
    rhat_max: float = 1.1
    min_n_eff: float = 50.0
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        """Raise `FollowupError` for invalid settings."""
        if self.method not in FOLLOWUP_METHODS:
            raise FollowupError(f"method must be one of {FOLLOWUP_METHODS}, got {self.method!r}.")
        if not 0.0 <= self.error_floor < 1.0:
            raise FollowupError(f"error_floor must lie in [0, 1), got {self.error_floor}.")
        if self.prior not in ("magnitude", "flat"):
            raise FollowupError(f"prior must be 'magnitude' or 'flat', got {self.prior!r}.")
        if self.batch_size < 1:
            raise FollowupError(f"batch_size must be positive, got {self.batch_size}.")
        if any(not 0.0 < level < 1.0 for level in self.levels):
            raise FollowupError(f"levels must lie strictly between 0 and 1, got {list(self.levels)}.")
        if self.n_walkers < 8 or self.n_walkers % 2:
            raise FollowupError(f"n_walkers must be an even number of at least 8, got {self.n_walkers}.")
        if not 0 <= self.n_burn < self.n_steps:
            raise FollowupError(f"n_burn must lie in [0, n_steps), got {self.n_burn} and {self.n_steps}.")


# ----------------------------------------------------------------------
# Building the template grid


def calzetti_k(wave_um: np.ndarray) -> np.ndarray:
    """Return the Calzetti et al. (2000) attenuation curve k(lambda), R_V = 4.05.

    Parameters
    ----------
    wave_um : `numpy.ndarray`
        Rest-frame wavelengths in micron.

    Returns
    -------
    k : `numpy.ndarray`
        A(lambda) / E(B-V); held at its 0.12 micron value bluewards and
        clipped at zero redwards.
    """
    lam = np.clip(np.asarray(wave_um, dtype=np.float64), 0.12, None)
    short = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam**2 + 0.011 / lam**3) + 4.05
    long = 2.659 * (-1.857 + 1.040 / lam) + 4.05
    return np.clip(np.where(lam < 0.63, short, long), 0.0, None)


def madau_transmission(wave_obs: np.ndarray, z: float) -> np.ndarray:
    """Return the mean intergalactic transmission of Madau (1995) for a source at ``z``.

    Lyman-series line blanketing (Ly alpha to delta) and the photoelectric
    absorption by Lyman-limit systems (Madau 1995, eq. 15 and 16 and the
    footnote approximation of the continuum).

    Parameters
    ----------
    wave_obs : `numpy.ndarray`
        Observed wavelengths in Angstrom.
    z : `float`
        Source redshift.

    Returns
    -------
    transmission : `numpy.ndarray`
        Mean transmission exp(-tau_eff), between 0 and 1.
    """
    lam = np.asarray(wave_obs, dtype=np.float64)
    tau = np.zeros_like(lam)
    for line, coeff in ((1215.67, 3.6e-3), (1025.72, 1.7e-3), (972.54, 1.2e-3), (949.74, 9.3e-4)):
        inside = lam < line * (1.0 + z)
        tau[inside] += coeff * (lam[inside] / line) ** 3.46
    xc = lam / 911.75
    xe = 1.0 + z
    below = xc < xe
    x = xc[below]
    tau[below] += (
        0.25 * x**3 * (xe**0.46 - x**0.46)
        + 9.4 * x**1.5 * (xe**0.18 - x**0.18)
        - 0.7 * x**3 * (x**-1.32 - xe**-1.32)
        - 0.023 * (xe**1.68 - x**1.68)
    )
    return np.exp(-np.clip(tau, 0.0, 700.0))


def _read_sed(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path)
    order = np.argsort(data[:, 0])
    return data[order, 0], data[order, 1]


def _band_fluxes(
    wave_rest: np.ndarray, flam: np.ndarray, z: float, filters: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Flux density (f_nu, arbitrary units) of a rest-frame SED at ``z`` through each filter."""
    out = np.empty(len(filters))
    for k, (wave, resp) in enumerate(filters):
        rest = wave / (1.0 + z)
        f = np.interp(rest, wave_rest, flam, left=0.0, right=0.0) * madau_transmission(wave, z)
        # <f_nu> = int f_lambda S lambda dlambda / int S c / lambda dlambda (c dropped: a constant).
        out[k] = np.trapezoid(f * resp * wave, wave) / np.trapezoid(resp / wave, wave)
    return out


def build_template_package(
    sed_dir: str,
    *,
    templates: Sequence[str] = CWWSB4_TEMPLATES,
    bands: Sequence[str] = tuple("ugrizy"),
    filter_prefix: str = "lsst2023",
    reference_band: str = "i",
    z_max: float = 3.0,
    dz: float = 0.01,
    ebv: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
    n_interp: int = 2,
    filter_dir: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> ModelPackage:
    """Integrate SED templates through the band throughputs into a template-grid package.

    Needs ``speclite`` (for the filter curves); the package, once built,
    needs neither it nor the SED files.

    Parameters
    ----------
    sed_dir : `str`
        Folder of the ``<name>.sed`` files (two columns: wavelength in
        Angstrom, f_lambda), e.g. the ``SED`` folder of RAIL's example data.
    templates : `~collections.abc.Sequence` [`str`], optional
        Template names, in the order in which neighbours are mixed.
    bands : `~collections.abc.Sequence` [`str`], optional
        Bands, in wavelength order.
    filter_prefix : `str`, optional
        ``speclite`` filter group (``lsst2023``: the LSSTCam throughputs).
    reference_band : `str`, optional
        Band in which every model is normalised to 1.
    z_max, dz : `float`, optional
        Redshift grid 0, dz, ..., z_max.
    ebv : `~collections.abc.Sequence` [`float`], optional
        E(B-V) values (equally spaced, starting at 0).
    n_interp : `int`, optional
        Template mixes inserted between neighbours on the grid.
    filter_dir : `str`, optional
        Instead of ``speclite``: a folder of ``<filter_prefix>_<band>.res``
        files (wavelength in Angstrom, or in nm if the first is below
        1000, and transmission), e.g. RAIL's ``FILTER`` folder with
        ``filter_prefix="DC2LSST"`` (the throughputs of cosmoDC2).
    provenance : `dict`, optional
        Extra provenance (e.g. the package that shipped the SEDs).

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        Family ``photoz``, architecture ``photoz_template_grid``.

    Raises
    ------
    FollowupError
        If an SED file is missing or ``reference_band`` is not a band.
    """
    if reference_band not in bands:
        raise FollowupError(f"reference_band {reference_band!r} is not one of the bands {list(bands)}.")
    filters = []
    for band in bands:
        if filter_dir:
            curve = np.loadtxt(os.path.join(filter_dir, f"{filter_prefix}_{band}.res"))
            wave = curve[:, 0] * (10.0 if curve[0, 0] < 1000 else 1.0)
            filters.append((wave, np.clip(curve[:, 1], 0.0, None)))
        else:
            import speclite.filters

            resp = speclite.filters.load_filter(f"{filter_prefix}-{band}")
            filters.append((np.asarray(resp.wavelength, np.float64), np.asarray(resp.response, np.float64)))
    z = np.round(np.arange(0.0, z_max + 0.5 * dz, dz), 10)
    ebv_grid = np.asarray(ebv, dtype=np.float64)
    fluxes = np.zeros((z.size, len(templates), ebv_grid.size, len(bands)))
    for t, name in enumerate(templates):
        path = os.path.join(sed_dir, f"{name}.sed")
        if not os.path.exists(path):
            raise FollowupError(f"SED template {path} not found.")
        wave, flam = _read_sed(path)
        k = calzetti_k(wave / 1e4)
        for d, e in enumerate(ebv_grid):
            reddened = flam * 10.0 ** (-0.4 * k * e)
            for i, zi in enumerate(z):
                fluxes[i, t, d] = _band_fluxes(wave, reddened, max(float(zi), 1e-4), filters)
    ref = fluxes[..., list(bands).index(reference_band)][..., None]
    fluxes = fluxes / ref
    model = _templates.TemplateGrid(
        n_z=z.size, n_templates=len(templates), n_ebv=ebv_grid.size, n_bands=len(bands), n_interp=n_interp
    )
    model.redshift.copy_(torch.from_numpy(z))
    model.ebv.copy_(torch.from_numpy(ebv_grid))
    model.fluxes.copy_(torch.from_numpy(fluxes.astype(np.float32)))
    prov = {
        "templates": list(templates),
        "sed_source": "CWWSB4 templates of RAIL's BPZ (pz-rail-base: rail/examples_data/estimation_data/data/"
        "SED; MIT License, LSST DESC): Coleman, Wu & Weedman (1980) and Kinney et al. (1996) templates "
        "as extended by Benitez (2004), and two Bruzual & Charlot (2003) young populations",
        "filters": (
            f"{filter_prefix}_[{''.join(bands)}].res"
            if filter_dir
            else f"speclite {filter_prefix}-[{''.join(bands)}]"
        ),
        "dust": "Calzetti et al. (2000), R_V = 4.05",
        "igm": "Madau (1995)",
    }
    prov.update(provenance or {})
    return ModelPackage.from_model(
        model,
        family="photoz",
        architecture="photoz_template_grid",
        hyperparameters={
            "n_z": int(z.size),
            "n_templates": len(templates),
            "n_ebv": int(ebv_grid.size),
            "n_bands": len(bands),
            "n_interp": int(n_interp),
        },
        inputs={"bands": list(bands), "reference_band": reference_band, "flux_unit": "nJy"},
        outputs={"template_names": list(templates), "z_max": float(z[-1])},
        version="1.0.0",
        provenance=prov,
        name="photoz-templates-cwwsb4",
    )


def template_package(path: str | os.PathLike[str] | None = None) -> ModelPackage:
    """Load a template-grid package (default: the one shipped with meas_ml).

    Parameters
    ----------
    path : path-like, optional
        Package file; `None` for `DEFAULT_TEMPLATE_PACKAGE_PATH`.

    Returns
    -------
    package : `~lsst.meas.ml.packages.ModelPackage`
        The verified package.

    Raises
    ------
    PackageError
        If the file is missing or not a ``photoz_template_grid`` package.
    """
    path = os.fspath(path) if path else DEFAULT_TEMPLATE_PACKAGE_PATH
    if not os.path.exists(path):
        raise PackageError(f"Template package {path} not found (build one with meas-ml photoz-templates).")
    package = ModelPackage.load(path)
    package.check_family("photoz", purpose="the photo-z follow-up")
    if package.architecture != "photoz_template_grid":
        raise PackageError(
            f"Package {package.name!r} has architecture {package.architecture!r}, not the "
            "template grid 'photoz_template_grid' of the follow-up."
        )
    return package


# ----------------------------------------------------------------------
# Posteriors


def _prepare(fluxes: np.ndarray, errors: np.ndarray, error_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero the unusable bands and return (flux, inverse variance) in float64."""
    f = np.asarray(fluxes, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    usable = np.isfinite(f) & np.isfinite(e) & (e > 0)
    var = np.where(usable, e**2 + (error_floor * np.where(usable, f, 0.0)) ** 2, 1.0)
    ivar = np.where(usable, 1.0 / var, 0.0)
    return np.where(usable, f, 0.0), ivar


def _z_edges(z: np.ndarray) -> np.ndarray:
    mid = 0.5 * (z[1:] + z[:-1])
    return np.concatenate([[z[0]], mid, [z[-1]]])


def grid_posterior(
    grid: torch.nn.Module,
    fluxes: np.ndarray,
    errors: np.ndarray,
    *,
    error_floor: float = 0.05,
    batch_size: int = 128,
    device: str = "auto",
    log_prior: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate the posterior of each object on the whole (z, template mix, E(B-V)) grid.

    Parameters
    ----------
    grid : `~lsst.meas.ml.models.photoz_templates.TemplateGrid`
        The template grid (``template_package().build_model()``).
    fluxes, errors : `numpy.ndarray`, ``(N, n_bands)``
        Fluxes and 1-sigma errors in nJy; non-finite values or non-positive
        errors mark a band as unusable for that object.
    error_floor : `float`, optional
        Fractional error added in quadrature.
    batch_size : `int`, optional
        Objects per batch.
    device : `str`, optional
        ``"auto"``, ``"cpu"`` or a torch device.
    log_prior : `numpy.ndarray`, ``(N, n_z)``, optional
        Log prior density of z at the grid points (`redshift_log_prior`);
        default flat.

    Returns
    -------
    result : `dict` [`str`, `numpy.ndarray`]
        ``pdf`` ``(N, n_z)``: probability per redshift cell (edges
        ``edges``, midpoints of the grid); ``joint`` ``(N, n_z, n_mix,
        n_ebv)`` is not returned (too large) but its marginals are:
        ``tau`` (posterior mean of the template coordinate), ``ebv``
        (posterior mean E(B-V)), ``chi2`` (best chi-square over the grid),
        ``best_tau``; ``edges`` ``(n_z + 1,)``; ``n_bands`` (usable bands).
    """
    dev = select_device(device)
    f, w = _prepare(fluxes, errors, error_floor)
    n = f.shape[0]
    z = grid.redshift.double().numpy()
    edges = _z_edges(z)
    log_dz = torch.log(torch.from_numpy(np.diff(edges))).to(dev)
    grid = grid.to(dev)
    mixed = grid.mixed(torch.float64)  # (Z, K, D, B)
    n_mix = mixed.shape[1]
    tau_values = torch.arange(n_mix, dtype=torch.float64, device=dev) / (grid.n_interp + 1)
    ebv_values = grid.ebv.to(dev, torch.float64)
    pdf = np.zeros((n, z.size))
    tau_mean = np.full(n, np.nan)
    ebv_mean = np.full(n, np.nan)
    chi2 = np.full(n, np.nan)
    best_tau = np.full(n, np.nan)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        ft = torch.from_numpy(f[start:stop]).to(dev)
        wt = torch.from_numpy(w[start:stop]).to(dev)
        loglike, c2 = _templates.amplitude_marginal_loglike(ft, wt, mixed)  # (b, Z, K, D)
        logpost = loglike + log_dz[None, :, None, None]
        if log_prior is not None:
            logpost = logpost + torch.from_numpy(log_prior[start:stop]).to(dev)[:, :, None, None]
        logpost = logpost - logpost.amax(dim=(1, 2, 3), keepdim=True)
        post = torch.exp(logpost)
        post = post / post.sum(dim=(1, 2, 3), keepdim=True)
        pdf[start:stop] = post.sum(dim=(2, 3)).cpu().numpy()
        tau_mean[start:stop] = (post.sum(dim=(1, 3)) @ tau_values).cpu().numpy()
        ebv_mean[start:stop] = (post.sum(dim=(1, 2)) @ ebv_values).cpu().numpy()
        flat = c2.reshape(c2.shape[0], -1)
        best = flat.argmin(dim=1)
        chi2[start:stop] = flat.gather(1, best[:, None])[:, 0].cpu().numpy()
        best_tau[start:stop] = tau_values[(best // ebv_values.numel()) % n_mix].cpu().numpy()
    return {
        "pdf": pdf,
        "edges": edges,
        "tau": tau_mean,
        "ebv": ebv_mean,
        "chi2": chi2,
        "best_tau": best_tau,
        "n_bands": (w > 0).sum(axis=1),
    }


class _Interpolator:
    """Trilinear interpolation of the base-template fluxes in (z, tau, E(B-V)) (numpy, float64)."""

    def __init__(self, grid: torch.nn.Module) -> None:
        self.z = grid.redshift.double().numpy()
        self.ebv = grid.ebv.double().numpy()
        self.fluxes = grid.fluxes.double().numpy()  # (Z, T, D, B)
        self.n_t = self.fluxes.shape[1]
        self.dz = float(self.z[1] - self.z[0])
        self.de = float(self.ebv[1] - self.ebv[0]) if self.ebv.size > 1 else 1.0
        if not np.allclose(np.diff(self.z), self.dz) or (
            self.ebv.size > 1 and not np.allclose(np.diff(self.ebv), self.de)
        ):
            raise FollowupError("The MCMC needs a template grid equally spaced in z and E(B-V).")
        self.lower = np.array([self.z[0], 0.0, self.ebv[0]])
        self.upper = np.array([self.z[-1], self.n_t - 1.0, self.ebv[-1]])

    @staticmethod
    def _cell(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.clip(np.floor(x).astype(np.int64), 0, max(n - 2, 0))
        return i, np.clip(x - i, 0.0, 1.0) if n > 1 else np.zeros_like(x)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        zi, zf = self._cell((theta[:, 0] - self.z[0]) / self.dz, self.z.size)
        ti, tf = self._cell(theta[:, 1], self.n_t)
        ei, ef = self._cell((theta[:, 2] - self.ebv[0]) / self.de, self.ebv.size)
        out = 0.0
        for a, wa in ((zi, 1 - zf), (np.minimum(zi + 1, self.z.size - 1), zf)):
            for b, wb in ((ti, 1 - tf), (np.minimum(ti + 1, self.n_t - 1), tf)):
                for c, wc in ((ei, 1 - ef), (np.minimum(ei + 1, self.ebv.size - 1), ef)):
                    out = out + (wa * wb * wc)[:, None] * self.fluxes[a, b, c]
        return out


def redshift_log_prior(
    z: np.ndarray, ref_flux: np.ndarray, ref_err: np.ndarray, config: FollowupConfig
) -> np.ndarray:
    """Return the log prior density of z for each object (see `FollowupConfig.prior`).

    Parameters
    ----------
    z : `numpy.ndarray`
        Redshifts (a grid of ``n_z``, or ``(N, k)`` values).
    ref_flux, ref_err : `numpy.ndarray`, ``(N,)``
        Flux and error (nJy) in the reference band.
    config : `FollowupConfig`
        Prior settings.

    Returns
    -------
    log_prior : `numpy.ndarray`, ``(N, n_z)`` or ``(N, k)``
        Unnormalised log density; 0 everywhere for a flat prior or an
        unusable reference band, -inf at z = 0 otherwise.
    """
    n = np.asarray(ref_flux).size
    z = np.asarray(z, dtype=np.float64)
    z = np.broadcast_to(z, (n, z.size)) if z.ndim == 1 else z
    if config.prior == "flat":
        return np.zeros(z.shape)
    f = np.asarray(ref_flux, dtype=np.float64)
    e = np.asarray(ref_err, dtype=np.float64)
    usable = np.isfinite(f) & np.isfinite(e) & (e > 0)
    level = np.where(usable, np.maximum(np.where(usable, f, 1.0), np.where(usable, e, 1.0)), 1.0)
    mag = 31.4 - 2.5 * np.log10(level)
    zm = np.clip(config.prior_z0 + config.prior_km * (mag - 20.0), 0.02, None)[:, None]
    a = config.prior_alpha
    with np.errstate(divide="ignore"):
        out = a * np.log(z) - (z / zm) ** a
    return np.where(usable[:, None], out, 0.0)


def _log_prob_factory(interp: _Interpolator, f: np.ndarray, w: np.ndarray, prior: Any = None) -> Any:
    from scipy.special import log_ndtr

    sff = float((w * f * f).sum())

    def log_prob(theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        inside = np.all((theta >= interp.lower) & (theta <= interp.upper), axis=1)
        out = np.full(theta.shape[0], -np.inf)
        if inside.any():
            m = interp(theta[inside])
            a = np.clip((m * m) @ w, 1e-300, None)
            b = m @ (w * f)
            chi2 = np.clip(sff - b * b / a, 0.0, None)
            out[inside] = -0.5 * chi2 - 0.5 * np.log(a) + log_ndtr(b / np.sqrt(a))
            if prior is not None:
                out[inside] += prior(theta[inside, 0])
        return out

    return log_prob


def gelman_rubin(chains: np.ndarray) -> float:
    """Return the split Gelman-Rubin R-hat of one parameter.

    Parameters
    ----------
    chains : `numpy.ndarray`, ``(n_chains, n_steps)``
        Samples per chain (for an ensemble sampler: per walker); each chain
        is split in halves, as in Gelman et al. (2013).

    Returns
    -------
    rhat : `float`
        The potential scale reduction factor (1 at convergence); NaN for
        fewer than 4 steps, 1 for chains that are all constant and equal.
    """
    chains = np.asarray(chains, dtype=np.float64)
    n = chains.shape[1] // 2
    if n < 2:
        return float("nan")
    split = np.concatenate([chains[:, :n], chains[:, n : 2 * n]], axis=0)
    within = split.var(axis=1, ddof=1).mean()
    between = n * split.mean(axis=1).var(ddof=1)
    if within <= 0:
        return 1.0 if between <= 0 else float("inf")
    var_plus = (n - 1) / n * within + between / n
    return float(math.sqrt(var_plus / within))


def _reference(grid: torch.nn.Module, fluxes: np.ndarray, errors: np.ndarray) -> tuple[int, tuple]:
    """Index of the reference band (where every model is 1) and its fluxes and errors."""
    ones = np.isclose(grid.fluxes.double().numpy().reshape(-1, grid.fluxes.shape[-1]), 1.0).all(axis=0)
    ref = int(np.flatnonzero(ones)[0]) if ones.any() else 0
    return ref, (np.asarray(fluxes)[:, ref], np.asarray(errors)[:, ref])


def _object_prior(prior_args: tuple, i: int, config: FollowupConfig) -> Any:
    if config.prior == "flat":
        return None
    f, e = prior_args[0][i : i + 1], prior_args[1][i : i + 1]

    def prior(z: np.ndarray) -> np.ndarray:
        return redshift_log_prior(np.asarray(z)[None, :], f, e, config)[0]

    return prior


def mcmc_posterior(
    grid: torch.nn.Module,
    fluxes: np.ndarray,
    errors: np.ndarray,
    config: FollowupConfig,
    *,
    initial: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Sample the posterior of each object with ``emcee``.

    Parameters
    ----------
    grid : `~lsst.meas.ml.models.photoz_templates.TemplateGrid`
        The template grid.
    fluxes, errors : `numpy.ndarray`, ``(N, n_bands)``
        Fluxes and errors in nJy (see `grid_posterior`).
    config : `FollowupConfig`
        Walkers, steps, burn-in, seed and error floor.
    initial : `dict`, optional
        The `grid_posterior` of the same objects, whose redshift PDF the
        walkers start from (computed if not given).

    Returns
    -------
    result : `dict` [`str`, `numpy.ndarray`]
        ``samples`` ``(N, n_kept)`` redshift samples (NaN rows for objects
        with fewer than two bands), ``tau``, ``ebv`` (posterior means),
        ``rhat``, ``n_eff``, ``acceptance`` per object.

    Raises
    ------
    FollowupError
        If ``emcee`` is not installed.
    """
    try:
        import emcee
    except ImportError as exc:
        raise FollowupError(
            "The MCMC follow-up needs emcee (pip install emcee); method='grid' does not."
        ) from exc
    grid = grid.cpu()
    _, prior_args = _reference(grid, fluxes, errors)
    if initial is None:
        initial = grid_posterior(
            grid,
            fluxes,
            errors,
            error_floor=config.error_floor,
            device="cpu",
            log_prior=redshift_log_prior(grid.redshift.double().numpy(), *prior_args, config),
        )
    interp = _Interpolator(grid)
    f_all, w_all = _prepare(fluxes, errors, config.error_floor)
    n = f_all.shape[0]
    kept = (config.n_steps - config.n_burn) * config.n_walkers
    samples = np.full((n, kept), np.nan)
    out = {key: np.full(n, np.nan) for key in ("tau", "ebv", "rhat", "n_eff", "acceptance")}
    rng = np.random.default_rng(config.seed)
    edges = initial["edges"]
    for i in range(n):
        if (w_all[i] > 0).sum() < 2:
            continue
        p = initial["pdf"][i] / initial["pdf"][i].sum()
        cells = rng.choice(p.size, size=config.n_walkers, p=p)
        start = np.column_stack(
            [
                rng.uniform(edges[cells], edges[cells + 1]),
                np.clip(initial["tau"][i] + rng.normal(0.0, 0.3, config.n_walkers), 0.0, interp.upper[1]),
                np.clip(
                    initial["ebv"][i] + rng.normal(0.0, 0.03, config.n_walkers),
                    interp.lower[2],
                    interp.upper[2],
                ),
            ]
        )
        sampler = emcee.EnsembleSampler(
            config.n_walkers,
            3,
            _log_prob_factory(interp, f_all[i], w_all[i], prior=_object_prior(prior_args, i, config)),
            vectorize=True,
            moves=[(emcee.moves.DEMove(), 0.8), (emcee.moves.DESnookerMove(), 0.2)],
        )
        sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
        sampler.run_mcmc(start, config.n_steps, progress=False)
        chain = sampler.get_chain(discard=config.n_burn)  # (steps, walkers, 3)
        samples[i] = chain[:, :, 0].reshape(-1)
        out["tau"][i] = chain[:, :, 1].mean()
        out["ebv"][i] = chain[:, :, 2].mean()
        out["rhat"][i] = gelman_rubin(chain[:, :, 0].T)
        tau_ac = emcee.autocorr.integrated_time(chain[:, :, :1], tol=0)[0]
        out["n_eff"][i] = chain.shape[0] * chain.shape[1] / max(float(tau_ac), 1.0)
        out["acceptance"][i] = float(np.mean(sampler.acceptance_fraction))
    out["samples"] = samples
    return out


# ----------------------------------------------------------------------
# Selection and the output table


def select_followup(
    photoz: Any, *, extra_ids: Iterable[Any] = (), id_column: str = "objectId", all_rows: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ids to follow up: the out-of-distribution rows of a photo-z table, and requested ones.

    Parameters
    ----------
    photoz : table-like
        A table with ``id_column`` and ``photoz_flags``.
    extra_ids : `~collections.abc.Iterable`, optional
        Further ids to follow up whatever their flags.
    id_column : `str`, optional
        Object id column.
    all_rows : `bool`, optional
        Follow up every row.

    Returns
    -------
    ids : `numpy.ndarray`
        Ids to follow up, in the order of ``photoz`` (requested ids absent
        from it are left out and logged).
    user_selected : `numpy.ndarray` [`bool`]
        True for ids selected only because they were requested.

    Raises
    ------
    FollowupError
        If the table lacks ``id_column`` or ``photoz_flags``.
    """
    names = column_names(photoz)
    for name in (id_column,) if all_rows else (id_column, "photoz_flags"):
        if name not in names:
            raise FollowupError(f"The photo-z table lacks the column {name!r} (has {names[:10]}...).")
    ids = column_values(photoz, id_column, dtype=None)
    if all_rows:
        return ids, np.zeros(ids.size, dtype=bool)
    flags = column_values(photoz, "photoz_flags", dtype=np.int64)
    ood = (flags & int(PhotozFlag.OUT_OF_DISTRIBUTION)) != 0
    extra = list(extra_ids)
    requested = np.isin(ids, np.asarray(extra, dtype=ids.dtype)) if extra else np.zeros(ids.size, bool)
    if extra:
        missing = set(extra) - set(ids[requested].tolist())
        if missing:
            _log.warning(
                "%d requested object ids are not in the photo-z table: %s",
                len(missing),
                sorted(missing, key=repr)[:10],
            )
    keep = ood | requested
    return ids[keep], (requested & ~ood)[keep]


def _columns_doc() -> dict[str, str]:
    return {
        "mean": "Posterior mean redshift of the template fit.",
        "median": "Posterior median redshift.",
        "mode": "Posterior mode (grid posterior).",
        "std": "Posterior standard deviation of the redshift.",
        "lo68": "16th percentile of the redshift posterior.",
        "hi68": "84th percentile of the redshift posterior.",
    }


def empty_followup_table(
    levels: Sequence[float] = DEFAULT_COMPACT_LEVELS, id_dtype: Any = np.int64, id_column: str = "objectId"
) -> Table:
    """Return a follow-up table with no rows and every column.

    Parameters
    ----------
    levels : `~collections.abc.Sequence` [`float`], optional
        Quantile levels (sets the width of ``photoz_bayes_quantiles``).
    id_dtype : `numpy.dtype`, optional
        Type of the id column.
    id_column : `str`, optional
        Id column name.

    Returns
    -------
    table : `astropy.table.Table`
        Zero rows, the columns and meta of `followup_photoz`.
    """
    return _assemble(np.zeros(0, dtype=id_dtype), {}, np.zeros(0, np.int32), levels, id_column)


def _assemble(
    ids: np.ndarray, values: dict[str, np.ndarray], flags: np.ndarray, levels: Sequence[float], id_column: str
) -> Table:
    n = ids.size
    nan = np.full(n, np.nan, dtype=np.float32)
    out = Table()
    out[id_column] = Column(ids, description="Object identifier.")
    for key, doc in _columns_doc().items():
        out[f"photoz_bayes_{key}"] = Column(
            values.get(key, nan).astype(np.float32), unit=u.dimensionless_unscaled, description=doc
        )
    quantiles = values.get("quantiles", np.full((n, len(levels)), np.nan))
    out["photoz_bayes_quantiles"] = Column(
        np.asarray(quantiles, dtype=np.float32).reshape(n, len(levels)),
        unit=u.dimensionless_unscaled,
        description="Redshift posterior quantiles at the levels in meta['photoz_bayes_quantile_levels'].",
    )
    extra_docs = {
        "template": "Posterior mean of the template coordinate (0 to n_templates - 1, mixes in between; "
        "names in meta['photoz_bayes_templates']).",
        "ebv": "Posterior mean E(B-V) of the Calzetti dust screen.",
        "chi2": "Best-fit chi-square over the grid (amplitude free).",
        "rhat": "MCMC: split Gelman-Rubin R-hat of z over walkers (NaN for the grid posterior).",
        "n_eff": "MCMC: effective number of independent z samples (NaN for the grid posterior).",
        "acceptance": "MCMC: mean acceptance fraction of the walkers (NaN for the grid posterior).",
    }
    for key, doc in extra_docs.items():
        out[f"photoz_bayes_{key}"] = Column(values.get(key, nan).astype(np.float32), description=doc)
    out["photoz_bayes_n_bands"] = Column(
        values.get("n_bands", np.zeros(n)).astype(np.int16), description="Bands used in the fit."
    )
    out["photoz_bayes_flags"] = Column(
        flags.astype(np.int32),
        description="Bit flags: " + "; ".join(f"{int(f)}={f.name}" for f in PhotozBayesFlag),
    )
    out.meta["photoz_bayes_quantile_levels"] = [float(v) for v in levels]
    out.meta["photoz_bayes_flag_bits"] = PhotozBayesFlag.bits()
    out.meta["photoz_bayes_flag_descriptions"] = PhotozBayesFlag.descriptions()
    return out


def followup_photoz(
    templates: ModelPackage,
    table: Any,
    columns: PhotozColumns | None = None,
    *,
    config: FollowupConfig | None = None,
    user_selected: np.ndarray | None = None,
) -> Table:
    """Compute the Bayesian template-fit redshift posterior of every row of ``table``.

    Parameters
    ----------
    templates : `~lsst.meas.ml.packages.ModelPackage`
        A template-grid package (`template_package`).
    table : table-like
        Fluxes and errors (nJy) of the objects to follow up (already
        selected, e.g. with `select_followup`).
    columns : `~lsst.meas.ml.photoz.features.PhotozColumns`, optional
        Column names; their bands must equal the package's.  Default: the
        package's bands with the default templates.
    config : `FollowupConfig`, optional
        Sampler settings (default: the grid posterior).
    user_selected : `numpy.ndarray` [`bool`], optional
        Rows to flag USER_SELECTED.

    Returns
    -------
    catalog : `astropy.table.Table`
        One row per input row: id, ``photoz_bayes_*`` columns, flags; meta
        holds the quantile levels, flag bits, method, template names,
        seconds per object and the template package's provenance.

    Raises
    ------
    FollowupError
        For invalid settings, or bands that differ from the package's.
    PhotozInputError
        If the table lacks a flux column or it is not numeric.
    """
    config = config or FollowupConfig()
    config.check()
    bands = list(templates.inputs["bands"])
    columns = columns or PhotozColumns(bands=tuple(bands))
    if list(columns.bands) != bands:
        raise FollowupError(
            f"The template package {templates.name!r} has bands {bands}; the input is "
            f"configured with {list(columns.bands)}."
        )
    if templates.architecture != "photoz_template_grid":
        raise FollowupError(f"Package {templates.name!r} is not a template grid ({templates.architecture}).")
    levels = [float(v) for v in config.levels]
    n = row_count(table)
    ids = object_ids(table, columns)
    if n == 0:
        out = empty_followup_table(levels, ids.dtype, columns.id_column)
    else:
        t0 = time.perf_counter()
        inputs = columns.extract(table)
        nb = len(bands)
        fluxes, errors = inputs[:, :nb], inputs[:, nb : 2 * nb]
        grid = templates.build_model()
        _, prior_args = _reference(grid, fluxes, errors)
        log_prior = redshift_log_prior(grid.redshift.double().numpy(), *prior_args, config)
        post = grid_posterior(
            grid,
            fluxes,
            errors,
            error_floor=config.error_floor,
            batch_size=config.batch_size,
            device=config.device,
            log_prior=log_prior,
        )
        edges = post["edges"]
        no_data = post["n_bands"] < 2
        flags = np.zeros(n, dtype=np.int32)
        flags[no_data] |= PhotozBayesFlag.NO_DATA
        flags[post["n_bands"] < nb] |= PhotozBayesFlag.MISSING_BAND
        if user_selected is not None:
            flags[np.asarray(user_selected, bool)] |= PhotozBayesFlag.USER_SELECTED
        pdf = post["pdf"]
        pdf[no_data] = np.nan
        summary = summarize_pdf(pdf, edges)
        values = {key: summary[key] for key in ("mean", "median", "mode", "std", "lo68", "hi68")}
        values["quantiles"] = pdf_quantiles(pdf, edges, levels)
        values.update(template=post["tau"], ebv=post["ebv"], chi2=post["chi2"], n_bands=post["n_bands"])
        z_top = edges[-1] - 0.1
        centres = 0.5 * (edges[1:] + edges[:-1])
        with np.errstate(invalid="ignore"):
            at_top = np.nan_to_num(pdf[:, centres > z_top].sum(axis=1), nan=0.0) > 0.05
        flags[at_top] |= PhotozBayesFlag.AT_Z_MAX
        if config.method == "mcmc":
            mc = mcmc_posterior(grid, fluxes, errors, config, initial=post)
            s = mc["samples"]
            good = np.isfinite(s).all(axis=1)
            if good.any():
                q = np.quantile(s[good], [0.5, 0.16, 0.84, *levels], axis=1).T
                values["median"][good], values["lo68"][good], values["hi68"][good] = q[:, 0], q[:, 1], q[:, 2]
                values["quantiles"][good] = q[:, 3:]
                values["mean"][good] = s[good].mean(axis=1)
                values["std"][good] = s[good].std(axis=1)
                values["template"][good] = mc["tau"][good]
                values["ebv"][good] = mc["ebv"][good]
            for key in ("rhat", "n_eff", "acceptance"):
                values[key] = mc[key]
            bad = good & ((mc["rhat"] > config.rhat_max) | (mc["n_eff"] < config.min_n_eff))
            flags[bad] |= PhotozBayesFlag.NOT_CONVERGED
        from scipy.stats import chi2 as chi2_dist

        dof = post["n_bands"] - 2
        with np.errstate(invalid="ignore"):
            pvalue = np.where(dof > 0, chi2_dist.sf(post["chi2"], np.maximum(dof, 1)), 1.0)
        flags[(pvalue < 1e-3) & ~no_data] |= PhotozBayesFlag.POOR_FIT
        out = _assemble(ids, values, flags, levels, columns.id_column)
        out.meta["photoz_bayes_seconds_per_object"] = (time.perf_counter() - t0) / n
    out.meta["photoz_bayes_method"] = config.method
    out.meta["photoz_bayes_error_floor"] = float(config.error_floor)
    out.meta["photoz_bayes_prior"] = (
        "flat"
        if config.prior == "flat"
        else f"z^{config.prior_alpha} exp(-(z/z_m)^{config.prior_alpha}), z_m = {config.prior_z0} + "
        f"{config.prior_km} (m_ref - 20)"
    )
    out.meta["photoz_bayes_templates"] = list(templates.outputs.get("template_names", []))
    out.meta["photoz_bayes_z_max"] = float(templates.outputs.get("z_max", float("nan")))
    out.meta.update(templates.provenance_metadata())
    return out


# ----------------------------------------------------------------------
# Quality on the DESC cosmoDC2 validation file


def dc2_validation_path() -> str:
    """Return the path of RAIL's cosmoDC2 validation file, if ``pz-rail-base`` is installed.

    Returns
    -------
    path : `str`
        ``rail/examples_data/testdata/test_dc2_validation_9816.hdf5``.

    Raises
    ------
    FollowupError
        If ``pz-rail-base`` is not installed.
    """
    import importlib.resources

    try:
        folder = importlib.resources.files("rail.examples_data") / "testdata"
        return str(folder / "test_dc2_validation_9816.hdf5")
    except ModuleNotFoundError as exc:
        raise FollowupError(
            "RAIL's cosmoDC2 files come with pz-rail-base (pip install pz-rail-base, or make "
            "bench-photoz); or pass the validation file with --validation."
        ) from exc


def followup_quality(
    validation: Any,
    *,
    package: ModelPackage | None = None,
    templates: ModelPackage | None = None,
    config: FollowupConfig | None = None,
    max_objects: int | None = None,
    ood_threshold: float = 1.0,
) -> dict[str, Any]:
    """Compare the follow-up with the MBRNN on the out-of-distribution objects of a labelled table.

    Parameters
    ----------
    validation : table-like or path-like
        A table of AB magnitudes ``mag_{band}_lsst``, ``mag_err_{band}_lsst``
        and ``redshift`` (RAIL's cosmoDC2 layout), or the path of such a
        file.
    package : `~lsst.meas.ml.packages.ModelPackage`, optional
        The MBRNN package (default: the shipped one).
    templates : `~lsst.meas.ml.packages.ModelPackage`, optional
        The template grid (default: the shipped one).
    config : `FollowupConfig`, optional
        Follow-up settings.
    max_objects : `int`, optional
        Follow up at most this many of the flagged objects (the first ones).
    ood_threshold : `float`, optional
        OOD score threshold of the MBRNN flag.

    Returns
    -------
    report : `dict`
        ``n_objects``, ``n_ood``, ``n_followed``, and for ``mbrnn`` and
        ``bayes`` on the followed-up objects: ``sigma_nmad``,
        ``outlier_fraction``, ``coverage68``, ``seconds_per_object``;
        ``mbrnn_all`` on every object; arrays under ``arrays`` (true z,
        i magnitude, the two medians and intervals, the two PITs) for
        plots.
    """
    from .features import flux_table_from_magnitudes
    from .metrics import outlier_fraction, pit, sigma_nmad
    from .pdf import summarize_pdf
    from .predict import default_package, predict_photoz
    from .tables import read_table

    table = read_table(os.fspath(validation)) if isinstance(validation, str | os.PathLike) else validation
    package = package or default_package()
    templates = templates or template_package()
    bands = list(package.inputs["bands"])
    fluxes = flux_table_from_magnitudes(
        table, bands, "mag_{band}_lsst", "mag_err_{band}_lsst", keep=["redshift"]
    )
    fluxes["objectId"] = np.arange(len(fluxes), dtype=np.int64)
    z_true = np.asarray(fluxes["redshift"], dtype=np.float64)
    t0 = time.perf_counter()
    cat = predict_photoz(package, fluxes, ood_threshold=ood_threshold)
    mbrnn_seconds = (time.perf_counter() - t0) / max(len(cat), 1)
    ood = (np.asarray(cat["photoz_flags"]) & int(PhotozFlag.OUT_OF_DISTRIBUTION)) != 0
    rows = np.flatnonzero(ood)
    if max_objects is not None:
        rows = rows[:max_objects]
    follow = followup_photoz(templates, fluxes[rows], PhotozColumns(bands=tuple(bands)), config=config)
    edges = np.asarray(package.outputs["bin_edges"], dtype=np.float64)
    zt = z_true[rows]
    mb_pdf = np.asarray(cat["photoz_pdf"])[rows]
    mb = summarize_pdf(mb_pdf, edges)
    levels = np.asarray(follow.meta["photoz_bayes_quantile_levels"])
    bq = np.asarray(follow["photoz_bayes_quantiles"], dtype=np.float64)
    bayes_pit = np.array(
        [
            np.interp(z, q, levels, left=0.0, right=1.0) if np.all(np.isfinite(q)) else np.nan
            for z, q in zip(zt, bq)
        ]
    )

    def scores(median: np.ndarray, lo: np.ndarray, hi: np.ndarray, seconds: float) -> dict[str, float]:
        return {
            "sigma_nmad": sigma_nmad(median, zt),
            "outlier_fraction": outlier_fraction(median, zt),
            "coverage68": float(np.mean((lo <= zt) & (zt <= hi))),
            "seconds_per_object": seconds,
        }

    all_summary = {"mean": np.asarray(cat["photoz_median"], float)}
    report: dict[str, Any] = {
        "n_objects": len(cat),
        "n_ood": int(ood.sum()),
        "n_followed": int(rows.size),
        "method": follow.meta["photoz_bayes_method"],
        "mbrnn": scores(mb["median"], mb["lo68"], mb["hi68"], mbrnn_seconds),
        "bayes": scores(
            np.asarray(follow["photoz_bayes_median"], float),
            np.asarray(follow["photoz_bayes_lo68"], float),
            np.asarray(follow["photoz_bayes_hi68"], float),
            float(follow.meta.get("photoz_bayes_seconds_per_object", float("nan"))),
        ),
        "mbrnn_all": {
            "sigma_nmad": sigma_nmad(all_summary["mean"], z_true),
            "outlier_fraction": outlier_fraction(all_summary["mean"], z_true),
        },
        "bayes_flags": {
            f.name: int(((np.asarray(follow["photoz_bayes_flags"]) & int(f)) != 0).sum())
            for f in PhotozBayesFlag
        },
    }
    i_flux = np.asarray(fluxes["i_cModelFlux"], dtype=np.float64)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        i_mag = 31.4 - 2.5 * np.log10(i_flux)
    report["arrays"] = {
        "z_true": zt,
        "i_mag": i_mag,
        "mbrnn_median": mb["median"],
        "mbrnn_lo68": mb["lo68"],
        "mbrnn_hi68": mb["hi68"],
        "bayes_median": np.asarray(follow["photoz_bayes_median"], float),
        "bayes_lo68": np.asarray(follow["photoz_bayes_lo68"], float),
        "bayes_hi68": np.asarray(follow["photoz_bayes_hi68"], float),
        "mbrnn_pit": pit(mb_pdf, edges, zt),
        "bayes_pit": bayes_pit,
    }
    return report
