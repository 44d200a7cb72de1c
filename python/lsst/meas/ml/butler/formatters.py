"""Butler formatters for the meas_ml storage classes.

``MLExposure`` -> multi-extension FITS (`lsst.meas.ml.fitsio`), with the
``bbox`` read parameter; ``MLModelPackage`` -> one ``.safetensors`` file
(`lsst.meas.ml.packages`).  Both read from a local file; the datastore
brings remote files to a local cache first.
"""

from __future__ import annotations

from typing import Any

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

__all__ = ["ExposureFormatter", "ModelPackageFormatter"]


def _dataset_label(formatter: FormatterV2) -> str:
    try:
        ref = formatter.dataset_ref
        return f"dataset {ref.datasetType.name}@{dict(ref.dataId.required)} in {ref.run!r}"
    except Exception:  # pragma: no cover - a descriptor without a ref
        return "dataset"


class ExposureFormatter(FormatterV2):
    """Read and write `~lsst.meas.ml.images.Exposure` as FITS."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits", ".fit"})
    can_read_from_local_file = True
    # Every storage-class parameter (``bbox``) is handled here.
    unsupported_parameters = frozenset()

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..fitsio import ExposureReadError, read_exposure
        from ..images import ImageError

        parameters = self.file_descriptor.parameters or {}
        try:
            return read_exposure(path, bbox=parameters.get("bbox"))
        except ExposureReadError as exc:
            raise ExposureReadError(f"{_dataset_label(self)}: {exc}") from exc
        except ImageError as exc:
            raise ImageError(f"{_dataset_label(self)}: {exc}") from exc

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        from ..fitsio import write_exposure

        write_exposure(in_memory_dataset, uri.ospath)


class ModelPackageFormatter(FormatterV2):
    """Read and write `~lsst.meas.ml.packages.ModelPackage` as safetensors.

    Reading verifies the checksum, the tensor shapes and the architecture;
    nothing in the file is executed.
    """

    default_extension = ".safetensors"
    supported_extensions = frozenset({".safetensors"})
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..packages import ModelPackage, PackageError

        try:
            return ModelPackage.load(path)
        except PackageError as exc:
            raise PackageError(f"{_dataset_label(self)}: {exc}") from exc

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        in_memory_dataset.save(uri.ospath)
