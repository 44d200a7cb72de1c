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
      "created": "2026-01-01T00:00:00+00:00"
    }

Loading parses JSON and raw tensors only: no pickle, no code from the
package.  The architecture is built from the registry in
`lsst.meas.ml.models`, and the weights must match it tensor for tensor.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch

from . import __version__ as _meas_ml_version
from .models import ArchitectureError, build_model, list_architectures
from .safetensors_io import SafetensorsError, decode, encode, read_header

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_FAMILIES",
    "MANIFEST_KEY",
    "ModelPackage",
    "PackageError",
    "weights_sha256",
]

#: Version of the package layout written by this code.
FORMAT_VERSION = 1

#: Metadata key under which the JSON manifest is stored.
MANIFEST_KEY = "meas_ml_manifest"

#: Model families a package may declare.
KNOWN_FAMILIES: frozenset[str] = frozenset(
    {"photoz", "dia", "morphology", "embedding", "asteroid", "spectra", "generic"}
)

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


class PackageError(ValueError):
    """Raised for a model package that is missing, corrupt, or does not fit
    the code or the task configuration that reads it."""


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a canonical serialisation of named tensors.

    The digest covers, for each tensor in sorted name order, its name,
    dtype, shape and raw little-endian bytes, so it does not depend on the
    order or layout of the tensors in a file.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b""
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0{len(raw)}\0"
        digest.update(header.encode())
        digest.update(raw)
    return digest.hexdigest()


def _jsonable(value: Any, what: str) -> Any:
    """Round-trip through JSON (tuples become lists), with a clear error."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise PackageError(f"Model package {what} must be JSON-serialisable: {exc}") from exc


def _expected_state(architecture: str, hyperparameters: Mapping[str, Any]) -> dict[str, torch.Size]:
    """Tensor names and shapes of a freshly built architecture.

    Built on the ``meta`` device where possible, so no memory is allocated.
    """
    try:
        try:
            with torch.device("meta"):
                model = build_model(architecture, hyperparameters)
        except ArchitectureError:
            raise
        except Exception:  # a builder that cannot run on the meta device
            model = build_model(architecture, hyperparameters)
    except ArchitectureError as exc:
        raise PackageError(str(exc)) from exc
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
    The constructor validates the manifest, the checksum and the tensor
    shapes; use `from_model` to create a package from a trained model and
    `load` / `from_bytes` to read one.
    """

    def __init__(
        self, manifest: dict[str, Any], state_dict: dict[str, torch.Tensor], *, source: str = "<memory>"
    ) -> None:
        self.manifest = manifest
        self.state_dict = state_dict
        self.source = source
        self._validate()

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

        expected = _expected_state(manifest["architecture"], manifest["hyperparameters"])
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
        family, architecture, version, name : `str`
            See the module documentation; ``name`` defaults to
            ``"{family}-{architecture}"``.
        hyperparameters, inputs, outputs, provenance : `~collections.abc.Mapping`
            JSON-serialisable mappings.  ``provenance`` gains the meas_ml and
            torch versions if absent.
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
        return cls(manifest, state, source=f"<from_model {manifest['name']}>")

    def build_model(self) -> torch.nn.Module:
        """A fresh CPU model with these weights, in eval mode."""
        model = build_model(self.architecture, self.hyperparameters)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    # ------------------------------------------------------------------
    # Serialisation
    def to_bytes(self) -> bytes:
        """Serialise to the bytes of a ``.safetensors`` file."""
        return encode(self.state_dict, {MANIFEST_KEY: json.dumps(self.manifest, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> ModelPackage:
        """Read a package from the bytes of a ``.safetensors`` file.

        Raises
        ------
        PackageError
            If the bytes are not a model package or fail any check.
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
        try:
            state, _ = decode(data)
        except SafetensorsError as exc:
            raise PackageError(f"Model package {source}: cannot read tensors: {exc}") from exc
        return cls(manifest, state, source=source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the package to ``path`` (atomically: a temporary file is renamed)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        data = self.to_bytes()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            # mkstemp creates 0600; give the file the usual umask-based mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelPackage:
        """Read and verify a package file.

        Raises
        ------
        PackageError
            If the file is missing, is not a model package, or fails the
            checksum, family, architecture or tensor-shape checks.
        """
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
        return cls.from_bytes(data, source=path)
