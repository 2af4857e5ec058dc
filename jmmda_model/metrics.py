"""Image-similarity metrics used in the paper, on DWI normalised to [0, 1] (data range 1.0).

* MSE, PSNR (dB, data range 1.0) - over the whole volume and inside the brain mask;
* SSIM (scikit-image, 2-D per axial slice, data range 1.0, 7x7 Gaussian-free window) - whole
  slices and averaged inside the brain mask;
* lesion MAE - mean absolute error inside the lesion mask (NaN where a case has no lesion);
* superpixel gray-level correlation - SLIC superpixels on the real DWI inside the brain, the mean
  gray value of every superpixel in real and synthetic images, Pearson r between the two.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats
from skimage.metrics import structural_similarity
from skimage.segmentation import slic

DATA_RANGE = 1.0


def mse(pred, target, mask=None) -> float:
    d = (np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2
    return float(d[mask > 0].mean() if mask is not None else d.mean())


def psnr(pred, target, mask=None, data_range: float = DATA_RANGE) -> float:
    m = mse(pred, target, mask)
    return float("inf") if m == 0 else float(10.0 * math.log10(data_range**2 / m))


def ssim(pred, target, mask=None, data_range: float = DATA_RANGE, min_pixels: int = 49) -> float:
    """Mean SSIM over axial slices (axis 0). With a mask: SSIM map averaged over masked pixels."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
        mask = None if mask is None else np.asarray(mask)[None]
    vals, weights = [], []
    for k in range(pred.shape[0]):
        if mask is not None and mask[k].sum() < min_pixels:
            continue
        _, smap = structural_similarity(target[k], pred[k], data_range=data_range, full=True, win_size=7)
        if mask is None:
            vals.append(smap.mean())
            weights.append(1.0)
        else:
            sel = mask[k] > 0
            vals.append(smap[sel].mean())
            weights.append(float(sel.sum()))
    if not vals:
        return float("nan")
    return float(np.average(vals, weights=weights))


def lesion_mae(pred, target, lesion) -> float:
    if lesion is None or np.sum(lesion) == 0:
        return float("nan")
    sel = np.asarray(lesion) > 0
    return float(np.abs(np.asarray(pred, np.float64)[sel] - np.asarray(target, np.float64)[sel]).mean())


def superpixel_correlation(pred, target, mask, n_segments: int = 400, compactness: float = 0.1, spacing=None, seed: int = 0):
    """Pearson r between per-superpixel mean gray levels of real and synthetic DWI.

    SLIC (scikit-image) runs on the real DWI restricted to the brain mask so that both images are
    compared on the same regions. Returns (r, number_of_superpixels).
    """
    target = np.asarray(target, np.float64)
    pred = np.asarray(pred, np.float64)
    m = np.asarray(mask) > 0
    if m.sum() == 0:
        return float("nan"), 0
    labels = slic(
        target, n_segments=n_segments, compactness=compactness, mask=m, channel_axis=None,
        spacing=None if spacing is None else np.asarray(spacing, float), start_label=1,
    )
    ids = np.unique(labels[labels > 0])
    if len(ids) < 3:
        return float("nan"), int(len(ids))
    idx = labels.ravel()
    counts = np.bincount(idx)
    mt = np.bincount(idx, weights=target.ravel())[ids] / counts[ids]
    mp = np.bincount(idx, weights=pred.ravel())[ids] / counts[ids]
    if np.std(mt) == 0 or np.std(mp) == 0:
        return float("nan"), int(len(ids))
    return float(stats.pearsonr(mt, mp)[0]), int(len(ids))


def evaluate_volume(pred, target, brain, lesion=None, spacing_zyx=None) -> dict:
    """All metrics for one case; arrays are (z, y, x) with DWI normalised to [0, 1]."""
    r, nsp = superpixel_correlation(pred, target, brain, spacing=spacing_zyx)
    return {
        "mse": mse(pred, target),
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "mse_brain": mse(pred, target, brain),
        "psnr_brain": psnr(pred, target, brain),
        "ssim_brain": ssim(pred, target, brain),
        "lesion_mae": lesion_mae(pred, target, lesion),
        "superpixel_r": r,
        "superpixels": nsp,
    }


METRIC_INFO = {
    "mse": "MSE, whole volume (data range 1.0)",
    "psnr": "PSNR dB, whole volume (data range 1.0)",
    "ssim": "SSIM, whole axial slices (data range 1.0)",
    "mse_brain": "MSE inside brain mask",
    "psnr_brain": "PSNR dB inside brain mask",
    "ssim_brain": "SSIM map averaged inside brain mask",
    "lesion_mae": "MAE inside lesion mask",
    "superpixel_r": "Pearson r of SLIC-superpixel mean gray (in brain)",
}
