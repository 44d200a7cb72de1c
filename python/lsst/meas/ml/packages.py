"""Model packages: the one on-disk format of every trained model.

A package is a single ``.safetensors`` file.  Its tensors are the model's
``state_dict``; its safetensors metadata holds, under the key
``"meas_ml_manifest"``, a JSON manifest::

    {
      "format_version": 1,
      "family": "photoz",                 # one of KNOWN_FAMILIES
      "name": "photoz-mlp",
      "version": "1.0.0",
      "architecture": "mlp",              # a name in lsst.meas.ml.models
      "hyperparameters": {"n_features": 20, "n_outputs": 3},
      "inputs": {"bands": [...], "stamp_size": 31, "features": [...], ...},
      "outputs": {"class_names": [...], "bin_edges": [...], ...},
      "provenance": {"training_data": ..., "code_version": ..., "metrics": {...}},
      "weights_sha256": "...",
      "created": "2026-01-01T00:00:00+00:00",
      "manifest_sha256": "..."
    }

``weights_sha256`` covers the tensors (`weights_sha256`); ``manifest_sha256``
covers the manifest itself: the SHA-256 of its canonical JSON (sorted keys,
compact separators) without that one key (`manifest_sha256`).  Reading a
file verifies both, so an edit of e.g. ``outputs.bin_edges`` is refused.
Files written before manifest checksums existed lack the key and are refused
with the command that re-saves them (`reseal_package`).

Loading parses JSON and raw tensors only: no pickle, no code from the
package.  The architecture is built from the registry in
`lsst.meas.ml.models`, and the weights must match it tensor for tensor.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import torch

from . import __version__ as _meas_ml_version
from .errors import MeasMlUserError
from .fileio import write_bytes_atomic
from .models import ArchitectureError, build_model, check_hyperparameters, list_architectures
from .products import known_families
from .safetensors_io import SafetensorsError, decode, encode, read_header

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_FAMILIES",
    "MANIFEST_KEY",
    "MANIFEST_SHA256_KEY",
    "ModelPackage",
    "PackageError",
    "default_package",
    "default_package_path",
    "manifest_sha256",
    "reseal_package",
    "weights_sha256",
]

#: Version of the package layout written by this code.
FORMAT_VERSION = 1

#: Metadata key under which the JSON manifest is stored.
MANIFEST_KEY = "meas_ml_manifest"

#: Manifest key holding the checksum of the rest of the manifest.
MANIFEST_SHA256_KEY = "manifest_sha256"

#: Model families a package may declare.
#: Model families a package may declare: one per science product
#: (`lsst.meas.ml.products.PRODUCTS`) plus ``generic``.
KNOWN_FAMILIES: frozenset[str] = known_families()

_REQUIRED_KEYS = (
    "format_version",
    "family",
    "name",
    "version",
    "architecture",
    "hyperparameters",
    "inputs",
    "outputs",
    "provenance",
    "weights_sha256",
)


class PackageError(MeasMlUserError, ValueError):
    """Raised for a model package that is missing, corrupt, or unfit.

    Unfit: it does not fit the code or the task configuration that reads it.
    """


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a canonical serialisation of named tensors.

    The digest covers, for each tensor in sorted name order, its name,
    dtype, shape and raw little-endian bytes, so it does not depend on the
    order or layout of the tensors in a file.

    Parameters
    ----------
    state_dict : `~collections.abc.Mapping` [`str`, `torch.Tensor`]
        Named tensors, e.g. a model's ``state_dict()``.

    Returns
    -------
    digest : `str`
        Hexadecimal SHA-256 digest.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b""
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0{len(raw)}\0"
        digest.update(header.encode())
        digest.update(raw)
    return digest.hexdigest()


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, without its ``manifest_sha256`` key.

    Canonical: keys sorted at every level, separators ``","`` and ``":"``
    (no spaces), non-ASCII escaped, NaN/Infinity as Python's `json` writes them.

    Parameters
    ----------
    manifest : `~collections.abc.Mapping` [`str`, `~typing.Any`]
        The manifest; a ``manifest_sha256`` key in it is ignored.

    Returns
    -------
    digest : `str`
        Hexadecimal SHA-256 digest.
    """
    body = {key: value for key, value in manifest.items() if key != MANIFEST_SHA256_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value: Any, what: str) -> Any:
    """Round-trip through JSON (tuples become lists), with a clear error."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise PackageError(f"Model package {what} must be JSON-serialisable: {exc}") from exc


def _expected_state(architecture: str, hyperparameters: Mapping[str, Any]) -> dict[str, torch.Size]:
    """Tensor names and shapes of a freshly built architecture.

    Built on the ``meta`` device where possible, so no memory is allocated.

    Raises
    ------
    ArchitectureError
        If a hyper-parameter has the wrong type or value for the builder
        (named), or the builder fails with them.
    """
    check_hyperparameters(architecture, hyperparameters)
    try:
        with torch.device("meta"):
            model = build_model(architecture, hyperparameters)
    except Exception:
        model = build_model(architecture, hyperparameters)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


class ModelPackage:
    """A trained model: manifest plus weights.

    Parameters
    ----------
    manifest : `dict`
        The manifest (see module documentation).
    state_dict : `dict` [`str`, `torch.Tensor`]
        The weights, on the CPU.
    source : `str`, optional
        Where the package came from, for error messages.

    Notes
    -----
    The constructor validates the manifest, the weights checksum and the
    tensor shapes, then (re)computes ``manifest["manifest_sha256"]``: a
    package built in memory is trusted.  The manifest checksum is verified
    where a package comes from outside, in `from_bytes` / `load`.  Use
    `from_model` to create a package from a trained model and `load` /
    `from_bytes` to read one.
    """

    def __init__(
        self, manifest: dict[str, Any], state_dict: dict[str, torch.Tensor], *, source: str = "<memory>"
    ) -> None:
        self.manifest = manifest
        self.state_dict = state_dict
        self.source = source
        self._validate()
        self.manifest[MANIFEST_SHA256_KEY] = manifest_sha256(self.manifest)

    # ------------------------------------------------------------------
    # Properties
    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.manifest["hyperparameters"]

    @property
    def inputs(self) -> dict[str, Any]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.manifest["outputs"]

    @property
    def provenance(self) -> dict[str, Any]:
        return self.manifest["provenance"]

    @property
    def sha256(self) -> str:
        """SHA-256 of the weights (see `weights_sha256`)."""
        return self.manifest["weights_sha256"]

    def provenance_metadata(self) -> dict[str, Any]:
        """Return what every output table records of the package that made it.

        Returns
        -------
        metadata : `dict` [`str`, `~typing.Any`]
            ``{"ml_model": {"family", "name", "version", "architecture",
            "sha256"}}``, to merge into the table metadata (the Butler adds
            the dataset and RUN of the package as an input of the output).
        """
        return {
            "ml_model": {
                "family": self.family,
                "name": self.name,
                "version": self.version,
                "architecture": self.architecture,
                "sha256": self.sha256,
            }
        }

    def __repr__(self) -> str:
        return (
            f"ModelPackage(name={self.name!r}, family={self.family!r}, version={self.version!r}, "
            f"architecture={self.architecture!r}, sha256={self.sha256[:12]}...)"
        )

    # ------------------------------------------------------------------
    # Validation
    def _fail(self, message: str) -> PackageError:
        return PackageError(f"Model package {self.source}: {message}")

    def _validate(self) -> None:
        manifest = self.manifest
        if not isinstance(manifest, dict):
            raise self._fail(f"manifest must be a JSON object, got {type(manifest).__name__}.")
        missing = [key for key in _REQUIRED_KEYS if key not in manifest]
        if missing:
            raise self._fail(f"manifest lacks the keys {missing}; rewrite it with ModelPackage.from_model.")
        if manifest["format_version"] != FORMAT_VERSION:
            raise self._fail(
                f"format_version {manifest['format_version']!r} is not supported by this meas_ml "
                f"(which reads version {FORMAT_VERSION}); upgrade meas_ml or re-export the model."
            )
        if manifest["family"] not in KNOWN_FAMILIES:
            raise self._fail(
                f"unknown model family {manifest['family']!r}; known families are {sorted(KNOWN_FAMILIES)}."
            )
        if manifest["architecture"] not in list_architectures():
            raise self._fail(
                f"unknown architecture {manifest['architecture']!r}; registered architectures are "
                f"{list_architectures()}. Architectures live in lsst.meas.ml.models; a package never "
                "carries code."
            )
        for key in ("hyperparameters", "inputs", "outputs", "provenance"):
            if not isinstance(manifest[key], dict):
                raise self._fail(f"manifest {key!r} must be a JSON object, got {manifest[key]!r}.")
        for key in ("name", "version"):
            if not isinstance(manifest[key], str) or not manifest[key]:
                raise self._fail(f"manifest {key!r} must be a non-empty string, got {manifest[key]!r}.")
        if not all(isinstance(t, torch.Tensor) for t in self.state_dict.values()):
            raise self._fail("weights must all be tensors.")

        actual = weights_sha256(self.state_dict)
        if actual != manifest["weights_sha256"]:
            raise self._fail(
                f"weights checksum mismatch: manifest says sha256 {manifest['weights_sha256']}, the "
                f"tensors hash to {actual}. The file is corrupt or was modified; fetch it again."
            )

        try:
            expected = _expected_state(manifest["architecture"], manifest["hyperparameters"])
        except ArchitectureError as exc:
            raise self._fail(f"invalid hyper-parameters: {exc}") from exc
        missing_t = sorted(set(expected) - set(self.state_dict))
        extra_t = sorted(set(self.state_dict) - set(expected))
        if missing_t or extra_t:
            raise self._fail(
                f"weights do not fit architecture {manifest['architecture']!r} with hyper-parameters "
                f"{manifest['hyperparameters']}: missing tensors {missing_t[:10]}, unexpected tensors "
                f"{extra_t[:10]}."
            )
        wrong = [
            f"{name}: stored {list(self.state_dict[name].shape)}, expected {list(shape)}"
            for name, shape in expected.items()
            if self.state_dict[name].shape != shape
        ]
        if wrong:
            raise self._fail(
                f"tensor shapes do not fit architecture {manifest['architecture']!r} with "
                f"hyper-parameters {manifest['hyperparameters']}: " + "; ".join(wrong[:10])
            )

    def check_family(self, family: str, *, purpose: str | None = None) -> None:
        """Raise `PackageError` unless the package is of ``family``.

        Parameters
        ----------
        family : `str`
            The family the caller needs, e.g. ``"photoz"``.
        purpose : `str`, optional
            What needs it, for the message (default ``family``), e.g.
            ``"photo-z"``.
        """
        if self.family != family:
            raise PackageError(
                f"Model package {self.source} ({self.name!r} version {self.version}) is a {self.family!r} "
                f"model; {purpose or family} needs a {family!r} package."
            )

    def check_inputs(self, **expected: Any) -> None:
        """Check the package's input specification against a task's config.

        Parameters
        ----------
        **expected
            Input-specification entries the caller relies on, e.g.
            ``bands=["g", "r"], stamp_size=31``.  Sequences compare as lists.

        Raises
        ------
        PackageError
            Naming every entry that is absent from the package or differs.
        """
        problems = []
        for key, value in expected.items():
            wanted = _jsonable(value, f"input {key!r}")
            if key not in self.inputs:
                problems.append(f"{key!r} is not in its input specification (it has {sorted(self.inputs)})")
            elif self.inputs[key] != wanted:
                problems.append(f"{key} is {self.inputs[key]!r} in the package but {wanted!r} is configured")
        if problems:
            raise PackageError(
                f"Model package {self.name!r} version {self.version} ({self.source}) does not match the "
                "configuration: " + "; ".join(problems) + ". Use a package trained for this configuration "
                "or change the configuration to match the package."
            )

    # ------------------------------------------------------------------
    # Construction
    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        *,
        family: str,
        architecture: str,
        hyperparameters: Mapping[str, Any],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        version: str,
        provenance: Mapping[str, Any],
        name: str | None = None,
    ) -> ModelPackage:
        """Package a trained model.

        Parameters
        ----------
        model : `torch.nn.Module`
            The model; its ``state_dict`` must fit ``architecture`` built with
            ``hyperparameters``.
        family, architecture : `str`
            See the module documentation.
        hyperparameters, inputs, outputs : `~collections.abc.Mapping`
            JSON-serialisable mappings.
        version : `str`
            See the module documentation.
        provenance : `~collections.abc.Mapping`
            JSON-serialisable mapping; it gains the meas_ml and torch
            versions if absent.
        name : `str`, optional
            See the module documentation; defaults to
            ``"{family}-{architecture}"``.

        Returns
        -------
        package : `ModelPackage`
            The package, with its manifest and weights checksums computed.
        """
        state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
        prov = dict(_jsonable(dict(provenance), "provenance"))
        prov.setdefault("meas_ml_version", _meas_ml_version)
        prov.setdefault("torch_version", torch.__version__)
        manifest = {
            "format_version": FORMAT_VERSION,
            "family": family,
            "name": name or f"{family}-{architecture}",
            "version": str(version),
            "architecture": architecture,
            "hyperparameters": _jsonable(dict(hyperparameters), "hyperparameters"),
            "inputs": _jsonable(dict(inputs), "inputs"),
            "outputs": _jsonable(dict(outputs), "outputs"),
            "provenance": prov,
            "weights_sha256": weights_sha256(state),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        manifest[MANIFEST_SHA256_KEY] = manifest_sha256(manifest)
        return cls(manifest, state, source=f"<from_model {manifest['name']}>")

    def build_model(self) -> torch.nn.Module:
        """Build a fresh CPU model with these weights, in eval mode.

        Returns
        -------
        model : `torch.nn.Module`
            The model of ``architecture`` with these weights loaded.
        """
        model = build_model(self.architecture, self.hyperparameters)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    # ------------------------------------------------------------------
    # Serialisation
    def to_bytes(self) -> bytes:
        """Serialise to the bytes of a ``.safetensors`` file.

        The manifest written carries a ``manifest_sha256`` computed now, so
        it covers exactly the manifest in the file.
        """
        manifest = dict(self.manifest)
        manifest[MANIFEST_SHA256_KEY] = manifest_sha256(manifest)
        return encode(self.state_dict, {MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})

    @staticmethod
    def _check_manifest_sha256(manifest: Any, source: str) -> None:
        """Verify the manifest checksum of a manifest read from a file.

        Parameters
        ----------
        manifest : `~typing.Any`
            The decoded manifest; anything but a `dict` is left to the
            constructor to report.
        source : `str`
            Where the manifest came from, for the messages.

        Raises
        ------
        PackageError
            If the manifest has no ``manifest_sha256`` or does not match it.
        """
        if not isinstance(manifest, dict):
            return  # the constructor reports a manifest that is not an object
        if MANIFEST_SHA256_KEY not in manifest:
            raise PackageError(
                f"Model package {source}: its manifest has no {MANIFEST_SHA256_KEY!r} checksum "
                "(it was written by a meas_ml older than manifest checksums), so an edit of the "
                "manifest (e.g. of outputs.bin_edges) could not be detected; it is refused. If you "
                "trust this file, re-save it with a checksum: python -c "
                '"from lsst.meas.ml.packages import reseal_package; '
                f'reseal_package({source!r})", or re-export the model with ModelPackage.from_model.'
            )
        actual = manifest_sha256(manifest)
        if manifest[MANIFEST_SHA256_KEY] != actual:
            raise PackageError(
                f"Model package {source}: manifest was modified after the package was written: it says "
                f"{MANIFEST_SHA256_KEY} {manifest[MANIFEST_SHA256_KEY]}, its contents hash to {actual}. The "
                "file is corrupt or was edited by hand; fetch it again, or re-export the model with "
                "ModelPackage.from_model (manifests must not be edited)."
            )

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> ModelPackage:
        """Read a package from the bytes of a ``.safetensors`` file.

        Parameters
        ----------
        data : `bytes`
            Contents of a ``.safetensors`` model package file.
        source : `str`, optional
            Where the bytes came from, for messages.

        Returns
        -------
        package : `ModelPackage`
            The verified package.

        Raises
        ------
        PackageError
            If the bytes are not a model package or fail any check: the
            manifest and weights checksums, family, architecture,
            hyper-parameters and tensor shapes.
        """
        return cls._from_bytes(data, source=source)

    @classmethod
    def _from_bytes(cls, data: bytes, *, source: str, _verify_manifest: bool = True) -> ModelPackage:
        """`from_bytes`; ``_verify_manifest=False`` (only for `reseal_package`)
        accepts a manifest without ``manifest_sha256``.
        """
        data = bytes(data)
        try:
            header, _ = read_header(data)
        except SafetensorsError as exc:
            raise PackageError(f"Model package {source}: not a safetensors file ({exc}).") from exc
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            metadata = {}
        if MANIFEST_KEY not in metadata:
            raise PackageError(
                f"Model package {source}: safetensors file has no {MANIFEST_KEY!r} metadata; it is plain "
                "weights, not a meas_ml model package. Create one with ModelPackage.from_model."
            )
        try:
            manifest = json.loads(metadata[MANIFEST_KEY])
        except json.JSONDecodeError as exc:
            raise PackageError(f"Model package {source}: manifest is not valid JSON: {exc}") from exc
        if _verify_manifest or (isinstance(manifest, dict) and MANIFEST_SHA256_KEY in manifest):
            cls._check_manifest_sha256(manifest, source)
        try:
            state, _ = decode(data)
        except SafetensorsError as exc:
            raise PackageError(f"Model package {source}: cannot read tensors: {exc}") from exc
        return cls(manifest, state, source=source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the package to ``path`` (atomically: a temporary file is renamed).

        Parameters
        ----------
        path : path-like
            Destination ``.safetensors`` file.
        """
        write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelPackage:
        """Read and verify a package file.

        Parameters
        ----------
        path : path-like
            The ``.safetensors`` package file.

        Returns
        -------
        package : `ModelPackage`
            The verified package.

        Raises
        ------
        PackageError
            If the file is missing, is not a model package, or fails the
            manifest or weights checksum, family, architecture,
            hyper-parameter or tensor-shape checks.
        """
        return cls._load(path)

    @classmethod
    def _load(cls, path: str | os.PathLike[str], *, _verify_manifest: bool = True) -> ModelPackage:
        path = os.fspath(path)
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise PackageError(
                f"Model package file {path} does not exist; check the path or the Butler collection "
                "holding the model."
            ) from None
        except IsADirectoryError:
            raise PackageError(
                f"Model package path {path} is a directory, not a .safetensors file."
            ) from None
        return cls._from_bytes(data, source=path, _verify_manifest=_verify_manifest)


def reseal_package(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> ModelPackage:
    """Re-save a package written before manifest checksums, adding ``manifest_sha256``.

    Every other check (weights checksum, architecture, hyper-parameters,
    tensor shapes) still applies; the weights and every other manifest entry
    are kept as they are.  A package that has a ``manifest_sha256`` must
    match it (a modified manifest is not re-sealed).

    Parameters
    ----------
    path : path-like
        The package file.
    out : path-like, optional
        Where to write the re-saved package (default: ``path``, replaced
        atomically).

    Returns
    -------
    package : `ModelPackage`
        The re-saved package.
    """
    package = ModelPackage._load(path, _verify_manifest=False)
    package.save(os.fspath(out) if out is not None else os.fspath(path))
    return package


def default_package_path(family: str) -> str:
    """Return the path of the package of a family shipped with meas_ml.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    path : `str`
        ``data/<family>_default.safetensors`` in the installed package; the
        file need not exist.
    """
    from importlib import resources

    return str(resources.files("lsst.meas.ml") / "data" / f"{family}_default.safetensors")


def default_package(family: str) -> ModelPackage:
    """Load the package of a family shipped with meas_ml.

    This is what commands use without ``--model``.

    Parameters
    ----------
    family : `str`
        Model family, e.g. ``"dia"``.

    Returns
    -------
    package : `ModelPackage`
        The verified default package of ``family``.

    Raises
    ------
    PackageError
        When this installation does not ship one.
    """
    path = default_package_path(family)
    if not os.path.exists(path):
        raise PackageError(
            f"No default {family!r} package ({path}) in this installation; pass a package with --model."
        )
    package = ModelPackage.load(path)
    package.check_family(family)
    return package
