import json

import numpy as np
import SimpleITK as sitk

from jmmda_model.data import find_cases
from jmmda_model.imageio import check_ct, same_geometry
from jmmda_model.phantom import make_case, write_datastore

from conftest import SAMPLE


def test_phantom_case_is_plausible_and_deterministic():
    a = make_case(7)
    b = make_case(7)
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

    ids = write_datastore(tmp_path, 2, first_seed=40, cfg=PhantomConfig(size=(48, 56, 12), spacing=(5.0, 5.0, 15.0)))
    assert ids == ["phantom_040", "phantom_041"]
    found = find_cases(tmp_path)
    assert [c.id for c in found] == ids and all(c.lesion is not None for c in found)
    write_datastore(tmp_path, 1, first_seed=50, cfg=PhantomConfig(size=(48, 56, 12), spacing=(5.0, 5.0, 15.0)))
    index = json.loads((tmp_path / "phantom_cases.json").read_text())["cases"]
    assert set(index) == {"phantom_040", "phantom_041", "phantom_050"}
