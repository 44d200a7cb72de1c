"""The cost model: measured throughputs to hours, and bad input files."""

import json

import pytest
from lsst.meas.ml.cli import main
from lsst.meas.ml.cost import CostFiguresError, TaskFigures, cost_table, read_figures


def _task(**kw):
    base = dict(
        task="photoz",
        unit="galaxies",
        volume=2e10,
        per="data release",
        cpu_per_core_per_s=50_000.0,
        gpu_per_s=None,
        bytes_per_object=100.0,
        command="meas-ml bench photoz",
    )
    base.update(kw)
    return base


def test_hours_by_hand():
    rows = cost_table([TaskFigures(**_task(gpu_per_s=1e6))], cores=100, gpus=2, bandwidth_gbs=1.0)
    r = rows[0]
    assert r["cpu_hours"] == pytest.approx(2e10 / 5e4 / 3600)
    assert r["cpu_wall_hours"] == pytest.approx(r["cpu_hours"] / 100)
    assert r["gpu_hours"] == pytest.approx(2e10 / 1e6 / 3600)
    assert r["gpu_wall_hours"] == pytest.approx(r["gpu_hours"] / 2)
    assert r["bytes_read"] == 2e12
    assert r["io_floor_hours"] == pytest.approx(2e12 / 1e9 / 3600)
    assert r["bound"] == "compute"  # 1.11 h of compute on 100 cores vs 0.56 h of reading
    assert cost_table([TaskFigures(**_task())], cores=10_000, bandwidth_gbs=1.0)[0]["bound"] == "I/O"


def test_files_and_command(tmp_path, capsys):
    good = tmp_path / "f.json"
    good.write_text(
        json.dumps(
            {
                "tasks": [
                    _task(),
                    _task(
                        task="dia",
                        unit="DIA sources",
                        volume=1e7,
                        per="night",
                        cpu_per_core_per_s=6100.0,
                        gpu_per_s=2e5,
                    ),
                ]
            }
        )
    )
    assert [f.task for f in read_figures(good)] == ["photoz", "dia"]
    assert main(["cost", "--figures", str(good), "--markdown", "--cores", "100"]) == 0
    out = capsys.readouterr().out
    assert "| photoz |" in out and "not measured" in out and "`meas-ml bench photoz`" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": [_task(cpu_per_core_per_s=0)]}))
    with pytest.raises(CostFiguresError, match="cpu_per_core_per_s must be a positive"):
        read_figures(bad)
    bad.write_text(json.dumps({"tasks": [{"task": "x"}]}))
    with pytest.raises(CostFiguresError, match="missing fields"):
        read_figures(bad)
    assert main(["cost", "--figures", str(bad)]) == 2
