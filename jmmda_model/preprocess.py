"""Intensity preprocessing and orientation handling shared by training and inference."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk


#: the slab thicknesses (mm) a model may work at
SLAB_MM_RANGE = (0.5, 20.0)


@dataclass
class PreprocessConfig:
    #: CT windows as (level, width) in HU, one input channel each, mapped to [0, 1]
    ct_windows: list[tuple[float, float]] = field(default_factory=lambda: [(40.0, 80.0)])
    #: DWI normalisation: in-brain percentile p_lo -> 0 (None: 0 stays 0, a pure scaling that keeps signal
    #: ratios) and p_ref -> ``dwi_ref_value``, clipped to [0, 1]. The median is the reference because normal
    #: tissue dominates it whatever the lesion load, so normal tissue gets the same value in every case; 0.25
    #: leaves room for lesions up to 4x the normal median below the ceiling (0.4 clipped 24-80 % of lesion voxels).
    dwi_percentiles: tuple[float | None, float] = (None, 50.0)
    dwi_ref_value: float = 0.25
    #: the synthetic DWI is defined inside the brain mask; set the outside to 0
    mask_output: bool = True
    #: axial slices with less brain than this fraction of the slice are skipped in training
    min_brain_fraction: float = 0.02
    #: in-plane pixel spacing (mm) the network works at; other CTs are resampled to it and the
    #: result back to the CT grid (None: use the native grid)
    inplane_spacing: tuple[float, float] | None = (1.8, 1.8)
    #: relative spacing difference tolerated before resampling
    spacing_tolerance: float = 0.05
    #: 2.5-D input: this many adjacent axial slices on each side are stacked as extra CT channels (edge slices
    #: repeated), so a 2-7 HU infarct under CT noise is seen over 2k+1 slices
    context_slices: int = 1
    #: hemispheric comparison: for every CT channel also the CT minus its mirror image across the mid-sagittal
    #: plane (clinical.midplane), window-scaled and multiplied by ``mirror_gain``
    mirror_channels: bool = True
    mirror_gain: float = 4.0
    #: the hemispheric difference in units of the case's own noise: with a value (HU), the CT-minus-mirror channels
    #: are also multiplied by this value / the spread of CT minus mirror over the case's parenchyma
    #: (``data.mirror_noise_scale``), so a dip of a few HU weighs less in a noisy CT than in a quiet one.
    #: None (default, and every model before): not scaled.
    mirror_noise_ref_hu: float | None = None
    #: the CT->DWI lookup table (prior.TissuePrior.to_dict()) fitted on the training set; when set, the model
    #: input gets the prior as its last channel (generators with ``residual_prior`` predict a residual over it)
    tissue_prior: dict | None = None
    #: the model was trained with in-plane rotation augmentation (trainer ``rotate_deg``): inference turns each CT
    #: so its mid-sagittal line is vertical before the network (clinical.midplane.canonical_pose(rotate=True)).
    #: Set by the trainer; models without it are fed whole-pixel translations only.
    canonical_rotation: bool = False
    #: the slice thickness (mm) the model was trained at: a series whose slices are thinner is averaged into slabs
    #: of this thickness (``slab_plan``, placed in the patient's frame) before the network, in training and at
    #: inference, and the result is interpolated back onto its own slices - the network sees the noise and the
    #: partial volume of the slices it learnt from. Recorded by the trainer (its training cases' median slice
    #: spacing) unless given; None (models written before it): every series on its own slices.
    slab_mm: float | None = None

    #: values of keys added after the first release, for checkpoints written before them
    LEGACY = {"context_slices": 0, "mirror_channels": False, "mirror_gain": 4.0, "tissue_prior": None,
              "canonical_rotation": False, "mirror_noise_ref_hu": None, "slab_mm": None}

    def __post_init__(self):
        slab = self.slab_mm
        if slab is not None and (isinstance(slab, bool) or not isinstance(slab, (int, float))
                                 or not (SLAB_MM_RANGE[0] <= float(slab) <= SLAB_MM_RANGE[1])):
            raise ValueError(f"slab_mm must be a slice thickness in mm within {SLAB_MM_RANGE} or None, not {slab!r}")
        ref = self.mirror_noise_ref_hu
        if ref is not None:
            if isinstance(ref, bool) or not isinstance(ref, (int, float)) or not (0.0 < float(ref) <= 50.0):
                raise ValueError(f"mirror_noise_ref_hu must be a number of HU in (0, 50] or None, not {ref!r}")
            if not self.mirror_channels:
                raise ValueError("mirror_noise_ref_hu scales the CT-minus-mirror channels, but the mirror channels are off")

    def to_dict(self):
        return asdict(self)

    @property
    def input_channels(self) -> int:
        """CT channels the generator receives: windows x (2k+1) slices (the mask comes on top)."""
        per = len(self.ct_windows) * (2 * self.context_slices + 1)
        return per * (2 if self.mirror_channels else 1)

    @classmethod
    def from_dict(cls, d):
        d = {**cls.LEGACY, **dict(d)}
        d["ct_windows"] = [tuple(w) for w in d.get("ct_windows", [(40.0, 80.0)])]
        if "dwi_percentiles" in d:
            d["dwi_percentiles"] = tuple(d["dwi_percentiles"])
        if d.get("inplane_spacing") is not None:
            d["inplane_spacing"] = tuple(d["inplane_spacing"])
        if d.get("tissue_prior") is not None:
            from .prior import TissuePrior

            if TissuePrior.from_dict(d["tissue_prior"]).mirror_lift_hu and not d.get("mirror_channels"):  # validates it
                raise ValueError("the tissue prior lifts voxels to their mirror image, but the mirror channels are off")
        return cls(**d)

    def needs_resampling(self, img: sitk.Image) -> bool:
        return self.needs_resampling_spacing(img.GetSpacing()[:2])

    def needs_resampling_spacing(self, spacing_xy) -> bool:
        if self.inplane_spacing is None:
            return False
        sx, sy = spacing_xy
        tx, ty = self.inplane_spacing
        return abs(sx - tx) > self.spacing_tolerance * tx or abs(sy - ty) > self.spacing_tolerance * ty


#: a series is averaged into slabs of the model's slice thickness when its slices are at most this fraction of it;
#: thicker slices are used as they are (benchmarks/records/slab_plan_2026-12-06)
SLAB_MAX_SLICE_FRACTION = 0.7


@dataclass(frozen=True, eq=False)
class SlabPlan:
    """Slabs of ``thickness`` slices (any real number >= 1) over a series of ``n`` slices, centred at
    ``nominal`` (slice-index units, ``thickness`` apart). A slab averages the slices under it, each weighted by the
    length of it the slab covers; a slab at either end of the series averages what it covers. ``centres``: where
    each slab's content lies (the weighted mean of its slices' positions; the nominal centre but at the ends)."""

    n: int
    thickness: float
    nominal: np.ndarray

    def window(self, j: int) -> tuple[float, float]:
        half = self.thickness / 2.0
        return max(self.nominal[j] - half, -0.5), min(self.nominal[j] + half, self.n - 0.5)

    @property
    def centres(self) -> np.ndarray:
        out = np.empty(len(self))
        for j in range(len(self)):
            first, w = self.weights(j)
            out[j] = float(w @ np.arange(first, first + len(w)))
        return out

    def __len__(self) -> int:
        return len(self.nominal)

    def weights(self, j: int) -> tuple[int, np.ndarray]:
        """(first slice, weights summing to 1) of slab ``j``."""
        lo, hi = self.window(j)
        first, last = int(np.floor(lo + 0.5)), min(int(np.ceil(hi - 0.5)), self.n - 1)
        i = np.arange(first, last + 1, dtype=np.float64)
        w = np.clip(np.minimum(i + 0.5, hi) - np.maximum(i - 0.5, lo), 0.0, None)
        return first, w / w.sum()


def uses_slabs(slice_mm: float, slab_mm: float | None) -> bool:
    """Whether slices of ``slice_mm`` are averaged into slabs of ``slab_mm`` (at most SLAB_MAX_SLICE_FRACTION of it)."""
    return slab_mm is not None and 0 < float(slice_mm) <= SLAB_MAX_SLICE_FRACTION * float(slab_mm)


def slab_plan(n: int, slice_mm: float, slab_mm: float | None, anchor: float | None = None) -> SlabPlan | None:
    """Slabs of ``slab_mm`` over ``n`` slices of ``slice_mm``, one of them centred on ``anchor`` (slice-index
    units; None: the first slab starts where the series does), every slab whose centre lies within the series; None
    (the series as it is) without ``slab_mm``, or when the slices are thicker than SLAB_MAX_SLICE_FRACTION of it.
    Inference and training anchor them in the patient's frame (:func:`grid_anchor`)."""
    if n < 1 or not uses_slabs(slice_mm, slab_mm):
        return None
    t = float(slab_mm) / float(slice_mm)
    a = (t - 1.0) / 2.0 if anchor is None or not np.isfinite(anchor) else float(anchor)
    j = np.arange(np.ceil((-0.5 - a) / t), np.floor((n - 0.5 - a) / t) + 1)
    nominal = a + j * t
    if nominal.size == 0:  # a series thinner than one slab: one slab over all of it
        nominal = np.array([(n - 1) / 2.0])
    return SlabPlan(int(n), t, nominal)


def grid_anchor(img: sitk.Image) -> float:
    """Where the slabs of ``img``'s slices are anchored (slice-index units, any real number): where the patient
    coordinate along the slice normal is 0, so that slab centres lie at whole multiples of the slab thickness in the
    patient's frame. The layout depends on where the slices are, never on which of them the series holds: the same
    slices with more or fewer of them at either end, or the same head placed elsewhere in the slice plane, get the
    same slabs. (A layout anchored on the brain was tried and not taken: two scans of one head gave masks whose
    anchors differed by 0.07 slices, which moved an end slab in or out of the series and the mid-sagittal plane with
    it; record slab_plan_2026-12-06.)"""
    d = np.array(img.GetDirection(), float).reshape(3, 3)
    normal = d[:, 2]
    return -float(np.asarray(img.GetOrigin(), float) @ normal) / float(img.GetSpacing()[2])


def to_slabs(a: np.ndarray, plan: SlabPlan | None) -> np.ndarray:
    """(n, ...) -> (slabs, ...) float32: each slab the weighted mean of the slices under it. No plan: the array
    as float32."""
    a = np.asarray(a)
    if plan is None:
        return a.astype(np.float32, copy=False)
    if a.shape[0] != plan.n:
        raise ValueError(f"{a.shape[0]} slices given for a slab plan of {plan.n}")
    out = np.empty((len(plan), *a.shape[1:]), np.float32)
    for j in range(len(plan)):
        first, w = plan.weights(j)
        out[j] = np.tensordot(w, a[first:first + len(w)], axes=1)
    return out


def from_slabs(a: np.ndarray, plan: SlabPlan | None) -> np.ndarray:
    """The inverse direction of :func:`to_slabs` for a result computed on the slabs: (slabs, ...) -> (n, ...)
    float32, linear along z between the slab centres; slices beyond the first or last centre take that slab's value."""
    a = np.asarray(a, np.float32)
    if plan is None:
        return a
    c, n = plan.centres, plan.n
    if len(c) != a.shape[0]:
        raise ValueError(f"{a.shape[0]} slabs given for a plan of {len(c)}")
    if len(c) == 1:
        return np.repeat(a, n, axis=0)
    z = np.clip(np.arange(n, dtype=np.float64), c[0], c[-1])
    i = np.clip(np.searchsorted(c, z, side="right") - 1, 0, len(c) - 2)
    w = ((z - c[i]) / (c[i + 1] - c[i])).astype(np.float32).reshape(-1, *([1] * (a.ndim - 1)))
    out = np.empty((n, *a.shape[1:]), np.float32)
    for j in range(n):  # slice by slice: no (n, ...) temporaries besides the result
        out[j] = (1.0 - w[j]) * a[i[j]] + w[j] * a[i[j] + 1]
    return out


def window_ct(ct_hu: np.ndarray, windows) -> np.ndarray:
    """(…spatial) HU -> (C, …spatial) float32 in [0, 1], one channel per (level, width) window."""
    chans = []
    for level, width in windows:
        lo = level - width / 2.0
        chans.append(np.clip((ct_hu - lo) / float(width), 0.0, 1.0))
    return np.stack(chans).astype(np.float32)


def normalize_dwi(dwi: np.ndarray, brain: np.ndarray, percentiles=(None, 50.0), ref_value: float = 0.25,
                  clip: bool = True) -> np.ndarray:
    """Maps in-brain percentile ``percentiles[0]`` (None: value 0) to 0 and ``percentiles[1]`` to
    ``ref_value``; clipped to [0, 1] unless ``clip`` is False. Data range of the result: 1.0."""
    vals = dwi[brain > 0]
    if vals.size == 0:
        raise ValueError("cannot normalise DWI: brain mask is empty")
    ref = float(np.percentile(vals, percentiles[1]))
    lo = 0.0 if percentiles[0] is None else float(np.percentile(vals, percentiles[0]))
    if ref - lo <= 1e-6:
        raise ValueError("cannot normalise DWI: no intensity variation inside the brain")
    out = (dwi.astype(np.float32) - lo) / (ref - lo) * ref_value
    return (np.clip(out, 0.0, 1.0) if clip else out).astype(np.float32)


def pad_to_multiple(x, divisor: int):
    """Pads the last two dims of a torch tensor (edge-replicated zeros) to multiples of divisor.
    Returns the padded tensor and the (h, w) crop to undo it."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x, (ph // 2, h, pw // 2, w)
