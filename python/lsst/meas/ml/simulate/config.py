"""Size and physics parameters of the simulated mini-survey.

`SurveyConfig` holds every number the simulation uses.  Two presets exist:
`SurveyConfig.default` (the demo repository: one tract of 2x2 patches in
``ugrizy`` and two-detector visits in ``gri``) and `SurveyConfig.tiny` (a few
seconds, for tests).  Everything derived from the config is deterministic
for a given ``seed``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = [
    "ALL_BANDS",
    "AB_ZERO_POINT_NJY",
    "SurveyConfig",
    "flux_to_mag",
    "mag_to_flux",
]

import numpy as np

#: The six LSST bands, blue to red.
ALL_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

#: AB magnitude of a 1 nJy source: ``mag = 31.4 - 2.5 log10(flux_nJy)``.
AB_ZERO_POINT_NJY: float = 31.4


def mag_to_flux(mag: Any) -> np.ndarray:
    """Convert AB magnitudes to fluxes in nJy.

    Parameters
    ----------
    mag : `~typing.Any`
        AB magnitudes (a number or an array).

    Returns
    -------
    flux : `numpy.ndarray`
        Fluxes in nJy.
    """
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=float) - AB_ZERO_POINT_NJY))


def flux_to_mag(flux: Any) -> np.ndarray:
    """Convert fluxes in nJy to AB magnitudes.

    Parameters
    ----------
    flux : `~typing.Any`
        Fluxes in nJy (a number or an array).

    Returns
    -------
    mag : `numpy.ndarray`
        AB magnitudes; NaN for non-positive fluxes.
    """
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, AB_ZERO_POINT_NJY - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def _per_band(**values: float) -> dict[str, float]:
    return {band: float(values[band]) for band in ALL_BANDS}


@dataclasses.dataclass
class SurveyConfig:
    """Parameters of one simulated survey.

    Geometry is in pixels of ``pixel_scale`` arcsec.  One tract, centred on
    ``(tract_ra, tract_dec)``, is cut into ``n_patch_x`` x ``n_patch_y``
    patches of ``patch_size`` pixels (each coadd also covers ``patch_border``
    pixels of its neighbours).  Visits put ``n_detectors`` detectors of
    ``detector_width`` x ``detector_height`` side by side, dithered inside
    the tract so that templates always come from the same sky.

    Depths are 5-sigma point-source AB magnitudes; seeing is a FWHM in
    arcsec.  Counts (``n_galaxies`` ...) are for the whole tract or survey.
    """

    name: str = "default"
    seed: int = 42

    # --- geometry -------------------------------------------------------
    pixel_scale: float = 0.2
    tract_ra: float = 150.1
    tract_dec: float = 2.2
    n_patch_x: int = 2
    n_patch_y: int = 2
    patch_size: int = 600
    patch_border: int = 16
    coadd_bands: tuple[str, ...] = ALL_BANDS

    visit_bands: tuple[str, ...] = ("g", "r", "i")
    visits_per_band: int = 2
    n_detectors: int = 2
    detector_width: int = 512
    detector_height: int = 1024
    detector_gap: int = 16
    max_dither: float = 50.0
    max_rotation_deg: float = 0.4
    edge_width: int = 8
    exposure_time: float = 30.0
    start_mjd: float = 61000.1
    night_spacing_days: float = 3.0
    visits_per_night: int = 2
    visit_spacing_minutes: float = 33.0

    # --- populations ----------------------------------------------------
    n_galaxies: int = 1500
    n_stars: int = 150
    galaxy_mag_range: tuple[float, float] = (18.0, 26.8)
    star_mag_range: tuple[float, float] = (15.5, 24.5)
    variable_star_fraction: float = 0.3
    n_transients: int = 60
    #: Asteroids in the field each night; the same objects every night (new tracks), so that
    #: each is seen in every visit band (see `~lsst.meas.ml.simulate.populations.make_asteroids`).
    asteroids_per_night: int = 14
    #: Range of the asteroids' absolute magnitude H in r (uniform).
    asteroid_h_range: tuple[float, float] = (15.5, 19.8)
    cosmic_rays_per_image: int = 6
    hot_columns_per_image: int = 1
    known_bad_columns_per_image: int = 2
    dipoles_per_image: int = 3
    nodata_probability: float = 0.5
    specz_bright_mag: float = 23.0
    specz_max_fraction: float = 0.8
    specz_faint_fraction: float = 0.04
    missing_measurement_fraction: float = 0.005

    # --- observing conditions -------------------------------------------
    coadd_depth: dict[str, float] = dataclasses.field(
        default_factory=lambda: _per_band(u=25.4, g=26.6, r=26.5, i=26.1, z=25.3, y=24.4)
    )
    visit_depth: dict[str, float] = dataclasses.field(
        default_factory=lambda: _per_band(u=23.9, g=25.0, r=24.7, i=24.0, z=23.3, y=22.1)
    )
    coadd_seeing: dict[str, float] = dataclasses.field(
        default_factory=lambda: _per_band(u=0.85, g=0.80, r=0.75, i=0.72, z=0.72, y=0.75)
    )
    #: Range of the sigma (arcsec) of the Gaussian by which a visit's PSF is
    #: wider than the template's (the seeing of the visit).
    visit_extra_sigma: tuple[float, float] = (0.22, 0.42)
    psf_beta: float = 3.5
    sky_electrons: dict[str, float] = dataclasses.field(
        default_factory=lambda: _per_band(u=120.0, g=450.0, r=900.0, i=1300.0, z=1800.0, y=2200.0)
    )
    full_well_electrons: float = 9.0e4
    detection_threshold: float = 5.0
    association_radius_arcsec: float = 1.0

    def __post_init__(self) -> None:
        for band in self.visit_bands:
            if band not in self.coadd_bands:
                raise ValueError(
                    f"SurveyConfig.visit_bands has {band!r}, which is not in coadd_bands "
                    f"{self.coadd_bands}; every visit band needs a coadd to build its template."
                )
        if self.n_detectors < 1 or self.visits_per_band < 1:
            raise ValueError("SurveyConfig needs at least one detector and one visit per band.")
        width = self.focal_plane_width + 2 * (self.max_dither + self._rotation_margin) + 2
        height = self.detector_height + 2 * (self.max_dither + self._rotation_margin) + 2
        if width > self.tract_width or height > self.tract_height:
            raise ValueError(
                f"Visits ({self.focal_plane_width}x{self.detector_height} px, dither "
                f"{self.max_dither}) do not fit inside the tract ({self.tract_width}x"
                f"{self.tract_height} px); enlarge the patches or shrink the detectors."
            )

    # --- derived geometry ---------------------------------------------------
    @property
    def tract_width(self) -> int:
        return self.n_patch_x * self.patch_size

    @property
    def tract_height(self) -> int:
        return self.n_patch_y * self.patch_size

    @property
    def n_patches(self) -> int:
        return self.n_patch_x * self.n_patch_y

    @property
    def focal_plane_width(self) -> int:
        return self.n_detectors * self.detector_width + (self.n_detectors - 1) * self.detector_gap

    @property
    def _rotation_margin(self) -> float:
        half_diag = 0.5 * math.hypot(self.focal_plane_width, self.detector_height)
        return half_diag * math.radians(self.max_rotation_deg)

    @property
    def n_visits(self) -> int:
        return len(self.visit_bands) * self.visits_per_band

    @classmethod
    def default(cls, seed: int = 42) -> SurveyConfig:
        """Return the demo survey: 4 patches of 600 px in ugrizy, 6 visits x 2 detectors in gri.

        Parameters
        ----------
        seed : `int`, optional
            The survey seed.

        Returns
        -------
        config : `SurveyConfig`
            The configuration.
        """
        return cls(name="default", seed=seed)

    @classmethod
    def tiny(cls, seed: int = 7) -> SurveyConfig:
        """Return a survey for unit tests: builds in a few seconds.

        Parameters
        ----------
        seed : `int`, optional
            The survey seed.

        Returns
        -------
        config : `SurveyConfig`
            The configuration.
        """
        return cls(
            name="tiny",
            seed=seed,
            n_patch_x=2,
            n_patch_y=1,
            patch_size=200,
            patch_border=8,
            visit_bands=("g", "r"),
            visits_per_band=2,
            n_detectors=2,
            detector_width=160,
            detector_height=160,
            detector_gap=8,
            max_dither=10.0,
            max_rotation_deg=0.2,
            n_galaxies=110,
            n_stars=30,
            variable_star_fraction=0.6,
            n_transients=14,
            asteroids_per_night=6,
            cosmic_rays_per_image=3,
            hot_columns_per_image=1,
            known_bad_columns_per_image=1,
            dipoles_per_image=2,
            nodata_probability=0.5,
        )

    @classmethod
    def from_name(cls, name: str, seed: int | None = None) -> SurveyConfig:
        """Return a preset by name.

        Parameters
        ----------
        name : `str`
            The preset: ``"tiny"`` or ``"default"``.
        seed : `int`, optional
            The survey seed; the preset's default if `None`.

        Returns
        -------
        config : `SurveyConfig`
            The configuration.

        Raises
        ------
        ValueError
            If ``name`` is not a preset.
        """
        presets = {"tiny": cls.tiny, "default": cls.default}
        try:
            factory = presets[name]
        except KeyError:
            raise ValueError(f"Unknown survey size {name!r}; choose one of {sorted(presets)}.") from None
        return factory() if seed is None else factory(seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly copy of the parameters (tuples become lists).

        Returns
        -------
        params : `dict` [`str`, `~typing.Any`]
            The parameters, by field name.
        """
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out
