import dataclasses
import json
import os
import threading

import numpy as np

import pytest
import torch

from jmmda_model import checkpoint as ckpt_io
from jmmda_model.data import SliceDataset, find_cases, load_case
from jmmda_model.preprocess import PreprocessConfig
from jmmda_model.trainer import TrainConfig, Trainer, weighted_l1


def _cfg(gcfg, **kw):
    base = dict(generator=gcfg.to_dict(), epochs=2, batch_size=4, max_steps_per_epoch=3, progress=False, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _cli_refuses_before_writing(store, out, flags, key, capsys):
    """`jmmda train` with ``flags`` exits 2 naming ``key`` and leaves ``out`` unwritten."""
    from jmmda_model.cli import main

    assert main(["train", "--data", str(store), "--out", str(out), *flags, "--max-steps", "1", "--no-progress"]) == 2
    assert key in capsys.readouterr().err and not out.exists()


def _two_steps_then_checkpoint(store, out, gcfg, **kw) -> dict:
    """Two optimiser steps on two cases with TrainConfig settings ``kw``; the last checkpoint."""
    res = Trainer(_cfg(gcfg, max_steps=2, batch_size=2, **kw), out).fit(find_cases(store)[:2], [])
    assert res["global_step"] == 2
    return torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)


def test_dataset_slices_and_normalisation(small_store):
    pre = PreprocessConfig()
    cases = [load_case(c, pre) for c in find_cases(small_store)]
    c = cases[0]
    assert c.dwi.min() >= 0 and c.dwi.max() <= 1 and abs(c.dwi[c.brain > 0].mean() - 0.5) < 0.35
    ds = SliceDataset(cases, pre, divisor=4, augment=True)
    item = ds[0]
    assert item["input"].shape[0] == pre.input_channels + 1 == 7  # 3 adjacent slices (2.5-D), their mirror differences, mask
    assert item["input"].shape[-2:] == item["target"].shape[-2:]
    assert item["input"].shape[-1] % 4 == 0
    assert all(float(it["brain"].mean()) >= pre.min_brain_fraction * 0.9 for it in (ds[i] for i in range(0, len(ds), 7)))


def test_max_steps_runs_exactly_that_many_steps(small_store, tmp_path, tiny_gcfg):
    cases = find_cases(small_store)
    out = Trainer(_cfg(tiny_gcfg, epochs=100, max_steps_per_epoch=None, max_steps=7, batch_size=2), tmp_path / "s").fit(cases[:1], [])
    assert out["global_step"] == 7


def test_cosine_learning_rate_follows_the_step_and_survives_a_resume(small_store, tmp_path, tiny_gcfg, monkeypatch):
    """lr_schedule="cosine": both optimisers start at their learning rate and reach lr x lr_final_ratio at the last
    step, falling in between; a run stopped and resumed sees the same learning rates as one run straight through."""
    cfg = TrainConfig(lr_schedule="cosine", lr_final_ratio=0.1)
    assert cfg.lr_factor(0, 6) == 1.0 and abs(cfg.lr_factor(5, 6) - 0.1) < 1e-12 and abs(cfg.lr_factor(99, 6) - 0.1) < 1e-12
    assert TrainConfig().lr_factor(5, 6) == 1.0  # constant
    for bad in ({"lr_schedule": "step"}, {"lr_final_ratio": 1.5}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"lr_scheduel": "cosine"})

    seen: dict[str, list] = {}
    real_step = Trainer._step

    def spy(self, batch):
        seen.setdefault(str(self.out), []).append((self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]))
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "_step", spy)
    cases = find_cases(small_store)[:1]
    kw = dict(epochs=100, max_steps_per_epoch=2, max_steps=6, batch_size=2, lr_g=2e-4, lr_d=1e-4,
              lr_schedule="cosine", lr_final_ratio=0.1)
    Trainer(_cfg(tiny_gcfg, **kw), tmp_path / "straight").fit(cases, [])
    lrs = np.array(seen[str(tmp_path / "straight")])
    assert lrs.shape == (6, 2)
    np.testing.assert_allclose(lrs[0], [2e-4, 1e-4])
    np.testing.assert_allclose(lrs[-1], [2e-5, 1e-5])
    assert (np.diff(lrs[:, 0]) < 0).all()
    stop = threading.Event()
    first = Trainer(_cfg(tiny_gcfg, **kw), tmp_path / "split", stop_event=stop, on_epoch=lambda r: stop.set())
    assert first.fit(cases, [])["state"] == "stopped"
    Trainer(_cfg(tiny_gcfg, **kw), tmp_path / "split").fit(cases, [])
    np.testing.assert_allclose(np.array(seen[str(tmp_path / "split")]), lrs)


def test_lesion_slices_are_oversampled_and_contrast_loss_measures_lesion_brightness(small_store):
    from jmmda_model.trainer import lesion_contrast_loss

    pre = PreprocessConfig()
    cases = [load_case(c, pre) for c in find_cases(small_store)]
    ds = SliceDataset(cases, pre, divisor=4)
    assert 0 < len(ds.lesion_items) < len(ds)
    assert all(float(ds[i]["lesion"].sum()) > 0 for i in ds.lesion_items)
    target = torch.full((1, 1, 8, 8), 0.25)
    brain = torch.ones_like(target)
    lesion = torch.zeros_like(target)
    lesion[..., 2:5, 2:5] = 1
    target[lesion > 0] = 0.6
    assert float(lesion_contrast_loss(target, target, brain, lesion)) == pytest.approx(0.0)
    erased = torch.full_like(target, 0.25)
    assert float(lesion_contrast_loss(erased, target, brain, lesion)) == pytest.approx(0.35, abs=1e-6)
    assert float(lesion_contrast_loss(erased, target, brain, torch.zeros_like(lesion))) == 0.0


def test_weighted_l1_emphasises_lesion():
    pred, target = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    brain = torch.ones_like(pred)
    lesion = torch.zeros_like(pred)
    lesion[..., 0, 0] = 1
    pred_l = pred.clone()
    pred_l[..., 0, 0] = 1  # error on the lesion pixel
    pred_n = pred.clone()
    pred_n[..., 3, 3] = 1  # same error on a normal pixel
    assert weighted_l1(pred_l, target, brain, lesion, 4.0, 0.1) > 3 * weighted_l1(pred_n, target, brain, lesion, 4.0, 0.1)


def test_train_checkpoints_and_resume_reproduces(small_store, tmp_path, tiny_gcfg):
    cases = find_cases(small_store)
    tiny_gcfg = dataclasses.replace(tiny_gcfg, residual_prior=True)  # with the tissue prior in the checkpoint
    full = Trainer(_cfg(tiny_gcfg), tmp_path / "full").fit(cases[:2], cases[2:])
    assert full["state"] == "finished" and full["epoch"] == 2
    assert (tmp_path / "full" / "model.pt").exists() and (tmp_path / "full" / "checkpoints" / "last.pt").exists()
    status = json.loads((tmp_path / "full" / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2
    # interrupted after 1 epoch, then resumed in a new trainer
    Trainer(_cfg(tiny_gcfg, epochs=1), tmp_path / "split").fit(cases[:2], cases[2:])
    # resumed with another prior setting: the run keeps the tissue prior its weights were trained over
    resumed = Trainer(_cfg(tiny_gcfg, prior_mirror_lift_hu=0.0), tmp_path / "split").fit(cases[:2], cases[2:])
    assert resumed["epoch"] == 2 and resumed["global_step"] == full["global_step"]
    a = ckpt_io.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt_io.load(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["preprocess"]["tissue_prior"]["mirror_lift_hu"] == TrainConfig.prior_mirror_lift_hu > 0
    assert b["preprocess"]["tissue_prior"] == a["preprocess"]["tissue_prior"]
    assert _weights_equal(a["generator"], b["generator"]) and _weights_equal(a["discriminator"], b["discriminator"])
    inf = ckpt_io.load(tmp_path / "full" / "model.pt")
    assert "opt_g" not in inf and inf["model_card"]["phantom_trained"] is True
    assert "not for diagnosis" in inf["model_card"]["output"]


def test_stop_keeps_last_completed_epoch(small_store, tmp_path, tiny_gcfg):
    cases = find_cases(small_store)
    stop = threading.Event()
    t = Trainer(_cfg(tiny_gcfg, epochs=5), tmp_path / "run", stop_event=stop, on_epoch=lambda r: stop.set())
    summary = t.fit(cases[:2], cases[2:])
    assert summary["state"] == "stopped" and summary["epoch"] == 1
    ck = ckpt_io.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "stopped"


def test_atomic_save_survives_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_io.atomic_save({"format": ckpt_io.FORMAT, "version": 1, "generator": {}, "generator_config": {}, "preprocess": {}, "n": 1}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt_io.atomic_save({"format": ckpt_io.FORMAT, "n": 2}, path)
    monkeypatch.undo()
    assert ckpt_io.load(path)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left behind


def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ckpt_io.CheckpointError, match="corrupt"):
        ckpt_io.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ckpt_io.CheckpointError, match="not a JMMDA-GAN checkpoint"):
        ckpt_io.load(foreign)
    with pytest.raises(ckpt_io.CheckpointError, match="not found"):
        ckpt_io.load(tmp_path / "missing.pt")


def test_resume_refuses_other_architecture(small_store, tmp_path, tiny_gcfg):
    from jmmda_model.networks import GeneratorConfig

    cases = find_cases(small_store)
    Trainer(_cfg(tiny_gcfg, epochs=1), tmp_path / "r").fit(cases[:1], [])
    other = GeneratorConfig(base_channels=8, depth=2, heads=2, use_dwt=False)
    with pytest.raises(ckpt_io.CheckpointError, match="different generator"):
        Trainer(_cfg(other), tmp_path / "r").fit(cases[:1], [])


def test_cases_at_other_pixel_sizes_are_loaded_at_the_model_spacing(small_store):
    import SimpleITK as sitk

    from jmmda_model.clinical.geometry import resample_inplane

    case = find_cases(small_store)[0]
    for path, label in ((case.ct, False), (case.dwi, False), (case.brainmask, True), (case.lesion, True)):
        img = sitk.ReadImage(str(path))
        sitk.WriteImage(resample_inplane(sitk.DICOMOrient(img, "LPS"), (0.9, 0.9), label=label), str(path))
    native = load_case(find_cases(small_store)[1], PreprocessConfig())
    lc = load_case(case, PreprocessConfig())
    assert lc.ct_hu.shape == native.ct_hu.shape == (32, 143, 128)
    assert lc.image.GetSpacing()[:2] == (1.8, 1.8)
    assert set(np.unique(lc.brain)) == {0, 1} and lc.lesion.sum() > 0
    assert PreprocessConfig(inplane_spacing=None).needs_resampling(sitk.ReadImage(str(case.ct))) is False


def test_weight_average_is_what_is_validated_exported_and_resumed(small_store, tmp_path, tiny_gcfg):
    """The model issue's damping of the step-to-step swings: the generator's exponential weight average is kept
    beside the raw weights; the checkpoint's "generator" (validated, selected, exported) is the average, the raw
    weights ("generator_train") go on training, and a resumed run restores both."""
    cases = find_cases(small_store)
    t = Trainer(_cfg(tiny_gcfg, epochs=1, ema_decay=0.9), tmp_path / "ema")
    t.fit(cases[:2], cases[2:])
    ck = ckpt_io.load(tmp_path / "ema" / "checkpoints" / "last.pt")
    assert not _weights_equal(ck["generator"], ck["generator_train"])  # the average lags the raw weights
    assert _weights_equal(ck["generator"], t.G_ema.state_dict()) and _weights_equal(ck["generator_train"], t.G.state_dict())
    # both are validated; the better one (by the selection score) is model.pt, and the record says which
    rec = ck["history"][-1]
    assert rec["weights"] in ("average", "raw") and rec.get("best")
    exported = ckpt_io.load(tmp_path / "ema" / "model.pt")
    assert exported["model_card"]["weights"] == rec["weights"]
    assert _weights_equal(exported["generator"], ck["generator" if rec["weights"] == "average" else "generator_train"])
    again = Trainer(_cfg(tiny_gcfg, epochs=1, ema_decay=0.9), tmp_path / "ema")
    again.resume(tmp_path / "ema" / "checkpoints" / "last.pt")
    assert _weights_equal(again.G_ema.state_dict(), ck["generator"]) and _weights_equal(again.G.state_dict(), ck["generator_train"])
    # off: one set of weights, as before
    off = Trainer(_cfg(tiny_gcfg, epochs=1, ema_decay=0.0), tmp_path / "off")
    off.fit(cases[:1], [])
    assert off.G_ema is None and "generator_train" not in ckpt_io.load(tmp_path / "off" / "checkpoints" / "last.pt")


def test_rotation_augmentation_and_the_canonical_pose_flag(small_store, tmp_path, tiny_gcfg):
    """Crops turned by up to +-rotate_deg with sub-pixel shifts: labels (brain, lesion, the input's mask channel)
    stay binary, the crop keeps its size, the draw repeats per (epoch, item), and a model trained so is marked to be
    fed the canonical (turned) pose at inference; one trained without is not."""
    from jmmda_model.data import rotate_sample

    pre = PreprocessConfig()
    cases = [load_case(c, pre) for c in find_cases(small_store)]
    ds = SliceDataset(cases, pre, 8, augment=True, patch_size=64, rotate_deg=10.0, rotate_probability=1.0)
    plain = SliceDataset(cases, pre, 8, augment=False, patch_size=64)
    turned = 0
    for i in range(0, len(ds), 5):
        item = ds[i]
        assert item["input"].shape[-2:] == (64, 64)
        for t in (item["brain"], item["lesion"], item["input"][ds.mask_channel]):
            assert set(torch.unique(t).tolist()) <= {0.0, 1.0}
        assert torch.equal(item["input"], ds[i]["input"])  # deterministic per (epoch_seed, item)
        turned += not torch.equal(item["brain"], plain[i]["brain"])
    assert turned > 0
    # a turn and the opposite turn give back the interior of the image (bilinear twice)
    x = [torch.from_numpy(cases[0].ct_hu[10:11] / 100.0).float()] + [torch.zeros(1, *cases[0].ct_hu.shape[1:])] * 3
    back = rotate_sample(rotate_sample(x, 8.0, 0.0, 0.0), -8.0, 0.0, 0.0)[0]
    inner = (slice(None), slice(30, -30), slice(30, -30))
    assert float(torch.corrcoef(torch.stack([back[inner].ravel(), x[0][inner].ravel()]))[0, 1]) > 0.95
    t = Trainer(_cfg(tiny_gcfg, epochs=1), tmp_path / "rot")
    assert t.pre.canonical_rotation is True
    assert Trainer(_cfg(tiny_gcfg, epochs=1, rotate_deg=0.0), tmp_path / "norot").pre.canonical_rotation is False
    assert Trainer(_cfg(tiny_gcfg, epochs=1, augment=False), tmp_path / "noaug").pre.canonical_rotation is False
    t.fit(find_cases(small_store)[:1], [])
    assert ckpt_io.load(tmp_path / "rot" / "model.pt")["preprocess"]["canonical_rotation"] is True


def test_validation_chooses_the_better_of_raw_and_averaged_weights(small_store, tmp_path, tiny_gcfg, monkeypatch):
    """Whichever of the two weight sets scores better on validation is exported; the score counts lesions shown,
    lesions darker than normal and false-bright brain."""
    pre = PreprocessConfig()
    val = [load_case(c, pre) for c in find_cases(small_store)[2:]]
    t = Trainer(_cfg(tiny_gcfg, epochs=1, ema_decay=0.9), tmp_path / "choose")
    t.out.mkdir()
    good = {"lesion_sensitivity": 0.5, "lesions_darker": 0.0, "false_bright_ml": 2.0, "psnr_brain": 28.0}
    bad = {**good, "false_bright_ml": 40.0}
    assert t._score(good) - t._score(bad) == pytest.approx(19.0)
    assert t._score({**good, "lesions_darker": 1.0}) == pytest.approx(t._score(good) - 10.0)
    for raw_better in (True, False):
        monkeypatch.setattr(t, "_validate", lambda cases, net=None, inputs=None, rb=raw_better: (
            dict(good if (net is t.G) == rb else bad), {"temperature": 2.0 if net is t.G else 3.0}))
        vm, chosen = t._validate_and_choose(val)
        assert chosen == ("raw" if raw_better else "average") and vm["false_bright_ml"] == 2.0
        assert t._val_calibration["temperature"] == (2.0 if raw_better else 3.0)  # the chosen set's temperature


def test_hard_negative_fraction_is_validated_recorded_and_trains(small_store, tmp_path, tiny_gcfg, capsys):
    """hard_negative_fraction: refused before anything is written when it cannot be honoured (fractions over 1,
    whole slices, no mirror image to be asymmetric against); otherwise a run trains with it and records it."""
    from jmmda_model.preprocess import PreprocessConfig

    for bad in ({"hard_negative_fraction": 0.8}, {"hard_negative_fraction": -0.1},
                {"hard_negative_fraction": 0.2, "patch_size": None}):
        with pytest.raises(ValueError, match="hard_negative_fraction"):
            TrainConfig(**bad)
    no_mirror = PreprocessConfig(mirror_channels=False).to_dict()
    with pytest.raises(ValueError, match="hemispheric comparison"):
        Trainer(_cfg(tiny_gcfg, preprocess=no_mirror, hard_negative_fraction=0.3), tmp_path / "nm")
    assert not (tmp_path / "nm").exists()
    _cli_refuses_before_writing(small_store, tmp_path / "cli", ["--hard-negative-fraction", "0.9"],
                                "hard_negative_fraction", capsys)
    ck = _two_steps_then_checkpoint(small_store, tmp_path / "hn", tiny_gcfg, hard_negative_fraction=0.5)
    assert ck["train_config"]["hard_negative_fraction"] == 0.5


def test_noise_augmentation_is_validated_recorded_and_trains(small_store, tmp_path, tiny_gcfg, capsys):
    """noise_augment_hu: out-of-range values and noise without augmentation are refused before anything is written
    (TrainConfig and `jmmda train`, exit 2); a run trains with it and its checkpoint records it."""
    for bad in ({"noise_augment_hu": -0.5}, {"noise_augment_hu": 21.0}, {"noise_augment_hu": float("inf")},
                {"noise_augment_hu": 3.0, "noise_augment_probability": -0.1},
                {"noise_augment_hu": 3.0, "augment": False}):
        with pytest.raises(ValueError, match="noise_augment"):
            TrainConfig(**bad)
    _cli_refuses_before_writing(small_store, tmp_path / "cli", ["--noise-augment-hu", "-2"], "noise_augment_hu", capsys)
    ck = _two_steps_then_checkpoint(small_store, tmp_path / "na", tiny_gcfg, noise_augment_hu=4.0)
    assert ck["train_config"]["noise_augment_hu"] == 4.0 and ck["train_config"]["noise_augment_probability"] == 0.5


def test_residual_bound_through_jmmda_train(small_store, tmp_path, capsys):
    """`jmmda train --residual-bound`: a bad bound, or one with the legacy recipe, exits 2 before anything is written;
    a good one trains and the model's generator config carries it (so inference rebuilds the same bounded head)."""
    from jmmda_model.cli import main

    base = ["train", "--data", str(small_store), "--max-steps", "1", "--batch-size", "2", "--base-channels", "8",
            "--depth", "2", "--heads", "2", "--no-progress"]
    _cli_refuses_before_writing(small_store, tmp_path / "bad", ["--residual-bound", "-0.2"], "residual_bound", capsys)
    _cli_refuses_before_writing(small_store, tmp_path / "legacy", ["--recipe", "legacy", "--residual-bound", "0.05"],
                                "residual_bound", capsys)  # no render head to bound: refused, not dropped
    assert main([*base, "--out", str(tmp_path / "rb"), "--residual-bound", "0.05"]) == 0
    ck = torch.load(tmp_path / "rb" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["generator_config"]["residual_bound"] == 0.05
