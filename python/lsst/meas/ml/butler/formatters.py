"""Butler formatter for the one storage class meas_ml adds: ``MLModelPackage``.

Images use the stack's own storage classes (``VisitImage``,
``DifferenceImage``, ``MaskedImageV2``) and ``lsst.images``' formatters;
nothing in the stack fits a model package (one ``.safetensors`` file,
`lsst.meas.ml.packages`), so it has its own storage class.  The formatter
reads from a local file; the datastore brings remote files to a local cache
first.
"""

from __future__ import annotations

from typing import Any

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

__all__ = ["ModelPackageFormatter"]


def _dataset_label(formatter: FormatterV2) -> str:
    try:
        ref = formatter.dataset_ref
        return f"dataset {ref.datasetType.name}@{dict(ref.dataId.required)} in {ref.run!r}"
    except Exception:  # pragma: no cover - a descriptor without a ref
        return "dataset"


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


__all__ += ["SpectrumCollectionFormatter"]


class SpectrumCollectionFormatter(FormatterV2):
    """Read and write `~lsst.meas.ml.dla.spectra.SpectrumCollection` (``MLSpectra``) as Parquet.

    One row per spectrum, with list columns for the wavelength, flux, error
    and mask (`~lsst.meas.ml.dla.spectra.SpectrumCollection.to_arrow`).
    """

    default_extension = ".parquet"
    supported_extensions = frozenset({".parquet"})
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..dla.spectra import SpectrumCollection, SpectrumReadError

        try:
            return SpectrumCollection.read(path)
        except SpectrumReadError as exc:
            raise SpectrumReadError(f"{_dataset_label(self)}: {exc}") from exc

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        from ..dla.spectra import SpectrumCollection

        if not isinstance(in_memory_dataset, SpectrumCollection):
            in_memory_dataset = SpectrumCollection(in_memory_dataset)
        in_memory_dataset.write(uri.ospath)
