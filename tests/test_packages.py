"""Tests of the model-package format and the architecture registry."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from lsst.meas.ml.models import ArchitectureError, build_model, list_architectures, register_architecture
from lsst.meas.ml.packages import (
    KNOWN_FAMILIES,
    MANIFEST_KEY,
    MANIFEST_SHA256_KEY,
    ModelPackage,
    PackageError,
    manifest_sha256,
    reseal_package,
    weights_sha256,
)

CNN_HP = {"in_channels": 3, "stamp_size": 15, "n_outputs": 2, "widths": [4, 8]}
MLP_HP = {"n_features": 5, "n_outputs": 3, "hidden": [8]}


def make_package(arch="mlp", hp=MLP_HP, family="generic", seed=0, **kwargs) -> ModelPackage:
    torch.manual_seed(seed)
    model = build_model(arch, hp)
    default_inputs = {"features": [f"f{i}" for i in range(5)], "bands": ["g", "r"], "stamp_size": 15}
    inputs = kwargs.pop("inputs", default_inputs)
    return ModelPackage.from_model(
        model,
        family=family,
        architecture=arch,
        hyperparameters=hp,
        inputs=inputs,
        outputs={"class_names": ["a", "b", "c"]},
        version="1.2.0",
        provenance={"training_data": "unit test", "metrics": {"loss": 0.5}},
        **kwargs,
    )


def _rewrite(data: bytes, edit, *, reseal: bool = True) -> bytes:
    """Re-serialise a package file after editing its manifest and tensors.

    With ``reseal`` (default) the manifest checksum is recomputed, so the
    edit reaches the checks behind it; without, the edit is a tampering.
    """
    from safetensors.torch import load, save

    (length,) = struct.unpack("<Q", data[:8])
    manifest = json.loads(json.loads(data[8 : 8 + length])["__metadata__"][MANIFEST_KEY])
    tensors = load(data)
    manifest, tensors = edit(manifest, tensors)
    if reseal and MANIFEST_SHA256_KEY in manifest:
        manifest[MANIFEST_SHA256_KEY] = manifest_sha256(manifest)
    return save(tensors, metadata={MANIFEST_KEY: json.dumps(manifest)})


def test_registry_lists_generic_architectures():
    names = list_architectures()
    assert "mlp" in names and "stamp_cnn" in names
    with pytest.raises(ArchitectureError, match="Unknown model architecture 'nope'"):
        build_model("nope", {})
    with pytest.raises(ArchitectureError, match="cannot be built"):
        build_model("mlp", {"n_features": 3})  # n_outputs missing


def test_register_conflicting_name_is_refused():
    with pytest.raises(ArchitectureError, match="already registered"):

        @register_architecture("mlp")
        def other_mlp(**kwargs):  # pragma: no cover - never called
            raise AssertionError


def test_roundtrip_file_and_model_outputs(tmp_path):
    package = make_package()
    path = tmp_path / "model.safetensors"
    package.save(path)
    loaded = ModelPackage.load(path)
    assert loaded.manifest == package.manifest
    assert loaded.sha256 == package.sha256 == weights_sha256(package.state_dict)
    assert loaded.family == "generic" and loaded.version == "1.2.0" and loaded.architecture == "mlp"
    assert loaded.provenance["metrics"] == {"loss": 0.5}
    assert "torch_version" in loaded.provenance and loaded.manifest["created"]
    x = torch.randn(7, 5)
    with torch.no_grad():
        a = package.build_model()(x)
        b = loaded.build_model()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not loaded.build_model().training
    assert ModelPackage.from_bytes(package.to_bytes()).sha256 == package.sha256


def test_checksum_independent_of_order_and_sensitive_to_values():
    package = make_package()
    reordered = dict(reversed(list(package.state_dict.items())))
    assert weights_sha256(reordered) == package.sha256
    changed = {k: v.clone() for k, v in package.state_dict.items()}
    next(iter(changed.values())).view(-1)[0] += 1e-3
    assert weights_sha256(changed) != package.sha256
    assert make_package(seed=1).sha256 != package.sha256


def test_corrupted_weights_fail_checksum(tmp_path):
    package = make_package()

    def corrupt(manifest, tensors):
        tensors["net.0.weight"] = tensors["net.0.weight"] + 1.0
        return manifest, tensors

    path = tmp_path / "bad.safetensors"
    path.write_bytes(_rewrite(package.to_bytes(), corrupt))
    with pytest.raises(PackageError, match="checksum mismatch") as info:
        ModelPackage.load(path)
    assert str(path) in str(info.value)


def test_wrong_tensor_shapes_refused():
    package = make_package()

    def wrong_hp(manifest, tensors):  # weights for 5 features, manifest claims 6
        manifest["hyperparameters"]["n_features"] = 6
        return manifest, tensors

    with pytest.raises(PackageError, match=r"net\.0\.weight: stored \[8, 5\], expected \[8, 6\]"):
        ModelPackage.from_bytes(_rewrite(package.to_bytes(), wrong_hp))

    def drop_tensor(manifest, tensors):
        del tensors["net.2.bias"]
        manifest["weights_sha256"] = weights_sha256(tensors)
        return manifest, tensors

    with pytest.raises(PackageError, match=r"missing tensors \['net.2.bias'\]"):
        ModelPackage.from_bytes(_rewrite(package.to_bytes(), drop_tensor))


def test_model_not_matching_architecture_refused_at_creation():
    model = build_model("mlp", {"n_features": 4, "n_outputs": 3, "hidden": [8]})
    with pytest.raises(PackageError, match="tensor shapes do not fit"):
        ModelPackage.from_model(
            model,
            family="generic",
            architecture="mlp",
            hyperparameters=MLP_HP,
            inputs={},
            outputs={},
            version="1",
            provenance={},
        )


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("family", "astrology", "unknown model family 'astrology'"),
        ("architecture", "transformer_xxl", "unknown architecture 'transformer_xxl'"),
        ("format_version", 99, "format_version 99 is not supported"),
    ],
)
def test_unknown_family_architecture_version_refused(key, value, match):
    package = make_package()

    def edit(manifest, tensors):
        manifest[key] = value
        return manifest, tensors

    with pytest.raises(PackageError, match=match):
        ModelPackage.from_bytes(_rewrite(package.to_bytes(), edit), source="edited")


def test_known_families_come_from_the_product_list():
    from lsst.meas.ml.products import PRODUCTS, product

    assert set(KNOWN_FAMILIES) == {p.family for p in PRODUCTS} | {"generic"}
    assert {"photoz", "dia"} <= set(KNOWN_FAMILIES)
    assert product("dia").output == "ml_dia_scores"
    with pytest.raises(KeyError, match="Unknown product 'astrology'"):
        product("astrology")
    with pytest.raises(PackageError, match="unknown model family"):
        make_package(family="cosmology")


def test_missing_file_and_non_package_files(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        ModelPackage.load(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 4)
    with pytest.raises(PackageError, match="too short"):
        ModelPackage.load(junk)
    junk.write_bytes(b"hello world, this is not safetensors")
    with pytest.raises(PackageError, match="not a safetensors file"):
        ModelPackage.load(junk)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(PackageError, match="not a meas_ml model package"):
        ModelPackage.load(plain)


def test_pickle_payload_is_never_executed(tmp_path):
    """A torch.save (pickle) file is refused without unpickling it."""
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    torch.save({"x": Evil()}, path)
    with pytest.raises(PackageError):
        ModelPackage.load(path)
    assert not marker.exists()


def test_check_inputs():
    package = make_package()
    package.check_inputs(bands=("g", "r"), stamp_size=15)
    with pytest.raises(PackageError, match=r"bands is \['g', 'r'\] in the package but \['g', 'r', 'i'\]"):
        package.check_inputs(bands=["g", "r", "i"])
    with pytest.raises(PackageError, match="stamp_size is 15 in the package but 31"):
        package.check_inputs(stamp_size=31, bands=["g", "r"])
    with pytest.raises(PackageError, match="'pixel_scale' is not in its input specification"):
        package.check_inputs(pixel_scale=0.2)


def test_non_json_manifest_values_refused():
    with pytest.raises(PackageError, match="JSON-serialisable"):
        make_package(inputs={"bands": {"g", "r"}})


def test_cnn_package_with_buffers(tmp_path):
    package = make_package("stamp_cnn", CNN_HP, family="dia", name="stamp-test")
    assert any("running_mean" in k for k in package.state_dict)
    package.save(tmp_path / "cnn.safetensors")
    loaded = ModelPackage.load(tmp_path / "cnn.safetensors")
    assert loaded.name == "stamp-test" and loaded.family == "dia"
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 15, 15)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model()(x), package.build_model()(x), rtol=0, atol=0)


def test_own_codec_matches_the_safetensors_package(tmp_path):
    """Files from the project's codec load with `safetensors`, and the other way round."""
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors not installed")
    from lsst.meas.ml.safetensors_io import decode, encode

    tensors = {
        "a": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b": torch.tensor([1, -2, 3], dtype=torch.int64),
        "c": torch.zeros(0, 5, dtype=torch.float16),
        "d": torch.tensor([True, False]),
        "e": torch.randn(2, 2).to(torch.bfloat16),
    }
    ours = encode(tensors, {"k": "v"})
    theirs = safetensors_torch.save(tensors, metadata={"k": "v"})
    for blob in (ours, theirs):
        back, meta = decode(blob)
        assert meta == {"k": "v"}
        loaded = safetensors_torch.load(blob)
        for name, t in tensors.items():
            assert back[name].dtype == t.dtype and torch.equal(back[name], t)
            assert torch.equal(loaded[name], t)


def test_codec_refuses_out_of_range_offsets():
    from lsst.meas.ml.safetensors_io import SafetensorsError, decode, encode

    blob = bytearray(encode({"w": torch.ones(4)}))
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    header["w"]["data_offsets"] = [0, 1 << 20]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    bad = struct.pack("<Q", len(text)) + text + bytes(blob[8 + length :])
    with pytest.raises(SafetensorsError, match="invalid"):
        decode(bad)
    header["w"]["data_offsets"] = [0, 8]  # 8 bytes cannot hold 4 float32
    text = json.dumps(header).encode()
    with pytest.raises(SafetensorsError, match="do not hold"):
        decode(struct.pack("<Q", len(text)) + text + bytes(blob[8 + length :]))


def test_package_loads_where_safetensors_is_not_installed(tmp_path):
    """The stack's environment has no `safetensors`: packages still load and save."""
    import subprocess
    import sys

    path = tmp_path / "p.safetensors"
    make_package().save(path)
    code = (
        "import sys; sys.modules['safetensors'] = None; sys.modules['safetensors.torch'] = None\n"
        "from lsst.meas.ml.packages import ModelPackage\n"
        f"p = ModelPackage.load({str(path)!r})\n"
        f"p.save({str(tmp_path / 'q.safetensors')!r})\n"
        f"q = ModelPackage.load({str(tmp_path / 'q.safetensors')!r})\n"
        "assert q.sha256 == p.sha256\n"
        "import importlib.util; "
        "assert 'safetensors' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
        "print('loaded', p.family, p.version)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded" in out.stdout


# ----------------------------------------------------------------------
# Manifest checksum


def test_from_model_writes_a_manifest_checksum_and_load_verifies_it(tmp_path):
    package = make_package()
    assert package.manifest[MANIFEST_SHA256_KEY] == manifest_sha256(package.manifest)
    path = tmp_path / "p.safetensors"
    package.save(path)
    assert ModelPackage.load(path).manifest == package.manifest


def test_edited_bin_edges_are_refused(tmp_path):
    """Editing outputs in the manifest (weights untouched) used to go unnoticed."""
    package = make_package()

    def edit(manifest, tensors):
        manifest["outputs"]["bin_edges"] = [0.0, 0.5, 1.0, 9.0]
        return manifest, tensors

    path = tmp_path / "edited.safetensors"
    path.write_bytes(_rewrite(package.to_bytes(), edit, reseal=False))
    with pytest.raises(PackageError, match="manifest was modified") as info:
        ModelPackage.load(path)
    assert str(path) in str(info.value)
    # Nor can it be blessed by re-sealing: a checksum that is there must match.
    with pytest.raises(PackageError, match="manifest was modified"):
        reseal_package(path)


def test_manifest_without_checksum_is_refused_and_can_be_resealed(tmp_path):
    package = make_package()

    def strip(manifest, tensors):
        del manifest[MANIFEST_SHA256_KEY]
        return manifest, tensors

    old = tmp_path / "old.safetensors"
    old.write_bytes(_rewrite(package.to_bytes(), strip))
    with pytest.raises(PackageError, match="no 'manifest_sha256' checksum") as info:
        ModelPackage.load(old)
    assert "reseal_package" in str(info.value) and str(old) in str(info.value)
    resealed = reseal_package(old, tmp_path / "new.safetensors")
    back = ModelPackage.load(tmp_path / "new.safetensors")
    assert back.sha256 == package.sha256 == resealed.sha256
    assert {k: v for k, v in back.manifest.items() if k != MANIFEST_SHA256_KEY} == {
        k: v for k, v in package.manifest.items() if k != MANIFEST_SHA256_KEY
    }
    reseal_package(old)  # in place
    assert ModelPackage.load(old).sha256 == package.sha256


def test_in_memory_edits_are_resealed_when_saved(tmp_path):
    """Code that builds a package in memory (as photoz.demo does) is trusted."""
    package = make_package()
    package.manifest["version"] = "demo"
    again = ModelPackage(package.manifest, package.state_dict)
    again.save(tmp_path / "demo.safetensors")
    assert ModelPackage.load(tmp_path / "demo.safetensors").version == "demo"


@pytest.mark.parametrize("name", ["dia_default", "photoz_default"])
def test_shipped_packages_carry_a_manifest_checksum(name):
    from pathlib import Path

    import lsst.meas.ml

    path = Path(lsst.meas.ml.__file__).parent / "data" / f"{name}.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    stored = json.loads(json.loads(raw[8 : 8 + length])["__metadata__"][MANIFEST_KEY])
    assert stored[MANIFEST_SHA256_KEY] == manifest_sha256(stored)
    package = ModelPackage.load(path)
    assert package.sha256 == weights_sha256(package.state_dict)


# ----------------------------------------------------------------------
# Invalid hyper-parameters


@pytest.mark.parametrize(
    "edit_hp,match",
    [
        ({"hidden": [-8]}, r"hyper-parameter 'hidden' must be a list of positive integers.*-8"),
        ({"hidden": [8.5]}, r"hyper-parameter 'hidden' must be a list of positive integers.*8\.5"),
        ({"n_features": 0}, r"hyper-parameter 'n_features' must be a positive integer, got 0"),
        ({"n_outputs": "3"}, r"hyper-parameter 'n_outputs' must be a positive integer, got '3'"),
        ({"dropout": 7.0}, r"cannot be built .*dropout probability"),
    ],
)
def test_invalid_hyperparameters_give_package_error_naming_them(edit_hp, match):
    package = make_package()

    def edit(manifest, tensors):
        manifest["hyperparameters"].update(edit_hp)
        return manifest, tensors

    with pytest.raises(PackageError, match=match) as info:
        ModelPackage.from_bytes(_rewrite(package.to_bytes(), edit), source="hp-edited")
    assert "hp-edited" in str(info.value) and "invalid hyper-parameters" in str(info.value)


def test_build_model_wraps_builder_errors():
    with pytest.raises(ArchitectureError, match="'widths' must be a list of positive integers"):
        build_model("stamp_cnn", {**CNN_HP, "widths": [4, -1]})
    with pytest.raises(ArchitectureError, match="'in_channels' must be a positive integer, got True"):
        build_model("stamp_cnn", {**CNN_HP, "in_channels": True})
    # numpy integers are integers
    build_model("mlp", {"n_features": np.int64(5), "n_outputs": 3, "hidden": (np.int32(4),)})


def test_check_family():
    package = make_package(family="dia")
    package.check_family("dia")
    with pytest.raises(PackageError, match="is a 'dia' model; photo-z needs a 'photoz' package"):
        package.check_family("photoz", purpose="photo-z")
