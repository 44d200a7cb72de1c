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
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from ..errors import MeasMlUserError

__all__ = [
    "ArchitectureError",
    "build_model",
    "check_hyperparameters",
    "get_builder",
    "list_architectures",
    "register_architecture",
]

Builder = TypeVar("Builder", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


class ArchitectureError(MeasMlUserError, ValueError):
    """An unknown architecture name, or hyper-parameters it does not accept."""


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Register an architecture: an ``nn.Module`` class (or a builder function).

    Applied to the module class itself, as the project's architectures
    are, so its constructor's keyword arguments are the hyper-parameters and
    their defaults live in one place (packages store only what differs).

    Parameters
    ----------
    name : `str`
        The name model packages use for this architecture.  Names are
        global; registering a different class under a taken name raises
        `ArchitectureError` (re-importing the same module is allowed).

    Returns
    -------
    decorator : callable
        Registers its argument and returns it unchanged.
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
    """Return the class or builder registered under a name.

    Parameters
    ----------
    name : `str`
        Architecture name.

    Returns
    -------
    builder : callable
        Called with the hyper-parameters, returns the ``nn.Module``.

    Raises
    ------
    ArchitectureError
        No architecture has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ArchitectureError(
            f"Unknown model architecture {name!r}; registered architectures are "
            f"{list_architectures()}. Architectures are defined in lsst.meas.ml.models, "
            "never loaded from a model package."
        ) from None


_INT_ANNOTATIONS = {"int", "int | None", "None | int", "Optional[int]", "typing.Optional[int]"}
_INT_SEQUENCE = re.compile(
    r"(?:(?:collections\.abc\.|typing\.)?(?:Sequence|Iterable)|list|tuple|List|Tuple)\[int(?:, \.\.\.)?\]"
)


def _annotation(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return ""
    if isinstance(ann, str):
        return ann.replace("typing.", "").strip()
    return getattr(ann, "__name__", None) if isinstance(ann, type) else str(ann).replace("typing.", "")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")  # numpy booleans too


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_hyperparameters(name: str, hyperparameters: Mapping[str, Any] | None = None) -> None:
    """Check hyper-parameters against the builder's signature before building.

    A parameter annotated ``int`` must be a positive integer (not a bool or a
    float such as ``8.0``); one annotated as a sequence of ``int``
    (``Sequence[int]``, ``tuple[int, ...]``, ...) must be a list of positive
    integers; one annotated ``bool`` must be ``true``/``false``; one
    annotated ``float`` must be a finite number.

    Parameters
    ----------
    name : `str`
        Architecture name.
    hyperparameters : `~collections.abc.Mapping`, optional
        Keyword arguments of the architecture.

    Raises
    ------
    ArchitectureError
        Naming the architecture, the parameter and the offending value.
    """
    builder = get_builder(name)
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    for key, value in dict(hyperparameters or {}).items():
        param = signature.parameters.get(key)
        if param is None:
            continue  # unknown names are reported by the builder call
        ann = _annotation(param)
        problem = None
        if value is None and ann in _INT_ANNOTATIONS and "None" in ann:
            continue
        if ann in _INT_ANNOTATIONS:
            if not _is_int(value) or value <= 0:
                problem = f"must be a positive integer, got {_describe(value)}"
        elif _INT_SEQUENCE.fullmatch(ann):
            if not isinstance(value, list | tuple):
                problem = f"must be a list of positive integers, got {_describe(value)}"
            else:
                bad = [v for v in value if not _is_int(v) or v <= 0]
                if bad:
                    problem = (
                        f"must be a list of positive integers, got {list(value)!r} "
                        f"(bad entries: {', '.join(_describe(v) for v in bad[:5])})"
                    )
        elif ann == "bool" and not _is_bool(value):
            problem = f"must be true or false, got {_describe(value)}"
        elif ann == "float" and not (
            isinstance(value, numbers.Real) and not _is_bool(value) and math.isfinite(value)
        ):
            problem = f"must be a finite number, got {_describe(value)}"
        if problem:
            raise ArchitectureError(f"Architecture {name!r}: hyper-parameter {key!r} {problem}.")


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
        If the name is unknown, a hyper-parameter does not fit the builder's
        signature (see `check_hyperparameters`), or building the modules
        fails with them (any exception of the builder or of torch).
    """
    builder = get_builder(name)
    kwargs = dict(hyperparameters or {})
    check_hyperparameters(name, kwargs)
    try:
        return builder(**kwargs)
    except ArchitectureError:
        raise
    except Exception as exc:
        raise ArchitectureError(
            f"Architecture {name!r} cannot be built with hyper-parameters {kwargs}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _import_builtin_modules() -> None:
    # The generic architectures, then one module per science product
    # (``lsst.meas.ml.models.<family>``, from `lsst.meas.ml.products`).
    from ..products import PRODUCTS

    for full in (f"{__name__}.generic", *(p.models_module for p in PRODUCTS)):
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent; a missing
            # dependency *inside* it is a real error.
            if exc.name != full:
                raise


_import_builtin_modules()
