"""Paired CT / DWI / brain-mask / lesion-mask phantoms built on real anatomy.

Anatomy: the MNI152 2009 grey-matter, white-matter and brain-mask templates shipped inside the
``nilearn`` wheel (no download). Each case gets its own random affine + smooth elastic
deformation, a skull and scalp grown around the brain, 0-3 ischaemic lesions (subtle CT
hypodensity, bright DWI), a DWI bias field and realistic noise (correlated Gaussian in HU on CT,
Rician on DWI). Geometry is clinical: 2.5 x 2.5 mm in plane, 5 mm axial slices, LPS direction.

These are PHANTOMS for software testing and demonstration; they are not patient data.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

HU = {"gm": 38.0, "wm": 29.0, "csf": 7.0, "scalp": 40.0, "air": -1000.0}
DWI = {"gm": 1.0, "wm": 0.82, "csf": 0.22, "scalp": 0.12}


@dataclass
class PhantomConfig:
    spacing: tuple[float, float, float] = (2.5, 2.5, 5.0)  # x, y, z in mm
    size: tuple[int, int, int] = (96, 112, 36)  # x, y, z voxels
    max_lesions: int = 3
    ct_noise_hu: float = 4.0
    dwi_noise: float = 0.035
    dwi_scale: float = 800.0  # arbitrary DWI units of the b1000 trace, stored as int16


@functools.lru_cache(maxsize=1)
def _templates():
    """MNI152 GM, WM, brain mask (2 mm) and their affine; read once per process (arrays are not modified)."""
    from nilearn import datasets  # templates ship inside the wheel

    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    brain = datasets.load_mni152_brain_mask(resolution=2)
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


def _lesions(rng, tissue: np.ndarray, spacing, max_lesions: int) -> np.ndarray:
    """Irregular ellipsoidal infarcts inside brain tissue, biased towards MCA territory (lateral)."""
    lesion = np.zeros(tissue.shape, bool)
    n = int(rng.integers(0, max_lesions + 1))
    candidates = np.argwhere(tissue > 0.6)
    if n == 0 or len(candidates) == 0:
        return lesion
    center_x = tissue.shape[0] / 2
    lateral = np.abs(candidates[:, 0] - center_x)
    p = lateral**2 + 1.0
    p /= p.sum()
    grid = np.indices(tissue.shape).astype(np.float32)
    for _ in range(n):
        c = candidates[rng.choice(len(candidates), p=p)]
        radii_mm = rng.uniform(6.0, 18.0, size=3)
        d = sum(((grid[i] - c[i]) * spacing[i] / radii_mm[i]) ** 2 for i in range(3))
        rough = _smooth_noise(rng, tissue.shape, 2.0, 0.35)
        lesion |= d + rough < 1.0
    return lesion & (tissue > 0.35)


def make_case(seed: int, cfg: PhantomConfig | None = None) -> dict:
    """Returns numpy arrays (x, y, z order) and the geometry of one phantom case."""
    cfg = cfg or PhantomConfig()
    rng = np.random.default_rng(seed)
    gm_t, wm_t, brain_t, affine = _templates()
    # through-plane partial volume of thick slices
    z_sigma = cfg.spacing[2] / 2.0 / 2.355 * 2
    gm_t, wm_t, brain_t = (ndi.gaussian_filter1d(a, z_sigma, axis=2) for a in (gm_t, wm_t, brain_t))

    size = np.array(cfg.size)
    spacing = np.array(cfg.spacing)
    idx = np.indices(cfg.size).reshape(3, -1).astype(np.float64)
    # output grid in mm, centred on the brain (MNI RAS mm)
    centre_vox = np.array(np.nonzero(brain_t > 0.5)).mean(1)
    centre_mm = affine[:3, :3] @ centre_vox + affine[:3, 3]
    pts = (idx - (size[:, None] - 1) / 2) * spacing[:, None]
    rot = _random_rotation(rng)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-4, 4, size=3)
    src_mm = (rot @ pts) / scale + centre_mm[:, None] + shift[:, None]
    src_vox = np.linalg.solve(affine[:3, :3], src_mm - affine[:3, 3:4])
    # smooth elastic deformation (in template voxels)
    for axis in range(3):
        src_vox[axis] += _smooth_noise(rng, cfg.size, sigma=6.0, amplitude=2.5).ravel()

    def warp(a, order=1):
        return ndi.map_coordinates(a, src_vox, order=order, mode="constant", cval=0.0).reshape(cfg.size)

    gm, wm, brain_p = warp(gm_t), warp(wm_t), warp(brain_t)
    brain = ndi.binary_fill_holes(brain_p > 0.5)
    tissue = np.clip(gm + wm, 0, 1) * brain
    csf = np.clip(1.0 - tissue, 0, 1) * brain
    # skull and scalp from distance to brain (mm)
    dist = ndi.distance_transform_edt(~brain, sampling=cfg.spacing)
    csf_gap = rng.uniform(1.5, 3.5)
    skull_thick = rng.uniform(5.0, 8.0)
    scalp_thick = rng.uniform(4.0, 7.0)
    shell_csf = (dist > 0) & (dist <= csf_gap)
    skull = (dist > csf_gap) & (dist <= csf_gap + skull_thick)
    scalp = (dist > csf_gap + skull_thick) & (dist <= csf_gap + skull_thick + scalp_thick)

    lesion = _lesions(rng, tissue, cfg.spacing, cfg.max_lesions)

    # ---- CT (HU)
    ct = np.full(cfg.size, HU["air"], np.float32)
    ct[scalp] = HU["scalp"]
    # cortical bone dense at the tables, diploe less dense in the middle of the skull
    depth = np.clip((dist - csf_gap) / skull_thick, 0, 1)
    bone = 1500.0 - 900.0 * np.sin(np.pi * depth) ** 2
    ct[skull] = bone[skull]
    ct[shell_csf] = HU["csf"]
    parenchyma = gm * HU["gm"] + wm * HU["wm"] + csf * HU["csf"]
    ct[brain] = parenchyma[brain] / np.maximum((gm + wm + csf)[brain], 1e-3)
    hypo = rng.uniform(2.0, 7.0)  # early ischaemic change is subtle on CT
    ct[lesion] -= hypo * ndi.gaussian_filter(lesion.astype(np.float32), 1.0)[lesion] * 1.5
    ct = ndi.gaussian_filter(ct, (0.6, 0.6, 0.3))
    ct += ndi.gaussian_filter(rng.standard_normal(cfg.size).astype(np.float32), 0.7) * cfg.ct_noise_hu * 2.2
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.int16)

    # ---- DWI (b1000 trace, arbitrary units)
    dwi = np.zeros(cfg.size, np.float32)
    dwi[scalp] = DWI["scalp"]
    tissue_sig = gm * DWI["gm"] + wm * DWI["wm"] + csf * DWI["csf"]
    dwi[brain] = tissue_sig[brain] / np.maximum((gm + wm + csf)[brain], 1e-3)
    dwi[shell_csf] = DWI["csf"]
    bright = rng.uniform(1.7, 2.5)
    dwi[lesion] *= 1.0 + (bright - 1.0) * np.clip(ndi.gaussian_filter(lesion.astype(np.float32), 1.0)[lesion] * 1.6, 0, 1)
    bias = 1.0 + _smooth_noise(rng, cfg.size, sigma=15.0, amplitude=0.08)
    dwi = ndi.gaussian_filter(dwi * bias, (0.7, 0.7, 0.3))
    sigma = cfg.dwi_noise
    dwi = np.sqrt((dwi + rng.normal(0, sigma, cfg.size)) ** 2 + rng.normal(0, sigma, cfg.size) ** 2)
    dwi = np.round(dwi * cfg.dwi_scale).astype(np.int16)

    # LPS geometry: MNI RAS x,y -> LPS flips x and y; direction diag(-1,-1,1) keeps array order
    origin = (
        float(-(centre_mm[0] - (size[0] - 1) / 2 * spacing[0])),
        float(-(centre_mm[1] - (size[1] - 1) / 2 * spacing[1])),
        float(centre_mm[2] - (size[2] - 1) / 2 * spacing[2]),
    )
    return {
        "ct": ct,
        "dwi": dwi,
        "brainmask": brain.astype(np.uint8),
        "lesion": lesion.astype(np.uint8),
        "spacing": tuple(float(s) for s in cfg.spacing),
        "origin": origin,
        "direction": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
        "meta": {"seed": seed, "lesion_voxels": int(lesion.sum()), "ct_hypodensity_hu": round(hypo, 2), "dwi_lesion_ratio": round(bright, 2)},
    }


def to_image(arr: np.ndarray, case: dict) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # (x,y,z) -> sitk (z,y,x)
    img.SetSpacing(case["spacing"])
    img.SetOrigin(case["origin"])
    img.SetDirection(case["direction"])
    return img


def write_datastore(out_dir: str | Path, n_cases: int, first_seed: int = 0, cfg: PhantomConfig | None = None, prefix="phantom") -> list[str]:
    """Writes cases in the MONAI Label local-datastore layout:
    ``<out>/<id>.nii.gz`` (CT) and ``<out>/labels/{dwi,brainmask,lesion}/<id>.nii.gz``."""
    out = Path(out_dir)
    for tag in ("dwi", "brainmask", "lesion"):
        (out / "labels" / tag).mkdir(parents=True, exist_ok=True)
    ids, meta = [], {}
    for k in range(n_cases):
        seed = first_seed + k
        case = make_case(seed, cfg)
        cid = f"{prefix}_{seed:03d}"
        sitk.WriteImage(to_image(case["ct"], case), str(out / f"{cid}.nii.gz"), useCompression=True)
        for tag in ("dwi", "brainmask", "lesion"):
            sitk.WriteImage(to_image(case[tag], case), str(out / "labels" / tag / f"{cid}.nii.gz"), useCompression=True)
        ids.append(cid)
        meta[cid] = case["meta"]
    index = out / "phantom_cases.json"
    known = json.loads(index.read_text())["cases"] if index.exists() else {}
    index.write_text(
        json.dumps({"note": "synthetic phantoms on MNI152 anatomy; not patient data", "cases": {**known, **meta}}, indent=1)
    )
    return ids
