"""Tests of the galaxy-morphology product: the DAT and ResNet models, training (supervised and
FixMatch), the task on in-memory coadds and through ``pipetask run``, image files, bad inputs and
the real HSC coadd cutouts."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table
from conftest import ROOT, shared_data
from lsst.meas.ml.cli import main
from lsst.meas.ml.imagefiles import ImageFileError, LabelFileError
from lsst.meas.ml.models import build_model
from lsst.meas.ml.models.morphology import DeformableAttention
from lsst.meas.ml.morphology.features import (
    DEFAULT_CLASSES,
    MorphologyFlag,
    MorphologyInputError,
    class_column,
    coadd_stamps,
)
from lsst.meas.ml.morphology.metrics import macro_f1, plot_confusion
from lsst.meas.ml.morphology.predict import classify_stamps, predict_image_files
from lsst.meas.ml.morphology.task import ClassifyMorphologyConfig, ClassifyMorphologyTask
from lsst.meas.ml.morphology.train import (
    MorphologyTrainingConfig,
    data_from_files,
    data_from_survey,
    pretrain_morphology,
    train_morphology,
)
from lsst.meas.ml.packages import ModelPackage, PackageError

STAMP = 32


@pytest.fixture(scope="module")
def survey():
    from lsst.meas.ml.simulate import SurveyConfig
    from lsst.meas.ml.simulate.survey import simulate_survey

    return simulate_survey(SurveyConfig.tiny())


@pytest.fixture(scope="module")
def data(survey):
    return data_from_survey(survey, stamp_size=STAMP)


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    config = MorphologyTrainingConfig(
        steps=6, batch_size=16, mu=2, threshold=0.3, label_fraction=0.3, validation_fraction=0.0, seed=1
    )
    return train_morphology(data, config)


def _patch(survey, patch=0, drop=()):
    coadds = {b: survey.coadds[(patch, b)] for b in "grizy" if b not in drop}
    objects = survey.object[np.asarray(survey.object["patch"]) == patch]
    return coadds, objects


def _task(**overrides) -> ClassifyMorphologyTask:
    config = ClassifyMorphologyConfig()
    config.stampSize = STAMP
    for key, value in overrides.items():
        setattr(config, key, value)
    return ClassifyMorphologyTask(config=config)


# ----------------------------------------------------------------------
# Models


@pytest.mark.parametrize("architecture", ["morph_dat", "morph_resnet"])
def test_model_shapes_and_attention_maps(architecture):
    model = build_model(architecture, {"in_channels": 11, "stamp_size": 48, "n_classes": 6}).eval()
    x = torch.randn(3, 11, 48, 48)
    with torch.no_grad():
        assert model(x).shape == (3, 6)
        maps = model.attention_maps(x)
    assert maps.shape == (3, 48, 48) and torch.all(maps >= 0)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(3), atol=1e-4)
    with pytest.raises(ValueError, match="expects stamps of shape"):
        model(torch.randn(3, 10, 48, 48))


def test_wide_dat_builds():
    from lsst.meas.ml.morphology.train import ARCHITECTURES

    small = build_model("morph_dat", {})
    wide = build_model("morph_dat", ARCHITECTURES["morph_dat"]["wide"])
    assert sum(p.numel() for p in wide.parameters()) > 4 * sum(p.numel() for p in small.parameters())


def test_deformable_sampling_at_reference_points_and_offsets():
    torch.manual_seed(0)
    attn = DeformableAttention(dim=8, heads=2, offset_stride=2, offset_range=1.5)
    x = torch.randn(2, 8, 8, 8)
    # Zero offsets (the initial state): the points are the centres of 2x2 token blocks, where
    # bilinear sampling is the block mean.
    _, weights, points = attn(x)
    assert weights.shape == (2, 2, 64, 16) and points.shape == (2, 16, 2)
    sampled = torch.nn.functional.grid_sample(x, points.reshape(2, 4, 4, 2), align_corners=False)
    assert torch.allclose(sampled, torch.nn.functional.avg_pool2d(x, 2), atol=1e-5)
    # Learned offsets move the points, by at most offset_range tokens.
    torch.nn.init.normal_(attn.offset_net[-1].weight, std=1.0)
    _, _, moved = attn(x)
    shift = (moved - points).abs() * 8 / 2  # in tokens
    assert shift.max() > 0.1 and shift.max() <= 1.5 + 1e-5
    # Gradients reach the offset network through grid_sample.
    out, _, _ = attn(x)
    out.sum().backward()
    assert attn.offset_net[-1].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------
# Training


def test_short_semi_supervised_training_run(trained, data, tmp_path):
    package = trained.package
    assert package.family == "morphology" and package.architecture == "morph_dat"
    assert package.outputs["class_names"] == list(DEFAULT_CLASSES)
    assert trained.report["semi_supervised"] and trained.report["n_unlabelled"] > 0
    assert trained.report["pseudo_label_fraction"] is not None
    assert package.inputs["bands"] == ["g", "r", "i", "z", "y"] and package.inputs["stamp_size"] == STAMP
    assert len(package.inputs["channels"]) == 11
    path = tmp_path / "m.safetensors"
    package.save(path)
    assert ModelPackage.load(path).sha256 == package.sha256
    table = classify_stamps(package, data.stamps)
    probs = np.stack([table[class_column(c)] for c in DEFAULT_CLASSES], axis=1)
    ok = data.stamps.usable
    assert np.allclose(probs[ok].sum(axis=1), 1.0, atol=1e-4)
    assert np.all(np.isfinite(table["morph_ood_score"][ok]))


def test_supervised_training_lowers_the_loss(data):
    torch.set_num_threads(1)
    labelled = data.subset(data.stamps.usable)
    config = MorphologyTrainingConfig(
        architecture="morph_resnet",
        semi_supervised=False,
        steps=40,
        batch_size=32,
        validation_fraction=0.0,
        class_weighting="none",
        seed=3,
    )
    torch.manual_seed(config.seed)
    initial = build_model("morph_resnet", {"in_channels": 11, "stamp_size": STAMP, "n_classes": 6}).eval()
    result = train_morphology(labelled, config)
    x, y = torch.as_tensor(labelled.stamps.x), torch.as_tensor(labelled.labels)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(initial(x), y)
        after = torch.nn.functional.cross_entropy(result.package.build_model()(x), y)
    assert after < 0.8 * before


def test_mean_teacher_is_the_moving_average_and_soft_targets_train(data):
    torch.set_num_threads(1)
    labelled = data.subset(data.stamps.usable)
    common = {"architecture": "morph_resnet", "steps": 1, "batch_size": 8, "validation_fraction": 0.0}
    common["seed"] = 5
    student = train_morphology(labelled, MorphologyTrainingConfig(semi_supervised=False, **common))
    teacher = train_morphology(
        labelled, MorphologyTrainingConfig(semi_supervised=False, ema_decay=0.5, **common)
    )
    torch.manual_seed(5)
    initial = build_model("morph_resnet", {"in_channels": 11, "stamp_size": STAMP, "n_classes": 6})
    after, averaged = student.package.build_model(), teacher.package.build_model()
    for p0, p1, pe in zip(initial.parameters(), after.parameters(), averaged.parameters(), strict=True):
        torch.testing.assert_close(pe, 0.5 * (p0 + p1))
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(initial.parameters(), after.parameters()))
    # Soft (sharpened) targets under a zero threshold: every unlabelled stamp takes part.
    half = labelled.labels.copy()
    half[::2] = -1
    soft = train_morphology(
        dataclasses.replace(labelled, labels=half),
        MorphologyTrainingConfig(consistency="soft", threshold=0.0, ema_decay=0.9, **{**common, "steps": 3}),
    )
    assert soft.report["pseudo_label_fraction"] == 1.0
    for bad in ({"consistency": "mixup"}, {"ema_decay": 1.0}, {"sharpen_temperature": 0.0}):
        with pytest.raises(MorphologyInputError):
            MorphologyTrainingConfig(**bad)


def test_self_supervised_pretraining_trains_the_backbone_and_is_reusable(data):
    torch.set_num_threads(1)
    usable = data.subset(data.stamps.usable)
    half = usable.labels.copy()
    half[1::2] = -1
    partly = dataclasses.replace(usable, labels=half)
    common = {"semi_supervised": False, "steps": 2, "batch_size": 8, "validation_fraction": 0.0, "seed": 2}
    config = MorphologyTrainingConfig(pretrain_steps=25, pretrain_batch=16, **common)
    state, report = pretrain_morphology(partly, config)
    # The contrastive loss falls (chance is log(2 * 16 - 1) = 3.43) and the views are found above chance.
    assert report["pretrain_loss_end"] < report["pretrain_loss_start"]
    assert report["pretrain_view_accuracy"] > 1 / 31
    torch.manual_seed(config.seed)
    initial = build_model("morph_dat", {"in_channels": 11, "stamp_size": STAMP, "n_classes": 6}).state_dict()
    assert set(state) == set(initial)
    # The backbone moved; the classifier head, which pre-training does not use, did not.
    assert not torch.equal(state["stem.0.weight"], initial["stem.0.weight"])
    for key in ("head.1.weight", "head.1.bias"):
        torch.testing.assert_close(state[key], initial[key])
    # One pre-trained state serves any labelling of the same stamps, as if pre-trained in the run.
    inline = train_morphology(partly, config)
    reused = train_morphology(partly, config, initial_state=state)
    assert inline.report["pretrain_loss_end"] == report["pretrain_loss_end"]
    for a, b in zip(inline.package.build_model().parameters(), reused.package.build_model().parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(MorphologyInputError, match="at least 2 stamps"):
        pretrain_morphology(partly.subset(np.arange(1)), config)
    with pytest.raises(MorphologyInputError, match="pretrain_steps > 0"):
        pretrain_morphology(partly, MorphologyTrainingConfig(**common))
    for bad in (
        {"pretrain_steps": -1},
        {"pretrain_batch": 1},
        {"pretrain_temperature": 0.0},
        {"pretrain_lr": 0},
    ):
        with pytest.raises(MorphologyInputError, match="pretrain"):
            MorphologyTrainingConfig(**bad)


def test_quality_gains_are_paired_by_seed_and_tabulated():
    from lsst.meas.ml.morphology.quality import (
        FIXMATCH,
        PRETRAINED,
        SUPERVISED,
        format_gains,
        format_table,
        paired_gains,
    )

    def report(sup, pre, fix):
        runs = []
        for mode, (acc, f1) in ((SUPERVISED, sup), (PRETRAINED, pre), (FIXMATCH, fix)):
            runs.append(
                {
                    "architecture": "morph_dat",
                    "mode": mode,
                    "label_fraction": 0.1,
                    "n_labels": 10,
                    "accuracy": acc,
                    "macro_f1": f1,
                    "pseudo_label_fraction": None,
                    "seconds": 1.0,
                }
            )
        # Another model and fraction: not part of the DAT's paired gains at 10%.
        runs.append({**runs[0], "architecture": "morph_resnet", "accuracy": 0.9})
        return {"runs": runs}

    reports = [
        report((0.30, 0.20), (0.35, 0.22), (0.28, 0.21)),
        report((0.40, 0.30), (0.39, 0.34), (0.40, 0.30)),
    ]
    gains = {g["mode"]: g for g in paired_gains(reports)}
    pre = gains[PRETRAINED]
    assert pre["seeds"] == 2 and pre["label_fraction"] == 0.1
    assert pre["accuracy_gain"] == pytest.approx(0.02) and pre["seeds_gaining_accuracy"] == 1
    assert pre["macro_f1_gain"] == pytest.approx(0.03) and pre["seeds_gaining_macro_f1"] == 2
    assert pre["accuracy_gain_se"] == pytest.approx(np.std([0.05, -0.01], ddof=1) / np.sqrt(2))
    assert gains[FIXMATCH]["accuracy_gain"] == pytest.approx(-0.01)
    assert np.isnan(paired_gains(reports[:1])[0]["accuracy_gain_se"])
    gain_rows = format_gains(paired_gains(reports)).splitlines()
    assert (
        len(gain_rows) == 2 + 2
        and f"| {PRETRAINED} | 10% | 2 | +0.020 ± 0.030 | 1 | +0.030 ± 0.010 | 2 |" in gain_rows
    )
    table = format_table(reports[0]).splitlines()
    assert len(table) == 2 + 4 and "| DAT | supervised | 10% | 10 | 0.300 | 0.200 | - | 1 |" in table


def test_training_needs_two_labelled_classes(data):
    one = data.subset(np.flatnonzero(data.labels == data.labels[0]))
    with pytest.raises(MorphologyInputError, match="at least two classes"):
        train_morphology(one, MorphologyTrainingConfig(steps=1))


# ----------------------------------------------------------------------
# Task on in-memory coadds


def test_dihedral_average_is_invariant_under_quarter_turns(trained, data):
    stamps = data.subset(data.stamps.usable).stamps
    turned = type(stamps)(
        np.ascontiguousarray(np.rot90(stamps.x, 1, axes=(-2, -1))),
        stamps.flags,
        stamps.masked_fraction,
        stamps.channels,
        stamps.n_image_channels,
    )
    a = classify_stamps(trained.package, stamps, dihedral=True)
    b = classify_stamps(trained.package, turned, dihedral=True)
    for c in DEFAULT_CLASSES:
        assert np.allclose(a[class_column(c)], b[class_column(c)], atol=1e-5)
    assert np.array_equal(a["morph_class"], b["morph_class"])
    assert a.meta["dihedral_average"]


def test_task_run_schema_edges_and_attention(trained, survey):
    coadds, objects = _patch(survey)
    result = _task(attentionBrightest=3, attentionIds=[int(objects["objectId"][0])]).run(
        coadds=coadds, objectCatalog=objects, model=trained.package
    )
    cat = result.morphology
    assert np.array_equal(cat["objectId"], objects["objectId"])
    for col in [
        "morph_class",
        "morph_entropy",
        "morph_ood_score",
        "morph_flags",
        *(class_column(c) for c in DEFAULT_CLASSES),
    ]:
        assert col in cat.colnames
    assert cat.meta["morph_class_names"] == list(DEFAULT_CLASSES)
    assert cat.meta["ml_model"]["sha256"] == trained.package.sha256
    flags = np.asarray(cat["morph_flags"])
    assert ((flags & MorphologyFlag.EDGE) != 0).any() and ((flags & MorphologyFlag.EDGE) == 0).any()
    classified = np.asarray(cat["morph_class"]) != ""
    assert np.all(np.isfinite(cat["morph_entropy"][classified]))
    att = result.attention
    assert len(att) == 4 and att["attention"].shape == (4, STAMP * STAMP)
    assert int(objects["objectId"][0]) in set(att["objectId"])
    assert np.allclose(att["attention"].sum(axis=1), 1.0, atol=1e-4)
    assert type(result.attentionPlot).__name__ == "Figure"


def test_missing_band_sets_nan_masks_and_flag(trained, survey):
    coadds, objects = _patch(survey, drop=("z",))
    stamps = coadd_stamps(coadds, objects["x"], objects["y"], stamp_size=STAMP)
    assert np.all(stamps.x[:, 3] == 0) and np.all(stamps.x[:, 6 + 3] == 1)
    result = _task(attentionBrightest=0).run(coadds=coadds, objectCatalog=objects, model=trained.package)
    flags = np.asarray(result.morphology["morph_flags"])
    assert np.all(flags & MorphologyFlag.MISSING_BAND)
    assert result.morphology.meta["missing_bands"] == ["z"]
    assert (np.asarray(result.morphology["morph_class"]) != "").any()


def test_all_masked_and_off_image_objects_are_flagged_not_classified(trained, survey):
    coadds, objects = _patch(survey)
    objects = objects[:3].copy()
    blanked = {}
    x0, y0 = int(round(objects["x"][0])), int(round(objects["y"][0]))
    for band, planes in coadds.items():
        image = planes.image.copy()
        ly, lx = y0 - planes.xy0[1], x0 - planes.xy0[0]
        image[max(0, ly - STAMP) : ly + STAMP, max(0, lx - STAMP) : lx + STAMP] = np.nan
        blanked[band] = type(planes)(
            image=image,
            mask=planes.mask,
            variance=planes.variance,
            xy0=planes.xy0,
            band=band,
            mask_planes=planes.mask_planes,
        )
    objects["x"][1] = -500.0
    cat = (
        _task(attentionBrightest=0)
        .run(coadds=blanked, objectCatalog=objects, model=trained.package)
        .morphology
    )
    flags = np.asarray(cat["morph_flags"])
    assert flags[0] & MorphologyFlag.ALL_MASKED and flags[1] & MorphologyFlag.OFFIMAGE
    assert cat["morph_class"][0] == "" and cat["morph_class"][1] == ""
    assert np.isnan(cat[class_column("E")][0]) and cat["morph_class"][2] != ""


def test_empty_object_table_gives_empty_catalog(trained, survey):
    coadds, objects = _patch(survey)
    result = _task(attentionBrightest=2).run(coadds=coadds, objectCatalog=objects[:0], model=trained.package)
    assert len(result.morphology) == 0 and class_column("Sc/Sd") in result.morphology.colnames
    assert len(result.attention) == 0


def test_model_for_other_bands_or_stamp_size_is_a_clear_error(trained, survey):
    coadds, objects = _patch(survey)
    with pytest.raises(PackageError, match="bands"):
        _task(bands=["g", "r", "i"], attentionBand="r").run(
            coadds=coadds, objectCatalog=objects, model=trained.package
        )
    with pytest.raises(PackageError, match="stamp_size"):
        _task(stampSize=48).run(coadds=coadds, objectCatalog=objects, model=trained.package)


def test_config_validation():
    config = ClassifyMorphologyConfig()
    config.stampSize = 60
    with pytest.raises(Exception, match="divisible by 8"):
        config.validate()
    config = ClassifyMorphologyConfig()
    config.attentionBand = "u"
    with pytest.raises(Exception, match="one of bands"):
        config.validate()
    config = ClassifyMorphologyConfig()
    config.attentionBrightest = 0
    connections = config.ConnectionsClass(config=config)
    assert "attention" not in connections.outputs and "morphology" in connections.outputs


def test_real_hsc_coadd_cutouts_through_the_task():
    from lsst.meas.ml.images import PixelPlanes

    path = shared_data("hsc_coadd_cutouts", "hsc_cosmos_35.npz")
    d = np.load(path)
    coadds = {
        str(b): PixelPlanes(image=d["images"][i], mask=d["mask"][i], variance=d["variance"][i], band=str(b))
        for i, b in enumerate(d["filters"])
    }
    objects = Table(
        {"objectId": np.arange(len(d["catalog"])), "x": d["catalog"]["x"], "y": d["catalog"]["y"]}
    )
    torch.manual_seed(0)
    hyper = {"in_channels": 11, "stamp_size": 64, "n_classes": 6}
    from lsst.meas.ml.morphology.features import input_spec

    package = ModelPackage.from_model(
        build_model("morph_dat", hyper),
        family="morphology",
        architecture="morph_dat",
        hyperparameters=hyper,
        inputs=input_spec("grizy", 64, "coadd"),
        outputs={"class_names": list(DEFAULT_CLASSES), "energy_median": -1.8, "energy_p99": -1.7},
        version="test",
        provenance={},
    )
    config = ClassifyMorphologyConfig()
    config.fluxTemplate = ""
    config.attentionBrightest = 2
    result = ClassifyMorphologyTask(config=config).run(coadds=coadds, objectCatalog=objects, model=package)
    cat = result.morphology
    assert len(cat) == 7 and np.all(cat["morph_class"] != "")
    for col in [*(class_column(c) for c in DEFAULT_CLASSES), "morph_entropy", "morph_ood_score"]:
        assert np.all(np.isfinite(cat[col]))
    assert np.all(cat["morph_flags"] & MorphologyFlag.EDGE)  # 58x48 cutouts, 64-pixel stamps
    assert np.all(np.isfinite(result.attention["attention"]))


# ----------------------------------------------------------------------
# Image files


def _write_images(root: Path, data, n: int, size: int = STAMP) -> list[str]:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        rgb = data.stamps.x[i, 1:4]  # r, i, z channels, asinh-stretched
        img = np.clip((rgb - rgb.min()) / max(float(np.ptp(rgb)), 1e-6) * 255, 0, 255).astype(np.uint8)
        img = img.transpose(1, 2, 0)
        if i % 5 == 4:  # a few of another size: cropped/padded about the centre
            img = np.pad(img, ((2, 2), (2, 2), (0, 0)))
        Image.fromarray(img).save(root / f"gal{i:03d}.png")
        ids.append(f"gal{i:03d}")
    return ids


def test_image_files_train_and_predict_commands(tmp_path, data, capsys):
    torch.set_num_threads(1)
    ids = _write_images(tmp_path / "img", data, 40)
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    names = np.array(DEFAULT_CLASSES)[data.labels[:40]]
    labels = Table({"ID": ids, "LABEL": [n if i % 3 else "" for i, n in enumerate(names)]})
    labels.write(tmp_path / "labels.csv")
    pkg = tmp_path / "files.safetensors"
    assert (
        main(
            [
                "train",
                "morphology",
                "--images",
                str(tmp_path / "img" / "*.png"),
                "--labels",
                str(tmp_path / "labels.csv"),
                "--id-column",
                "ID",
                "--label-column",
                "LABEL",
                "--steps",
                "4",
                "--batch-size",
                "8",
                "--threshold",
                "0.3",
                "--fixmatch",
                "--pretrain-steps",
                "3",
                "--pretrain-batch",
                "8",
                "--out",
                str(pkg),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["semi_supervised"] and printed["pretrain_view_accuracy"] >= 0
    package = ModelPackage.load(pkg)
    assert package.inputs["source"] == "files" and package.inputs["stamp_size"] == STAMP
    assert len(package.inputs["bands"]) == 3
    out = tmp_path / "pred.parquet"
    assert (
        main(
            [
                "predict",
                "morphology",
                "--model",
                str(pkg),
                "--images",
                str(tmp_path / "img" / "*.png"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = Table.read(out)
    assert list(table["id"]) == ids and "morph_class" in table.colnames
    assert set(package.outputs["class_names"]) <= set(DEFAULT_CLASSES)
    for c in package.outputs["class_names"]:
        assert np.all(np.isfinite(table[class_column(c)]))
    resized = (np.asarray(table["morph_flags"]) & MorphologyFlag.RESIZED) != 0
    assert resized.sum() == 8
    # The unreadable file is named, skipped and counted.
    direct = predict_image_files(package, str(tmp_path / "img" / "*.png"))
    assert direct.meta["n_skipped"] == 1 and direct.meta["skipped_files"][0].endswith("broken.png")
    # A coadd package refuses image files, and an image-file package refuses coadds.
    with pytest.raises(PackageError, match="trained on 'files' stamps"):
        ClassifyMorphologyTask(config=ClassifyMorphologyConfig()).run(
            coadds={}, objectCatalog=Table(), model=package
        )


def test_image_file_errors(tmp_path, data, trained):
    from PIL import Image

    ids = _write_images(tmp_path / "img", data, 5)
    # Mixed channel counts: a clear error naming the file.
    Image.fromarray(np.zeros((STAMP, STAMP), np.uint8)).save(tmp_path / "img" / "grey.png")
    with pytest.raises(ImageFileError, match="grey.png"):
        data_from_files(str(tmp_path / "img" / "*.png"), None)
    (tmp_path / "img" / "grey.png").unlink()
    # resize="error": the file of another size is named.
    with pytest.raises(ImageFileError, match="gal004.png"):
        data_from_files(str(tmp_path / "img" / "*.png"), None, resize="error")
    # Labels whose ids match no image.
    Table({"id": ["x1", "x2"], "label": ["E", "Sa"]}).write(tmp_path / "l.csv")
    with pytest.raises(LabelFileError, match="No id"):
        data_from_files(str(tmp_path / "img" / "*.png"), str(tmp_path / "l.csv"))
    assert (
        main(
            [
                "train",
                "morphology",
                "--images",
                str(tmp_path / "img" / "*.png"),
                "--labels",
                str(tmp_path / "l.csv"),
                "--out",
                str(tmp_path / "o.safetensors"),
            ]
        )
        == 2
    )
    # A coadd package cannot classify image files.
    with pytest.raises(PackageError, match="trained on 'coadd' stamps"):
        predict_image_files(trained.package, str(tmp_path / "img" / "*.png"))
    assert ids


def test_metrics_and_confusion_png(tmp_path):
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert macro_f1(truth, truth, 3) == 1.0
    assert macro_f1(np.zeros(6, int), truth, 3) == pytest.approx((2 * 2 / 8) / 3)
    path = plot_confusion(np.eye(3, dtype=int) * 5, ["a", "b", "c"], str(tmp_path / "c.png"))
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------
# Butler and pipetask


@pytest.mark.slow
def test_train_from_butler_and_pipetask_run(tiny_repo, tmp_path):
    repo = tiny_repo
    from lsst.daf.butler import Butler

    pkg = tmp_path / "butler.safetensors"
    assert (
        main(
            [
                "train",
                "morphology",
                "--butler",
                str(repo),
                "--collections",
                "MLSim/defaults",
                "--stamp-size",
                str(STAMP),
                "--steps",
                "6",
                "--batch-size",
                "16",
                "--pretrain-steps",
                "2",
                "--threads",
                "1",
                "--out",
                str(pkg),
            ]
        )
        == 0
    )
    package = ModelPackage.load(pkg)
    assert package.provenance["training_data"]["butler"] == str(repo)
    assert main(["register", str(repo), str(pkg), "--run", "models/morphology/test"]) == 0

    pipetask = Path(sys.executable).with_name("pipetask")
    cmd = [
        str(pipetask) if pipetask.exists() else "pipetask",
        "run",
        "-b",
        str(repo),
        "-i",
        "MLSim/defaults,models/morphology/test",
        "-o",
        "u/test/morphology",
        "-p",
        str(ROOT / "pipelines" / "morphology.yaml"),
        "--register-dataset-types",
        "-c",
        f"classifyMorphology:stampSize={STAMP}",
        "-c",
        "classifyMorphology:attentionBrightest=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    butler = Butler.from_config(str(repo), collections="u/test/morphology")
    refs = list(butler.query_datasets("ml_morphology"))
    tract_id = {"skymap": refs[0].dataId["skymap"], "tract": refs[0].dataId["tract"]}
    objects = butler.get("object", dataId=tract_id, collections="MLSim/defaults")
    assert len(refs) == 2  # both patches of the tiny tract
    total = 0
    for ref in refs:
        cat = butler.get(ref, parameters={"strip_astropy_meta_yaml": False})
        assert cat.meta["morph_class_names"] == list(DEFAULT_CLASSES)
        rows = objects[np.asarray(objects["patch"]) == ref.dataId["patch"]]
        assert np.array_equal(np.asarray(cat["objectId"]), np.asarray(rows["objectId"]))
        total += len(cat)
        att = butler.get(
            "ml_morphology_attention", dataId=ref.dataId, parameters={"strip_astropy_meta_yaml": False}
        )
        assert len(att) == 2 and att.meta["stamp_size"] == STAMP
        png = butler.getURI("ml_morphology_attention_plot", dataId=ref.dataId)
        assert png.read()[:4] == b"\x89PNG"
    assert total == len(objects)
    from lsst.meas.ml.morphology.demo import summarize

    lines = summarize(butler, "u/test/morphology")
    assert "2 patches" in lines[0] and "accuracy" in lines[1]

    # The benchmark reads a patch from the same repository.
    from lsst.meas.ml.morphology.bench import benchmark

    figures = benchmark(butler=str(repo), collections=["MLSim/defaults"], stamp_size=STAMP, threads=1)
    assert figures["objects"] > 0 and 0 < figures["read_and_cut_share"] < 1
    assert figures["ratio_to_bare_model_loop"] > 0


def test_default_package_classifies_simulated_galaxies(survey):
    import os

    from lsst.meas.ml.packages import default_package, default_package_path

    if not os.path.exists(default_package_path("morphology")):
        pytest.skip("no shipped morphology package in this checkout")
    package = default_package("morphology")
    assert package.architecture == "morph_dat" and package.inputs["source"] == "coadd"
    coadds, objects = _patch(survey)
    task = _task(stampSize=int(package.inputs["stamp_size"]), attentionBrightest=1)
    cat = task.run(coadds=coadds, objectCatalog=objects, model=package).morphology
    classified = np.asarray(cat["morph_class"]) != ""
    assert classified.sum() > 0.8 * len(cat)
    assert np.all(np.isfinite(cat["morph_ood_score"][classified]))


def test_distribution_alignment_and_unweighted_pseudo_labels(data):
    """The two FixMatch options train, pseudo-label and are recorded; a bad weighting is refused."""
    torch.set_num_threads(1)
    base = dict(
        steps=6, batch_size=16, mu=2, threshold=0.3, label_fraction=0.3, validation_fraction=0.0, seed=1
    )
    result = train_morphology(
        data, MorphologyTrainingConfig(**base, distribution_alignment=True, pseudo_label_weighting="none")
    )
    assert 0.0 < result.report["pseudo_label_fraction"] <= 1.0
    assert np.isfinite(classify_stamps(result.package, data.stamps)["morph_entropy"]).all()
    with pytest.raises(MorphologyInputError, match="pseudo_label_weighting"):
        MorphologyTrainingConfig(pseudo_label_weighting="inverse")
