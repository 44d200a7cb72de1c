"""Registry of the neural-network architectures model packages may name.

A model package stores weights and the *name* of an architecture plus the
hyper-parameters that built it; it never carries code.  This module maps
those names to builder functions that live in this package::

    @register_architecture("mlp")
    def mlp(n_features: int, n_outputs: int, hidden=(64, 64)) -> nn.Module: ...

    model = build_model("mlp", {"n_features": 20, "n_outputs": 3})

Builders are registered when their module is imported; the modules named in
``_BUILTIN_MODULES`` are imported together with this package, so every
architecture shipped with ``meas_ml`` is known as soon as
``lsst.meas.ml.models`` is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "ArchitectureError",
    "build_model",
    "get_builder",
    "list_architectures",
    "register_architecture",
]

Builder = TypeVar("Builder", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


class ArchitectureError(ValueError):
    """Raised for an unknown architecture name or hyper-parameters its
    builder does not accept."""


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(**hyperparameters) -> nn.Module``.

    Parameters
    ----------
    name : `str`
        The name model packages use for this architecture.  Names are
        global; registering a different function under a taken name raises
        `ArchitectureError` (re-importing the same module is allowed).
    """
    if not isinstance(name, str) or not name:
        raise ArchitectureError(f"Architecture names must be non-empty strings, got {name!r}.")

    def decorator(builder: Builder) -> Builder:
        existing = _REGISTRY.get(name)
        if existing is not None and (
            existing.__module__ != builder.__module__ or existing.__qualname__ != builder.__qualname__
        ):
            raise ArchitectureError(
                f"Architecture {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; pick another name for "
                f"{builder.__module__}.{builder.__qualname__}."
            )
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_architectures() -> list[str]:
    """Sorted names of all registered architectures."""
    return sorted(_REGISTRY)


def get_builder(name: str) -> Callable[..., Any]:
    """The builder registered under ``name`` (`ArchitectureError` if none)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ArchitectureError(
            f"Unknown model architecture {name!r}; registered architectures are "
            f"{list_architectures()}. Architectures are defined in lsst.meas.ml.models, "
            "never loaded from a model package."
        ) from None


def build_model(name: str, hyperparameters: Mapping[str, Any] | None = None) -> Any:
    """Build a freshly initialised ``torch.nn.Module`` by architecture name.

    Parameters
    ----------
    name : `str`
        A registered architecture name.
    hyperparameters : `~collections.abc.Mapping`, optional
        Keyword arguments for the builder.

    Raises
    ------
    ArchitectureError
        If the name is unknown or the builder rejects the hyper-parameters.
    """
    builder = get_builder(name)
    kwargs = dict(hyperparameters or {})
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise ArchitectureError(
            f"Architecture {name!r} cannot be built with hyper-parameters {kwargs}: {exc}"
        ) from exc


#: Modules of this package that define architectures shipped with meas_ml.
_BUILTIN_MODULES = ["generic", "photoz", "dia"]


def _import_builtin_modules() -> None:
    for module in _BUILTIN_MODULES:
        full = f"{__name__}.{module}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent; a missing
            # dependency *inside* it is a real error.
            if exc.name != full:
                raise


_import_builtin_modules()
