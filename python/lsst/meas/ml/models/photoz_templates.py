"""Template model-flux grid for the Bayesian photo-z follow-up.

Not a network: a container of precomputed broad-band fluxes of SED
templates, so that a template-fitting posterior needs neither the SED files
nor the filter curves at run time, and so that the grid travels as a model
package (safetensors, a manifest, checksums; no pickle).

Buffers:

* ``redshift`` ``(n_z,)``: the redshift grid;
* ``ebv`` ``(n_ebv,)``: the E(B-V) values of the dust screen (Calzetti law);
* ``fluxes`` ``(n_z, n_templates, n_ebv, n_bands)``: model fluxes of each
  template, redshifted, reddened and attenuated by the intergalactic
  medium, integrated through the band throughputs and normalised to 1 in
  the reference band, so that the amplitude of a fit is the object's flux
  in that band.

`TemplateGrid.mixed` interpolates linearly between neighbouring templates
(the "template mixes" of the fit); ``forward`` returns the
amplitude-marginalised log-likelihood of a batch of objects on the whole
(z, template mix, E(B-V)) grid (see `amplitude_marginal_loglike`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import register_architecture

__all__ = ["TemplateGrid", "amplitude_marginal_loglike", "mix_matrix"]


def mix_matrix(n_templates: int, n_interp: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return the weights of the template mixes on the grid.

    Between each pair of neighbouring templates, ``n_interp`` mixes are
    inserted at equal steps, so the continuous template coordinate
    ``tau`` (0 to ``n_templates - 1``) is sampled every
    ``1 / (n_interp + 1)``.

    Parameters
    ----------
    n_templates : `int`
        Number of base templates.
    n_interp : `int`
        Mixes inserted between neighbours (0: the base templates only).
    dtype : `torch.dtype`, optional
        Type of the result.

    Returns
    -------
    weights : `torch.Tensor`, ``(n_mix, n_templates)``
        Row ``k`` holds the weights of mix ``k`` (rows sum to one), with
        ``n_mix = (n_templates - 1) * (n_interp + 1) + 1``.
    """
    step = n_interp + 1
    n_mix = (n_templates - 1) * step + 1
    tau = torch.arange(n_mix, dtype=dtype) / step
    lower = torch.clamp(torch.floor(tau).long(), max=n_templates - 1)
    frac = tau - lower.to(dtype)
    weights = torch.zeros((n_mix, n_templates), dtype=dtype)
    rows = torch.arange(n_mix)
    weights[rows, lower] = 1.0 - frac
    upper = torch.clamp(lower + 1, max=n_templates - 1)
    weights[rows, upper] += frac
    return weights


def amplitude_marginal_loglike(
    flux: torch.Tensor, ivar: torch.Tensor, model: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian log-likelihood with the amplitude marginalised analytically.

    For fluxes ``f`` with inverse variances ``w`` and a model ``A m``, with
    a flat prior on the amplitude ``A > 0``::

        log L = -chi2_min / 2 + log sqrt(2 pi / a) + log Phi(b / sqrt(a))

    where ``a = sum w m^2``, ``b = sum w f m``, ``chi2_min = sum w f^2 -
    b^2 / a`` and ``Phi`` is the normal CDF (the ``A > 0`` truncation).
    Bands with ``w = 0`` do not count.

    Parameters
    ----------
    flux : `torch.Tensor`, ``(N, B)``
        Fluxes (non-finite values must already be zero with ``w = 0``).
    ivar : `torch.Tensor`, ``(N, B)``
        Inverse variances.
    model : `torch.Tensor`, ``(..., B)``
        Model fluxes for unit amplitude (any leading shape ``S``).

    Returns
    -------
    loglike : `torch.Tensor`, ``(N, *S)``
        Log-likelihood, up to a constant per object.
    chi2 : `torch.Tensor`, ``(N, *S)``
        Chi-square at the best amplitude (unconstrained in sign).
    """
    shape = model.shape[:-1]
    m = model.reshape(-1, model.shape[-1])
    a = (ivar @ (m * m).T).clamp_min(1e-300)  # (N, M)
    b = (ivar * flux) @ m.T
    sff = (ivar * flux * flux).sum(dim=1, keepdim=True)
    chi2 = (sff - b * b / a).clamp_min(0.0)
    loglike = (
        -0.5 * chi2
        + 0.5 * (math.log(2.0 * math.pi) - torch.log(a))
        + torch.special.log_ndtr(b / torch.sqrt(a))
    )
    return loglike.reshape(flux.shape[0], *shape), chi2.reshape(flux.shape[0], *shape)


@register_architecture("photoz_template_grid")
class TemplateGrid(nn.Module):
    """Precomputed template fluxes on a (z, template, E(B-V), band) grid.

    Parameters
    ----------
    n_z : `int`
        Number of redshift grid points.
    n_templates : `int`
        Number of base SED templates.
    n_ebv : `int`
        Number of E(B-V) values.
    n_bands : `int`
        Number of bands.
    n_interp : `int`
        Template mixes inserted between neighbouring templates on the grid.
    """

    def __init__(
        self, n_z: int = 301, n_templates: int = 8, n_ebv: int = 4, n_bands: int = 6, n_interp: int = 2
    ) -> None:
        super().__init__()
        self.n_interp = n_interp
        self.register_buffer("redshift", torch.zeros(n_z, dtype=torch.float64))
        self.register_buffer("ebv", torch.zeros(n_ebv, dtype=torch.float64))
        self.register_buffer("fluxes", torch.zeros((n_z, n_templates, n_ebv, n_bands), dtype=torch.float32))

    def mixed(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Return the model fluxes of every template mix.

        Parameters
        ----------
        dtype : `torch.dtype`, optional
            Type of the result.

        Returns
        -------
        fluxes : `torch.Tensor`, ``(n_z, n_mix, n_ebv, n_bands)``
            Model fluxes (reference band 1) of the mixes of `mix_matrix`.
        """
        weights = mix_matrix(self.fluxes.shape[1], self.n_interp, dtype=dtype).to(self.fluxes.device)
        return torch.einsum("kt,ztdb->zkdb", weights, self.fluxes.to(dtype))

    def forward(self, flux: torch.Tensor, ivar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the amplitude-marginalised log-likelihood on the whole grid.

        Parameters
        ----------
        flux : `torch.Tensor`, ``(N, n_bands)``
            Fluxes in the unit of the amplitude (zero where ``ivar`` is 0).
        ivar : `torch.Tensor`, ``(N, n_bands)``
            Inverse variances.

        Returns
        -------
        loglike : `torch.Tensor`, ``(N, n_z, n_mix, n_ebv)``
            See `amplitude_marginal_loglike`.
        chi2 : `torch.Tensor`, ``(N, n_z, n_mix, n_ebv)``
            Chi-square at the best amplitude.
        """
        return amplitude_marginal_loglike(flux, ivar, self.mixed(flux.dtype))
