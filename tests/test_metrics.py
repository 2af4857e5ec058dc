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


def test_superpixels_of_one_real_dwi_are_segmented_once_and_by_content(monkeypatch):
    """The SLIC labels are kept per real DWI: a second prediction scored against the same volume reuses them with
    the same value as a fresh segmentation; any change of the real DWI, the mask or the settings segments again."""
    import skimage.segmentation

    calls = []
    real_slic = skimage.segmentation.slic

    def counting_slic(*a, **k):
        calls.append(1)
        return real_slic(*a, **k)

    monkeypatch.setattr(skimage.segmentation, "slic", counting_slic)
    monkeypatch.setattr(M, "_slic_cache", type(M._slic_cache)())
    v, brain = _vol(5, (8, 48, 40))
    rng = np.random.default_rng(1)
    p1, p2 = (np.clip(v + rng.normal(0, s, v.shape), 0, 1) for s in (0.05, 0.2))
    r1 = M.superpixel_correlation(p1, v, brain, spacing=(5.0, 1.8, 1.8))
    r2 = M.superpixel_correlation(p2, v.copy(), brain.copy(), spacing=(5.0, 1.8, 1.8))  # same content, new arrays
    assert len(calls) == 1 and r1 != r2
    M._slic_cache.clear()
    assert M.superpixel_correlation(p2, v, brain, spacing=(5.0, 1.8, 1.8)) == r2 and len(calls) == 2  # fresh: equal
    v2 = v.copy()
    v2[4, 20, 20] += 1e-6  # one voxel of the real DWI
    b2 = brain.copy()
    b2[4, 8, 8] = 0  # one voxel of the mask
    M.superpixel_correlation(p2, v2, brain, spacing=(5.0, 1.8, 1.8))
    M.superpixel_correlation(p2, v, b2, spacing=(5.0, 1.8, 1.8))
    M.superpixel_correlation(p2, v, brain, spacing=(5.0, 1.8, 2.0))
    M.superpixel_correlation(p2, v, brain, n_segments=100, spacing=(5.0, 1.8, 1.8))
    assert len(calls) == 6
    labels = next(iter(M._slic_cache.values()))
    assert not labels.flags.writeable  # a caller cannot alter what the next one gets
    for k in range(M.SLIC_CACHE_SIZE + 3):  # bounded in number...
        M.superpixel_correlation(p1, v + k * 1e-3, brain)
    assert len(M._slic_cache) == M.SLIC_CACHE_SIZE
    one = labels.nbytes
    monkeypatch.setattr(M, "SLIC_CACHE_BYTES", 2 * one + 1)  # ...and in bytes: two of these volumes
    M.superpixel_correlation(p1, v + 0.5, brain)
    assert len(M._slic_cache) == 2 and sum(x.nbytes for x in M._slic_cache.values()) <= 2 * one + 1
    monkeypatch.setattr(M, "SLIC_CACHE_BYTES", one - 1)  # a volume larger than the budget is not kept at all
    M._slic_cache.clear()
    n = len(calls)
    M.superpixel_correlation(p1, v, brain, spacing=(5.0, 1.8, 1.8))
    M.superpixel_correlation(p1, v, brain, spacing=(5.0, 1.8, 1.8))
    assert len(M._slic_cache) == 0 and len(calls) == n + 2


def test_evaluate_volume_keys():
    v, brain = _vol()
    m = M.evaluate_volume(v * 0.9, v, brain, None)
    assert set(M.METRIC_INFO) <= set(m)
    assert m["psnr_brain"] > 10 and math.isnan(m["lesion_mae"])


# ---------------------------------------------------------------- lesion metrics (known answers)
def _lesion_volume():
    """(pred-free) real DWI with two lesions of known brightness, CT with known hypodensity."""
    shape = (12, 64, 64)
    rng = np.random.default_rng(5)
    brain = np.zeros(shape, np.uint8)
    brain[1:11, 6:58, 6:58] = 1
    dwi = np.where(brain > 0, 0.25 + rng.normal(0, 0.005, shape), 0.0)
    ct = np.where(brain > 0, 35.0, -1000.0)
    lesion = np.zeros(shape, np.uint8)
    lesion[3:8, 15:27, 15:27] = 1  # 720 voxels: 0.72 mL at 1 mm^3
    lesion[4:6, 40:44, 40:44] = 1  # 32 voxels, separate
    dwi[lesion > 0] = 0.55  # ratio 2.2
    ct[3:8, 15:27, 15:27] -= 6.0
    ct[4:6, 40:44, 40:44] -= 2.0
    return dwi, brain, lesion, ct


def test_lesion_metrics_perfect_prediction_shows_every_lesion():
    dwi, brain, lesion, ct = _lesion_volume()
    m = M.lesion_metrics(dwi, dwi, brain, lesion, ct, spacing=(1.0, 1.0, 1.0))
    assert len(m["lesions"]) == 2
    big, small = sorted(m["lesions"], key=lambda x: -x["volume_ml"])
    assert big["volume_ml"] == pytest.approx(0.72) and small["volume_ml"] == pytest.approx(0.032)
    assert big["ratio_real"] == pytest.approx(2.2, rel=0.02) and big["ratio_syn"] == pytest.approx(big["ratio_real"])
    assert big["ct_contrast_hu"] == pytest.approx(6.0, abs=0.01) and small["ct_contrast_hu"] == pytest.approx(2.0, abs=0.01)
    assert all(x["shown"] and not x["darker"] for x in m["lesions"])
    assert m["false_bright_ml"] == 0
    sens = M.stratified_sensitivity(m["lesions"])
    assert sens["all"]["sensitivity"] == 1.0 and sens["contrast <3 HU"]["n"] == 1 and sens["contrast >=5 HU"]["n"] == 1
    assert sens["volume <1 mL"]["n"] == 2


def test_lesion_metrics_erased_and_darkened_lesions():
    dwi, brain, lesion, ct = _lesion_volume()
    erased = dwi.copy()
    erased[lesion > 0] = 0.25  # lesion painted as normal brain
    m = M.lesion_metrics(erased, dwi, brain, lesion, ct)
    assert [x["shown"] for x in m["lesions"]] == [False, False]
    assert all(x["ratio_syn"] == pytest.approx(1.0, abs=0.05) for x in m["lesions"])
    dark = dwi.copy()
    dark[lesion > 0] = 0.2
    m = M.lesion_metrics(dark, dwi, brain, lesion, ct)
    assert all(x["darker"] and not x["shown"] for x in m["lesions"])
    assert M.stratified_sensitivity(m["lesions"])["all"] == {"shown": 0, "n": 2, "sensitivity": 0.0, "darker": 2}
    fake = dwi.copy()
    fake[8:10, 30:40, 45:55] = 0.6  # 200 voxels bright in the synthetic image only
    m = M.lesion_metrics(fake, dwi, brain, lesion, ct, spacing=(1.0, 1.0, 1.0))
    assert m["false_bright_ml"] == pytest.approx(0.2)


def _flips_and_transposes():
    yield lambda a: a[::-1]
    yield lambda a: a[:, ::-1, ::-1]
    yield lambda a: np.swapaxes(a, 1, 2)
    yield lambda a: np.transpose(a, (2, 0, 1))


def test_every_metric_is_invariant_to_array_axis_order():
    dwi, brain, lesion, ct = _lesion_volume()
    rng = np.random.default_rng(9)
    from scipy import ndimage as ndi

    texture = ndi.gaussian_filter(rng.random(dwi.shape), 1.5)
    target = np.clip(dwi + 0.3 * (texture - 0.5) * brain, 0, 1)
    pred = np.clip(target + rng.normal(0, 0.03, dwi.shape) * brain, 0, 1)
    pred[lesion > 0] *= 0.7
    ref = M.evaluate_volume(pred, target, brain, lesion, (1.0, 1.0, 1.0), ct_hu=ct)
    for k, f in enumerate(_flips_and_transposes()):
        got = M.evaluate_volume(f(pred), f(target), f(brain), f(lesion), (1.0, 1.0, 1.0), ct_hu=f(ct))
        for key, v in ref.items():
            if key == "lesion_detail":
                a = sorted((x["volume_ml"], round(x["ratio_syn"], 9), round(x["ct_contrast_hu"], 9)) for x in v)
                b = sorted((x["volume_ml"], round(x["ratio_syn"], 9), round(x["ct_contrast_hu"], 9)) for x in got[key])
                assert a == b
            elif key in ("ssim", "ssim_brain") and k == 3:
                continue  # 2-D SSIM is per axial slice (axis 0): defined for axial-first arrays only
            else:
                assert got[key] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), (k, key)


def test_superpixel_r_uses_no_orientation():
    v, brain = _vol(3, (10, 48, 40))
    p = np.clip(v + np.random.default_rng(4).normal(0, 0.1, v.shape), 0, 1)
    r0, n0 = M.superpixel_correlation(p, v, brain, spacing=(5.0, 1.8, 1.8))
    r1, n1 = M.superpixel_correlation(p[:, ::-1], v[:, ::-1], brain[:, ::-1], spacing=(5.0, 1.8, 1.8))
    assert (r0, n0) == pytest.approx((r1, n1), abs=1e-12)


def test_dwi_normalisation_keeps_lesions_below_the_ceiling():
    from jmmda_model.preprocess import normalize_dwi

    dwi, brain, lesion, _ = _lesion_volume()
    raw = dwi * 3000  # scanner units; lesion 2.2x normal
    n = normalize_dwi(raw, brain)
    assert np.median(n[brain > 0]) == pytest.approx(0.25, abs=0.01)
    assert n[lesion > 0].max() < 1.0  # nothing clipped
    assert n[lesion > 0].mean() / np.median(n[(brain > 0) & (lesion == 0)]) == pytest.approx(2.2, rel=0.02)
