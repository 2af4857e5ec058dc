"""The shipped demo checkpoint: labelled as phantom-trained, and better than trivial on held-out cases."""
import numpy as np
import pytest

from jmmda_model.checkpoint import load
from jmmda_model.data import load_case, model_input
from jmmda_model.inference import Synthesizer
from jmmda_model.metrics import evaluate_volume

from conftest import DEMO_MODEL, read


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
    gains, lesion_ratios = [], []
    for case in sample_cases[-4:]:
        lc = load_case(case, syn.pre)
        y = syn.predict_slices(model_input(lc.ct_hu, lc.brain, syn.pre)) * lc.brain
        m = evaluate_volume(y, lc.dwi, lc.brain, lc.lesion)
        const = np.full_like(lc.dwi, lc.dwi[lc.brain > 0].mean()) * lc.brain
        base = evaluate_volume(const, lc.dwi, lc.brain, lc.lesion)
        gains.append(m["psnr_brain"] - base["psnr_brain"])
        assert m["ssim_brain"] > base["ssim_brain"] + 0.1
        assert m["superpixel_r"] > 0.8
        if lc.lesion.sum() > 20:
            normal = (lc.brain > 0) & (lc.lesion == 0)
            lesion_ratios.append(y[lc.lesion > 0].mean() / y[normal].mean())
    assert min(gains) > 3.0, gains  # dB over predicting the mean brain intensity
    assert lesion_ratios and min(lesion_ratios) > 1.3, lesion_ratios  # infarcts come out bright


def test_volume_call_is_deterministic_and_on_ct_grid(syn, sample_cases):
    ct = read(sample_cases[-1].ct)
    mask = read(sample_cases[-1].brainmask)
    a, _, info = syn(ct, mask)
    b, _, _ = syn(ct, mask)
    from conftest import arr

    assert np.array_equal(arr(a), arr(b))
    assert a.GetSize() == ct.GetSize() and a.GetOrigin() == ct.GetOrigin() and a.GetDirection() == ct.GetDirection()
    assert info["device"] == "cpu" and info["mixed_precision"] is False
