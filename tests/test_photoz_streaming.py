"""Streaming photo-z prediction: chunked outputs equal the whole-table ones, failures leave no output.

No timing or memory figure is asserted here (see ``meas-ml bench photoz-memory``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from lsst.meas.ml.cli import build_parser, main
from lsst.meas.ml.engine import InferenceConfig, InferenceEngine
from lsst.meas.ml.packages import ModelPackage
from lsst.meas.ml.photoz import predict as predict_module
from lsst.meas.ml.photoz.features import PhotozInputError
from lsst.meas.ml.photoz.predict import (
    DEFAULT_PACKAGE_PATH,
    DuplicateIds,
    PhotozFlag,
    chunk_rows,
    columns_for_package,
    predict_photoz,
    predict_photoz_chunked,
    predict_photoz_file,
)
from lsst.meas.ml.photoz.tables import TableChunks, TableReadError, read_table, write_table
from lsst.meas.ml.simulate.photometry import make_photometric_catalog

N = 3000
BATCH = 256  # forward batch of both paths
CHUNK = 700  # rounded down to 512 = 2 batches: duplicates and NaN rows fall in different chunks


@pytest.fixture(scope="module")
def package() -> ModelPackage:
    return ModelPackage.load(DEFAULT_PACKAGE_PATH)


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    config = InferenceConfig()
    config.device = "cpu"
    config.batchSize = BATCH
    return InferenceEngine(config)


@pytest.fixture(scope="module")
def catalog() -> Table:
    """Synthetic galaxies with NaN rows, missing bands and ids repeated across chunks."""
    cat = make_photometric_catalog(N, seed=7)
    fluxes = [c for c in cat.colnames if "Flux" in c]
    for name in fluxes:  # no usable band at all: NO_DATA rows, in several chunks
        cat[name][[3, 600, 1500, 2999]] = np.nan
    cat["u_cModelFlux"][100:140] = np.nan  # one missing band
    cat["g_cModelFluxErr"][1800:1810] = -1.0  # unusable error
    ids = np.asarray(cat["objectId"]).copy()
    ids[2900] = ids[5]  # a pair in the first and the last chunk
    ids[1024] = ids[1025] = ids[10]  # a triple over three chunks (512-row chunks)
    cat["objectId"] = ids
    return cat


def _whole_table_file(package, engine, table, path, pdf_format="full"):
    """What ``meas-ml predict photoz`` wrote before streaming: one call, one write."""
    write_table(predict_photoz(package, table, engine=engine, pdf_format=pdf_format), path)
    return path


def _assert_same_file(a: Path, b: Path) -> None:
    """Same schema (types, units, descriptions, metadata) and the same bytes in every column."""
    sa, sb = pq.read_schema(a), pq.read_schema(b)
    assert sa.equals(sb, check_metadata=True), (sa, sb)
    for field in sa:
        assert field.metadata == sb.field(field.name).metadata
    ta, tb = read_table(a), read_table(b)
    assert ta.colnames == tb.colnames and len(ta) == len(tb)
    assert ta.meta == tb.meta
    for name in ta.colnames:
        ca, cb = ta[name], tb[name]
        assert ca.dtype == cb.dtype and ca.shape == cb.shape and ca.unit == cb.unit, name
        assert ca.description == cb.description, name
        assert np.asarray(ca).tobytes() == np.asarray(cb).tobytes(), name


def test_chunk_rows_keeps_batches_aligned():
    assert chunk_rows(700, 256) == (512, 256)
    assert chunk_rows(65536, 8192) == (65536, 8192)
    assert chunk_rows(100_000, 8192) == (98304, 8192)
    assert chunk_rows(1000, 8192) == (1000, 1000)  # a small chunk lowers the batch instead
    with pytest.raises(ValueError):
        chunk_rows(0, 8)


@pytest.mark.parametrize("pdf_format", ["full", "quantiles", "both"])
def test_streamed_file_equals_whole_table_file(tmp_path, package, engine, catalog, pdf_format, caplog):
    source = tmp_path / "in.parquet"
    write_table(catalog, source)
    whole = _whole_table_file(package, engine, catalog, tmp_path / "whole.parquet", pdf_format)
    out = tmp_path / "stream.parquet"
    with caplog.at_level(logging.WARNING, logger="lsst.meas.ml.photoz.predict"):
        summary = predict_photoz_file(
            package, source, out, engine=engine, chunk_size=CHUNK, pdf_format=pdf_format
        )
    assert summary["rows"] == N and summary["chunk_size"] == 512 and summary["streamed"]
    assert pq.ParquetFile(out).metadata.num_row_groups == 6  # really written chunk by chunk
    _assert_same_file(whole, out)
    flags = np.asarray(read_table(out)["photoz_flags"])
    dup = np.flatnonzero(flags & PhotozFlag.DUPLICATE_ID)
    assert dup.tolist() == [5, 10, 1024, 1025, 2900]
    assert (flags[[3, 600, 1500, 2999]] & PhotozFlag.NO_DATA).all()
    # The duplicate warning is given once, with the totals of the whole input.
    messages = [r.getMessage() for r in caplog.records if "share an object id" in r.getMessage()]
    assert messages and "5 of 3000 input rows" in messages[-1] and "2 distinct ids" in messages[-1]
    assert pq.read_schema(out).metadata[b"lsst::arrow::rowcount"] == b"3000"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_cli_streams_parquet_csv_and_hdf5_to_the_same_catalog(tmp_path, package, engine, catalog):
    whole = _whole_table_file(package, engine, catalog, tmp_path / "whole.parquet")
    pq_in = tmp_path / "in.parquet"
    write_table(catalog, pq_in)
    csv_in = tmp_path / "in.csv"
    catalog.write(csv_in, format="ascii.csv")
    h5_in = tmp_path / "in.h5"
    import h5py

    with h5py.File(h5_in, "w") as fh:
        grp = fh.create_group("photometry")
        for name in catalog.colnames:
            grp.create_dataset(name, data=np.asarray(catalog[name]))
    for source, kind in ((pq_in, "parquet"), (csv_in, "csv"), (h5_in, "hdf5")):
        assert TableChunks(source, ["objectId"], chunk_size=10).kind == kind
        out = tmp_path / f"out_{kind}.parquet"
        assert (
            main(
                [
                    "predict",
                    "photoz",
                    "--input",
                    str(source),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    "--batch-size",
                    str(BATCH),
                    "--chunk-size",
                    str(CHUNK),
                ]
            )
            == 0
        )
        _assert_same_file(whole, out)


def test_files_that_cannot_be_streamed_are_read_whole_with_the_same_result(
    tmp_path, package, engine, catalog
):
    whole = _whole_table_file(package, engine, catalog, tmp_path / "whole.parquet")
    table_h5 = tmp_path / "table.h5"
    catalog.write(table_h5, path="data", serialize_meta=True)
    for source in (table_h5,):
        reader = TableChunks(source, ["objectId"], chunk_size=10)
        assert not reader.streaming and "read whole" in reader.note
        out = tmp_path / f"{source.stem}.parquet"
        predict_photoz_file(package, source, out, engine=engine, chunk_size=CHUNK)
        _assert_same_file(whole, out)


def test_input_without_id_column_gets_row_indices_across_chunks(tmp_path, package, engine, catalog):
    table = catalog.copy()
    del table["objectId"]
    source = tmp_path / "noid.parquet"
    write_table(table, source)
    whole = _whole_table_file(package, engine, table, tmp_path / "whole.parquet")
    out = tmp_path / "out.parquet"
    predict_photoz_file(package, source, out, engine=engine, chunk_size=CHUNK)
    _assert_same_file(whole, out)
    assert read_table(out)["objectId"].tolist() == list(range(N))


def test_string_ids_longer_in_later_chunks_are_kept_whole(tmp_path, package, engine, catalog):
    table = catalog[:1200].copy()
    table["objectId"] = np.array(
        [f"obj{i}" if i < 1000 else f"object-with-a-long-name-{i}" for i in range(1200)]
    )
    table["objectId"][1100] = "obj7"  # repeated across chunks
    source = tmp_path / "strings.parquet"
    write_table(table, source)
    whole = _whole_table_file(package, engine, table, tmp_path / "whole.parquet")
    out = tmp_path / "out.parquet"
    predict_photoz_file(package, source, out, engine=engine, chunk_size=CHUNK)
    _assert_same_file(whole, out)
    back = read_table(out)
    assert back["objectId"][1199] == "object-with-a-long-name-1199"
    assert np.flatnonzero(np.asarray(back["photoz_flags"]) & PhotozFlag.DUPLICATE_ID).tolist() == [7, 1100]


def test_magnitude_inputs_are_converted_chunk_by_chunk(tmp_path, package, engine, catalog):
    from lsst.meas.ml.photoz.features import flux_table_from_magnitudes

    mags = Table({"objectId": catalog["objectId"]})
    for band in "ugrizy":
        flux = np.asarray(catalog[f"{band}_cModelFlux"])
        with np.errstate(invalid="ignore", divide="ignore"):
            mag = np.where(flux > 0, 31.4 - 2.5 * np.log10(np.abs(flux)), 99.0)
        mags[f"mag_{band}"] = mag
        mags[f"mag_err_{band}"] = np.where(mag < 99, 0.05, 27.0)
    source = tmp_path / "mags.parquet"
    write_table(mags, source)
    converted = flux_table_from_magnitudes(
        mags, list("ugrizy"), "mag_{band}", "mag_err_{band}", keep=["objectId"]
    )
    whole = _whole_table_file(package, engine, converted, tmp_path / "whole.parquet")
    out = tmp_path / "out.parquet"
    assert (
        main(
            [
                "predict",
                "photoz",
                "--input",
                str(source),
                "--out",
                str(out),
                "--magnitudes",
                "--flux-template",
                "mag_{band}",
                "--flux-err-template",
                "mag_err_{band}",
                "--device",
                "cpu",
                "--batch-size",
                str(BATCH),
                "--chunk-size",
                str(CHUNK),
            ]
        )
        == 0
    )
    _assert_same_file(whole, out)


def test_empty_input_gives_an_empty_catalog_with_the_schema(tmp_path, package, engine, catalog):
    empty = catalog[:0]
    source = tmp_path / "empty.parquet"
    write_table(empty, source)
    whole = _whole_table_file(package, engine, empty, tmp_path / "whole.parquet")
    out = tmp_path / "out.parquet"
    assert predict_photoz_file(package, source, out, engine=engine)["rows"] == 0
    _assert_same_file(whole, out)


# ----------------------------------------------------------------------
# Failures mid-stream


def test_bad_csv_value_in_a_later_chunk_leaves_no_output(tmp_path, catalog, capsys, monkeypatch):
    # Several blocks, so that the error comes mid-stream.
    monkeypatch.setattr(TableChunks, "csv_block_size", 64 * 1024)
    written = []
    real_predict = predict_module.predict_photoz

    def counting(*args, **kwargs):
        written.append(kwargs.get("row_offset"))
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_photoz", counting)
    source = tmp_path / "bad.csv"
    catalog.write(source, format="ascii.csv")
    lines = source.read_text().splitlines()
    fields = lines[2501].split(",")
    fields[lines[0].split(",").index("r_cModelFlux")] = "abc"
    lines[2501] = ",".join(fields)
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "new.parquet"
    args = [
        "predict",
        "photoz",
        "--input",
        str(source),
        "--device",
        "cpu",
        "--batch-size",
        str(BATCH),
        "--chunk-size",
        str(CHUNK),
    ]
    assert main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "abc" in err and "'r_cModelFlux'" in err and "Traceback" not in err, err
    assert written and written[-1] >= 1024  # chunks before the bad row were predicted and written
    assert not out.exists()
    # An existing output is left untouched.
    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"previous catalog")
    assert main(args + ["--out", str(existing)]) == 2
    assert existing.read_bytes() == b"previous catalog"
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "existing.parquet"]


def test_error_in_a_later_chunk_of_a_parquet_input_leaves_no_output(
    tmp_path, package, engine, catalog, monkeypatch
):
    source = tmp_path / "in.parquet"
    write_table(catalog, source)
    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"previous catalog")
    real = predict_module.predict_photoz
    calls = []

    def failing(*args, **kwargs):
        calls.append(kwargs.get("row_offset"))
        if len(calls) == 4:
            raise PhotozInputError("Column 'r_cModelFlux' must hold numbers (simulated in chunk 4).")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_photoz", failing)
    for out in (tmp_path / "new.parquet", existing):
        calls.clear()
        with pytest.raises(PhotozInputError, match="simulated in chunk 4"):
            predict_photoz_file(package, source, out, engine=engine, chunk_size=CHUNK)
        assert calls == [0, 512, 1024, 1536]  # three chunks were written to the temporary file
    assert existing.read_bytes() == b"previous catalog"
    assert sorted(os.listdir(tmp_path)) == ["existing.parquet", "in.parquet"]


def test_output_over_the_input_is_still_refused(tmp_path, catalog, capsys):
    source = tmp_path / "in.parquet"
    write_table(catalog[:10], source)
    before = source.read_bytes()
    assert main(["predict", "photoz", "--input", str(source), "--out", str(source)]) == 2
    assert "same file as the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_unreadable_parquet_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(TableReadError, match="Cannot read table"):
        TableChunks(bad, None)


# ----------------------------------------------------------------------
# In memory (EstimatePhotozTask)


def test_chunked_in_memory_prediction_equals_one_call(package, engine, catalog):
    for pdf_format in ("full", "quantiles"):
        whole = predict_photoz(package, catalog, engine=engine, pdf_format=pdf_format)
        chunked = predict_photoz_chunked(
            package, catalog, engine=engine, pdf_format=pdf_format, chunk_size=CHUNK
        )
        assert whole.colnames == chunked.colnames and whole.meta == chunked.meta
        for name in whole.colnames:
            assert whole[name].dtype == chunked[name].dtype and whole[name].unit == chunked[name].unit
            assert whole[name].description == chunked[name].description
            assert np.asarray(whole[name]).tobytes() == np.asarray(chunked[name]).tobytes(), name
    # Arrow and dict inputs are sliced too.
    import pyarrow as pa

    arrow = pa.table({name: np.asarray(catalog[name]) for name in catalog.colnames})
    by_arrow = predict_photoz_chunked(package, arrow, engine=engine, chunk_size=CHUNK)
    by_dict = predict_photoz_chunked(
        package, {n: np.asarray(catalog[n]) for n in catalog.colnames}, engine=engine, chunk_size=CHUNK
    )
    whole = predict_photoz(package, catalog, engine=engine)
    for name in whole.colnames:
        assert np.asarray(by_arrow[name]).tobytes() == np.asarray(whole[name]).tobytes()
        assert np.asarray(by_dict[name]).tobytes() == np.asarray(whole[name]).tobytes()


def test_task_predicts_in_chunks(package, catalog):
    from lsst.meas.ml.photoz.task import EstimatePhotozConfig, EstimatePhotozTask

    config = EstimatePhotozConfig()
    config.inference.device = "cpu"
    config.inference.batchSize = BATCH
    config.chunkSize = CHUNK
    config.pdfFormat = "quantiles"
    task = EstimatePhotozTask(config=config)
    result = task.run(objectCatalog=catalog, model=package).photoz
    whole = predict_photoz(
        package, catalog, columns_for_package(package), engine=task.engine, pdf_format="quantiles"
    )
    for name in whole.colnames:
        assert np.asarray(result[name]).tobytes() == np.asarray(whole[name]).tobytes(), name
    assert EstimatePhotozConfig().chunkSize >= 8192


def test_duplicate_ids_of_any_type():
    dup = DuplicateIds(np.array([5, 3, 5, 9, 3, 3]))
    assert dup.values.tolist() == [3, 5] and len(dup) == 2
    assert dup.mask(np.array([3, 4, 5])).tolist() == [True, False, True]
    mixed = DuplicateIds(np.array([1, "a", 1, 2.5, "b", "a"], dtype=object))
    assert len(mixed) == 2
    assert mixed.mask(np.array(["a", 2.5, 1, "c"], dtype=object)).tolist() == [True, False, True, False]
    assert not DuplicateIds(np.arange(10)).mask(np.arange(5)).any()


# ----------------------------------------------------------------------
# The benchmark command (structure only: no figure is asserted)


def test_bench_photoz_memory_is_registered():
    args = build_parser().parse_args(
        ["bench", "photoz-memory", "--rows", "1000", "2000", "--pdf-format", "quantiles"]
    )
    assert args.rows == [1000, 2000] and args.pdf_format == "quantiles" and callable(args.func)


@pytest.mark.slow
def test_bench_photoz_memory_runs_on_tiny_inputs(tmp_path):
    from lsst.meas.ml.photoz.bench import format_report, run_memory_benchmark

    report = run_memory_benchmark(
        [300, 600], pdf_format="quantiles", chunk_size=256, baseline_max_rows=300, workdir=str(tmp_path)
    )
    modes = [(r["mode"], r["rows"]) for r in report["runs"]]
    assert modes == [("floor", 0), ("stream", 300), ("whole", 300), ("stream", 600)]
    assert report["peak_ratio"] is not None and report["throughput_ratio"] is not None
    assert "streaming peak ratio" in format_report(report)
