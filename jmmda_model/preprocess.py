"""Intensity preprocessing and orientation handling shared by training and inference."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk


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

    #: values of keys added after the first release, for checkpoints written before them
    LEGACY = {"context_slices": 0}

    def to_dict(self):
        return asdict(self)

    @property
    def input_channels(self) -> int:
        """CT channels the generator receives: windows x (2k+1) slices (the mask comes on top)."""
        return len(self.ct_windows) * (2 * self.context_slices + 1)

    @classmethod
    def from_dict(cls, d):
        d = {**cls.LEGACY, **dict(d)}
        d["ct_windows"] = [tuple(w) for w in d.get("ct_windows", [(40.0, 80.0)])]
        if "dwi_percentiles" in d:
            d["dwi_percentiles"] = tuple(d["dwi_percentiles"])
        if d.get("inplane_spacing") is not None:
            d["inplane_spacing"] = tuple(d["inplane_spacing"])
        return cls(**d)

    def needs_resampling(self, img: sitk.Image) -> bool:
        if self.inplane_spacing is None:
            return False
        sx, sy = img.GetSpacing()[:2]
        tx, ty = self.inplane_spacing
        return abs(sx - tx) > self.spacing_tolerance * tx or abs(sy - ty) > self.spacing_tolerance * ty


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


def orientation_code(img: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


def to_axial(img: sitk.Image) -> sitk.Image:
    """Permutes/flips (no interpolation) so that array axis 0 runs inferior->superior (LPS).
    Then ``GetArrayFromImage(...)[k]`` is axial slice k."""
    return sitk.DICOMOrient(img, "LPS")


def from_axial(img: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """Inverse of :func:`to_axial`; the result carries the exact geometry of ``ref``."""
    back = sitk.DICOMOrient(img, orientation_code(ref))
    if back.GetSize() != ref.GetSize():
        raise RuntimeError("internal error: re-orientation changed the volume size")
    back.CopyInformation(ref)
    return back


def resample_inplane(img: sitk.Image, spacing_xy, label: bool = False) -> sitk.Image:
    """Axial-oriented image onto a grid with the given in-plane spacing over the same extent and the
    same slices (linear, or nearest neighbour for labels). Voxel centres are kept symmetric.

    Down-sampling an intensity image is anti-aliased: a Gaussian pre-filter of sigma = 0.3 x sqrt(new^2 - old^2)
    per in-plane axis (about what averaging the covered area does to white noise: 10 HU of noise at 0.45 mm
    comes out near 2.5 HU at 1.8 mm instead of staying near 7 HU with plain linear interpolation)."""
    size = img.GetSize()
    sp = img.GetSpacing()
    new_sp = (float(spacing_xy[0]), float(spacing_xy[1]), sp[2])
    sigma = [0.3 * float(np.sqrt(max(new_sp[i] ** 2 - sp[i] ** 2, 0.0))) if new_sp[i] > 1.05 * sp[i] else 0.0 for i in range(2)]
    if not label and max(sigma) > 0:
        pix = img.GetPixelID()
        smooth = sitk.Cast(img, sitk.sitkFloat32)
        for axis, sg in enumerate(sigma):
            if sg > 0:
                f = sitk.RecursiveGaussianImageFilter()
                f.SetSigma(sg)
                f.SetDirection(axis)
                f.SetNormalizeAcrossScale(False)
                smooth = f.Execute(smooth)
        img = sitk.Cast(sitk.Round(smooth), pix) if pix not in (sitk.sitkFloat32, sitk.sitkFloat64) else sitk.Cast(smooth, pix)
    new_size = [max(2, int(round(size[i] * sp[i] / new_sp[i]))) for i in range(2)] + [size[2]]
    d = np.array(img.GetDirection()).reshape(3, 3)
    # keep the physical centre of the field of view
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size]))
    origin = centre - d @ (np.array([(new_size[i] - 1) / 2 * new_sp[i] for i in range(3)]))
    return sitk.Resample(img, new_size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                         tuple(origin), new_sp, img.GetDirection(), 0.0 if label else float(np.min(sitk.GetArrayViewFromImage(img))),
                         img.GetPixelID())


def pad_to_multiple(x, divisor: int):
    """Pads the last two dims of a torch tensor (edge-replicated zeros) to multiples of divisor.
    Returns the padded tensor and the (h, w) crop to undo it."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x, (ph // 2, h, pw // 2, w)
