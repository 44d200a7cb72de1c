"""Model packages in the Butler: registration, retrieval, the CLI."""

from __future__ import annotations

import pytest
import torch
from lsst.meas.ml.butler import create_repo
from lsst.meas.ml.butler.registration import find_package, register_package
from lsst.meas.ml.cli import main
from lsst.meas.ml.packages import ModelPackage, PackageError


def make_package(version="1.0.0", seed=0):
    from lsst.meas.ml.models import build_model

    torch.manual_seed(seed)
    hp = {"n_features": 4, "n_outputs": 2, "hidden": [8]}
    model = build_model("mlp", hp)
    return ModelPackage.from_model(
        model,
        family="generic",
        architecture="mlp",
        hyperparameters=hp,
        inputs={"features": ["a", "b", "c", "d"]},
        outputs={"names": ["p0", "p1"]},
        version=version,
        provenance={"training_data": "random init", "metrics": {}},
    )


def test_register_find_and_immutability(tmp_path):
    butler = create_repo(tmp_path / "repo")
    package = make_package()
    ref, run = register_package(butler, package)
    assert run == "models/generic/1.0.0" and ref.datasetType.name == "ml_model_generic"
    assert ref.datasetType.dimensions.names == set()
    again, _ = register_package(butler, package)  # idempotent
    assert again.id == ref.id
    back = find_package(butler, "generic", run)
    assert back.sha256 == package.sha256
    with pytest.raises(PackageError, match="immutable"):
        register_package(butler, make_package(seed=1))
    assert find_package(butler, "generic", "no/such/collection") is None


def test_cli_register_and_errors(tmp_path, capsys):
    create_repo(tmp_path / "repo")
    path = tmp_path / "pkg.safetensors"
    make_package(version="2.0").save(path)
    assert main(["register", str(tmp_path / "repo"), str(path)]) == 0
    assert "models/generic/2.0" in capsys.readouterr().out
    assert main(["info", str(path)]) == 0
    assert '"architecture": "mlp"' in capsys.readouterr().out
    # A plain repository: one clear line naming the fix, no traceback.
    from lsst.daf.butler import Butler

    Butler.makeRepo(tmp_path / "plain")
    assert main(["register", str(tmp_path / "plain"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "meas-ml setup-repo" in err and "Traceback" not in err
    assert main(["setup-repo", str(tmp_path / "plain")]) == 0
    assert main(["register", str(tmp_path / "plain"), str(path)]) == 0
    # A corrupt package file.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-100])
    assert main(["info", str(bad)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
