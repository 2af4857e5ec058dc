"""Paired CT / DWI / brain-mask / lesion-mask phantoms built on real anatomy.

Anatomy: the 1 mm MNI152 2009 grey-matter, white-matter and brain-mask templates shipped inside the ``nilearn``
wheel (no download), so sulci and ventricles come from the template. Per case (all drawn from the seed):

* a random affine + smooth elastic deformation; age-like atrophy (sulcal and ventricular CSF widened);
* tissue values within published ranges: CT GM 34-42 HU, WM 24-32 HU (GM-WM >= 4 HU), CSF 2-12 HU;
  DWI (b1000 trace) GM 0.9-1.1, WM 0.72-0.9, CSF 0.12-0.3 (arbitrary units);
* skull (cortical tables, diploe), scalp with a fat layer (-110..-70 HU), frontal and sphenoid sinus and
  mastoid air cells; beam-hardening cupping near the inner table and streaks across the posterior fossa;
  CT noise 2.5-6 HU (correlated) varying by case;
* 0-``max_lesions`` acute infarcts shaped by vascular territory (MCA, ACA, PCA: a wedge of the territory
  grown from a seed; lacunar: 3-8 mm deep lesions, < 1 mL), CT hypodensity 1-8 HU each, DWI 1.5-2.5x normal;
  some subacute ones with T2 shine-through (more CT hypodensity, DWI only 1.3-1.6x); and 0-1 *old* infarcts
  (CSF-like, dark on DWI, NOT in the lesion mask) as distractors;
* DWI with an EPI-like distortion along the phase-encoding axis (A-P) and susceptibility signal loss near the
  sinuses and skull base, a bias field and Rician noise. ``PhantomConfig.dwi_effects`` leaves any of these out,
  ``dwi_tissue`` sets the tissue signals and ``ct_noise`` leaves out the CT's noise, on the same head (for
  measuring what a synthesis from CT can reach).

Default geometry: 1.8 x 1.8 mm in plane, 5 mm axial slices (``PhantomConfig.spacing``; the field of view is
fixed in mm, so the grid follows the spacing), LPS direction. The brain mask excludes the skull's partial-volume
rim (voxels the blurred bone reaches above 80 HU).

What they do NOT model (see README): real pathology variety (haemorrhage, tumour, small-vessel disease beyond
lacunes), patient motion, metal, dental or calcification artefacts, CT reconstruction kernels, scanner-specific
DWI (b-value, coil shading beyond a smooth bias, ghosting), slice gaps or tilt, and anatomy beyond one
template's warps.

These are PHANTOMS for software testing and demonstration; they are not patient data.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi


#: the DWI's acquisition effects, in the order they are applied: signal loss next to air spaces, EPI distortion
#: along the phase-encoding axis, a smooth bias field, Rician noise
DWI_EFFECTS = ("susceptibility", "epi", "bias", "noise")


@dataclass
class PhantomConfig:
    spacing: tuple[float, float, float] = (1.8, 1.8, 5.0)  # x, y, z in mm
    fov_mm: tuple[float, float, float] = (230.0, 256.0, 160.0)  # x, y, z
    size: tuple[int, int, int] | None = None  # default: ceil(fov / spacing)
    max_lesions: int = 3
    old_infarct_prob: float = 0.3
    dwi_scale: float = 800.0  # arbitrary DWI units of the b1000 trace, stored as int16
    #: head rotation drawn uniformly in +-these degrees about x (pitch: nodding), y (roll) and z (yaw)
    max_rotation_deg: tuple[float, float, float] = (4.0, 4.0, 10.0)
    #: the DWI's acquisition effects that are applied (any of DWI_EFFECTS). Their random draws are made whether or
    #: not an effect is applied, so a case with fewer effects is the same head: CT, masks, lesions and the DWI's
    #: anatomy are identical. For measuring how much of the DWI no CT can predict (what a synthesis can reach).
    dwi_effects: tuple[str, ...] = DWI_EFFECTS
    #: DWI signal of grey matter, white matter and CSF; None (default): drawn per case. Set, the draws are still
    #: made (same head) and these values used instead.
    dwi_tissue: tuple[float, float, float] | None = None
    #: False: the CT without its noise (drawn all the same: the same head)
    ct_noise: bool = True

    def __post_init__(self):
        unknown = set(self.dwi_effects) - set(DWI_EFFECTS)
        if unknown:
            raise ValueError(f"unknown DWI effects {sorted(unknown)}; known: {', '.join(DWI_EFFECTS)}")
        if self.dwi_tissue is not None and (len(self.dwi_tissue) != 3 or not all(
                math.isfinite(v) and v > 0 for v in self.dwi_tissue)):
            raise ValueError(f"dwi_tissue must be three positive numbers (GM, WM, CSF), not {self.dwi_tissue!r}")

    def grid(self) -> tuple[int, int, int]:
        if self.size is not None:
            return tuple(int(s) for s in self.size)
        return tuple(int(math.ceil(f / s - 1e-6)) for f, s in zip(self.fov_mm, self.spacing))


@functools.lru_cache(maxsize=1)
def _templates():
    """1 mm MNI152 GM, WM, brain mask and affine; read once per process (arrays are not modified)."""
    from nilearn import datasets  # templates ship inside the wheel

    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    return (
        np.asarray(gm.get_fdata(), np.float32),
        np.asarray(wm.get_fdata(), np.float32),
        np.asarray(brain.get_fdata(), np.float32),
        np.asarray(gm.affine, np.float64),
    )


def _random_rotation(rng, max_deg=(4.0, 4.0, 10.0)):
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_noise(rng, shape, sigma, amplitude):
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    n /= max(float(np.abs(n).max()), 1e-6)
    return n * amplitude


def _ellipsoid(mm: np.ndarray, centre, radii) -> np.ndarray:
    """mm: (3, ...) MNI coordinates; True inside the ellipsoid."""
    return sum(((mm[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


# vascular territories in MNI mm (coarse, symmetric; side chosen per lesion): x = |lateral|, y = A-P, z = I-S
def _territory(kind: str, mm: np.ndarray, side: float) -> np.ndarray:
    x, y, z = side * mm[0], mm[1], mm[2]
    if kind == "MCA":
        return (x > 22) & (y > -75) & (y < 55) & (z > -25) & (z < 65)
    if kind == "ACA":
        return (x > 0) & (x < 22) & (y > -45) & (z > 5)
    if kind == "PCA":
        return (x > 0) & (((y < -62) & (z < 45)) | ((y < -25) & (z < -5) & (x < 45)))
    if kind == "lacunar":
        return (x > 8) & (x < 32) & (y > -30) & (y < 22) & (z > -8) & (z < 22)
    raise ValueError(kind)


def _infarct(rng, kind: str, mm: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    side = float(rng.choice([-1.0, 1.0]))
    terr = _territory(kind, mm, side) & (tissue > 0.5)
    cand = np.argwhere(terr)
    if len(cand) == 0:
        return np.zeros(tissue.shape, bool)
    c = cand[rng.integers(len(cand))]
    centre = mm[(slice(None),) + tuple(c)]
    if kind == "lacunar":
        radii = rng.uniform(3.0, 8.0, size=3) / 2 + 1.0  # 3-8 mm diameter (+ partial volume)
        region = _ellipsoid(mm, centre, radii)
    else:
        radii = rng.uniform(5.0, 28.0) * rng.uniform(0.6, 1.4, size=3)
        rough = _smooth_noise(rng, tissue.shape, 2.0, 0.45)
        region = (sum(((mm[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) + rough) < 1.0
        region &= _territory(kind, mm, side)
    return region & (tissue > 0.35)


def ct_noise_field(rng: np.random.Generator, shape, noise_hu: float) -> np.ndarray:
    """The phantom CT's noise on a grid of ``shape``: white noise smoothed by 0.7 voxel, scaled to ``noise_hu``."""
    return ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7) * noise_hu * 2.2


def make_case(seed: int, cfg: PhantomConfig | None = None) -> dict:
    """Returns numpy arrays (x, y, z order) and the geometry of one phantom case."""
    cfg = cfg or PhantomConfig()
    rng = np.random.default_rng(seed)
    gm_t, wm_t, brain_t, affine = _templates()
    shape = cfg.grid()
    size = np.array(shape)
    spacing = np.array(cfg.spacing, float)

    # ---- geometry: output grid (mm, centred on the brain) -> template voxels
    centre_vox = np.array(np.nonzero(brain_t > 0.5)).mean(1)
    centre_mm = affine[:3, :3] @ centre_vox + affine[:3, 3]
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    pts = (idx - (size[:, None] - 1) / 2) * spacing[:, None]
    pts[2] += 10.0  # more field of view above the skull base than below
    rot = _random_rotation(rng, cfg.max_rotation_deg)
    scale = rng.uniform(1.0, 1.12)
    shift = rng.uniform(-4, 4, size=3)
    src_mm = (rot @ pts) / scale + centre_mm[:, None] + shift[:, None]
    for axis in range(3):  # smooth elastic deformation, mm
        src_mm[axis] += _smooth_noise(rng, shape, sigma=10.0 / spacing.mean(), amplitude=3.0).ravel()
    src_vox = np.linalg.solve(affine[:3, :3], src_mm - affine[:3, 3:4])
    mm = src_mm.reshape((3, *shape))  # MNI coordinates of every output voxel

    # through-plane partial volume of thick slices: a box of the slice thickness, applied as a Gaussian
    z_sigma = cfg.spacing[2] / 2.355

    def warp(a):
        out = ndi.map_coordinates(a, src_vox, order=1, mode="constant", cval=0.0).reshape(shape)
        return ndi.gaussian_filter1d(out, z_sigma / cfg.spacing[2], axis=2)

    gm, wm, brain_p = warp(gm_t), warp(wm_t), warp(brain_t)
    brain = ndi.binary_fill_holes(brain_p > 0.5)
    tissue = np.clip(gm + wm, 0, 1) * brain
    # ---- atrophy: tissue next to CSF recedes (sulci and ventricles widen)
    atrophy = rng.uniform(0.0, 1.0)
    csf0 = np.clip(1.0 - tissue, 0, 1) * brain
    shrink = np.clip(1.0 - atrophy * 0.9 * ndi.gaussian_filter(csf0, 2.0 / spacing[:2].mean()), 0.0, 1.0)
    gm, wm = gm * shrink, wm * shrink
    tissue = np.clip(gm + wm, 0, 1) * brain
    csf = np.clip(1.0 - tissue, 0, 1) * brain
    frac_gm = gm / np.maximum(gm + wm, 1e-3)

    # ---- tissue values of this case
    hu = {"gm": rng.uniform(34, 42), "csf": rng.uniform(2, 12), "skin": rng.uniform(30, 50), "fat": rng.uniform(-110, -70)}
    hu["wm"] = min(rng.uniform(24, 32), hu["gm"] - 4.0)
    sig = {"gm": rng.uniform(0.9, 1.1), "wm": rng.uniform(0.72, 0.9), "csf": rng.uniform(0.12, 0.3), "scalp": 0.1}
    if cfg.dwi_tissue is not None:
        sig.update(zip(("gm", "wm", "csf"), (float(v) for v in cfg.dwi_tissue)))
    effects = set(cfg.dwi_effects)

    # ---- lesions: acute (in the mask), old (distractors)
    lesions, lesion_meta = [], []
    n_acute = int(rng.integers(0, cfg.max_lesions + 1))
    for _ in range(n_acute):
        kind = str(rng.choice(["MCA", "MCA", "ACA", "PCA", "lacunar", "lacunar"]))
        region = _infarct(rng, kind, mm, tissue)
        if not region.any():
            continue
        shine = bool(rng.random() < 0.2)
        contrast = rng.uniform(6.0, 12.0) if shine else rng.uniform(1.0, 8.0)
        ratio = rng.uniform(1.3, 1.6) if shine else rng.uniform(1.5, 2.5)
        lesions.append((region, contrast, ratio))
        lesion_meta.append({"territory": kind, "stage": "subacute (T2 shine-through)" if shine else "acute",
                            "ct_hypodensity_hu": round(contrast, 2), "dwi_ratio": round(ratio, 2)})
    old = np.zeros(shape, bool)
    if rng.random() < cfg.old_infarct_prob:
        old = _infarct(rng, str(rng.choice(["MCA", "PCA", "lacunar"])), mm, tissue)
    lesion = np.zeros(shape, bool)
    for region, _, _ in lesions:
        lesion |= region
    old &= ~lesion

    # ---- skull, scalp, air spaces (distance to the brain, mm)
    dist = ndi.distance_transform_edt(~brain, sampling=cfg.spacing)
    csf_gap = rng.uniform(1.5, 3.5)
    skull_thick = rng.uniform(5.0, 8.0)
    skin_t, fat_t, galea_t = rng.uniform(1.5, 2.5), rng.uniform(2.0, 5.0), rng.uniform(1.0, 2.0)
    outer = csf_gap + skull_thick
    shell_csf = (dist > 0) & (dist <= csf_gap)
    skull = (dist > csf_gap) & (dist <= outer)
    galea = (dist > outer) & (dist <= outer + galea_t)
    fat = (dist > outer + galea_t) & (dist <= outer + galea_t + fat_t)
    skin = (dist > outer + galea_t + fat_t) & (dist <= outer + galea_t + fat_t + skin_t)
    air_cells = np.zeros(shape, bool)
    air_cells |= _ellipsoid(mm, (rng.uniform(-3, 3), rng.uniform(60, 66), rng.uniform(8, 16)), rng.uniform(5, 11, 3))  # frontal
    air_cells |= _ellipsoid(mm, (rng.uniform(-3, 3), rng.uniform(8, 16), rng.uniform(-40, -30)), rng.uniform(8, 13, 3))  # sphenoid
    for sx in (-1.0, 1.0):  # mastoid air cells: clusters of small cells behind the ear
        for _ in range(int(rng.integers(4, 9))):
            c = (sx * rng.uniform(40, 55), rng.uniform(-48, -30), rng.uniform(-45, -28))
            air_cells |= _ellipsoid(mm, c, rng.uniform(2, 5, 3))
    air_cells &= ~brain & (dist > csf_gap)

    # ---- CT (HU), noiseless first
    ct = np.full(shape, -1000.0, np.float32)
    ct[skin | galea] = hu["skin"]
    ct[fat] = hu["fat"]
    depth = np.clip((dist - csf_gap) / skull_thick, 0, 1)
    cortical, diploe = rng.uniform(1300, 1800), rng.uniform(450, 800)
    bone = cortical - (cortical - diploe) * np.sin(np.pi * depth) ** 2
    ct[skull] = bone[skull]
    ct[shell_csf] = hu["csf"]
    ct[air_cells] = -1000.0
    rim = ndi.binary_dilation(air_cells, iterations=1) & ~air_cells & ~brain  # thin bony septa around air cells
    ct[rim] = np.maximum(ct[rim], 600.0)
    par = (frac_gm * hu["gm"] + (1 - frac_gm) * hu["wm"]) * tissue + hu["csf"] * csf
    drop = np.zeros(shape, np.float32)  # overlapping lesions: the stronger change wins (no summing)
    for region, contrast, _ in lesions:
        drop = np.maximum(drop, contrast * ndi.gaussian_filter(region.astype(np.float32), 0.7))
    par -= drop * tissue
    if old.any():
        o = ndi.gaussian_filter(old.astype(np.float32), 0.7)
        par = par * (1 - o) + (hu["csf"] + 2.0) * o
    ct[brain] = par[brain]
    # beam hardening: cupping (brighter next to the inner table) and streaks across the posterior fossa
    dist_in = ndi.distance_transform_edt(brain, sampling=cfg.spacing)
    ct[brain] += rng.uniform(1.5, 4.0) * np.exp(-dist_in[brain] / 8.0)
    base = np.clip((-mm[2] - 10.0) / 25.0, 0, 1) * brain  # weight 1 at the skull base, 0 above z = -10 mm
    streaks = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(2, 6))):
        ang = rng.uniform(-0.35, 0.35)
        off = rng.uniform(-60, -20)
        d_line = np.abs(np.cos(ang) * (mm[1] - off) - np.sin(ang) * mm[0])
        streaks -= rng.uniform(6, 20) * np.exp(-(d_line**2) / (2 * rng.uniform(1.0, 2.5) ** 2))
    ct += streaks * base
    ct = ndi.gaussian_filter(ct, (0.5, 0.5, 0.25))
    # brain mask without the skull's partial-volume rim
    mask = ndi.binary_fill_holes(brain & (ct < 80.0))
    mask = ndi.binary_opening(mask, iterations=1) | (mask & lesion)
    lab, n = ndi.label(mask)
    if n > 1:
        mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    noise_hu = rng.uniform(2.5, 6.0)
    ct_noise = ct_noise_field(rng, shape, noise_hu)
    if cfg.ct_noise:
        ct += ct_noise
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)
    lesion &= mask

    # ---- DWI (b1000 trace, arbitrary units)
    dwi = np.zeros(shape, np.float32)
    dwi[skin | galea | fat] = sig["scalp"]
    tsig = (frac_gm * sig["gm"] + (1 - frac_gm) * sig["wm"]) * tissue + sig["csf"] * csf
    gain = np.ones(shape, np.float32)
    for region, _, ratio in lesions:
        gain = np.maximum(gain, 1.0 + (ratio - 1.0) * np.clip(ndi.gaussian_filter(region.astype(np.float32), 0.7) * 1.4, 0, 1))
    tsig *= gain
    if old.any():
        o = ndi.gaussian_filter(old.astype(np.float32), 0.7)
        tsig = tsig * (1 - o) + sig["csf"] * o
    dwi[brain] = tsig[brain]
    dwi[shell_csf] = sig["csf"]
    # susceptibility: signal loss next to air spaces (orbitofrontal, inferior temporal)
    d_air = ndi.distance_transform_edt(~air_cells, sampling=cfg.spacing) if air_cells.any() else np.full(shape, 1e3)
    loss = 1.0 - rng.uniform(0.4, 0.8) * np.exp(-d_air / rng.uniform(6.0, 10.0))
    if "susceptibility" in effects:
        dwi *= loss
    # EPI distortion along the phase-encoding axis (y = A-P), largest near the air spaces and skull base
    amp = rng.uniform(1.5, 4.0)  # mm
    shift_mm = amp * (np.exp(-d_air / 15.0) + 0.4 * np.clip((-mm[2] - 10.0) / 30.0, 0, 1)) * np.sign(rng.uniform(-1, 1))
    coords = np.indices(shape).astype(np.float32)
    coords[1] += shift_mm / cfg.spacing[1]
    jac = 1.0 + np.gradient(shift_mm / cfg.spacing[1], axis=1)  # pile-up / stretching of signal
    if "epi" in effects:
        dwi = ndi.map_coordinates(dwi, coords, order=1, mode="constant") * np.clip(jac, 0.5, 1.5)
    bias = 1.0 + _smooth_noise(rng, shape, sigma=30.0 / spacing.mean(), amplitude=0.08)
    dwi = ndi.gaussian_filter(dwi * bias if "bias" in effects else dwi, (0.6, 0.6, 0.25))
    noise = rng.uniform(0.025, 0.045)
    n_real, n_imag = rng.normal(0, noise, shape), rng.normal(0, noise, shape)
    if "noise" in effects:
        dwi = np.sqrt((dwi + n_real) ** 2 + n_imag**2)
    dwi = np.round(dwi * cfg.dwi_scale).astype(np.int16)

    # per-lesion facts (connected parts of one territory lesion count as one lesion here)
    vox_ml = float(np.prod(cfg.spacing)) / 1000.0
    for (region, _, _), meta in zip(lesions, lesion_meta):
        meta["volume_ml"] = round(float((region & mask).sum()) * vox_ml, 2)
    # LPS geometry: MNI RAS x,y -> LPS flips x and y; direction diag(-1,-1,1) keeps array order
    origin_ras = centre_mm - (size - 1) / 2 * spacing + np.array([0.0, 0.0, 10.0])
    origin = (float(-origin_ras[0]), float(-origin_ras[1]), float(origin_ras[2]))
    return {
        "ct": ct,
        "dwi": dwi,
        "brainmask": mask.astype(np.uint8),
        "lesion": lesion.astype(np.uint8),
        "spacing": tuple(float(s) for s in cfg.spacing),
        "origin": origin,
        "direction": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
        "meta": {
            "seed": seed,
            "lesion_voxels": int(lesion.sum()),
            "lesions": lesion_meta,
            "old_infarct_ml": round(float(old.sum()) * vox_ml, 2),
            "atrophy": round(atrophy, 2),
            "ct_noise_hu": round(noise_hu, 2),
            "tissue_hu": {k: round(v, 1) for k, v in hu.items()},
            "tissue_dwi": {k: round(v, 3) for k, v in sig.items()},
            "epi_shift_mm": round(amp, 2),
            "midplane_lps": _midplane_lps(rot, scale, centre_mm, shift, size, spacing, origin),
        },
    }


def _midplane_lps(rot, scale, centre_mm, shift, size, spacing, origin) -> dict:
    """The template's mid-sagittal plane (MNI x = 0) in this case's LPS patient coordinates, before the elastic
    warp (a smooth field of about 3 mm that averages out over the brain): unit normal and a point on it.

    Output voxel (x, y, z) at index-mm q sits at template mm ``rot @ (q - (size-1)/2*spacing + (0,0,10)) / scale +
    centre + shift``; x = 0 there is the plane ``rot[0] . q = d`` in index-mm, and LPS = origin + diag(-1,-1,1) q."""
    n = np.asarray(rot[0], float)
    d = -scale * (centre_mm[0] + shift[0]) + float(n @ ((size - 1) / 2 * spacing - np.array([0.0, 0.0, 10.0])))
    q0 = n * d
    flip = np.array([-1.0, -1.0, 1.0])
    return {"normal": [round(float(v), 6) for v in flip * n],
            "point": [round(float(v), 4) for v in np.asarray(origin) + flip * q0]}


def to_image(arr: np.ndarray, case: dict) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # (x,y,z) -> sitk (z,y,x)
    img.SetSpacing(case["spacing"])
    img.SetOrigin(case["origin"])
    img.SetDirection(case["direction"])
    return img


#: the finest grid a phantom is drawn on (x, y, z mm); finer requests (thin-slice series) are drawn here and
#: up-sampled slice by slice while written, so 0.45 mm phantoms fit in a few GB instead of tens
WORK_SPACING = (0.9, 0.9, 1.0)


def _work_config(cfg: PhantomConfig) -> PhantomConfig:
    """``cfg`` itself, or a copy on the working grid when ``cfg`` asks for a finer one."""
    coarse = tuple(max(float(s), w) for s, w in zip(cfg.spacing, WORK_SPACING))
    if coarse == tuple(float(s) for s in cfg.spacing) or cfg.size is not None:
        return cfg
    return dataclasses.replace(cfg, spacing=coarse)


def on_fine_grid(case: dict, cfg: PhantomConfig, seed: int):
    """Yields (tag, (x, y, z) array, geometry) of ``case`` (drawn on a coarser grid of the same field of view and
    centre) on ``cfg``'s finer grid, one volume at a time: trilinear up-sampling slice by slice (labels: > 0.5 of
    the interpolated mask) and, for the CT, fresh noise of the case's level at the fine voxel size."""
    sc, sf = np.asarray(case["spacing"], float), np.asarray(cfg.spacing, float)
    nc, nf = np.asarray(case["ct"].shape), np.asarray(cfg.grid())
    # the grids share their centre: fine index i sits at coarse index (i - (nf-1)/2) * sf/sc + (nc-1)/2
    to_c = [(np.arange(nf[a]) - (nf[a] - 1) / 2) * sf[a] / sc[a] + (nc[a] - 1) / 2 for a in range(3)]
    flip = np.array([-1.0, -1.0, 1.0])  # direction diag(-1, -1, 1)
    origin = np.asarray(case["origin"]) + flip * ((nc - 1) / 2 * sc - (nf - 1) / 2 * sf)
    geo = {"spacing": tuple(float(v) for v in sf), "origin": tuple(float(v) for v in origin), "direction": case["direction"]}
    xx, yy = np.meshgrid(to_c[0], to_c[1], indexing="ij")
    rng = np.random.default_rng(seed + 7_000_003)
    noise_hu = float(case["meta"].get("ct_noise_hu", 0.0))
    for tag in ("ct", "dwi", "brainmask", "lesion"):
        src = case[tag].astype(np.float32)
        out = np.empty(tuple(nf), case[tag].dtype)
        for k, zc in enumerate(to_c[2]):
            v = ndi.map_coordinates(src, [xx, yy, np.full_like(xx, zc)], order=1, mode="nearest")
            if tag in ("brainmask", "lesion"):
                out[:, :, k] = v > 0.5
            elif tag == "ct":
                out[:, :, k] = np.round(v + rng.normal(0.0, noise_hu, v.shape))
            else:
                out[:, :, k] = np.round(v)
        del src
        yield tag, out, geo


def write_datastore(out_dir: str | Path, n_cases: int, first_seed: int = 0, cfg: PhantomConfig | None = None, prefix="phantom") -> list[str]:
    """Writes cases in the MONAI Label local-datastore layout:
    ``<out>/<id>.nii.gz`` (CT) and ``<out>/labels/{dwi,brainmask,lesion}/<id>.nii.gz``. Grids finer than
    WORK_SPACING are drawn on it and up-sampled while written (``on_fine_grid``; the per-lesion facts in
    phantom_cases.json are then those of the working grid)."""
    out = Path(out_dir)
    for tag in ("dwi", "brainmask", "lesion"):
        (out / "labels" / tag).mkdir(parents=True, exist_ok=True)
    cfg = cfg or PhantomConfig()
    work = _work_config(cfg)
    ids, meta = [], {}
    for k in range(n_cases):
        seed = first_seed + k
        case = make_case(seed, work)
        cid = f"{prefix}_{seed:03d}"
        vols = ((t, case[t], case) for t in ("ct", "dwi", "brainmask", "lesion")) if work is cfg else on_fine_grid(case, cfg, seed)
        for tag, arr, geo in vols:
            dest = out / f"{cid}.nii.gz" if tag == "ct" else out / "labels" / tag / f"{cid}.nii.gz"
            img = to_image(arr, geo)
            del arr
            sitk.WriteImage(img, str(dest), useCompression=True)
            del img
        ids.append(cid)
        meta[cid] = {**case["meta"], **({"drawn_on_mm": list(work.spacing)} if work is not cfg else {})}
        del case
    index = out / "phantom_cases.json"
    known = json.loads(index.read_text())["cases"] if index.exists() else {}
    index.write_text(
        json.dumps({"note": "synthetic phantoms on MNI152 anatomy; not patient data", "cases": {**known, **meta}}, indent=1)
    )
    return ids


def loaded_case(seed: int, pre, cfg: PhantomConfig | None = None, prefix: str = "phantom"):
    """One phantom as a ``data.LoadedCase`` built in memory (no files, no SimpleITK): the axial LPS arrays that
    ``data.load_case`` reads from the written case (``to_image`` + ``geometry.to_axial``: (x, y, z) -> (z, y, x) and
    the x and y axes reversed, since the phantom's direction is diag(-1, -1, 1)). Its spacing must be the model's
    in-plane spacing (no resampling here)."""
    from .data import LoadedCase, with_mirror
    from .preprocess import normalize_dwi

    c = make_case(seed, cfg)
    if pre.needs_resampling_spacing(c["spacing"][:2]):
        raise ValueError(f"phantom spacing {c['spacing'][:2]} differs from the model's {pre.inplane_spacing}")

    def ax(a):
        return np.ascontiguousarray(a.transpose(2, 1, 0)[:, ::-1, ::-1])

    brain = ax(c["brainmask"]).astype(np.uint8)
    dwi = ax(c["dwi"]).astype(np.float32)
    norm = lambda clip: normalize_dwi(dwi, brain, pre.dwi_percentiles, pre.dwi_ref_value, clip=clip)
    lc = LoadedCase(f"{prefix}_{seed:03d}", ax(c["ct"]).astype(np.float32), norm(True), brain,
                    ax(c["lesion"]).astype(np.uint8), tuple(reversed(c["spacing"])), None, norm(False))
    lc.meta = c["meta"]
    return with_mirror(lc, pre)
