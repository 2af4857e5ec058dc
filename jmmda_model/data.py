"""Cases on disk and the 2-D axial-slice training dataset.

Case layout = MONAI Label local datastore: ``<dir>/<id>.nii.gz`` is the CT and
``<dir>/labels/<tag>/<id>.nii.gz`` hold the paired volumes with tags ``dwi``, ``brainmask`` and
(optionally) ``lesion``. All volumes of a case must share the CT's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from .clinical.geometry import resample_inplane, same_geometry, to_axial
from .clinical.imageio import check_ct, check_mask, read_image
from .errors import InputError
from .preprocess import PreprocessConfig, normalize_dwi, pad_to_multiple, window_ct

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
    image: sitk.Image  # the axial-oriented CT (geometry reference)
    dwi_unclipped: np.ndarray | None = None  # normalised like ``dwi`` but not clipped (lesion MAE)


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
    brain = check_mask(vols["brainmask"], ct_ax, f"{case.id} brain mask")
    dwi = sitk.GetArrayFromImage(vols["dwi"]).astype(np.float32) if "dwi" in vols else None
    lesion = (sitk.GetArrayFromImage(vols["lesion"]) > 0).astype(np.uint8) if "lesion" in vols else np.zeros_like(brain)
    ct_hu = sitk.GetArrayFromImage(ct_ax).astype(np.float32)
    norm = (lambda clip: normalize_dwi(dwi, brain, pre.dwi_percentiles, pre.dwi_ref_value, clip=clip)) if dwi is not None else None
    return LoadedCase(
        case.id,
        ct_hu,
        norm(True) if norm else None,
        brain,
        lesion,
        tuple(reversed(ct_ax.GetSpacing())),
        ct_ax,
        norm(False) if norm else None,
    )


def model_input(ct_hu: np.ndarray, brain: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    """(z, y, x) -> (z, C+1, y, x): CT window channels of slices z-k..z+k (k = ``pre.context_slices``, edge
    slices repeated), then the brain mask of slice z."""
    w = window_ct(ct_hu, pre.ct_windows)  # (W, z, y, x)
    k = int(pre.context_slices)
    n = ct_hu.shape[0]
    chans = [w[:, np.clip(np.arange(n) + d, 0, n - 1)] for d in range(-k, k + 1)] if k else [w]
    x = np.concatenate(chans + [brain[None].astype(np.float32)], 0)
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3))


class SliceDataset(Dataset):
    """Axial slices of loaded cases: dict(input (C+1,H,W), target (1,H,W), brain, lesion)."""

    def __init__(self, cases: list[LoadedCase], pre: PreprocessConfig, divisor: int, augment: bool = False):
        self.pre, self.divisor, self.augment = pre, divisor, augment
        self.items = []
        self.lesion_items = []  # indices of slices that hold lesion (for oversampling)
        for c in cases:
            x = model_input(c.ct_hu, c.brain, pre)
            frac = c.brain.reshape(c.brain.shape[0], -1).mean(1)
            for k in np.nonzero(frac >= pre.min_brain_fraction)[0]:
                if c.lesion[k].any():
                    self.lesion_items.append(len(self.items))
                self.items.append((x[k], c.dwi[k][None], c.brain[k][None].astype(np.float32), c.lesion[k][None].astype(np.float32)))
        if not self.items:
            raise InputError("no training slices: every case lacks brain in its axial slices")
        self.epoch_seed = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in self.items[i]]
        if self.augment:
            g = torch.Generator().manual_seed(self.epoch_seed * 1_000_003 + i)
            if torch.rand(1, generator=g).item() < 0.5:  # left-right mirror (LPS: last axis is x)
                tensors = [t.flip(-1) for t in tensors]
        tensors = [pad_to_multiple(t, self.divisor)[0] for t in tensors]
        return dict(zip(("input", "target", "brain", "lesion"), tensors))
