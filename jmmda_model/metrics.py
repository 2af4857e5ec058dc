"""Image-similarity and lesion metrics on DWI normalised to [0, 1] (data range 1.0).

Headline metrics are computed inside the brain mask (outside it the synthetic image is 0 by construction, so
whole-volume PSNR/SSIM mostly measure the background: an all-zero prediction scores whole-slice SSIM ~0.8).

* MSE, PSNR (dB, data range 1.0) - inside the brain (headline) and over the whole volume (secondary);
* SSIM (scikit-image, uniform 7-pixel window, data range 1.0): 2-D per axial slice (array axis 0) and 3-D
  (7x7x7 window over the volume), each as the SSIM map averaged inside the brain; whole-slice 2-D as secondary;
* lesion MAE - mean absolute error inside the lesion mask, on the *unclipped* normalised real DWI when given;
* superpixel gray-level correlation (the paper's measure) - SLIC superpixels (``n_segments=400``,
  ``compactness=0.1``, voxel spacing honoured, seeds chosen by scikit-image inside the brain mask) on the real
  DWI inside the brain, mean gray value of every superpixel in real and synthetic images, Pearson r. The
  arrays are first put in a canonical orientation derived from the data (axes ordered by size/spacing, each
  flipped so the mask's centre of mass lies in its lower half), so flipping or transposing the input arrays
  does not change the value. The segmentation depends on the real DWI alone, so the last few are kept
  (:func:`slic_labels`, keyed by the arrays' content): validation every epoch, a candidate and the served model
  on the same cases, and a benchmark's arms segment each real DWI once;
* lesion metrics (:func:`lesion_metrics`) per connected lesion of the true mask: synthetic and real
  lesion/normal-brain ratios, "shown" when the synthetic ratio >= 1.3, "darker" when < 1.0, CT contrast
  (HU), volume (mL); false-bright volume outside lesions.

Every metric is invariant to flips of the array axes, and all but the 2-D (per axial slice) SSIM to
permutations of them (2-D SSIM is invariant to swapping the two in-plane axes).
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict

import numpy as np
from scipy import ndimage as ndi

# scipy.stats and scikit-image are imported where used: `jmmda infer` needs neither (half a second of start-up)

DATA_RANGE = 1.0


def mse(pred, target, mask=None) -> float:
    d = (np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2
    return float(d[mask > 0].mean() if mask is not None else d.mean())


def psnr(pred, target, mask=None, data_range: float = DATA_RANGE) -> float:
    m = mse(pred, target, mask)
    return float("inf") if m == 0 else float(10.0 * math.log10(data_range**2 / m))


def ssim(pred, target, mask=None, data_range: float = DATA_RANGE, min_pixels: int = 49) -> float:
    """Mean SSIM over axial slices (axis 0). With a mask: SSIM map averaged over masked pixels."""
    from skimage.metrics import structural_similarity

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


def canonical_orientation(mask, spacing=None, weights=None):
    """(axis order, flips) that put ``mask`` in an orientation derived from its own shape and content:
    axes sorted by (size, spacing, spread), then each flipped so the centre of mass of ``weights`` inside the
    mask (default: the mask itself) sits in the lower half (ties broken by the third moment). Applying it to
    flipped/transposed copies of the same data gives the same array."""
    m = np.asarray(mask) > 0
    w = m.astype(np.float64) if weights is None else np.where(m, np.asarray(weights, np.float64), 0.0)
    sp = np.ones(m.ndim) if spacing is None else np.asarray(spacing, float)
    coords = [np.arange(n, dtype=np.float64) for n in m.shape]
    marg = [w.sum(axis=tuple(j for j in range(m.ndim) if j != a)) for a in range(m.ndim)]
    total = max(float(w.sum()), 1e-12)
    spread = []
    for a in range(m.ndim):
        c = float((coords[a] * marg[a]).sum() / total)
        spread.append(round(float(((coords[a] - c) ** 2 * marg[a]).sum() / total) * sp[a] ** 2, 6))
    order = sorted(range(m.ndim), key=lambda a: (m.shape[a], round(float(sp[a]), 6), spread[a]))
    flips = []
    for a in range(m.ndim):
        n = m.shape[a]
        c = float((coords[a] * marg[a]).sum() / total)
        d = c - (n - 1) / 2.0
        if abs(d) < 1e-9 * n:
            d = float((((coords[a] - (n - 1) / 2.0) ** 3) * marg[a]).sum())
            d = 0.0 if abs(d) < 1e-6 * n**3 else d
        flips.append(d > 0)
    return order, flips


def _canonical(a, order, flips):
    a = np.asarray(a)
    for ax, f in enumerate(flips):
        if f:
            a = np.flip(a, ax)
    return np.ascontiguousarray(np.transpose(a, order))


#: SLIC label volumes kept (least recently used dropped first): at most this many, and at most this many bytes
#: together (each is int32 of the volume's size: a 320 x 512 x 512 thin series' alone is 335 MB and is not kept)
SLIC_CACHE_SIZE = 8
SLIC_CACHE_BYTES = 256 << 20
_slic_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
_slic_lock = threading.Lock()


def slic_labels(target: np.ndarray, mask: np.ndarray, spacing, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC superpixels (scikit-image) of ``target`` inside ``mask``, start label 1, read-only int32. The result of
    the same arrays (by content: a BLAKE2 digest of their bytes, shapes and dtypes) and settings is kept for the
    next call, so scoring several predictions against one real DWI segments it once."""
    target = np.ascontiguousarray(target)
    mask = np.ascontiguousarray(mask)
    digest = hashlib.blake2b(digest_size=20)
    for a in (target, mask):
        digest.update(repr((a.shape, a.dtype.str)).encode())
        digest.update(a.view(np.uint8).reshape(-1))
    digest.update(repr((None if spacing is None else [float(v) for v in spacing], int(n_segments),
                        float(compactness))).encode())
    key = digest.digest()
    with _slic_lock:
        hit = _slic_cache.get(key)
        if hit is not None:
            _slic_cache.move_to_end(key)
            return hit
    from skimage.segmentation import slic

    labels = slic(target, n_segments=n_segments, compactness=compactness, mask=mask, channel_axis=None,
                  spacing=None if spacing is None else np.asarray(spacing, float), start_label=1).astype(np.int32)
    labels.setflags(write=False)
    if labels.nbytes <= SLIC_CACHE_BYTES:
        with _slic_lock:
            _slic_cache[key] = labels
            while (len(_slic_cache) > SLIC_CACHE_SIZE
                   or sum(v.nbytes for v in _slic_cache.values()) > SLIC_CACHE_BYTES):
                _slic_cache.popitem(last=False)
    return labels


def superpixel_correlation(pred, target, mask, n_segments: int = 400, compactness: float = 0.1, spacing=None, seed: int = 0):
    """Pearson r between per-superpixel mean gray levels of real and synthetic DWI.

    SLIC (scikit-image) runs on the real DWI restricted to the brain mask so that both images are
    compared on the same regions; inputs are put in :func:`canonical_orientation` first so the result does
    not depend on array axis order or flips. Returns (r, number_of_superpixels).
    """
    m = np.asarray(mask) > 0
    if m.sum() == 0:
        return float("nan"), 0
    target = np.asarray(target, np.float64)
    order, flips = canonical_orientation(m, spacing, weights=1.0 + target - target[m].min())
    target = _canonical(np.asarray(target, np.float64), order, flips)
    pred = _canonical(np.asarray(pred, np.float64), order, flips)
    m = _canonical(m, order, flips)
    if spacing is not None:
        spacing = [float(spacing[a]) for a in order]
    labels = slic_labels(target, m, spacing, n_segments, compactness)
    ids = np.unique(labels[labels > 0])
    if len(ids) < 3:
        return float("nan"), len(ids)
    idx = labels.ravel()
    counts = np.bincount(idx)
    mt = np.bincount(idx, weights=target.ravel())[ids] / counts[ids]
    mp = np.bincount(idx, weights=pred.ravel())[ids] / counts[ids]
    if np.std(mt) == 0 or np.std(mp) == 0:
        return float("nan"), len(ids)
    from scipy import stats

    return float(stats.pearsonr(mt, mp)[0]), len(ids)


def ssim3d(pred, target, mask=None, data_range: float = DATA_RANGE, win: int = 7) -> float:
    """3-D SSIM (uniform ``win``^3 window) averaged over the mask (or the volume)."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    win = min(win, *(n if n % 2 else n - 1 for n in pred.shape))
    if win < 3:
        return float("nan")
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(target, pred, data_range=data_range, full=True, win_size=win)
    if mask is None:
        return float(smap.mean())
    sel = np.asarray(mask) > 0
    return float(smap[sel].mean()) if sel.any() else float("nan")


#: a lesion counts as shown when its synthetic lesion/normal-brain ratio reaches this
SHOWN_RATIO = 1.3
#: CT lesion-contrast bins (HU) and volume bins (mL) for stratified sensitivity
CONTRAST_BINS = ((0.0, 3.0, "<3 HU"), (3.0, 5.0, "3-5 HU"), (5.0, np.inf, ">=5 HU"))
VOLUME_BINS = ((0.0, 1.0, "<1 mL"), (1.0, np.inf, ">=1 mL"))


def lesion_metrics(pred, target, brain, lesion, ct_hu=None, spacing=None, shown_ratio: float = SHOWN_RATIO,
                   masks: bool = False) -> dict:
    """Per connected lesion (26-connectivity) of the true lesion mask.

    Normal brain = brain minus the lesions dilated by 2 voxels; its median is the reference of each image.
    For each lesion: ``ratio_real`` and ``ratio_syn`` = mean lesion value / normal-brain median, ``shown``
    (ratio_syn >= ``shown_ratio``), ``darker`` (ratio_syn < 1), ``volume_ml`` and, with ``ct_hu``,
    ``ct_contrast_hu`` = median CT of a 2-4 voxel ring of normal brain (15-60 HU) minus the lesion's mean CT.
    Also ``false_bright_ml``: normal-brain volume that is bright (> shown_ratio x normal) in the synthetic
    image but not in the real one. With ``masks``: also ``normal_mask`` (the normal brain), ``false_bright_mask``
    (those voxels) and ``labels`` (the lesions' labels, 1.. in the order of ``lesions``)."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    b = np.asarray(brain) > 0
    les = (np.asarray(lesion) > 0) & b if lesion is not None else np.zeros(b.shape, bool)
    vox_ml = float(np.prod(spacing)) / 1000.0 if spacing is not None else 0.001
    full = np.ones((3,) * b.ndim, bool)
    normal = b & ~ndi.binary_dilation(les, full, iterations=2) if les.any() else b
    if normal.sum() < 10:
        normal = b & ~les
    ref_syn = float(np.median(pred[normal])) if normal.any() else float("nan")
    ref_real = float(np.median(target[normal])) if normal.any() else float("nan")
    bright_syn = normal & (pred > shown_ratio * ref_syn)
    bright_real = target > shown_ratio * ref_real
    out = {"normal_syn": ref_syn, "normal_real": ref_real,
           "false_bright_ml": float((bright_syn & ~bright_real).sum()) * vox_ml, "lesions": []}
    if masks:
        out["normal_mask"], out["false_bright_mask"] = normal, bright_syn & ~bright_real
        out["labels"] = np.zeros(b.shape, np.int32)
    if not les.any():
        return out
    labels, n = ndi.label(les, full)
    if masks:
        out["labels"] = labels
    ring_base = b & ~ndi.binary_dilation(les, full, iterations=1)
    for k in range(1, n + 1):
        region = labels == k
        item = {
            "volume_ml": float(region.sum()) * vox_ml,
            "ratio_real": float(target[region].mean() / ref_real) if ref_real > 0 else float("nan"),
            "ratio_syn": float(pred[region].mean() / ref_syn) if ref_syn > 0 else float("nan"),
        }
        item["shown"] = bool(item["ratio_syn"] >= shown_ratio)
        item["darker"] = bool(item["ratio_syn"] < 1.0)
        if ct_hu is not None:
            ct = np.asarray(ct_hu, np.float64)
            ring = ndi.binary_dilation(region, full, iterations=4) & ~ndi.binary_dilation(region, full, iterations=2) & ring_base
            ring &= (ct > 15) & (ct < 60)
            item["ct_contrast_hu"] = float(np.median(ct[ring]) - ct[region].mean()) if ring.sum() >= 5 else float("nan")
        out["lesions"].append(item)
    return out


def stratified_sensitivity(lesions: list[dict]) -> dict:
    """Fraction of lesions shown, overall and by CT contrast and volume bins: {bin: {"shown", "n", "sensitivity"}}."""
    def summary(items):
        n = len(items)
        shown = sum(1 for x in items if x["shown"])
        return {"shown": shown, "n": n, "sensitivity": shown / n if n else float("nan"),
                "darker": sum(1 for x in items if x["darker"])}

    out = {"all": summary(lesions)}
    for lo, hi, name in CONTRAST_BINS:
        out[f"contrast {name}"] = summary([x for x in lesions if lo <= x.get("ct_contrast_hu", np.nan) < hi])
    for lo, hi, name in VOLUME_BINS:
        out[f"volume {name}"] = summary([x for x in lesions if lo <= x["volume_ml"] < hi])
    out["target: >=3 HU and >=1 mL"] = summary(
        [x for x in lesions if x.get("ct_contrast_hu", np.nan) >= 3.0 and x["volume_ml"] >= 1.0])
    out["qualifying: >=3 HU, >=1 mL, real ratio >=1.3"] = summary([x for x in lesions if qualifying(x)])
    return out


def evaluate_volume(pred, target, brain, lesion=None, spacing_zyx=None, ct_hu=None, target_unclipped=None) -> dict:
    """All metrics for one case; arrays are (z, y, x) axial-first with DWI normalised to [0, 1].
    ``target_unclipped``: the normalised real DWI before clipping to [0, 1] (lesion MAE is computed on it)."""
    r, nsp = superpixel_correlation(pred, target, brain, spacing=spacing_zyx)
    les = lesion_metrics(pred, target, brain, lesion, ct_hu, spacing_zyx)
    lesion_sel = (np.asarray(lesion) > 0) if lesion is not None else None
    clipped = float(np.mean(np.asarray(target)[lesion_sel] >= 1.0)) if lesion_sel is not None and lesion_sel.any() else float("nan")
    return {
        "psnr_brain": psnr(pred, target, brain),
        "ssim_brain": ssim(pred, target, brain),
        "ssim3d_brain": ssim3d(pred, target, brain),
        "mse_brain": mse(pred, target, brain),
        "superpixel_r": r,
        "lesion_mae": lesion_mae(pred, target if target_unclipped is None else target_unclipped, lesion),
        "lesions_shown": sum(x["shown"] for x in les["lesions"]),
        "lesions_total": len(les["lesions"]),
        "lesions_darker": sum(x["darker"] for x in les["lesions"]),
        "false_bright_ml": les["false_bright_ml"],
        "lesion_voxels_clipped": clipped,
        "mse": mse(pred, target),
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "superpixels": nsp,
        "lesion_detail": les["lesions"],
    }


METRIC_INFO = {
    "psnr_brain": "PSNR dB inside the brain mask (headline)",
    "ssim_brain": "2-D SSIM (per axial slice) map averaged inside the brain",
    "ssim3d_brain": "3-D SSIM map averaged inside the brain",
    "mse_brain": "MSE inside the brain mask",
    "superpixel_r": "Pearson r of SLIC-superpixel mean gray (in brain; orientation-invariant)",
    "lesion_mae": "MAE inside the lesion mask (unclipped normalised real DWI)",
    "lesions_shown": "lesions with synthetic lesion/normal ratio >= 1.3",
    "lesions_total": "connected lesions in the true mask",
    "lesions_darker": "lesions rendered darker than normal brain (ratio < 1)",
    "false_bright_ml": "mL of normal brain bright (>1.3x normal) in the synthetic but not the real DWI",
    "lesion_voxels_clipped": "fraction of lesion voxels at the normalisation ceiling (1.0)",
    "mse": "MSE, whole volume (secondary)",
    "psnr": "PSNR dB, whole volume (secondary; + ~8 dB from the empty background)",
    "ssim": "SSIM, whole axial slices (secondary)",
}


# ---------------------------------------------------------------------------------------------- lesion probability
PROB_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
ECE_BINS = 10
FP_MIN_ML = 0.5


def qualifying(lesion: dict) -> bool:
    """A lesion the model issue counts: >= 1 mL, CT contrast >= 3 HU (ring of normal brain minus lesion mean) and
    a real DWI lesion/normal ratio >= 1.3 (the CT holds evidence and the real DWI shows it)."""
    return (lesion["volume_ml"] >= 1.0 and lesion.get("ct_contrast_hu", np.nan) >= 3.0
            and lesion.get("ratio_real", np.nan) >= SHOWN_RATIO)


def fit_temperature(logits: list[np.ndarray], labels: list[np.ndarray], max_voxels: int = 2_000_000) -> float:
    """Temperature T minimising the binary NLL of sigmoid(logit / T) over the given voxels (temperature scaling,
    Guo et al. 2017). Bounded to [0.05, 20]; returns 1.0 when there is nothing to fit."""
    from scipy import optimize

    z = np.concatenate([np.ravel(x) for x in logits]).astype(np.float64)
    y = np.concatenate([np.ravel(x) for x in labels]).astype(np.float64) > 0
    if z.size == 0 or not np.isfinite(z).all():
        return 1.0
    if z.size > max_voxels:  # a fixed subsample keeps it fast and deterministic
        keep = np.random.default_rng(0).choice(z.size, max_voxels, replace=False)
        z, y = z[keep], y[keep]

    def nll(log_t):
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    res = optimize.minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                                   options={"xatol": 1e-3})
    return float(np.exp(res.x))


def calibrated_probability(logits, temperature: float = 1.0) -> np.ndarray:
    """sigmoid(logits / temperature) as float32 (logits clipped to +-60: no overflow, same values in float32)."""
    return (1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits) / float(temperature), -60, 60)))).astype(np.float32)


def probability_metrics(prob, lesion, brain, spacing_zyx, thresholds=PROB_THRESHOLDS, counted=None) -> dict:
    """Calibration and lesion-wise detection of an infarct-probability map (z, y, x) inside the brain.

    ``reliability``: per probability bin the voxel count, the summed probability and the summed truth (so cases
    pool by adding); ``ece``: expected calibration error of this case. ``froc``: per threshold, which true
    lesions (26-connected) a cluster of prob >= threshold touches, and how many clusters of >= 0.5 mL touch none
    (false positives). ``counted``: per true lesion (in ``lesion_metrics`` order: the same labelling), whether
    it is one the model issue counts (``qualifying``); stored for ``froc_summary(counted_only=True)``."""
    b = np.asarray(brain) > 0
    p = np.asarray(prob, np.float64)[b]
    y = (np.asarray(lesion) > 0)[b]
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, ECE_BINS - 1)
    count = np.bincount(idx, minlength=ECE_BINS).astype(float)
    sum_p = np.bincount(idx, weights=p, minlength=ECE_BINS)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=ECE_BINS)
    rel = {"count": count.tolist(), "sum_p": sum_p.tolist(), "sum_y": sum_y.tolist()}
    vox_ml = float(np.prod(spacing_zyx)) / 1000.0
    full = np.ones((3, 3, 3), bool)
    les = (np.asarray(lesion) > 0) & b
    true_lab, n_true = ndi.label(les, full)
    vols = np.bincount(true_lab.ravel(), minlength=n_true + 1)[1:] * vox_ml
    froc = []
    pm = np.asarray(prob) * b
    for t in thresholds:
        lab, n = ndi.label(pm >= t, full)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            touching = np.unique(lab[les & (lab > 0)])
            fp = int(sum(1 for k in range(1, n + 1) if sizes[k] * vox_ml >= FP_MIN_ML and k not in set(touching.tolist())))
            hit = np.unique(true_lab[(lab > 0) & les])
            detected = [bool(k in set(hit.tolist())) for k in range(1, n_true + 1)]
        else:
            fp, detected = 0, [False] * n_true
        froc.append({"threshold": float(t), "fp": fp, "detected": detected})
    if counted is not None and len(counted) != n_true:
        raise ValueError(f"counted flags for {len(counted)} lesions, the mask has {n_true}")
    return {"ece": ece_from_bins(rel), "reliability": rel, "froc": froc, "lesion_volumes_ml": vols.tolist(),
            "counted": [True] * n_true if counted is None else [bool(c) for c in counted]}


def ece_from_bins(rel: dict) -> float:
    count = np.asarray(rel["count"], float)
    if count.sum() == 0:
        return float("nan")
    conf = np.asarray(rel["sum_p"]) / np.maximum(count, 1)
    acc = np.asarray(rel["sum_y"]) / np.maximum(count, 1)
    return float(np.sum(count / count.sum() * np.abs(conf - acc)))


def pool_reliability(per_case: list[dict]) -> dict:
    keys = ("count", "sum_p", "sum_y")
    return {k: np.sum([m["reliability"][k] for m in per_case], 0).tolist() for k in keys}


def froc_curve(per_case: list[dict], min_ml: float = 0.0, counted_only: bool = False) -> list[dict]:
    """Per threshold: lesion-wise sensitivity (lesions >= ``min_ml``; with ``counted_only`` the lesions the model
    issue counts: >= 1 mL, >= 3 HU on CT, bright on the real DWI) and mean false-positive clusters per case."""
    out = []
    for i, t in enumerate(per_case[0]["froc"] if per_case else []):
        det, fp = [], []
        for m in per_case:
            row = m["froc"][i]
            counted = m.get("counted") or [True] * len(row["detected"])
            det += [d for d, v, c in zip(row["detected"], m["lesion_volumes_ml"], counted)
                    if v >= min_ml and (c or not counted_only)]
            fp.append(row["fp"])
        out.append({"threshold": t["threshold"], "sensitivity": float(np.mean(det)) if det else float("nan"),
                    "fp_per_case": float(np.mean(fp)), "lesions": len(det)})
    return out


#: false-positive clusters (>= FP_MIN_ML) per case that the operating point of a probability map may cost
OPERATING_MAX_FP = 2.0


def operating_threshold(per_case: list[dict], max_fp: float = OPERATING_MAX_FP) -> dict | None:
    """The operating point of a probability map, chosen from its false positives alone: the lowest threshold of the
    FROC grid whose false-positive clusters (>= FP_MIN_ML) per case stay <= ``max_fp`` - of the thresholds that keep
    to the budget, the one that hides the fewest lesions (lesions first; it does not depend on how many lesions
    the cases hold, so a few validation lesions cannot push it up). None when no threshold keeps to it.
    ``per_case``: ``probability_metrics`` rows."""
    curve = froc_curve(per_case)
    ok = [r for r in curve if r["fp_per_case"] <= max_fp]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["threshold"])
    return {"threshold": float(best["threshold"]), "fp_per_case": float(best["fp_per_case"]),
            "max_fp_per_case": float(max_fp), "cases": len(per_case)}


def froc_summary(per_case: list[dict], max_fp: float = 2.0, min_ml: float = 0.0, counted_only: bool = False) -> dict:
    """The best lesion-wise sensitivity among thresholds whose false positives per case stay <= ``max_fp``: 0 when
    no threshold keeps to it, NaN when there is no lesion to find (none counted: not a sensitivity of 0)."""
    curve = froc_curve(per_case, min_ml, counted_only)
    if not any(r["lesions"] for r in curve):
        return {"sensitivity": float("nan"), "threshold": None, "fp_per_case": None}
    ok = [r for r in curve if r["fp_per_case"] <= max_fp and np.isfinite(r["sensitivity"])]
    if not ok:
        return {"sensitivity": 0.0, "threshold": None, "fp_per_case": None}
    best = max(ok, key=lambda r: (r["sensitivity"], r["threshold"]))
    return {"sensitivity": best["sensitivity"], "threshold": best["threshold"], "fp_per_case": best["fp_per_case"]}
