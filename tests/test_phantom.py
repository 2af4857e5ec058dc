import json

import numpy as np
import SimpleITK as sitk

from jmmda_model.data import find_cases
from jmmda_model.clinical.geometry import same_geometry
from jmmda_model.clinical.imageio import check_ct
from jmmda_model.phantom import make_case, write_datastore

from conftest import SAMPLE


def test_phantom_case_is_plausible_and_deterministic():
    a = make_case(5)
    b = make_case(5)
    c = make_case(8)
    assert np.array_equal(a["ct"], b["ct"]) and np.array_equal(a["dwi"], b["dwi"])
    assert not np.array_equal(a["brainmask"], c["brainmask"])  # random deformation per case
    ct, dwi, brain, les = a["ct"], a["dwi"], a["brainmask"] > 0, a["lesion"] > 0
    vox_ml = np.prod(a["spacing"]) / 1000
    assert 900 < brain.sum() * vox_ml < 2200  # adult brain volume
    assert 20 < np.median(ct[brain]) < 45  # parenchyma HU
    assert np.percentile(ct, 1) <= -900 and ct.max() > 1000  # air and bone
    assert les.sum() > 0 and not (les & ~brain).any()
    normal = brain & ~les
    assert np.median(dwi[les]) > 1.4 * np.median(dwi[normal])  # DWI bright lesion
    assert np.mean(ct[les]) < np.mean(ct[normal & (ct > 20)])  # subtle CT hypodensity
    assert max(a["spacing"][:2]) <= 1.8  # clinical DWI/CT in-plane resolution
    assert (ct[brain] > 245).mean() < 0.001  # no skull partial-volume rim inside the brain mask
    assert (ct < -50).sum() > 0 and ((ct > -150) & (ct < -50)).sum() > 100  # air spaces, scalp fat


def test_phantoms_vary_per_case_and_cover_the_lesion_spectrum():
    from jmmda_model.preprocess import normalize_dwi

    cases = [make_case(s) for s in (*range(12), 201)]  # 201: two overlapping infarcts
    metas = [c["meta"] for c in cases]
    for c in cases:  # overlapping lesions do not multiply: no lesion beyond the normalisation ceiling
        n = normalize_dwi(c["dwi"], c["brainmask"], clip=False)
        assert n[c["lesion"] > 0].max(initial=0) < 1.0
    gm = [m["tissue_hu"]["gm"] for m in metas]
    assert max(gm) - min(gm) > 3 and len({m["ct_noise_hu"] for m in metas}) == len(metas)
    lesions = [x for m in metas for x in m["lesions"]]
    territories = {x["territory"] for x in lesions}
    assert {"MCA", "lacunar"} <= territories and len(territories) >= 3
    assert min(x["volume_ml"] for x in lesions) < 1.0 < max(x["volume_ml"] for x in lesions)
    assert min(x["ct_hypodensity_hu"] for x in lesions) < 3.0 and max(x["ct_hypodensity_hu"] for x in lesions) > 6.0
    assert any(m["old_infarct_ml"] > 0 for m in metas)


def test_generation_takes_a_target_spacing_and_is_fast():
    import time

    from jmmda_model.phantom import PhantomConfig

    make_case(0)  # templates read once per process
    t = time.time()
    c = make_case(3, PhantomConfig(spacing=(1.2, 1.2, 3.0)))
    assert c["ct"].shape == (192, 214, 54) and c["spacing"] == (1.2, 1.2, 3.0)
    assert time.time() - t < 15


def test_committed_sample_data_is_consistent():
    cases = find_cases(SAMPLE)
    assert len(cases) >= 8
    meta = json.loads((SAMPLE / "phantom_cases.json").read_text())
    assert "not patient data" in meta["note"]
    for case in cases[:3]:
        ct = sitk.ReadImage(str(case.ct))
        check_ct(ct)
        for tag in ("dwi", "brainmask", "lesion"):
            assert same_geometry(sitk.ReadImage(str(getattr(case, tag))), ct)


def test_write_datastore_layout(tmp_path):
    from jmmda_model.phantom import PhantomConfig

    ids = write_datastore(tmp_path, 2, first_seed=40, cfg=PhantomConfig(spacing=(5.0, 5.0, 15.0)))
    assert ids == ["phantom_040", "phantom_041"]
    found = find_cases(tmp_path)
    assert [c.id for c in found] == ids and all(c.lesion is not None for c in found)
    write_datastore(tmp_path, 1, first_seed=50, cfg=PhantomConfig(spacing=(5.0, 5.0, 15.0)))
    index = json.loads((tmp_path / "phantom_cases.json").read_text())["cases"]
    assert set(index) == {"phantom_040", "phantom_041", "phantom_050"}


def test_fine_grids_are_drawn_coarse_and_upsampled_in_the_same_frame():
    """Pose/series issue, item 4 (make-sample-data at 0.45 mm in 4 GB): a grid finer than WORK_SPACING is drawn
    on the working grid and up-sampled slice by slice; the fine volumes cover the same physical box (same centre),
    their labels the same volume, their intensities the same values at the coarse voxel centres."""
    import dataclasses

    import numpy as np
    import SimpleITK as sitk

    from jmmda_model import phantom

    coarse_cfg = phantom.PhantomConfig()
    fine_cfg = dataclasses.replace(coarse_cfg, spacing=(0.9, 0.9, 2.5))
    case = phantom.make_case(5, coarse_cfg)
    fine = {tag: (arr, geo) for tag, arr, geo in phantom.on_fine_grid(case, fine_cfg, 5)}
    assert fine["ct"][0].shape == fine_cfg.grid() and fine["ct"][0].dtype == case["ct"].dtype
    c_img = phantom.to_image(case["ct"], case)
    f_img = phantom.to_image(fine["ct"][0], fine["ct"][1])
    centre = lambda im: np.array(im.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in im.GetSize()]))
    np.testing.assert_allclose(centre(f_img), centre(c_img), atol=1e-6)
    for tag in ("brainmask", "lesion"):
        v_c = case[tag].sum() * np.prod(case["spacing"])
        v_f = fine[tag][0].sum() * np.prod(fine[tag][1]["spacing"])
        assert abs(v_f - v_c) <= 0.1 * v_c + 50, (tag, v_c, v_f)
    # sampled back at the coarse voxel centres (nearest fine voxel, half a fine voxel away): the DWI agrees
    probe = sitk.ResampleImageFilter()
    probe.SetReferenceImage(c_img)
    probe.SetInterpolator(sitk.sitkNearestNeighbor)
    back = sitk.GetArrayFromImage(probe.Execute(phantom.to_image(fine["dwi"][0], fine["dwi"][1])))
    ref = sitk.GetArrayFromImage(phantom.to_image(case["dwi"], case))
    brain = sitk.GetArrayFromImage(phantom.to_image(case["brainmask"], case)) > 0
    assert np.median(np.abs(back[brain].astype(float) - ref[brain])) <= 0.05 * np.median(ref[brain])
    assert phantom._work_config(dataclasses.replace(coarse_cfg, spacing=(0.45, 0.45, 0.5))).spacing == phantom.WORK_SPACING
    assert phantom._work_config(coarse_cfg) is coarse_cfg


def test_dwi_effects_and_tissue_signals_can_be_set_on_the_same_head():
    """PhantomConfig.dwi_effects / dwi_tissue (what a synthesis can reach, benchmarks/records/dwi_ceiling_*): the
    random draws are made whatever is applied, so the CT, masks and lesions stay those of the same seed."""
    import dataclasses

    import pytest
    from scipy import ndimage as ndi

    from jmmda_model.phantom import PhantomConfig

    cfg = PhantomConfig(spacing=(3.6, 3.6, 10.0))
    full = make_case(7, cfg)
    assert np.array_equal(full["dwi"], make_case(7, dataclasses.replace(cfg, dwi_effects=("noise", "bias", "epi", "susceptibility")))["dwi"])
    quiet = make_case(7, dataclasses.replace(cfg, dwi_effects=("susceptibility", "epi", "bias")))
    for k in ("ct", "brainmask", "lesion"):
        assert np.array_equal(full[k], quiet[k]), k
    brain = ndi.binary_erosion(full["brainmask"] > 0, iterations=2)
    resid = (full["dwi"].astype(float) - quiet["dwi"])[brain] / cfg.dwi_scale
    assert 0.02 < resid.std() < 0.06 and abs(np.median(resid)) < 0.02  # the Rician noise drawn (0.025-0.045)
    smooth = make_case(7, dataclasses.replace(cfg, ct_noise=False))
    assert np.array_equal(smooth["dwi"], full["dwi"]) and np.array_equal(smooth["lesion"], full["lesion"])
    ct_resid = (full["ct"].astype(float) - smooth["ct"])[brain]
    assert 1.0 < ct_resid.std() < 5.0 and abs(np.median(ct_resid)) <= 1.0  # the CT noise drawn (2.5-6 HU scale)
    a = make_case(7, dataclasses.replace(cfg, dwi_effects=(), dwi_tissue=(1.0, 0.8, 0.2)))
    b = make_case(7, dataclasses.replace(cfg, dwi_effects=(), dwi_tissue=(2.0, 1.6, 0.4)))
    assert np.array_equal(a["ct"], full["ct"])
    ratio = b["dwi"][brain].astype(float) / np.maximum(a["dwi"][brain], 1)
    assert np.all(np.abs(ratio - 2.0) < 0.02)  # deep brain: the signal set, nothing else on it
    for bad in ({"dwi_effects": ("noise", "motion")}, {"dwi_tissue": (1.0, 0.8)}, {"dwi_tissue": (1.0, -0.8, 0.2)},
                {"dwi_tissue": (1.0, float("nan"), 0.2)}):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)
