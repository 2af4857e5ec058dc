import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from jmmda_model import metrics as M


def _vol(seed=0, shape=(6, 48, 48)):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    v = ndi.gaussian_filter(rng.random(shape), 2)
    v = (v - v.min()) / (v.max() - v.min())
    brain = np.zeros(shape, np.uint8)
    brain[:, 8:40, 8:40] = 1
    return v, brain


def test_mse_psnr_known_values():
    t = np.zeros((4, 16, 16))
    p = t + 0.1
    assert M.mse(p, t) == pytest.approx(0.01)
    assert M.psnr(p, t) == pytest.approx(20.0)
    assert M.psnr(t, t) == math.inf
    v, brain = _vol()
    noisy = np.clip(v + np.random.default_rng(1).normal(0, 0.05, v.shape), 0, 1)
    assert M.psnr(noisy, v) == pytest.approx(peak_signal_noise_ratio(v, noisy, data_range=1.0))


def test_masked_metrics_only_see_the_mask():
    v, brain = _vol()
    p = v.copy()
    p[brain == 0] = 1 - p[brain == 0]  # ruin the outside only
    assert M.mse(p, v, brain) == 0
    assert M.mse(p, v) > 0
    inner = np.zeros_like(brain)
    inner[:, 11:37, 11:37] = 1  # SSIM's 7x7 window must not reach the ruined outside
    assert M.ssim(p, v, inner) == pytest.approx(1.0)
    assert M.ssim(p, v) < M.ssim(p, v, brain) < 1.0


def test_ssim_identity_and_degradation():
    v, _ = _vol()
    assert M.ssim(v, v) == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    s1 = M.ssim(np.clip(v + rng.normal(0, 0.02, v.shape), 0, 1), v)
    s2 = M.ssim(np.clip(v + rng.normal(0, 0.2, v.shape), 0, 1), v)
    assert 1.0 > s1 > s2


def test_lesion_mae():
    v, _ = _vol()
    les = np.zeros_like(v, np.uint8)
    les[2, 10:20, 10:20] = 1
    p = v.copy()
    p[les > 0] += 0.3
    assert M.lesion_mae(p, v, les) == pytest.approx(0.3)
    assert math.isnan(M.lesion_mae(p, v, np.zeros_like(les)))


def test_superpixel_correlation_tracks_gray_level_agreement():
    v, brain = _vol(3)
    r_same, n = M.superpixel_correlation(v, v, brain, n_segments=100)
    assert r_same == pytest.approx(1.0) and n >= 20
    # a monotone gray-level change keeps r high, a shuffled image does not
    r_gamma, _ = M.superpixel_correlation(v**1.5, v, brain, n_segments=100)
    shuffled = np.random.default_rng(0).permutation(v.ravel()).reshape(v.shape)
    r_bad, _ = M.superpixel_correlation(shuffled, v, brain, n_segments=100)
    assert r_gamma > 0.95 and abs(r_bad) < 0.5


def test_evaluate_volume_keys():
    v, brain = _vol()
    m = M.evaluate_volume(v * 0.9, v, brain, None)
    assert set(M.METRIC_INFO) <= set(m)
    assert m["psnr_brain"] > 10 and math.isnan(m["lesion_mae"])
