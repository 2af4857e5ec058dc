"""Cases on disk and the 2-D axial-slice training dataset.

Case layout = MONAI Label local datastore: ``<dir>/<id>.nii.gz`` is the CT and
``<dir>/labels/<tag>/<id>.nii.gz`` hold the paired volumes with tags ``dwi``, ``brainmask`` and
(optionally) ``lesion``. All volumes of a case must share the CT's geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from .clinical.geometry import (
    OBLIQUE_TOLERANCE_DEG,
    reslice_axial,
    resample_inplane,
    same_geometry,
    slice_tilt_deg,
    to_axial,
)
from .clinical.imageio import check_ct, check_mask, read_image
from .clinical.midplane import MidPlane, estimate_midplane, mirror_or_self, patient_lr
from .errors import InputError
from .preprocess import (
    PreprocessConfig,
    SlabPlan,
    grid_anchor,
    normalize_dwi,
    pad_to_multiple,
    slab_plan,
    to_slabs,
    uses_slabs,
    window_ct,
)

IMAGE_EXTS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass
class Case:
    id: str
    ct: Path
    dwi: Path | None
    brainmask: Path | None
    lesion: Path | None = None


def strip_image_ext(name: str) -> str | None:
    for e in IMAGE_EXTS:
        if name.endswith(e):
            return name[: -len(e)]
    return None


def find_cases(root: str | Path, require=("dwi", "brainmask")) -> list[Case]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    cases = []
    for p in sorted(root.iterdir()):
        cid = strip_image_ext(p.name)
        if cid is None or not p.is_file() or p.name.startswith("."):
            continue
        found = {}
        for tag in ("dwi", "brainmask", "lesion"):
            hits = [root / "labels" / tag / f"{cid}{e}" for e in IMAGE_EXTS]
            found[tag] = next((h for h in hits if h.exists()), None)
        if any(found[t] is None for t in require):
            continue
        cases.append(Case(cid, p, found["dwi"], found["brainmask"], found["lesion"]))
    return cases


@dataclass
class LoadedCase:
    id: str
    ct_hu: np.ndarray  # (z, y, x) axial, LPS
    dwi: np.ndarray  # normalised [0, 1]
    brain: np.ndarray
    lesion: np.ndarray
    spacing_zyx: tuple
    image: sitk.Image | None  # the axial-oriented CT (geometry reference; None for phantoms built in memory)
    dwi_unclipped: np.ndarray | None = None  # normalised like ``dwi`` but not clipped (lesion MAE)
    mirror_hu: np.ndarray | None = None  # the CT mirrored across its mid-sagittal plane (or the CT: plane untrusted)
    midplane: MidPlane | None = None


def slab_mask(brain: np.ndarray, plan: SlabPlan | None) -> np.ndarray:
    """A brain mask on the slabs of ``plan`` (:func:`preprocess.to_slabs`): where more than half of a slab is brain
    (where any of it is, should that leave nothing)."""
    frac = to_slabs(brain > 0, plan)
    out = frac > 0.5
    return (out if out.any() else frac > 0).astype(np.uint8)


def slab_grid(img: sitk.Image, plan: SlabPlan) -> sitk.Image:
    """An empty image on the slabs' grid: ``img``'s rows and columns, the slabs' thickness as slice spacing, the
    first slab at its nominal centre (an end slab's part outside the series is placed as if it were whole)."""
    out = sitk.Image([img.GetSize()[0], img.GetSize()[1], len(plan)], sitk.sitkUInt8)
    sp = img.GetSpacing()
    out.SetSpacing((sp[0], sp[1], sp[2] * plan.thickness))
    out.SetDirection(img.GetDirection())
    out.SetOrigin(img.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(plan.nominal[0]))))
    return out


def with_mirror(lc: LoadedCase, pre: PreprocessConfig) -> LoadedCase:
    """Adds the mid-sagittal plane and the mirrored CT when the preprocessing uses the mirror channels."""
    if pre.mirror_channels and lc.mirror_hu is None:
        lr = patient_lr(lc.image.GetDirection()) if lc.image is not None else None  # phantoms built in memory: none
        lc.midplane = estimate_midplane(lc.ct_hu, lc.spacing_zyx, patient_lr_xyz=lr)
        lc.mirror_hu = mirror_or_self(lc.ct_hu, lc.midplane, lc.spacing_zyx)
    return lc


def case_input(lc: LoadedCase, pre: PreprocessConfig) -> np.ndarray:
    """The model input of a loaded case (see :func:`model_input`)."""
    return model_input(lc.ct_hu, lc.brain, pre, lc.spacing_zyx, lc.mirror_hu)


def reslices(ct_ax: sitk.Image, slab_mm: float | None) -> bool:
    """Whether an axial-ordered CT is re-sliced onto axial planes before its slabs: thin slices (those that go on
    slabs of ``slab_mm``) angled to the patient's axial plane (a gantry tilt), in training and at inference."""
    return slice_tilt_deg(ct_ax) > OBLIQUE_TOLERANCE_DEG and uses_slabs(ct_ax.GetSpacing()[2], slab_mm)


def load_case(case: Case, pre: PreprocessConfig) -> LoadedCase:
    ct_img = read_image(case.ct, f"{case.id} CT")
    check_ct(ct_img)
    ct_ax = to_axial(ct_img)
    vols = {}
    for tag in ("dwi", "brainmask", "lesion"):
        p = getattr(case, tag)
        if p is None:
            continue
        img = read_image(p, f"{case.id} {tag}")
        if not same_geometry(img, ct_img):
            raise InputError(f"{case.id}: {tag} geometry does not match the CT; register/resample it onto the CT first")
        vols[tag] = to_axial(img)
    if pre.needs_resampling(ct_ax):
        ct_ax = resample_inplane(ct_ax, pre.inplane_spacing)
        vols = {t: resample_inplane(v, pre.inplane_spacing, label=t != "dwi") for t, v in vols.items()}
    if reslices(ct_ax, pre.slab_mm):  # thin tilted slices: onto axial planes, as inference takes them
        ct_ax = reslice_axial(ct_ax)
        vols = {t: reslice_axial(v, label=t != "dwi") for t, v in vols.items()}
    brain = check_mask(vols["brainmask"], ct_ax, f"{case.id} brain mask")
    dwi = sitk.GetArrayFromImage(vols["dwi"]).astype(np.float32) if "dwi" in vols else None
    lesion = (sitk.GetArrayFromImage(vols["lesion"]) > 0).astype(np.uint8) if "lesion" in vols else np.zeros_like(brain)
    ct_hu = sitk.GetArrayFromImage(ct_ax).astype(np.float32)
    plan = slab_plan(ct_hu.shape[0], ct_ax.GetSpacing()[2], pre.slab_mm, grid_anchor(ct_ax))
    if plan is not None:  # thinner slices than the model's: slabs of its thickness, as inference makes them
        ct_hu = to_slabs(ct_hu, plan)
        dwi = to_slabs(dwi, plan) if dwi is not None else None
        brain, lesion = slab_mask(brain, plan), (to_slabs(lesion, plan) >= 0.5).astype(np.uint8)
        ct_ax = slab_grid(ct_ax, plan)
    norm = (lambda clip: normalize_dwi(dwi, brain, pre.dwi_percentiles, pre.dwi_ref_value, clip=clip)) if dwi is not None else None
    lc = LoadedCase(
        case.id,
        ct_hu,
        norm(True) if norm else None,
        brain,
        lesion,
        tuple(reversed(ct_ax.GetSpacing())),
        ct_ax,
        norm(False) if norm else None,
    )
    return with_mirror(lc, pre)


#: parenchyma for the noise of the hemispheric difference: CT and mirror both in this HU range (no CSF, bone, air)
PARENCHYMA_HU = (15.0, 60.0)
#: fewest parenchyma voxels a noise estimate is made from (fewer: no scaling); the scale's bounds
MIN_NOISE_VOXELS = 1000
MIRROR_SCALE_BOUNDS = (0.25, 4.0)


def mirror_noise_scale(ct_hu: np.ndarray, mirror_hu: np.ndarray | None, brain: np.ndarray, pre: PreprocessConfig) -> float:
    """The factor ``pre.mirror_noise_ref_hu`` / (spread of CT minus mirror over the parenchyma: 1.4826 x its median
    absolute deviation, HU) applied to the CT-minus-mirror channels; within MIRROR_SCALE_BOUNDS. 1.0 without the
    setting, without a mirror, or with fewer than MIN_NOISE_VOXELS parenchyma voxels. Computed on the whole volume
    on the model's grid before any re-sampling (a caller streaming slabs computes it once)."""
    if pre.mirror_noise_ref_hu is None or mirror_hu is None:
        return 1.0
    lo, hi = PARENCHYMA_HU
    par = (brain > 0) & (ct_hu > lo) & (ct_hu < hi) & (mirror_hu > lo) & (mirror_hu < hi)
    if int(par.sum()) < MIN_NOISE_VOXELS:
        return 1.0
    d = (ct_hu[par] - mirror_hu[par]).astype(np.float64)
    spread = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    if not math.isfinite(spread) or spread <= 0:  # the CT as its own mirror (plane not trusted): nothing to scale
        return 1.0
    return float(np.clip(float(pre.mirror_noise_ref_hu) / spread, *MIRROR_SCALE_BOUNDS))


def model_input(ct_hu: np.ndarray, brain: np.ndarray, pre: PreprocessConfig, spacing_zyx=None,
                mirror_hu: np.ndarray | None = None, prior: np.ndarray | None = None,
                mirror_scale: float | None = None) -> np.ndarray:
    """(z, y, x) -> (z, C, y, x). Channels: CT windows of slices z-k..z+k (k = ``pre.context_slices``, edge
    slices repeated); with ``pre.mirror_channels`` the same of (CT - mirrored CT) x ``mirror_gain`` (x the case's
    ``mirror_noise_scale`` with ``pre.mirror_noise_ref_hu``) clipped to +-1; then the brain mask of slice z; with
    ``pre.tissue_prior`` the prior DWI of slice z last (``prior``: that prior already computed for these slices - it
    needs the whole volume's brain, so a caller streaming slabs computes it once; ``mirror_scale`` likewise)."""
    k = int(pre.context_slices)
    n = ct_hu.shape[0]
    near = [np.clip(np.arange(n) + d, 0, n - 1) for d in range(-k, k + 1)]
    w = window_ct(ct_hu, pre.ct_windows)  # (W, z, y, x)
    chans = [w[:, i] for i in near]
    if pre.mirror_channels:
        if mirror_hu is None:
            raise ValueError("this model needs the mirrored CT (mid-sagittal plane) as input")
        if mirror_scale is None:
            mirror_scale = mirror_noise_scale(ct_hu, mirror_hu, brain, pre)
        diff = np.clip((w - window_ct(mirror_hu, pre.ct_windows)) * (pre.mirror_gain * mirror_scale), -1.0, 1.0)
        chans += [diff[:, i] for i in near]
    chans.append(brain[None].astype(np.float32))
    if pre.tissue_prior is not None:
        if spacing_zyx is None:
            raise ValueError("the tissue prior needs the voxel spacing")
        from .prior import TissuePrior

        chans.append((TissuePrior.from_dict(pre.tissue_prior).predict(ct_hu, brain, spacing_zyx, mirror_hu) if prior is None
                      else np.asarray(prior, np.float32))[None])
    x = np.concatenate(chans, 0).astype(np.float32, copy=False)
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


def rotate_sample(tensors: list[torch.Tensor], angle_deg: float, dy: float, dx: float, mask_channel: int | None = None):
    """Turns (input, target, brain, lesion[, ignore]) tensors of one sample by ``angle_deg`` about their centre and
    shifts them by (dy, dx) pixels, bilinear as the canonical pose's resampling (zero outside). Labels (the brain,
    lesion and ignore tensors, and the input's mask channel) are interpolated then thresholded at 0.5, as the pose
    does."""
    a = math.radians(angle_deg)
    h, w = tensors[0].shape[-2:]
    theta = torch.tensor([[math.cos(a), -math.sin(a) * h / w, 2 * dx / w],
                          [math.sin(a) * w / h, math.cos(a), 2 * dy / h]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 1, h, w), align_corners=False)
    out = []
    for k, t in enumerate(tensors):
        r = F.grid_sample(t[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if k >= 2:
            r = (r > 0.5).float()
        elif k == 0 and mask_channel is not None:
            r[mask_channel] = (r[mask_channel] > 0.5).float()
        out.append(r)
    return out


#: normal brain at least this far (HU, smoothed) below its mirror image is a hard negative for the lesion head:
#: the issue counts a lesion from 3 HU of CT contrast, so asymmetry that deep is what a lesion looks like
HARD_NEGATIVE_HU = 3.0


def hard_negative_voxels(lc: LoadedCase, below_mirror_hu: float = HARD_NEGATIVE_HU) -> np.ndarray:
    """(z, y, x) bool: normal-brain voxels whose CT, smoothed in the slice (sigma 2 pixels, with the mirror the
    same), is at least ``below_mirror_hu`` below its mirror image, more than 3 pixels from any lesion voxel and
    inside the brain by at least 2 pixels. Empty when the case has no mirrored CT or its plane was not trusted
    (the mirror is then the CT itself)."""
    if lc.mirror_hu is None:
        raise ValueError(f"{lc.id}: hard-negative sampling needs the mirrored CT (a model with mirror channels)")
    diff = (ndi.gaussian_filter(np.asarray(lc.ct_hu, np.float32), (0.0, 2.0, 2.0))
            - ndi.gaussian_filter(np.asarray(lc.mirror_hu, np.float32), (0.0, 2.0, 2.0)))
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndi.generate_binary_structure(2, 1)  # in the slice only
    near_lesion = ndi.binary_dilation(lc.lesion > 0, st, iterations=3)
    inner = ndi.binary_erosion(lc.brain > 0, st, iterations=2)
    return (diff <= -float(below_mirror_hu)) & inner & ~near_lesion


def check_crop_fractions(lesion_patch_fraction: float, hard_negative_fraction: float, patch_size) -> None:
    """The training crops' kinds (``SliceDataset``; checked again by ``TrainConfig`` before anything is written):
    lesion-centred and hard-negative fractions each >= 0, together at most 1; hard negatives only with patches."""
    lf, hn = float(lesion_patch_fraction), float(hard_negative_fraction)
    if not (0.0 <= hn and 0.0 <= lf and hn + lf <= 1.0):
        raise ValueError(f"lesion_patch_fraction {lf:g} and hard_negative_fraction {hn:g}: each must be >= 0, and "
                         "they add up to at most 1")
    if hn > 0 and not patch_size:
        raise ValueError("hard_negative_fraction needs patch training (a patch size)")


#: the phantoms' CT noise texture (jmmda_model.phantom): white noise smoothed by this many voxels in every axis and
#: scaled by PHANTOM_NOISE_SCALE x the case's noise level in HU (so the "noise level" of the augmentation is the
#: phantom generator's own ``ct_noise_hu`` scale)
NOISE_SIGMA_VOXELS, PHANTOM_NOISE_SCALE = 0.7, 2.2


def check_noise_augment(noise_hu: float, probability: float, mirror_noise_ref_hu: float | None = None) -> None:
    """CT-noise augmentation settings (``SliceDataset``; checked again by ``TrainConfig``): a finite level of 0-20 HU
    and a probability within 0..1; not on with the preprocessing's ``mirror_noise_ref_hu``."""
    n, q = float(noise_hu), float(probability)
    if n > 0 and mirror_noise_ref_hu is not None:
        raise ValueError("CT-noise augmentation (--noise-augment-hu) cannot be combined with mirror_noise_ref_hu "
                         "(--mirror-noise-ref-hu): the added noise would need the case's noise scale measured again")
    if not (math.isfinite(n) and 0.0 <= n <= 20.0):
        raise ValueError(f"noise_augment_hu {noise_hu}: must be within 0..20 HU (0: off)")
    if not (math.isfinite(q) and 0.0 <= q <= 1.0):
        raise ValueError(f"noise_augment_probability {probability}: must be within 0..1")


def ct_noise_field(rng: np.random.Generator, shape, level_hu: float) -> np.ndarray:
    """Noise in HU of the phantoms' texture at ``level_hu`` (their ``ct_noise_hu`` scale: sd about 0.59 x the level)
    over (slices, y, x) of the model grid. Drawn 3 voxels larger on every side and cut, so its edges are as smooth
    as a whole volume's."""
    pad = 3
    big = tuple(int(n) + 2 * pad for n in shape)
    f = ndi.gaussian_filter(rng.standard_normal(big).astype(np.float32), NOISE_SIGMA_VOXELS)
    return f[pad:-pad, pad:-pad, pad:-pad] * np.float32(PHANTOM_NOISE_SCALE * float(level_hu))


def add_ct_noise(x: np.ndarray, pre: PreprocessConfig, level_hu: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of one model input ``x`` (C, H, W; see :func:`model_input`) whose CT carries more noise: correlated
    noise of the phantoms' texture at ``level_hu`` (the phantom generator's scale) is added in HU to the CT of every
    context slice - each window channel where it is not clipped, then clipped to [0, 1] as windowing does - and a
    second, independent field stands for the noise of the mirrored CT (the CT's own noise at the mirror positions,
    independent of the noise here): the CT-minus-mirror channels take the CT's change minus the mirror's, times
    ``mirror_gain``, where neither side is clipped. The brain mask and the tissue prior (computed from the smoothed
    CT) are left as they are."""
    n_win = len(pre.ct_windows)
    n_sl = 2 * int(pre.context_slices) + 1
    n_ct = n_win * n_sl
    out = np.array(x, dtype=np.float32, copy=True)
    if level_hu <= 0:
        return out
    shape = (n_sl,) + out.shape[-2:]
    here = ct_noise_field(rng, shape, level_hu)
    there = ct_noise_field(rng, shape, level_hu) if pre.mirror_channels else None
    for s in range(n_sl):
        for k, (_level, width) in enumerate(pre.ct_windows):
            c = s * n_win + k
            v = out[c]
            free = (v > 0.0) & (v < 1.0)
            new = np.clip(v + np.where(free, here[s] / float(width), 0.0), 0.0, 1.0)
            if pre.mirror_channels:
                d = out[n_ct + c]
                gain = float(pre.mirror_gain)
                mirror = v - d / gain
                mirror_free = (np.abs(d) < 1.0) & (mirror > 0.0) & (mirror < 1.0)
                change = (new - v) - np.where(mirror_free, there[s] / float(width), 0.0)
                out[n_ct + c] = np.where(np.abs(d) < 1.0, np.clip(d + change * gain, -1.0, 1.0), d)
            out[c] = new
    return out


def unseen_lesions(lc: LoadedCase, below_hu: float) -> np.ndarray:
    """(z, y, x) bool: the voxels of the case's lesions (26-connected, as ``metrics.lesion_metrics`` counts them)
    whose CT contrast - the median of a 2-4 voxel ring of normal brain minus the lesion's mean CT, the model
    issue's measure - is below ``below_hu``: lesions the CT does not show. A lesion whose ring is too small to
    measure counts as seen."""
    from .metrics import lesion_metrics

    if below_hu <= 0 or not lc.lesion.any():
        return np.zeros(lc.lesion.shape, bool)
    ref = lc.dwi if lc.dwi is not None else lc.brain.astype(np.float32)  # only the lesions' CT is measured here
    m = lesion_metrics(ref, ref, lc.brain, lc.lesion, ct_hu=lc.ct_hu, spacing=lc.spacing_zyx, masks=True)
    faint = [k + 1 for k, x in enumerate(m["lesions"]) if x.get("ct_contrast_hu", np.nan) < below_hu]
    return np.isin(m["labels"], faint)


def check_unseen_lesion_hu(value) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 20.0):
        raise ValueError(f"unseen_lesion_hu must be 0 (off) or a CT contrast in HU up to 20, got {value!r}")
    return v


class SliceDataset(Dataset):
    """Axial slices of loaded cases: dict(input (C+1,H,W), target (1,H,W), brain, lesion) and, with
    ``unseen_lesion_hu``, ``ignore`` (1,H,W): voxels of lesions the CT does not show, left out of the losses."""

    def __init__(self, cases: list[LoadedCase], pre: PreprocessConfig, divisor: int, augment: bool = False,
                 patch_size: int | None = None, lesion_patch_fraction: float = 1 / 3, rotate_deg: float = 0.0,
                 rotate_probability: float = 0.75, hard_negative_fraction: float = 0.0,
                 hard_negative_hu: float = HARD_NEGATIVE_HU, noise_augment_hu: float = 0.0,
                 noise_augment_probability: float = 0.5, unseen_lesion_hu: float = 0.0):
        """``patch_size``: train on square crops of this size instead of whole slices: a ``lesion_patch_fraction``
        of them centred (with jitter) on a lesion voxel of a lesion slice, the rest on a brain voxel of the drawn
        slice. ``rotate_deg`` (with ``augment``): with probability ``rotate_probability`` a sample is turned by a
        random angle within +-rotate_deg and shifted by up to half a pixel, interpolated as the canonical pose
        interpolates at inference (see :func:`rotate_sample`). Deterministic per (epoch_seed, item) like the flip.
        ``hard_negative_fraction`` (patches only): this fraction of the crops is centred on normal brain that looks
        like an infarct to the hemispheric comparison - at least ``hard_negative_hu`` below its mirror image (smoothed
        in the slice, more than 3 pixels from any lesion; see :func:`hard_negative_voxels`), so the lesion head is
        taught what normal asymmetry looks like. Needs the mirrored CT; 0 keeps the sampling exactly as before.
        ``noise_augment_hu`` (with ``augment``): with probability ``noise_augment_probability`` a sample's CT gets more
        noise of the phantoms' texture, at a level drawn uniformly from 0..noise_augment_hu (see :func:`add_ct_noise`),
        before it is turned; so the lesion head meets noisier hemispheric differences with the same labels. Drawn
        from a generator of its own, so every other draw (crop, turn, flip) is the same with or without it; 0 keeps
        every sample exactly as before.
        ``unseen_lesion_hu``: lesions whose CT contrast is below this (:func:`unseen_lesions`) are taken out of the
        lesion mask and marked in a fifth tensor, ``ignore``, which the trainer leaves out of every loss but the
        adversarial one: the network is neither taught to paint what the CT does not show (which it can only learn
        as painting noise) nor to call it normal. Lesion crops are centred on the lesions kept. 0 (off) keeps every
        sample exactly as before, with no ``ignore`` tensor."""
        self.pre, self.divisor, self.augment = pre, divisor, augment
        self.unseen_lesion_hu = check_unseen_lesion_hu(unseen_lesion_hu)
        self.patch_size, self.lesion_patch_fraction = patch_size, float(lesion_patch_fraction)
        self.rotate_deg, self.rotate_probability = float(rotate_deg), float(rotate_probability)
        self.hard_negative_fraction = float(hard_negative_fraction)
        check_crop_fractions(self.lesion_patch_fraction, self.hard_negative_fraction, patch_size)
        check_noise_augment(noise_augment_hu, noise_augment_probability, pre.mirror_noise_ref_hu)
        self.noise_augment_hu, self.noise_augment_probability = float(noise_augment_hu), float(noise_augment_probability)
        self.items = []
        self.lesion_items = []  # indices of slices that hold lesion (for oversampling)
        self.hard_items: list[tuple[int, np.ndarray]] = []  # (slice index, (n, 2) voxels) of normal asymmetry
        for c in cases:
            x = case_input(c, pre)
            frac = c.brain.reshape(c.brain.shape[0], -1).mean(1)
            hard = hard_negative_voxels(c, hard_negative_hu) if self.hard_negative_fraction > 0 else None
            unseen = unseen_lesions(c, self.unseen_lesion_hu) if self.unseen_lesion_hu > 0 else None
            lesion = c.lesion if unseen is None else (c.lesion > 0) & ~unseen
            for k in np.nonzero(frac >= pre.min_brain_fraction)[0]:
                if lesion[k].any():
                    self.lesion_items.append(len(self.items))
                if hard is not None and hard[k].any():
                    self.hard_items.append((len(self.items), np.argwhere(hard[k]).astype(np.int16)))
                item = (x[k], c.dwi[k][None], c.brain[k][None].astype(np.float32), lesion[k][None].astype(np.float32))
                self.items.append(item if unseen is None else item + (unseen[k][None].astype(np.float32),))
        if not self.items:
            raise InputError("no training slices: every case lacks brain in its axial slices")
        self.epoch_seed = 0
        self.mask_channel = pre.input_channels  # the brain mask follows the CT channels in the input

    def __len__(self):
        return len(self.items)

    def _patch(self, i: int, g: torch.Generator, margin: int = 0) -> list[np.ndarray]:
        """A crop of patch_size + 2 * margin pixels (the margin is cut after a rotation)."""
        p = int(self.patch_size) + 2 * margin
        r = lambda: torch.rand(1, generator=g).item()
        u = r() if self.lesion_items else None  # one draw picks the kind (no extra draw without hard negatives)
        if u is not None and u < self.lesion_patch_fraction:
            i = self.lesion_items[int(r() * len(self.lesion_items))]
            where = np.argwhere(self.items[i][3][0] > 0)
        elif (self.hard_negative_fraction > 0 and self.hard_items
              and (r() if u is None else u) < self.lesion_patch_fraction + self.hard_negative_fraction):
            i, where = self.hard_items[int(r() * len(self.hard_items))]
        else:
            where = np.argwhere(self.items[i][2][0] > 0)
        arrays = self.items[i]
        h, w = arrays[0].shape[-2:]
        cy, cx = (where[int(r() * len(where))] if len(where) else (h // 2, w // 2))
        cy, cx = int(cy + (r() - 0.5) * p / 2), int(cx + (r() - 0.5) * p / 2)  # jitter: not always in the middle
        y0 = min(max(cy - p // 2, 0), max(h - p, 0))
        x0 = min(max(cx - p // 2, 0), max(w - p, 0))
        out = []
        for a in arrays:
            c = a[..., y0 : y0 + p, x0 : x0 + p]
            if c.shape[-2:] != (p, p):  # slice smaller than the patch: zero-pad
                c = np.pad(c, [(0, 0)] * (c.ndim - 2) + [(0, p - c.shape[-2]), (0, p - c.shape[-1])])
            out.append(c)
        return out

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.epoch_seed * 1_000_003 + i)
        turn = None
        if self.augment and self.rotate_deg > 0 and torch.rand(1, generator=g).item() < self.rotate_probability:
            u = torch.rand(3, generator=g).tolist()
            turn = ((2 * u[0] - 1) * self.rotate_deg, u[1] - 0.5, u[2] - 0.5)
        margin = int(math.ceil(self.patch_size * 0.21)) if (turn and self.patch_size) else 0  # sqrt(2)/2 - 1/2
        arrays = self._patch(i, g, margin) if self.patch_size else self.items[i]
        if self.augment and self.noise_augment_hu > 0:
            rng = np.random.default_rng((int(self.epoch_seed), int(i), 0x4E4F4953))  # its own stream ("NOIS")
            if rng.random() < self.noise_augment_probability:
                level = float(rng.uniform(0.0, self.noise_augment_hu))
                arrays = [add_ct_noise(arrays[0], self.pre, level, rng), *arrays[1:]]
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if turn is not None:
            tensors = rotate_sample(tensors, *turn, mask_channel=self.mask_channel)
            if margin:
                tensors = [t[..., margin:-margin, margin:-margin] for t in tensors]
        if self.augment:
            # left-right mirror (LPS: last axis is x); every channel flips together, so the mirror-difference
            # channels stay those of the flipped CT
            if torch.rand(1, generator=g).item() < 0.5:
                tensors = [t.flip(-1) for t in tensors]
        tensors = [pad_to_multiple(t, self.divisor)[0] for t in tensors]
        return dict(zip(("input", "target", "brain", "lesion", "ignore"), tensors))
