"""Architecture of the asteroid-taxonomy product: a Gaussian mixture over colours.

`AsteroidMixture` holds a Gaussian mixture in colour space as buffers (the
package weights): component means, lower Cholesky factors of the intrinsic
covariances, log weights, the class of each component, and the two numbers
that calibrate the anomaly score.  The likelihood of an object convolves each
component with the object's colour covariance (``Sigma_k + C_n``, as in
extreme deconvolution) and marginalises missing colours exactly (their rows
and columns are replaced by the identity and their residuals by zero).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import register_architecture

__all__ = ["AsteroidMixture", "component_log_likelihood"]


def component_log_likelihood(
    x: torch.Tensor, cov_err: torch.Tensor, observed: torch.Tensor, means: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """Log N(x | mu_k, Sigma_k + C_n) over the observed dimensions.

    Parameters
    ----------
    x : `torch.Tensor`, (N, D)
        Colours (any value where not observed).
    cov_err : `torch.Tensor`, (N, D, D)
        Measurement covariances (any value where not observed).
    observed : `torch.Tensor`, (N, D) bool
        Which colours are observed.
    means : `torch.Tensor`, (K, D)
        Component means.
    cov : `torch.Tensor`, (K, D, D)
        Intrinsic component covariances.

    Returns
    -------
    loglik : `torch.Tensor`, (N, K)
        Zero for an object with no observed colour.
    """
    if bool(observed.all()):  # every colour observed: no masking
        n_obs = torch.full((x.shape[0], 1), float(x.shape[1]), dtype=x.dtype, device=x.device)
        total = cov[None] + cov_err[:, None]
        resid = x[:, None, :] - means[None]
    else:
        obs = observed.to(x.dtype)
        pair = obs[:, :, None] * obs[:, None, :]
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        cov_err = torch.where(pair > 0, torch.nan_to_num(cov_err), zero)
        total = (cov[None] + cov_err[:, None]) * pair[:, None] + (eye * (1 - obs)[:, :, None])[:, None]
        resid = (torch.nan_to_num(x)[:, None, :] - means[None]) * obs[:, None, :]
        n_obs = obs.sum(-1, keepdim=True)
    chol = torch.linalg.cholesky(total)
    sol = torch.linalg.solve_triangular(chol, resid.unsqueeze(-1), upper=False).squeeze(-1)
    maha = (sol**2).sum(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (maha + logdet + n_obs * math.log(2.0 * math.pi))


@register_architecture("asteroid_gmm")
class AsteroidMixture(nn.Module):
    """Gaussian mixture over asteroid colours with components labelled by class.

    Parameters
    ----------
    n_components : `int`
        Number of Gaussian components.
    n_features : `int`
        Number of colours.
    n_classes : `int`
        Number of classes (complexes); each component belongs to one.
    """

    def __init__(self, n_components: int = 10, n_features: int = 4, n_classes: int = 10) -> None:
        super().__init__()
        self.n_components, self.n_features, self.n_classes = n_components, n_features, n_classes
        self.register_buffer("means", torch.zeros(n_components, n_features))
        self.register_buffer("chol", torch.eye(n_features).repeat(n_components, 1, 1))
        self.register_buffer("log_weights", torch.full((n_components,), -math.log(n_components)))
        self.register_buffer("component_class", torch.arange(n_components) % n_classes)
        # raw anomaly score (-max_k log w_k N_k) at the training median and 99th percentile
        self.register_buffer("anomaly_reference", torch.tensor([0.0, 1.0]))

    @property
    def covariances(self) -> torch.Tensor:
        """Intrinsic covariances ``L L^T`` (K, D, D)."""
        chol = torch.tril(self.chol)
        return chol @ chol.transpose(-1, -2)

    def set_mixture(
        self, means: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor, component_class: torch.Tensor
    ) -> None:
        """Store a fitted mixture (covariances as Cholesky factors).

        Parameters
        ----------
        means : `torch.Tensor`, (K, D)
            Component means.
        cov : `torch.Tensor`, (K, D, D)
            Intrinsic component covariances (positive definite).
        weights : `torch.Tensor`, (K,)
            Component weights (stored as logs, floored at 1e-12).
        component_class : `torch.Tensor`, (K,)
            Class index of each component.
        """
        self.means.copy_(means)
        self.chol.copy_(torch.linalg.cholesky(cov))
        self.log_weights.copy_(torch.log(weights.clamp_min(1e-12)))
        self.component_class.copy_(component_class)

    def joint_log_likelihood(
        self, x: torch.Tensor, cov_err: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        """``log w_k + log N(x | mu_k, Sigma_k + C_n)``, shape (N, K).

        Parameters
        ----------
        x : `torch.Tensor`, (N, D)
            Colours (any value where not observed).
        cov_err : `torch.Tensor`, (N, D, D)
            Measurement covariances (any value where not observed).
        observed : `torch.Tensor`, (N, D) bool
            Which colours are observed.

        Returns
        -------
        joint : `torch.Tensor`, (N, K)
            Log weight plus log-likelihood of each component, in the dtype
            of ``x``.
        """
        means, cov = self.means.to(x.dtype), self.covariances.to(x.dtype)
        return self.log_weights.to(x.dtype)[None] + component_log_likelihood(x, cov_err, observed, means, cov)

    def forward(
        self, x: torch.Tensor, cov_err: torch.Tensor, observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class log-probabilities and calibrated anomaly scores.

        Parameters
        ----------
        x : `torch.Tensor`, (N, D)
            Colours (any value where not observed).
        cov_err : `torch.Tensor`, (N, D, D)
            Measurement covariances (any value where not observed).
        observed : `torch.Tensor`, (N, D) bool
            Which colours are observed.

        Returns
        -------
        log_prob : `torch.Tensor`, (N, n_classes)
            Log posterior probability of each class.
        anomaly : `torch.Tensor`, (N,)
            ``(raw - median) / (p99 - median)`` with ``raw = -max_k log w_k
            N_k``, so 1.0 is the training 99th percentile.
        """
        joint = self.joint_log_likelihood(x, cov_err, observed)
        onehot = torch.nn.functional.one_hot(self.component_class.long(), self.n_classes).to(joint.dtype)
        top = joint.max(dim=1, keepdim=True).values
        # per-class sums of exp(joint - top): a (N, K) x (K, C) product; log(0) = -inf for empty classes
        class_ll = torch.log((joint - top).exp() @ onehot) + top
        log_prob = class_ll - torch.logsumexp(class_ll, dim=1, keepdim=True)
        raw = -top.squeeze(1)
        ref = self.anomaly_reference.to(joint.dtype)
        anomaly = (raw - ref[0]) / (ref[1] - ref[0]).clamp_min(1e-6)
        return log_prob, anomaly
