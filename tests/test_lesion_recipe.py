"""The lesion recipe (model issue): mid-sagittal plane, mirror channels, tissue prior + residual, lesion head,
probability calibration and its metrics, lesion-centred patches."""
import dataclasses
import math
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage as ndi

from jmmda_model.clinical.geometry import to_axial
from jmmda_model.clinical.midplane import (
    estimate_midplane,
    mirror_or_self,
    mirror_volume,
)
from jmmda_model.data import SliceDataset, case_input
from jmmda_model.metrics import fit_temperature, froc_summary, operating_threshold, probability_metrics
from jmmda_model.networks import GeneratorConfig, build_generator
from jmmda_model.phantom import loaded_case, make_case, to_image
from jmmda_model.preprocess import PreprocessConfig
from jmmda_model.prior import TissuePrior


def _plane_error(seed):
    c = make_case(seed)
    img = to_axial(to_image(c["ct"], c))
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    t = time.perf_counter()
    plane = estimate_midplane(ct, tuple(reversed(img.GetSpacing())))
    seconds = time.perf_counter() - t
    gt = c["meta"]["midplane_lps"]
    sp = np.array(img.GetSpacing())
    p_gt = np.array(img.TransformPhysicalPointToContinuousIndex(gt["point"])) * sp  # index-mm of the axial image
    n_gt = np.array(img.GetDirection()).reshape(3, 3).T @ np.array(gt["normal"])
    n = np.array(plane.normal_xyz)
    angle = np.degrees(np.arccos(min(1.0, abs(float(n @ n_gt)))))
    brain = sitk.GetArrayFromImage(to_axial(to_image(c["brainmask"], c)))
    centre = np.argwhere(brain > 0).mean(0)[::-1] * sp
    on_est = centre - (centre @ n - plane.offset_mm) * n  # the estimated plane at the brain's centre
    return plane, angle, abs(float((on_est - p_gt) @ n_gt)), seconds


@pytest.mark.parametrize("seed", [3101, 3102, 3103])
def test_midplane_matches_the_phantom_truth(seed):
    """Targets of the model issue: <= 1 mm and <= 1 degree against the phantom generator's own plane (its
    rotation of up to 10 deg yaw and 4 deg roll/pitch), <= 1 s per volume on this CPU (measured 0.1-0.3 s)."""
    plane, angle, dist, seconds = _plane_error(seed)
    assert plane.trusted, plane.reason
    assert angle <= 1.0 and dist <= 1.0, (angle, dist)
    assert seconds <= 2.0  # 1 s target, slack for a loaded CI machine


def test_midplane_of_an_oblique_series_is_judged_in_the_patient_frame():
    """The rows of an oblique series are turned in the slice plane by the scanner, not by the head: the same head on a
    grid turned 35 degrees is searched for and judged from the patient's sagittal plane (the image's direction
    cosines), so it is trusted and found as on the straight grid. Judged from the grid's own axes it was not."""
    from jmmda_model.clinical.midplane import patient_lr

    c = make_case(3101)
    img = to_axial(to_image(c["ct"], c))
    a = np.radians(35.0)
    turn = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    d = np.array(img.GetDirection()).reshape(3, 3) @ turn
    size = [int(img.GetSize()[0] * 1.3), int(img.GetSize()[1] * 1.3), img.GetSize()[2]]  # the turned head fits
    sp = np.array(img.GetSpacing())
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    origin = centre - d @ ((np.array(size) - 1) / 2 * sp)
    obl = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), tuple(sp), tuple(d.ravel()),
                        -1024.0, sitk.sitkFloat32)
    ct, sp_zyx = sitk.GetArrayFromImage(obl), tuple(reversed(obl.GetSpacing()))
    assert patient_lr(img.GetDirection()) is None  # a straight grid: its own x axis
    lr = patient_lr(obl.GetDirection())
    assert lr is not None and abs(np.degrees(np.arccos(lr[0])) - 35.0) < 1e-6
    straight = estimate_midplane(sitk.GetArrayFromImage(img).astype(np.float32), tuple(reversed(img.GetSpacing())))
    plane = estimate_midplane(ct, sp_zyx, patient_lr_xyz=lr)
    assert plane.trusted, plane.reason
    n_gt = d.T @ np.array(c["meta"]["midplane_lps"]["normal"])  # the phantom's own plane, in the turned grid
    assert np.degrees(np.arccos(min(1.0, abs(float(np.array(plane.normal_xyz) @ n_gt))))) <= 1.0
    assert abs(plane.angle_from_patient_sagittal_deg - straight.angle_from_sagittal_deg) <= 1.0
    assert plane.angle_from_sagittal_deg > 25.0 and plane.to_dict()["patient_lr_xyz"] == [round(v, 5) for v in lr]
    grid_frame = estimate_midplane(ct, sp_zyx)  # judged from the grid's axes, as before
    assert not grid_frame.trusted and ("image's sagittal plane" in grid_frame.reason or "converge" in grid_frame.reason)


def test_untrusted_plane_is_reported_and_not_used():
    c = make_case(3104)
    img = to_axial(to_image(c["ct"], c))
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(reversed(img.GetSpacing()))
    damaged = ct.copy()
    half = ct.shape[2] // 2
    tissue = (ct > 15) & (ct < 60)
    damaged[:, :, half:][tissue[:, :, half:]] -= 30.0  # a huge one-sided defect
    plane = estimate_midplane(damaged, sp)
    assert not plane.trusted and "asymmetric" in plane.reason
    assert np.array_equal(mirror_or_self(damaged, plane, sp), damaged)  # the cue is switched off, not faked
    blank = estimate_midplane(np.full((4, 20, 20), -1000.0, np.float32), sp)
    assert not blank.trusted and "too little head" in blank.reason


def test_mirror_of_a_mirror_is_the_image():
    c = make_case(3105)
    img = to_axial(to_image(c["ct"], c))
    ct = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(reversed(img.GetSpacing()))
    plane = estimate_midplane(ct, sp)
    twice = mirror_volume(mirror_volume(ct, plane, sp), plane, sp)
    brain = sitk.GetArrayFromImage(to_axial(to_image(c["brainmask"], c))) > 0
    assert np.median(np.abs(twice - ct)[brain]) < 3.0  # two linear interpolations of a noisy CT


@pytest.fixture(scope="module")
def phantoms():
    pre = PreprocessConfig()
    return [loaded_case(s, pre) for s in (3110, 3111)]


def test_untrained_residual_models_output_the_tissue_prior(phantoms):
    """No trained model starts below the table: an untrained generator with ``residual_prior`` renders the prior
    (x 1.01 from the lesion head's starting probability), for JMMDA and pix2pix alike."""
    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    lc = phantoms[0]
    x = case_input(lc, pre)
    k = lc.brain.reshape(lc.brain.shape[0], -1).sum(1).argmax()
    prior = x[k, -1]
    for arch, bound in (("jmmda", 0.0), ("pix2pix", 0.0), ("jmmda", 0.05), ("pix2pix", 0.05)):
        g = build_generator(GeneratorConfig(arch=arch, ct_channels=pre.input_channels, base_channels=8, depth=2,
                                            heads=2, residual_prior=True, residual_bound=bound)).eval()
        with torch.no_grad():
            out, logit = g(torch.from_numpy(x[k : k + 1, :, :136, :128]), return_aux=True)
        assert logit is not None
        np.testing.assert_allclose(out[0, 0].numpy(), np.clip(prior[:136, :128] * (1 + 0.018 * np.log(2)), 0, 1), atol=2e-3)


def test_input_channels_and_prior_round_trip(phantoms):
    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    x = case_input(phantoms[1], pre)
    assert x.shape[1] == pre.input_channels + 2  # CT and mirror-difference channels, mask, prior
    again = TissuePrior.from_dict(pre.tissue_prior)
    np.testing.assert_allclose(x[:, -1], again.predict(phantoms[1].ct_hu, phantoms[1].brain, phantoms[1].spacing_zyx))
    with pytest.raises(ValueError, match="malformed"):
        TissuePrior.from_dict({**pre.tissue_prior, "table": [[float("nan")]]})
    # the mirror-difference channels are 0 where the CT equals its mirror
    same = case_input(dataclasses.replace(phantoms[1], mirror_hu=phantoms[1].ct_hu), pre)
    assert np.abs(same[:, 3:6]).max() == 0.0


def test_lifted_prior_expects_normal_tissue_where_the_ct_is_a_few_hu_below_its_mirror(phantoms):
    """The plain table maps an early infarct's hypodensity to a darker DWI; the contralateral lift bins a voxel up
    to ``mirror_lift_hu`` below its mirror image at the mirror's HU, so a 5 HU hypodensity gets the prior of normal
    tissue (up to the noise), while a 25 HU defect (old infarct, CSF) stays dark."""
    plain, lifted = TissuePrior().fit(phantoms), TissuePrior(mirror_lift_hu=10.0).fit(phantoms)
    lc = phantoms[0]
    k = int(lc.brain.reshape(lc.brain.shape[0], -1).sum(1).argmax())
    zz, yy, xx = np.ogrid[: lc.ct_hu.shape[0], : lc.ct_hu.shape[1], : lc.ct_hu.shape[2]]
    cy, cx = np.argwhere(lc.brain[k]).mean(0)
    # a 10 mm ball in one hemisphere, in brain, away from its edge (the contralateral side stays untouched)
    ball = (((yy - cy) * 1.8) ** 2 + ((xx - cx - 25) * 1.8) ** 2 + ((zz - k) * 5.0) ** 2 <= 10.0 ** 2) & (lc.brain > 0)
    assert ball.sum() > 30

    def prior_in_ball(tab, drop_hu):
        return float(tab.predict(lc.ct_hu - drop_hu * ball, lc.brain, lc.spacing_zyx, lc.mirror_hu)[ball].mean())

    def darkening(tab, drop_hu):
        return prior_in_ball(tab, 0.0) - prior_in_ball(tab, drop_hu)

    assert darkening(plain, 5.0) > 0.015  # the plain table renders a 5 HU hypodensity ~9 % darker
    # lifted: a fraction of that, left by voxels brighter than their mirror by noise (binned at their own HU)
    assert darkening(lifted, 5.0) < 0.35 * darkening(plain, 5.0)
    assert darkening(lifted, 3.0) < 0.5 * darkening(plain, 3.0)
    assert darkening(lifted, 25.0) > 0.05  # a large defect keeps a dark value
    # stored with the checkpoint; a prior without the key (written before the lift) is the plain table
    d = lifted.to_dict()
    assert TissuePrior.from_dict(d).mirror_lift_hu == 10.0
    assert TissuePrior.from_dict({k2: v for k2, v in d.items() if k2 != "mirror_lift_hu"}).mirror_lift_hu == 0.0
    with pytest.raises(ValueError, match="needs the mirrored CT"):
        lifted.predict(lc.ct_hu, lc.brain, lc.spacing_zyx)
    for bad in ({**d, "mirror_lift_hu": -1.0}, {**d, "mirror_lift_hu": float("nan")}, {**d, "lift": 3}):
        with pytest.raises(ValueError):
            TissuePrior.from_dict(bad)
    with pytest.raises(ValueError, match="mirror channels are off"):
        PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": False, "tissue_prior": d})


@pytest.mark.parametrize("bad", [{"mirror_lift_hu": 1e9}, {"table": [[0.1, float("nan")]]}, {"table": "x"},
                                 {"hu_edges": None}, {"extra": 1}])
def test_a_checkpoint_with_a_malformed_tissue_prior_is_refused_when_loaded(tmp_path, bad):
    """Fail closed: refused by name when the model is loaded (CLI exit 2, server 4xx), not at the first CT."""
    from conftest import DEMO_MODEL
    from jmmda_model.checkpoint import CheckpointError, load
    from jmmda_model.inference import Synthesizer

    ck = load(DEMO_MODEL)
    ck["preprocess"]["tissue_prior"].update(bad)
    torch.save(ck, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="tampered.pt: unusable preprocessing settings"):
        Synthesizer(tmp_path / "tampered.pt", device="cpu")


def test_patches_are_centred_on_lesions_about_a_third_of_the_time(phantoms):
    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    ds = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64)
    assert ds.lesion_items
    hits = 0
    n = 300
    for i in range(n):
        item = ds[i % len(ds)]
        assert item["input"].shape[-2:] == (64, 64)
        hits += bool(item["lesion"][0, 24:40, 24:40].any())
        ds.epoch_seed = i // len(ds) + 1
    assert 0.2 < hits / n < 0.6  # 1/3 centred (with jitter) on lesion voxels, plus brain crops that touch one


def test_temperature_scaling_and_probability_metrics():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-2.0, 2.0, 200_000)
    truth = rng.random(true_logit.size) < 1.0 / (1.0 + np.exp(-true_logit))
    t = fit_temperature([3.0 * true_logit], [truth])  # a model over-confident by 3x
    assert 2.7 < t < 3.3
    brain = np.ones((1, 40, 40), np.uint8)
    lesion = np.zeros_like(brain)
    lesion[0, 5:15, 5:15] = 1
    lesion[0, 25:35, 25:35] = 1
    prob = np.zeros(brain.shape)
    prob[0, 6:14, 6:14] = 0.9  # finds lesion 1
    prob[0, 0:3, 30:40] = 0.8  # a false-positive cluster (30 voxels x 20 mm3 = 0.6 mL)
    m = probability_metrics(prob, lesion, brain, (1.0, 4.0, 5.0))
    row = next(r for r in m["froc"] if r["threshold"] == 0.5)
    assert row["detected"] == [True, False] and row["fp"] == 1
    assert froc_summary([m], max_fp=1.0)["sensitivity"] == 0.5
    assert froc_summary([m], max_fp=0.0) == {"sensitivity": 0.5, "threshold": 0.9, "fp_per_case": 0.0}
    # counted only the lesions the model issue counts (here: the missed one alone, then the found one alone)
    missed_only = probability_metrics(prob, lesion, brain, (1.0, 4.0, 5.0), counted=[False, True])
    assert froc_summary([missed_only], max_fp=1.0, counted_only=True)["sensitivity"] == 0.0
    assert froc_summary([missed_only], max_fp=1.0)["sensitivity"] == 0.5  # all lesions, as before
    found_only = probability_metrics(prob, lesion, brain, (1.0, 4.0, 5.0), counted=[True, False])
    assert froc_summary([found_only], max_fp=1.0, counted_only=True)["sensitivity"] == 1.0
    none_counted = probability_metrics(prob, lesion, brain, (1.0, 4.0, 5.0), counted=[False, False])
    assert np.isnan(froc_summary([none_counted], max_fp=1.0, counted_only=True)["sensitivity"])  # nothing to find
    with pytest.raises(ValueError, match="counted flags"):
        probability_metrics(prob, lesion, brain, (1.0, 4.0, 5.0), counted=[True])
    perfect = probability_metrics(lesion.astype(float), lesion, brain, (1.0, 4.0, 5.0))
    assert perfect["ece"] == 0.0
    assert m["ece"] > 0.05


def test_operating_threshold_is_the_lowest_within_the_false_positive_budget():
    """The probability map's operating point: the lowest FROC threshold whose false-positive clusters per case keep
    to the budget, whatever the lesions; None when none does."""
    def row(fps):  # per threshold of a 3-threshold grid: false-positive clusters of one case
        return {"froc": [{"threshold": t, "fp": f, "detected": [t < 0.6]} for t, f in zip((0.3, 0.5, 0.7), fps)],
                "lesion_volumes_ml": [2.0], "counted": [True]}

    cases = [row((5, 3, 0)), row((3, 1, 0))]  # 4, 2 and 0 FP clusters per case
    assert operating_threshold(cases) == {"threshold": 0.5, "fp_per_case": 2.0, "max_fp_per_case": 2.0, "cases": 2}
    assert operating_threshold(cases, max_fp=1.0)["threshold"] == 0.7  # a stricter budget: a higher threshold
    assert operating_threshold(cases, max_fp=5.0)["threshold"] == 0.3
    assert operating_threshold([row((5, 5, 5))]) is None
    # the lesions do not move it: the same false positives with every lesion missed give the same point
    missed = [{**c, "froc": [{**r, "detected": [False]} for r in c["froc"]]} for c in cases]
    assert operating_threshold(missed) == operating_threshold(cases)


@pytest.mark.parametrize("cal, what", [({"temperature": 0.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
                                       ({"temperature": "x"}, "ValueError"), ([1.5], "not a mapping"),
                                       ({"temperature": 1.5, "operating_point": {"threshold": 1.5}}, "operating threshold"),
                                       ({"temperature": 1.5, "operating_point": {}}, "KeyError")])
def test_a_checkpoint_with_an_unusable_lesion_calibration_is_refused_when_loaded(tmp_path, cal, what):
    from conftest import DEMO_MODEL
    from jmmda_model.checkpoint import CheckpointError, atomic_save, load
    from jmmda_model.inference import Synthesizer

    ck = load(DEMO_MODEL)
    ck["lesion_calibration"] = cal
    bad = atomic_save(ck, tmp_path / "odd_calibration.pt")
    with pytest.raises(CheckpointError, match=f"odd_calibration.pt: .*{what}"):
        Synthesizer(bad, device="cpu")


def test_flip_averaging_answers_a_mirrored_head_with_the_mirrored_synthesis():
    """Every slice is synthesised as the mean of the network's answers to it and to its left-right mirror image: a
    mirrored input then gets exactly the mirrored synthesis and lesion logits, which the network alone does not give
    (its two views differ); and the mean is that of the two single views."""
    from conftest import DEMO_MODEL
    from jmmda_model.inference import Synthesizer
    from jmmda_model.data import model_input

    two = Synthesizer(DEMO_MODEL, device="cpu", flip_average=True)
    one = Synthesizer(DEMO_MODEL, device="cpu")  # one view by default
    assert two.flip_average and not one.flip_average
    lc = loaded_case(3112, two.pre)
    k = int(lc.brain.reshape(lc.brain.shape[0], -1).sum(1).argmax())
    h, w = (lc.ct_hu.shape[1] // 8) * 8, (lc.ct_hu.shape[2] // 8) * 8  # no padding: the mirror is the array's
    x = model_input(lc.ct_hu, lc.brain, two.pre, lc.spacing_zyx, lc.mirror_hu)[k - 1 : k + 2, :, :h, :w]
    xf = np.ascontiguousarray(x[..., ::-1])
    y, lg = two.predict_slices(x, with_logits=True)
    yf, lgf = two.predict_slices(xf, with_logits=True)
    assert np.abs(yf[..., ::-1] - y).max() < 1e-5 and np.abs(lgf[..., ::-1] - lg).max() < 1e-4
    y1, l1 = one.predict_slices(x, with_logits=True)
    y1f, l1f = one.predict_slices(xf, with_logits=True)
    assert np.abs(y1f[..., ::-1] - y1).max() > 1e-2  # the network alone is not mirror-symmetric
    np.testing.assert_allclose(y, (y1 + y1f[..., ::-1]) / 2, atol=1e-5)
    np.testing.assert_allclose(lg, (l1 + l1f[..., ::-1]) / 2, atol=1e-4)


def test_the_operating_threshold_reaches_the_infer_info(tmp_path):
    from conftest import DEMO_MODEL, SAMPLE
    from jmmda_model.checkpoint import atomic_save, load
    from jmmda_model.inference import Synthesizer

    ck = load(DEMO_MODEL)
    ck["lesion_calibration"] = {"temperature": 1.5, "operating_point": {"threshold": 0.8, "fp_per_case": 1.5,
                                                                        "max_fp_per_case": 2.0, "cases": 12}}
    path = atomic_save(ck, tmp_path / "with_point.pt")
    ct = sitk.ReadImage(str(SAMPLE / "phantom_001.nii.gz"))
    mask = sitk.ReadImage(str(SAMPLE / "labels" / "brainmask" / "phantom_001.nii.gz"))
    syn = Synthesizer(path, device="cpu")
    assert syn.temperature == 1.5 and syn.operating_threshold == 0.8
    info = syn(ct, mask, return_probability=True)[2]
    assert info["probability"]["operating_threshold"] == 0.8 and "2 false-positive" in info["probability"]["operating_note"]
    del ck["lesion_calibration"]["operating_point"]  # a model calibrated before the point was kept
    syn = Synthesizer(atomic_save(ck, tmp_path / "without.pt"), device="cpu")
    assert syn.operating_threshold is None
    info = syn(ct, mask, return_probability=True)[2]
    assert info["probability"]["operating_threshold"] is None and "operating_note" not in info["probability"]


def test_series_notes_and_midplane_reach_the_infer_info():
    from conftest import DEMO_MODEL, SAMPLE
    from jmmda_model.inference import Synthesizer

    ct = sitk.ReadImage(str(SAMPLE / "phantom_001.nii.gz"))
    mask = sitk.ReadImage(str(SAMPLE / "labels" / "brainmask" / "phantom_001.nii.gz"))
    ct.SetMetaData("jmmda_dicom_notes", "1 localizer image(s) left out; gantry tilt of 12.0 degrees corrected")
    out, _, info, prob = Synthesizer(DEMO_MODEL, device="cpu")(ct, mask, return_probability=True)
    assert info["series_notes"] == ["1 localizer image(s) left out", "gantry tilt of 12.0 degrees corrected"]
    assert info["hemispheric_comparison"] == "used" and info["midplane"]["trusted"]
    assert prob is not None and prob.GetSize() == ct.GetSize()
    p = sitk.GetArrayFromImage(prob)
    assert 0.0 <= p.min() and p.max() <= 1.0 and "SYNTHETIC" in prob.GetMetaData("descrip")


def test_same_head_anywhere_in_the_image_gives_the_same_synthesis():
    """Pose issue, item 1 (translation part): the head moved by whole pixels inside the image (1-7 pixels, and
    33 pixels = 59.4 mm off-centre on a larger field of view) gives the same synthetic DWI once moved back: the
    canonical pose places every head on the same canvas pixels (turned by the same angle). The plain network is not shift-invariant
    (stride-8 wavelet steps): fed directly, these shifts agree only at r = 0.98 (measured)."""
    from conftest import DEMO_MODEL, SAMPLE
    from jmmda_model.inference import Synthesizer

    syn = Synthesizer(DEMO_MODEL, device="cpu")
    ct = sitk.ReadImage(str(SAMPLE / "phantom_001.nii.gz"))
    mask = sitk.ReadImage(str(SAMPLE / "labels" / "brainmask" / "phantom_001.nii.gz"))
    pad = 40
    a_ct = np.pad(sitk.GetArrayFromImage(ct), ((0, 0), (pad, pad), (pad, pad)), constant_values=-1024)
    a_m = np.pad(sitk.GetArrayFromImage(mask), ((0, 0), (pad, pad), (pad, pad)))

    def run(dy, dx):
        def img(a, like):
            i = sitk.GetImageFromArray(np.roll(a, (dy, dx), axis=(1, 2)))
            i.SetSpacing(like.GetSpacing())
            i.SetDirection(like.GetDirection())
            i.SetOrigin(like.GetOrigin())
            return i
        out, _, info = syn(img(a_ct, ct), img(a_m, mask))
        return np.roll(sitk.GetArrayFromImage(out), (-dy, -dx), axis=(1, 2)), info

    ref, info = run(0, 0)
    assert info["canonical_pose"]["used_plane"]
    turn = info["canonical_pose"]["rotated_deg"]  # the shipped demo turns the head upright (about 7 deg here)
    brain = a_m > 0
    for dy, dx in ((1, 0), (3, 5), (7, 7), (-33, 0), (0, 33)):
        moved, info_m = run(dy, dx)
        assert abs(info_m["canonical_pose"]["rotated_deg"] - turn) < 0.05  # the same turn wherever the head lies
        r = float(np.corrcoef(ref[brain], moved[brain])[0, 1])
        assert r >= 0.99, ((dy, dx), r)


def test_slices_are_streamed_to_the_model_with_the_same_result():
    """Pose/series issue, item 4: the model input is built slab by slab (its context slices and the tissue prior
    of the whole volume included), never for all slices at once; the answer is the one the whole input gives."""
    import numpy as np

    from conftest import DEMO_MODEL
    from jmmda_model.data import model_input
    from jmmda_model.inference import Synthesizer
    from jmmda_model.phantom import loaded_case

    syn = Synthesizer(DEMO_MODEL, device="cpu")
    lc = loaded_case(3, syn.pre)
    y0, l0 = syn.predict_slices(model_input(lc.ct_hu, lc.brain, syn.pre, lc.spacing_zyx, lc.mirror_hu), with_logits=True)
    has = lc.brain.reshape(lc.brain.shape[0], -1).any(1)
    assert 0 < has.sum() < has.size  # slices with brain and without
    run = []
    net_slices = syn.predict_slices
    syn.predict_slices = lambda x, with_logits=False: run.append(len(x)) or net_slices(x, with_logits)
    for slab in (7, 1):
        syn.SLAB, run[:] = slab, []
        y1, l1 = syn.predict_streamed(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu)
        np.testing.assert_allclose(y1[has], y0[has], atol=1e-5)
        np.testing.assert_allclose(l1[has], l0[has], atol=1e-4)
        # slices without brain are not run through the network: output 0 (it is masked there), probability 0
        assert sum(run) == has.sum() and not y1[~has].any() and (l1[~has] == syn.NO_BRAIN_LOGIT).all()


def test_hard_negative_crops_are_centred_on_normal_asymmetry(phantoms):
    """Hard negatives are normal brain >= 3 HU darker than its mirror image, never at or next to a lesion; with a
    fraction of 1/3 about a third of the crops hold the one dark spot planted here, and with 0 the crops are
    exactly those of before."""
    from jmmda_model.data import hard_negative_voxels

    lc = phantoms[0]
    z = int(lc.brain.reshape(lc.brain.shape[0], -1).sum(1).argmax())
    ys, xs = np.nonzero(lc.brain[z] & ~ndi.binary_dilation(lc.lesion[z] > 0, iterations=12)
                        & ndi.binary_erosion(lc.brain[z] > 0, iterations=12))
    cy, cx = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    mirror = lc.ct_hu.copy()  # a perfectly symmetric head but for one spot darker than its mirror image
    mirror[z, cy - 4 : cy + 5, cx - 4 : cx + 5] += 12.0
    lesion = lc.lesion.copy()
    lesion[z, cy - 4 : cy + 5, cx + 6 : cx + 9] = 1  # a lesion beside it: its neighbourhood is never a hard negative
    spot = dataclasses.replace(lc, mirror_hu=mirror, lesion=lesion)
    hard = hard_negative_voxels(spot)
    assert hard[z, cy, cx] and set(np.nonzero(hard)[0]) == {z}
    ring = np.zeros((3, 3, 3), bool)
    ring[1] = ndi.generate_binary_structure(2, 1)
    assert not (ndi.binary_dilation(lesion > 0, ring, iterations=3) & hard).any()
    assert not hard_negative_voxels(dataclasses.replace(lc, mirror_hu=lc.ct_hu)).any()  # untrusted plane: no mirror
    with pytest.raises(ValueError, match="mirrored CT"):
        hard_negative_voxels(dataclasses.replace(lc, mirror_hu=None))

    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    plain = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64)
    zero = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64, hard_negative_fraction=0.0)
    for i in range(0, len(plain), 3):
        assert all(torch.equal(plain[i][k], zero[i][k]) for k in ("input", "target", "lesion"))
    # the central slice's mirror-difference channel shows the spot (-12 HU x gain / window width)
    centre = len(pre.ct_windows) * (2 * pre.context_slices + 1) + len(pre.ct_windows) * pre.context_slices
    rates = {}
    for frac in (0.0, 1 / 3):
        ds = SliceDataset([spot], pre, 8, augment=False, patch_size=64, hard_negative_fraction=frac)
        n = hits = 0
        for epoch in range(4):
            ds.epoch_seed = epoch
            for i in range(len(ds)):
                hits += bool((ds[i]["input"][centre] < -0.3).any())
                n += 1
        rates[frac] = hits / n
    # lesion crops (1/3, some of them beside the spot) as before; a third of all crops moves from random brain
    # (which rarely meets the one spot) to the spot: about 1/3 more crops hold it
    assert 0.25 < rates[1 / 3] - rates[0.0] < 0.42, rates
    with pytest.raises(ValueError, match="add up to at most 1"):
        SliceDataset(phantoms, pre, 8, patch_size=64, lesion_patch_fraction=0.5, hard_negative_fraction=0.6)
    with pytest.raises(ValueError, match="needs patch training"):
        SliceDataset(phantoms, pre, 8, patch_size=None, hard_negative_fraction=0.2)


def test_ct_noise_augmentation_is_the_noisier_ct_through_the_real_pipeline(phantoms):
    """add_ct_noise on a model input equals the model input of the CT with that noise added in HU (and independent
    noise on the mirrored CT), wherever windowing clips neither; its noise has the phantoms' level; the brain mask,
    the prior and clipped pixels are untouched; level 0 is the input itself."""
    from jmmda_model.data import add_ct_noise, ct_noise_field
    from jmmda_model.data import model_input

    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    lc = phantoms[0]
    x = case_input(lc, pre)
    k = int(lc.brain.reshape(lc.brain.shape[0], -1).sum(1).argmax())
    n_sl, n_ct = 2 * pre.context_slices + 1, pre.input_channels
    level = 4.0
    y = add_ct_noise(x[k], pre, level, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the same draws, in the same order: the CT's field, then the mirror's
    here, there = ct_noise_field(rng, (n_sl,) + x.shape[-2:], level), ct_noise_field(rng, (n_sl,) + x.shape[-2:], level)
    ct, mirror = lc.ct_hu.copy(), lc.mirror_hu.copy()
    for j, d in enumerate(range(-pre.context_slices, pre.context_slices + 1)):
        ct[k + d] += here[j]
        mirror[k + d] += there[j]
    want = model_input(ct, lc.brain, pre, lc.spacing_zyx, mirror)[k]
    lo, hi = pre.ct_windows[0][0] - pre.ct_windows[0][1] / 2, pre.ct_windows[0][0] + pre.ct_windows[0][1] / 2
    for c in range(n_ct // 2):  # CT channels, then their CT-minus-mirror channels
        s = k - pre.context_slices + c
        free = ((lc.ct_hu[s] > lo + 1) & (lc.ct_hu[s] < hi - 1) & (ct[s] > lo) & (ct[s] < hi)
                & (lc.mirror_hu[s] > lo + 1) & (lc.mirror_hu[s] < hi - 1) & (mirror[s] > lo) & (mirror[s] < hi))
        assert free.sum() > 2000
        np.testing.assert_allclose(y[c][free], want[c][free], atol=1e-5)
        inside = free & (np.abs(want[n_ct // 2 + c]) < 1) & (np.abs(x[k, n_ct // 2 + c]) < 1)
        np.testing.assert_allclose(y[n_ct // 2 + c][inside], want[n_ct // 2 + c][inside], atol=1e-4)
        clipped = (x[k, c] == 0) | (x[k, c] == 1)
        assert np.array_equal(y[c][clipped], x[k, c][clipped])
    assert np.array_equal(y[n_ct:], x[k, n_ct:])  # brain mask and tissue prior
    assert y[:n_ct // 2].min() >= 0 and y[:n_ct // 2].max() <= 1 and np.abs(y[n_ct // 2:n_ct]).max() <= 1
    # the phantoms' own scale: sd about 0.59 x the level in HU (jmmda_model.phantom draws its noise the same way)
    change = (y[pre.context_slices] - x[k, pre.context_slices]) * pre.ct_windows[0][1]
    assert 0.5 * level < change[lc.brain[k] > 0].std() < 0.65 * level
    assert np.array_equal(add_ct_noise(x[k], pre, 0.0, np.random.default_rng(1)), x[k])


def test_noise_augmentation_changes_only_the_ct_and_is_refused_when_it_cannot_apply(phantoms):
    """The noise has a stream of its own: with it every crop, turn, flip and label is the same as without, only the CT
    channels differ (on about the asked share of samples); 0 is bit for bit as before; no augmentation, no noise."""
    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    plain = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64, rotate_deg=10)
    zero = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64, rotate_deg=10, noise_augment_hu=0.0)
    noisy = SliceDataset(phantoms, pre, 8, augment=True, patch_size=64, rotate_deg=10, noise_augment_hu=5.0,
                         noise_augment_probability=0.5)
    still = SliceDataset(phantoms, pre, 8, augment=False, patch_size=64, noise_augment_hu=5.0)
    fixed = SliceDataset(phantoms, pre, 8, augment=False, patch_size=64)
    n_ct = pre.input_channels
    changed = 0
    idx = range(0, len(plain), 2)
    for i in idx:
        a, b, c = plain[i], zero[i], noisy[i]
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert all(torch.equal(a[key], c[key]) for key in ("target", "brain", "lesion"))
        assert torch.equal(a["input"][n_ct:], c["input"][n_ct:])
        changed += not torch.equal(a["input"][:n_ct], c["input"][:n_ct])
        assert torch.equal(still[i]["input"], fixed[i]["input"])
    assert 0.3 < changed / len(idx) < 0.7, changed
    assert torch.equal(noisy[3]["input"], noisy[3]["input"])  # deterministic per (epoch, item)
    for bad in ({"noise_augment_hu": -1.0}, {"noise_augment_hu": float("nan")}, {"noise_augment_hu": 25.0},
                {"noise_augment_hu": 2.0, "noise_augment_probability": 1.5}):
        with pytest.raises(ValueError, match="noise_augment"):
            SliceDataset(phantoms, pre, 8, patch_size=64, **bad)


def test_bounded_residual_leaves_brightness_to_the_lesion_gate():
    """GeneratorConfig.residual_bound: the render head's residual stays within +-bound however large its raw value
    (the identity near 0), so brightness beyond it needs the lesion gate; 0 is the unbounded head of older models;
    bad bounds and a bound without the render head are refused; the bounded head traces for TorchScript."""
    from jmmda_model.networks import RenderHead

    torch.manual_seed(0)
    h = torch.randn(2, 4, 16, 16)
    prior = torch.full((2, 1, 16, 16), 0.25)
    for bound in (0.0, 0.05):
        head = RenderHead(4, residual_bound=bound)
        with torch.no_grad():
            head.conv.weight.zero_()
            head.conv.bias.copy_(torch.tensor([0.3, -20.0, 0.0]))  # a large residual, the gate shut
            out, _ = head(h, prior)
            assert torch.allclose(out, torch.full_like(out, 0.25 + (0.05 * math.tanh(0.3 / 0.05) if bound else 0.3)))
            head.conv.bias.copy_(torch.tensor([0.001, -20.0, 0.0]))  # small residuals pass almost unchanged
            out, _ = head(h, prior)
            assert abs(float(out.mean()) - 0.251) < 1e-5
            head.conv.bias.copy_(torch.tensor([0.0, 20.0, 1.0]))  # no residual, the gate open: the gate still brightens
            out, _ = head(h, prior)
            assert torch.allclose(out, 0.25 * (1 + torch.nn.functional.softplus(torch.tensor(1.0))).expand_as(out))
    for bad in ({"residual_bound": -0.1}, {"residual_bound": float("nan")}, {"residual_bound": 2.0},
                {"residual_bound": 0.05, "residual_prior": False}):
        with pytest.raises(ValueError, match="residual_bound"):
            GeneratorConfig(**{"residual_prior": True, **bad})
    old = GeneratorConfig(residual_prior=True).to_dict()
    del old["residual_bound"]  # a checkpoint written before the option
    assert GeneratorConfig.from_dict(old).residual_bound == 0.0
    g = build_generator(GeneratorConfig(ct_channels=6, base_channels=8, depth=2, heads=2, residual_prior=True,
                                        residual_bound=0.05)).eval()
    x = torch.rand(1, 8, 32, 32)
    traced = torch.jit.trace(g, x, check_trace=False)
    with torch.no_grad():
        assert torch.allclose(traced(x), g(x), atol=1e-6)


def test_hemispheric_difference_in_units_of_the_case_noise(phantoms):
    """PreprocessConfig.mirror_noise_ref_hu: the CT-minus-mirror channels x ref / (the case's spread of CT minus
    mirror over parenchyma); measured on the whole volume before the pose, passed to every streamed slab; off by
    default (every input as before); refused where it cannot be honoured."""
    from jmmda_model.data import MIRROR_SCALE_BOUNDS, mirror_noise_scale, model_input

    rng = np.random.default_rng(3)
    shape = (6, 40, 40)
    brain = np.ones(shape, np.uint8)
    ct = (35.0 + rng.normal(0.0, 3.0, shape)).astype(np.float32)
    mirror = (35.0 + rng.normal(0.0, 3.0, shape)).astype(np.float32)
    pre = PreprocessConfig(mirror_noise_ref_hu=3.5)
    assert mirror_noise_scale(ct, mirror, brain, pre) == pytest.approx(3.5 / (3.0 * math.sqrt(2)), rel=0.05)
    assert mirror_noise_scale(ct, mirror, brain, PreprocessConfig()) == 1.0  # off by default
    assert mirror_noise_scale(ct, ct, brain, pre) == 1.0  # plane not trusted: the CT is its own mirror
    assert mirror_noise_scale(ct, None, brain, pre) == 1.0
    assert mirror_noise_scale(ct[:, :5, :5], mirror[:, :5, :5], brain[:, :5, :5], pre) == 1.0  # too few voxels
    loud = (35.0 + rng.normal(0.0, 12.0, shape)).astype(np.float32)  # mostly outside the parenchyma range: bounded
    assert MIRROR_SCALE_BOUNDS[0] <= mirror_noise_scale(loud, mirror, brain, pre) <= MIRROR_SCALE_BOUNDS[1]

    lc = phantoms[0]
    plain = PreprocessConfig()
    scaled = dataclasses.replace(plain, mirror_noise_ref_hu=3.5)
    s = mirror_noise_scale(lc.ct_hu, lc.mirror_hu, lc.brain, scaled)
    assert 0.5 < s < 2.0 and s != 1.0
    x0, x1 = case_input(lc, plain), case_input(lc, scaled)
    n_ct = plain.input_channels // 2
    np.testing.assert_array_equal(x0[:, :n_ct], x1[:, :n_ct])  # CT, brain (and everything else) unchanged
    np.testing.assert_array_equal(x0[:, 2 * n_ct :], x1[:, 2 * n_ct :])
    d0, d1 = x0[:, n_ct : 2 * n_ct], x1[:, n_ct : 2 * n_ct]
    free = (np.abs(d0) < 1.0) & (np.abs(d0 * s) < 1.0)
    assert free.sum() > 10000
    np.testing.assert_allclose(d1[free], d0[free] * s, atol=1e-5)
    # a slab alone would measure another noise: the caller's scale wins
    slab = model_input(lc.ct_hu[10:14], lc.brain[10:14], scaled, lc.spacing_zyx, lc.mirror_hu[10:14], mirror_scale=s)
    np.testing.assert_allclose(slab[1:3], x1[11:13], atol=1e-6)

    assert PreprocessConfig.from_dict({k: v for k, v in plain.to_dict().items() if k != "mirror_noise_ref_hu"}).mirror_noise_ref_hu is None
    for bad in ({"mirror_noise_ref_hu": 0.0}, {"mirror_noise_ref_hu": float("nan")}, {"mirror_noise_ref_hu": "3"},
                {"mirror_noise_ref_hu": 3.5, "mirror_channels": False}):
        with pytest.raises(ValueError):
            PreprocessConfig.from_dict({**plain.to_dict(), **bad})
    with pytest.raises(ValueError, match="noise augmentation"):
        SliceDataset(phantoms[:1], scaled, 8, augment=True, noise_augment_hu=3.0)
    from jmmda_model.bundle import _channel_names  # the bundle's channel definitions say so

    assert any("spread of CT minus mirror" in v for v in _channel_names(scaled.to_dict()).values())
    assert not any("spread" in v for v in _channel_names(plain.to_dict()).values())


def test_noise_scaled_models_stream_and_pose_with_the_whole_volume_scale():
    """The served path measures the scale once, on the model grid before the canonical pose, and every slab uses it:
    the same synthesis as the whole input built at once."""
    from conftest import DEMO_MODEL
    from jmmda_model.data import mirror_noise_scale, model_input
    from jmmda_model.inference import Synthesizer

    syn = Synthesizer(DEMO_MODEL, device="cpu")
    syn.pre = dataclasses.replace(syn.pre, mirror_noise_ref_hu=3.5)  # the weights do not matter here, the input does
    lc = loaded_case(3, syn.pre)
    s = mirror_noise_scale(lc.ct_hu, lc.mirror_hu, lc.brain, syn.pre)
    y0 = syn.predict_slices(model_input(lc.ct_hu, lc.brain, syn.pre, lc.spacing_zyx, lc.mirror_hu))
    has = lc.brain.reshape(lc.brain.shape[0], -1).any(1)
    syn.SLAB = 5
    y1, _ = syn.predict_streamed(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu)
    np.testing.assert_allclose(y1[has], y0[has], atol=1e-5)
    seen = []
    streamed = syn.predict_streamed
    syn.predict_streamed = lambda *a, **kw: seen.append(kw.get("mirror_scale")) or streamed(*a, **kw)
    syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
    assert seen == [pytest.approx(s)]


def test_lesions_the_ct_does_not_show_are_left_out_of_the_losses(phantoms):
    """``unseen_lesion_hu``: a lesion whose CT contrast (the metrics' ring measure) is below the threshold leaves the
    lesion mask and is marked ``ignore``; every other lesion stays. The trainer's losses then do not see those voxels
    (changing the synthesis or the lesion logits there changes no loss but the adversarial one); 0 is bit for bit
    as before, with no ``ignore`` tensor; out-of-range values are refused."""
    from jmmda_model.data import unseen_lesions
    from jmmda_model.metrics import lesion_metrics
    from jmmda_model.trainer import TrainConfig, Trainer

    lc = max(phantoms, key=lambda c: ndi.label(c.lesion, np.ones((3, 3, 3), bool))[1])  # seed 3111: -1.2 and 3.3 HU
    m = lesion_metrics(lc.dwi, lc.dwi, lc.brain, lc.lesion, ct_hu=lc.ct_hu, spacing=lc.spacing_zyx, masks=True)
    contrasts = [x["ct_contrast_hu"] for x in m["lesions"]]
    assert len(contrasts) >= 2, contrasts
    cut = float(np.median(contrasts)) + 1e-6  # at least one lesion on each side
    unseen = unseen_lesions(lc, cut)
    for k, c in enumerate(contrasts, start=1):
        region = m["labels"] == k
        assert unseen[region].all() if c < cut else not unseen[region].any(), (k, c, cut)
    assert not unseen_lesions(lc, 0.0).any()

    pre = PreprocessConfig(tissue_prior=TissuePrior().fit(phantoms).to_dict())
    plain = SliceDataset([lc], pre, 8, augment=True, patch_size=64, rotate_deg=10)
    zero = SliceDataset([lc], pre, 8, augment=True, patch_size=64, rotate_deg=10, unseen_lesion_hu=0.0)
    masked = SliceDataset([lc], pre, 8, augment=False, unseen_lesion_hu=cut)
    whole = SliceDataset([lc], pre, 8, augment=False)
    for i in range(0, len(plain), 3):
        assert set(zero[i]) == {"input", "target", "brain", "lesion"}
        assert all(torch.equal(plain[i][k], zero[i][k]) for k in plain[i])
    n_ignored = 0
    for i in range(len(masked)):
        a, b = masked[i], whole[i]
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
        assert torch.equal(a["lesion"] + a["ignore"], b["lesion"])  # the lesion split into kept and ignored
        n_ignored += int(a["ignore"].sum())
    assert n_ignored == int(unseen.sum()) > 0
    # every crop centred on a lesion is centred on a kept one
    assert all(masked.items[i][3].any() for i in masked.lesion_items)

    cfg = TrainConfig(generator=GeneratorConfig(base_channels=8, depth=2, heads=2, residual_prior=True).to_dict(),
                      preprocess=pre.to_dict(), device="cpu", progress=False, tensorboard=False, lambda_adv=0.0, seed=1)
    i = next(i for i in range(len(masked)) if masked[i]["ignore"].any())
    batch = {k: v[None] for k, v in masked[i].items()}
    brighter = dict(batch, target=batch["target"] + 0.5 * batch["ignore"])  # the real DWI changed where ignored
    # the trainer's own step, twice from the same start (same seed): the logged losses are taken before the update
    logged = [Trainer(cfg, "/nonexistent-not-written")._step(b) for b in (batch, brighter)]
    for key in ("loss_g", "loss_l1", "loss_contrast"):
        assert logged[0][key] == pytest.approx(logged[1][key], rel=1e-6), key
    # without the ignore tensor the same change is seen (the check is not blind)
    plain = [Trainer(cfg, "/nonexistent-not-written")._step({k: v for k, v in b.items() if k != "ignore"})
             for b in (batch, brighter)]
    assert plain[1]["loss_l1"] > plain[0]["loss_l1"] * 1.01
    for bad in (-1.0, float("nan"), 25.0):
        with pytest.raises(ValueError, match="unseen_lesion_hu"):
            SliceDataset([lc], pre, 8, unseen_lesion_hu=bad)
        with pytest.raises(ValueError, match="unseen_lesion_hu"):
            TrainConfig(unseen_lesion_hu=bad)
