"""The science products of meas_ml: one declaration each.

A product is a folder ``lsst/meas/ml/<family>/`` of the same shape
(``features``, ``predict``, ``task``, ``train``, ``cli``, ``demo`` and its
own metrics when they are product-specific) plus its architectures in
``lsst/meas/ml/models/<family>.py``.  Adding a product is one `Product` in
`PRODUCTS` and its folder: the ``meas-ml`` command, the demo, the model
registry and the model-package family check all read this list (see
``doc/adding_a_product.md``).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

__all__ = ["GENERIC_FAMILY", "PRODUCTS", "Product", "known_families", "product", "product_module"]

#: Family of the product-independent architectures (tests, benchmarks).
GENERIC_FAMILY = "generic"


@dataclasses.dataclass(frozen=True)
class Product:
    """A science product.

    Attributes
    ----------
    family : `str`
        Model family and folder name (``lsst.meas.ml.<family>``), the
        ``<family>`` of ``ml_model_<family>`` and ``models/<family>/<version>``.
    title : `str`
        What it makes, in a few words.
    output : `str`
        The dataset type its task writes.
    in_demo : `bool`
        Whether ``make demo`` trains it and runs its task
        (``lsst.meas.ml.<family>.demo`` provides ``train_demo_package`` and
        ``summarize``).
    """

    family: str
    title: str
    output: str
    in_demo: bool = True

    @property
    def package(self) -> str:
        """Python package of the product's folder."""
        return f"lsst.meas.ml.{self.family}"

    @property
    def models_module(self) -> str:
        """Module whose import registers the product's architectures."""
        return f"lsst.meas.ml.models.{self.family}"


#: Every product, in the order the demo runs them.
PRODUCTS: tuple[Product, ...] = (
    Product("photoz", "photometric redshifts with PDFs", "ml_photoz"),
    Product("dia", "real/bogus and class scores of DIA sources", "ml_dia_scores"),
    Product("asteroids", "asteroid taxonomy from survey colours", "ml_asteroid_taxonomy"),
    Product("morphology", "galaxy morphology classes", "ml_morphology"),
    Product("embedding", "self-supervised galaxy representations", "ml_embedding"),
    Product("dla", "damped Lyman-alpha absorbers in quasar spectra", "ml_dla"),
)


def product(family: str) -> Product:
    """Return the product of a family.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    product : `Product`
        The product of ``family``.

    Raises
    ------
    KeyError
        If ``family`` has no product; the message names the known ones.
    """
    for p in PRODUCTS:
        if p.family == family:
            return p
    raise KeyError(f"Unknown product {family!r}; known products are {[p.family for p in PRODUCTS]}.")


def known_families() -> frozenset[str]:
    """Families a model package may declare: every product's plus ``generic``."""
    return frozenset(p.family for p in PRODUCTS) | {GENERIC_FAMILY}


def product_module(family: str, name: str) -> ModuleType:
    """Import a module of a product's package.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.
    name : `str`
        Module name in the product's package, e.g. ``cli`` or ``demo``.

    Returns
    -------
    module : `types.ModuleType`
        ``lsst.meas.ml.<family>.<name>``.
    """
    return importlib.import_module(f"{product(family).package}.{name}")
