"""Photo-z over HATS catalogs (lsdb + Dask): `lsst.meas.ml.photoz.hats` and ``meas-ml predict photoz --hats``.

The input is the object table of the simulated survey (catalog level, with
more galaxies than the tiny survey draws, positions spread over a few
degrees so that ``hats-import`` makes several partitions), imported with
``hats-import``'s pipeline on a local Dask client; the shipped default
photo-z package predicts it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

lsdb = pytest.importorskip(
    "lsdb", reason="lsdb is not installed (pip install 'lsst-meas-ml[hats]' or lsdb hats hats-import)"
)
pytest.importorskip("hats_import", reason="hats-import is not installed (pip install hats-import)")

from lsst.meas.ml.photoz.features import PhotozInputError  # noqa: E402
from lsst.meas.ml.photoz.hats import (  # noqa: E402
    HatsError,
    predict_photoz_hats,
    read_photoz_hats_meta,
    worker_stats,
)
from lsst.meas.ml.photoz.predict import PhotozFlag, default_package, predict_photoz  # noqa: E402

SCALAR_COLUMNS = [
    "photoz_mean",
    "photoz_mode",
    "photoz_median",
    "photoz_std",
    "photoz_lo68",
    "photoz_hi68",
    "photoz_ood_score",
]


@pytest.fixture(scope="module")
def objects_hats(tmp_path_factory):
    """The simulated object table as a Parquet file and as a HATS catalog; yields (table, hats path)."""
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client
    from lsst.meas.ml.photoz.tables import write_table
    from lsst.meas.ml.simulate import SurveyConfig
    from lsst.meas.ml.simulate.survey import simulate_catalog

    objects, _, _ = simulate_catalog(SurveyConfig.tiny(), n_galaxies=3000)
    objects = objects[[c for c in objects.colnames if not c.endswith("_flag")]]
    # The tiny tract spans a few arcminutes; spread it over a few degrees so that
    # hats-import makes several partitions at HEALPix orders up to 7.
    for name in ("coord_ra", "coord_dec"):
        values = np.asarray(objects[name], dtype=float)
        objects[name] = values.mean() + (values - values.mean()) * 300.0
    root = tmp_path_factory.mktemp("hats")
    parquet = write_table(objects, str(root / "objects.parquet"))
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        args = ImportArguments(
            output_artifact_name="objects",
            input_file_list=[parquet],
            file_reader="parquet",
            ra_column="coord_ra",
            dec_column="coord_dec",
            output_path=str(root),
            pixel_threshold=600,
            highest_healpix_order=7,
            progress_bar=False,
            resume=False,
            tmp_dir=str(root / "tmp"),
        )
        pipeline_with_client(args, client)
    return objects, str(root / "objects")


@pytest.fixture(scope="module")
def package():
    return default_package()


def _by_id(frame):
    """The rows of a computed catalog sorted by objectId."""
    return frame.sort_values("objectId").reset_index()


def _pdfs(series):
    return np.stack([np.asarray(v, dtype=np.float32) for v in series])


def _check_same_as_predict_photoz(out_frame, table, package):
    """The HATS output holds exactly the objects of ``table``, with the photo-z of `predict_photoz`."""
    expected = predict_photoz(package, table)
    expected = expected[np.argsort(np.asarray(expected["objectId"]))]
    got = _by_id(out_frame)
    np.testing.assert_array_equal(got["objectId"].to_numpy(np.int64), np.asarray(expected["objectId"]))
    for name in SCALAR_COLUMNS:
        np.testing.assert_allclose(
            got[name].to_numpy(np.float64, na_value=np.nan),
            np.asarray(expected[name], dtype=np.float64),
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )
    np.testing.assert_array_equal(
        got["photoz_flags"].to_numpy(np.int32), np.asarray(expected["photoz_flags"])
    )
    np.testing.assert_allclose(_pdfs(got["photoz_pdf"]), np.asarray(expected["photoz_pdf"]), atol=1e-6)


@pytest.mark.filterwarnings("ignore:Right catalog does not have a margin cache")
def test_hats_in_process_matches_predict_photoz(objects_hats, package, tmp_path):
    table, hats_path = objects_hats
    out = tmp_path / "photoz"
    summary = predict_photoz_hats(package, hats_path, out, n_workers=0, device="cpu", chunk_size=256)
    source = lsdb.open_catalog(hats_path)
    assert summary["partitions"] == len(source.get_healpix_pixels()) > 3
    assert summary["rows"] == len(table)
    result = lsdb.open_catalog(out)
    # Same partitions as the input, so the output joins back by objectId partition by partition.
    assert result.get_healpix_pixels() == source.get_healpix_pixels()
    frame = result.compute(progress_bar=False)
    assert {"objectId", "coord_ra", "coord_dec", "photoz_pdf", "photoz_flags"} <= set(frame.columns)
    _check_same_as_predict_photoz(frame, table, package)
    assert summary["out_of_distribution"] == int(
        ((frame["photoz_flags"].to_numpy() & int(PhotozFlag.OUT_OF_DISTRIBUTION)) != 0).sum()
    )
    meta = read_photoz_hats_meta(out)
    assert meta["photoz_bin_edges"] == [float(e) for e in package.outputs["bin_edges"]]
    assert meta["ml_model"]["sha256"] == package.sha256
    assert meta["columns"]["photoz_mean"]["description"]

    # The join documented in doc/photoz_hats.md (same partitions: no margin cache needed).
    joined = source.join(
        result,
        left_on="objectId",
        right_on="objectId",
        suffixes=("", "_photoz"),
        suffix_method="overlapping_columns",
        log_changes=False,
    ).compute(progress_bar=False)
    assert len(joined) == len(table)
    joined, mine = _by_id(joined), _by_id(frame)
    np.testing.assert_array_equal(joined["photoz_mean"].to_numpy(float), mine["photoz_mean"].to_numpy(float))
    np.testing.assert_array_equal(
        joined["u_cModelFlux"].to_numpy(float),
        np.asarray(table["u_cModelFlux"])[np.argsort(np.asarray(table["objectId"]))],
    )

    with pytest.raises(HatsError, match="exists"):
        predict_photoz_hats(package, hats_path, out, n_workers=0)
    with pytest.raises(HatsError, match="overwrite the input"):
        predict_photoz_hats(package, hats_path, hats_path, n_workers=0, overwrite=True)


@pytest.mark.slow
def test_hats_dask_worker_process(objects_hats, package, tmp_path):
    """One local Dask worker process: the package is built once there, not once per partition."""
    from distributed import Client, LocalCluster

    table, hats_path = objects_hats
    out = tmp_path / "photoz"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        summary = predict_photoz_hats(package, hats_path, out, client=client, device="cpu", pdf_format="both")
        stats = list(client.run(worker_stats).values())
        threads = list(client.run(lambda: __import__("torch").get_num_threads()).values())
    assert summary["workers"] == 1
    assert len(stats) == 1 and stats[0]["package_loads"] == 1
    assert stats[0]["partitions"] == summary["partitions"] > 3
    assert threads == [1]
    frame = lsdb.open_catalog(out).compute(progress_bar=False)
    _check_same_as_predict_photoz(frame, table, package)
    assert _pdfs(frame["photoz_pdf_quantiles"]).shape == (
        len(table),
        len(read_photoz_hats_meta(out)["photoz_quantile_levels"]),
    )


def test_hats_missing_band_columns(objects_hats, package, tmp_path):
    _, hats_path = objects_hats
    source = lsdb.open_catalog(hats_path)
    no_u = tmp_path / "no_u"
    keep = [c for c in source.columns if not c.startswith("u_")]
    source[keep].write_catalog(no_u, as_collection=False, progress_bar=False)
    with pytest.raises(PhotozInputError, match=r"u_cModelFlux.*u_cModelFluxErr.*\['u'\]"):
        predict_photoz_hats(package, no_u, tmp_path / "out", n_workers=0)
    assert not (tmp_path / "out").exists()
    no_id = tmp_path / "no_id"
    source[[c for c in source.columns if c != "objectId"]].write_catalog(
        no_id, as_collection=False, progress_bar=False
    )
    with pytest.raises(PhotozInputError, match="objectId"):
        predict_photoz_hats(package, no_id, tmp_path / "out", n_workers=0)
    with pytest.raises(HatsError, match="does not exist"):
        predict_photoz_hats(package, tmp_path / "nowhere", tmp_path / "out", n_workers=0)


def test_hats_empty_partition_and_catalog_object(objects_hats, package, tmp_path):
    """An lsdb Catalog filtered so that some partitions are empty: those rows are absent, the others right."""
    table, hats_path = objects_hats
    cut = float(np.median(np.asarray(table["coord_ra"])))
    filtered = lsdb.open_catalog(hats_path).query(f"coord_ra < {cut}")
    sizes = [
        len(filtered.partitions[i].compute(progress_bar=False))
        for i in range(len(filtered.get_healpix_pixels()))
    ]
    assert 0 in sizes and sum(sizes) > 0
    out = tmp_path / "photoz"
    summary = predict_photoz_hats(package, filtered, out, n_workers=0, device="cpu", duplicates="catalog")
    kept = table[np.asarray(table["coord_ra"]) < cut]
    assert summary["rows"] == len(kept)
    frame = lsdb.open_catalog(out).compute(progress_bar=False)
    _check_same_as_predict_photoz(frame, kept, package)


def test_cli_predict_photoz_hats(objects_hats, tmp_path, capsys):
    from lsst.meas.ml.cli import main

    table, hats_path = objects_hats
    out = tmp_path / "cli_photoz"
    assert (
        main(
            [
                "predict",
                "photoz",
                "--hats",
                hats_path,
                "--out",
                str(out),
                "--workers",
                "0",
                "--device",
                "cpu",
                "--pdf-format",
                "quantiles",
            ]
        )
        == 0
    )
    assert f"{len(table)} photo-z rows" in capsys.readouterr().out
    frame = lsdb.open_catalog(out).compute(progress_bar=False)
    assert "photoz_pdf" not in frame.columns and "photoz_pdf_quantiles" in frame.columns
    assert sorted(frame["objectId"].to_numpy(np.int64)) == sorted(np.asarray(table["objectId"]))
    assert main(["predict", "photoz", "--hats", hats_path, "--out", str(out), "--workers", "0"]) != 0
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                "photoz",
                "--hats",
                hats_path,
                "--input",
                os.fspath(tmp_path / "x.parquet"),
                "--out",
                str(tmp_path / "y"),
            ]
        )
