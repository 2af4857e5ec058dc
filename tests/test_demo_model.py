"""The shipped demo checkpoint: labelled as phantom-trained, and better than trivial on held-out cases."""
import json

import numpy as np
import pytest

from jmmda_model.checkpoint import load
from jmmda_model.data import load_case, model_input
from jmmda_model.inference import Synthesizer
from jmmda_model.metrics import evaluate_volume

from conftest import DEMO_MODEL, SAMPLE, read


@pytest.fixture(scope="module")
def syn():
    return Synthesizer(DEMO_MODEL, device="cpu")


def test_model_card_says_phantom_and_not_for_diagnosis():
    ck = load(DEMO_MODEL)
    card = ck["model_card"]
    assert card["phantom_trained"] is True and "not for diagnosis" in card["output"]
    assert not set(card["training_cases"]) & {f"phantom_{i:03d}" for i in range(10)}  # sample cases are held out
    assert ck["generator_config"]["arch"] == "jmmda" and ck["generator_config"]["wavelet"] == "haar"


def test_demo_model_beats_trivial_baselines_on_held_out_cases(syn, sample_cases):
    meta = json.loads((SAMPLE / "phantom_cases.json").read_text())["cases"]
    gains, visible_lesion_ratios = [], []
    for case in sample_cases:
        lc = load_case(case, syn.pre)
        y = syn.predict_slices(model_input(lc.ct_hu, lc.brain, syn.pre)) * lc.brain
        m = evaluate_volume(y, lc.dwi, lc.brain, lc.lesion)
        const = np.full_like(lc.dwi, lc.dwi[lc.brain > 0].mean()) * lc.brain
        base = evaluate_volume(const, lc.dwi, lc.brain, lc.lesion)
        gains.append(m["psnr_brain"] - base["psnr_brain"])
        assert m["ssim_brain"] > base["ssim_brain"] + 0.1
        assert m["superpixel_r"] > 0.5
        if lc.lesion.sum() > 20 and meta[case.id]["ct_hypodensity_hu"] >= 5.0:
            normal = (lc.brain > 0) & (lc.lesion == 0)
            visible_lesion_ratios.append(y[lc.lesion > 0].mean() / y[normal].mean())
    assert min(gains) > 3.0, gains  # dB over predicting the mean brain intensity
    # infarcts with a visible CT hypodensity (>= 5 HU) come out bright on the synthetic DWI
    assert len(visible_lesion_ratios) >= 2 and min(visible_lesion_ratios) > 1.4, visible_lesion_ratios


def test_volume_call_is_deterministic_and_on_ct_grid(syn, sample_cases):
    ct = read(sample_cases[-1].ct)
    mask = read(sample_cases[-1].brainmask)
    a, _, info = syn(ct, mask)
    b, _, _ = syn(ct, mask)
    from conftest import arr

    assert np.array_equal(arr(a), arr(b))
    assert a.GetSize() == ct.GetSize() and a.GetOrigin() == ct.GetOrigin() and a.GetDirection() == ct.GetDirection()
    assert info["device"] == "cpu" and info["mixed_precision"] is False


def test_other_pixel_size_is_resampled_to_the_model_and_back(syn, sample_cases):
    """A 1.25 mm CT (like a clinical 512 matrix) gets the same synthesis as the native 2.5 mm grid."""
    from jmmda_model.clinical.geometry import resample_inplane, to_axial

    from conftest import arr

    ct = to_axial(read(sample_cases[-2].ct))
    mask = to_axial(read(sample_cases[-2].brainmask))
    fine_ct = resample_inplane(ct, (1.25, 1.25))
    fine_mask = resample_inplane(mask, (1.25, 1.25), label=True)
    fine, _, info = syn(fine_ct, fine_mask)
    assert fine.GetSize() == fine_ct.GetSize() and info["resampled_inplane_mm"] == [2.5, 2.5]
    native, _, info_n = syn(ct, mask)
    assert info_n["resampled_inplane_mm"] is None
    back = arr(resample_inplane(fine, (2.5, 2.5)))
    brain = arr(mask) > 0
    assert np.abs(back - arr(native))[brain].mean() < 0.05


def test_unusable_device_is_a_clear_error():
    import torch

    from jmmda_model.inference import DeviceError, pick_device

    with pytest.raises(DeviceError, match="invalid device"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            Synthesizer(DEMO_MODEL, device="cuda")
    with pytest.raises(DeviceError, match="GPU"):
        pick_device(f"cuda:{torch.cuda.device_count() + 3}")
    assert pick_device("auto").type in ("cpu", "cuda") and pick_device("cpu").type == "cpu"
