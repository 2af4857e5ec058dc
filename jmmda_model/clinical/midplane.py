"""Mid-sagittal plane of a head CT and its mirror image across that plane.

Radiologists find an early infarct by comparing the hemispheres; the model gets the same cue as an input
channel: the CT minus its own mirror image. The plane is found by optimising the symmetry of the head itself:
the CT (clipped to 0..100 HU, so skull, scalp outline, brain and ventricles all count and nothing dominates) is
compared with its reflection across a candidate plane on a sample of head voxels, and the plane's yaw, roll and
offset are optimised (scipy's Powell method, a coarse then a fine level, after a yaw scan). Three parameters:
a reflection plane has three degrees of freedom, where a rigid registration to the flipped image has six and
then has to be turned back into a plane.

Coordinates: an axial LPS array ``(z, y, x)`` (``geometry.to_axial``) with spacing ``(sz, sy, sx)`` mm; a plane
is ``n . p = offset`` with ``p = (x*sx, y*sy, z*sz)`` in mm ("index-mm") and ``n`` a unit vector (x, y, z).

The plane is *not trusted* (``trusted = False`` with the reason) when the optimiser did not converge, the plane
is tilted more than ``max_angle_deg`` from the patient's sagittal plane or lies far from the head's centre, the
head is not symmetric enough, or a large part of the brain differs from its mirror (a big asymmetric defect). The
caller then must not use the mirror (``mirror_or_self``) and must report it. The patient's sagittal plane is the
one across the patient's left-right axis as the image's direction cosines place it in the grid (``patient_lr``):
the rows of an oblique series may be turned 25 degrees and more in the slice plane, which is the scanner's doing,
not the head's; the search starts around it and the limit is counted from it. Without it, the grid's own axes.

Only numpy/scipy: no other part of the package is used (clinical/ imports nothing else but ``errors``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy import optimize


@dataclass
class MidPlane:
    normal_xyz: tuple[float, float, float]  # unit normal, index-mm frame (x, y, z)
    offset_mm: float  # n . p = offset_mm
    symmetry_r: float  # correlation of head voxels (0..100 HU) with their mirror image
    asymmetric_fraction: float  # fraction of brain-range voxels whose smoothed mirror difference exceeds 12 HU
    trusted: bool
    reason: str
    seconds: float
    #: the patient's left-right axis in the grid (x, y, z), from the image's direction cosines (None: the grid's x)
    patient_lr_xyz: tuple[float, float, float] | None = None

    def _angle_to_deg(self, axis) -> float:
        """Angle between the plane and the plane across ``axis`` (a unit vector, x y z)."""
        return float(math.degrees(math.acos(min(1.0, abs(float(np.asarray(self.normal_xyz, float) @ axis))))))

    @property
    def angle_from_patient_sagittal_deg(self) -> float:
        """Angle between the plane and the patient's sagittal plane (the grid's, without ``patient_lr_xyz``)."""
        return self._angle_to_deg(self.patient_lr_xyz if self.patient_lr_xyz is not None else (1.0, 0.0, 0.0))

    @property
    def angle_from_sagittal_deg(self) -> float:
        return self._angle_to_deg((1.0, 0.0, 0.0))

    def reflect(self, p: np.ndarray) -> np.ndarray:
        """Reflects points ``p`` (..., 3) given as index-mm (x, y, z)."""
        n = np.asarray(self.normal_xyz, float)
        return p - 2.0 * ((p @ n) - self.offset_mm)[..., None] * n

    def to_dict(self) -> dict:
        d = asdict(self)
        d["normal_xyz"] = [round(float(v), 5) for v in self.normal_xyz]
        d["offset_mm"] = round(float(self.offset_mm), 3)
        d["symmetry_r"] = round(float(self.symmetry_r), 4)
        d["asymmetric_fraction"] = round(float(self.asymmetric_fraction), 4)
        d["seconds"] = round(float(self.seconds), 3)
        d["angle_from_sagittal_deg"] = round(self.angle_from_sagittal_deg, 2)
        if self.patient_lr_xyz is not None:
            d["patient_lr_xyz"] = [round(float(v), 5) for v in self.patient_lr_xyz]
        else:
            d.pop("patient_lr_xyz")
        d["angle_from_patient_sagittal_deg"] = round(self.angle_from_patient_sagittal_deg, 2)
        return d


def _normal(yaw_deg: float, roll_deg: float) -> np.ndarray:
    a, b = math.radians(yaw_deg), math.radians(roll_deg)
    return np.array([math.cos(a) * math.cos(b), math.sin(a) * math.cos(b), math.sin(b)])


class _Level:
    """A smoothed feature volume and a sample of head points, for one resolution level."""

    def __init__(self, feat: np.ndarray, head: np.ndarray, spacing_zyx, sigma_mm: float, n_points: int, rng):
        sp = np.asarray(spacing_zyx, float)
        self.sp_xyz = sp[::-1]
        self.vol = ndi.gaussian_filter(feat, sigma_mm / sp)
        zyx = np.argwhere(head)
        if len(zyx) > n_points:
            zyx = zyx[rng.choice(len(zyx), n_points, replace=False)]
        self.p = (zyx[:, ::-1] * self.sp_xyz).astype(np.float64)  # index-mm (x, y, z)
        self.v = self.vol[tuple(zyx.T)]

    def mirrored(self, n: np.ndarray, d: float) -> np.ndarray:
        q = self.p - 2.0 * ((self.p @ n) - d)[:, None] * n
        idx = (q / self.sp_xyz)[:, ::-1].T  # (3, N) as (z, y, x)
        return ndi.map_coordinates(self.vol, idx, order=1, mode="constant", cval=0.0)

    def cost(self, n: np.ndarray, d: float) -> float:
        return float(np.mean((self.mirrored(n, d) - self.v) ** 2))


def _at_minimum(cost, x, steps=(0.5, 0.5, 0.5), tolerance: float = 1e-3) -> bool:
    """Is ``x`` (yaw deg, roll deg, offset mm) a minimum of ``cost`` to within half a degree and half a millimetre?
    No step of that size along any parameter lowers the cost by more than ``tolerance`` (relative). The optimiser
    may stop on its evaluation budget while already there (an off-centre head took more evaluations to settle):
    this test, not the optimiser's bookkeeping, decides whether the search converged."""
    c0 = cost(x)
    for i, h in enumerate(steps):
        for sgn in (-1.0, 1.0):
            q = np.array(x, float)
            q[i] += sgn * h
            if cost(q) < c0 * (1.0 - tolerance):
                return False
    return True


def patient_lr(direction) -> tuple[float, float, float] | None:
    """The patient's left-right axis (LPS x) in the (x, y, z) frame of an image with these direction cosines (a 3 x 3
    matrix or SimpleITK's 9-tuple, columns the image axes), made to point along +x of the grid; None when the grid's
    x axis is that axis already (within 1e-6)."""
    d = np.asarray(direction, float).reshape(3, 3)
    v = d[0, :] / max(float(np.linalg.norm(d[0, :])), 1e-12)  # d^T e_x
    if v[0] < 0:
        v = -v
    return None if abs(v[0] - 1.0) < 1e-6 else (float(v[0]), float(v[1]), float(v[2]))


def estimate_midplane(ct_hu: np.ndarray, spacing_zyx, max_angle_deg: float = 25.0, max_offset_mm: float = 30.0,
                      min_symmetry_r: float = 0.75, max_asymmetric_fraction: float = 0.25, seed: int = 0,
                      patient_lr_xyz=None) -> MidPlane:
    """The mid-sagittal plane of an axial head CT (HU, (z, y, x)). ``patient_lr_xyz``: the patient's left-right
    axis in the grid (:func:`patient_lr` of the image's direction), where the search starts and from which
    ``max_angle_deg`` is counted; None: the grid's x axis."""
    t0 = time.perf_counter()
    ref = None if patient_lr_xyz is None else tuple(float(v) for v in patient_lr_xyz)
    yaw0 = 0.0 if ref is None else math.degrees(math.atan2(ref[1], ref[0]))
    ct = np.asarray(ct_hu, np.float32)
    feat = np.clip(ct, 0.0, 100.0)
    head = ndi.binary_erosion(ct > -300.0, iterations=1)
    rng = np.random.default_rng(seed)
    if head.sum() < 1000:
        return MidPlane((1.0, 0.0, 0.0), 0.0, float("nan"), float("nan"), False, "too little head in the image",
                        time.perf_counter() - t0, ref)
    sp_xyz = np.asarray(spacing_zyx, float)[::-1]
    zyx = np.argwhere(head)
    centre = zyx.mean(0)[::-1] * sp_xyz  # head centroid, index-mm (x, y, z)

    def plane(params):
        yaw, roll, t = params
        n = _normal(yaw, roll)
        return n, float(n @ (centre + np.array([t, 0.0, 0.0])))

    coarse = _Level(feat, head, spacing_zyx, 4.0, 3000, rng)
    fine = _Level(feat, head, spacing_zyx, 1.5, 10000, rng)
    # yaw scan at the coarse level (the head may lie rotated in the scanner), then Powell coarse -> fine
    starts = [(yaw0 + yaw, 0.0, 0.0) for yaw in np.arange(-30.0, 30.1, 7.5)]
    x0 = min(starts, key=lambda s: coarse.cost(*plane(s)))
    res = optimize.minimize(lambda s: coarse.cost(*plane(s)), x0, method="Powell",
                            options={"xtol": 0.1, "ftol": 1e-4, "maxfev": 300})
    res = optimize.minimize(lambda s: fine.cost(*plane(s)), res.x, method="Powell",
                            options={"xtol": 0.02, "ftol": 1e-6, "maxfev": 300})
    n, d = plane(res.x)
    if n[0] < 0:
        n, d = -n, -d
    mirrored = fine.mirrored(n, d)
    r = float(np.corrcoef(mirrored, fine.v)[0, 1]) if fine.v.std() > 0 else float("nan")
    # asymmetric part of the brain range (0-80 HU): smoothed difference above 12 HU
    brainish = (fine.v > 0.0) & (fine.v < 80.0)
    asym = float(np.mean(np.abs(mirrored[brainish] - fine.v[brainish]) > 12.0)) if brainish.any() else float("nan")
    plane_out = MidPlane(tuple(float(v) for v in n), d, r, asym, True, "", 0.0, ref)
    offset_from_centre = float(n @ centre - d)
    problems = []
    if not res.success and not _at_minimum(lambda q: fine.cost(*plane(q)), res.x):
        problems.append(f"the plane search did not converge ({res.message})")
    if plane_out.angle_from_patient_sagittal_deg > max_angle_deg:
        problems.append(f"plane tilted {plane_out.angle_from_patient_sagittal_deg:.1f} deg from the "
                        f"{'image' if ref is None else 'patient'}'s sagittal plane (limit {max_angle_deg:g})")
    if abs(offset_from_centre) > max_offset_mm:
        problems.append(f"plane {abs(offset_from_centre):.0f} mm from the head's centre (limit {max_offset_mm:g})")
    if not (r >= min_symmetry_r):
        problems.append(f"head symmetry r = {r:.2f} below {min_symmetry_r:g}")
    if not (asym <= max_asymmetric_fraction):
        problems.append(f"{100 * asym:.0f} % of the brain differs from its mirror image (limit "
                        f"{100 * max_asymmetric_fraction:.0f} %): large asymmetric defect")
    plane_out.trusted = not problems
    plane_out.reason = "; ".join(problems)
    plane_out.seconds = time.perf_counter() - t0
    return plane_out


def mirror_volume(vol: np.ndarray, plane: MidPlane, spacing_zyx, order: int = 1) -> np.ndarray:
    """``vol`` (z, y, x) sampled at the mirror image of every voxel: out[p] = vol[reflect(p)]."""
    sp_xyz = np.asarray(spacing_zyx, float)[::-1]
    out = np.empty(vol.shape, np.float32)
    ny, nx = vol.shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx]
    for k in range(vol.shape[0]):  # slice by slice: bounded memory for thin-slice series
        p = np.stack([xx * sp_xyz[0], yy * sp_xyz[1], np.full(xx.shape, k * sp_xyz[2])], -1).astype(np.float64)
        q = plane.reflect(p) / sp_xyz
        out[k] = ndi.map_coordinates(vol, [q[..., 2], q[..., 1], q[..., 0]], order=order, mode="nearest")
    return out


def mirror_or_self(ct_hu: np.ndarray, plane: MidPlane, spacing_zyx) -> np.ndarray:
    """The mirrored CT when the plane is trusted; otherwise the CT itself (its mirror difference is then 0: the
    hemispheric cue is switched off rather than computed across a wrong plane)."""
    return mirror_volume(ct_hu, plane, spacing_zyx) if plane.trusted else np.asarray(ct_hu, np.float32)


@dataclass
class CanonicalPose:
    """In-plane canonical pose of an axial volume: every slice resampled onto a fixed square canvas (``size``
    pixels of ``spacing`` mm, independent of the input grid) rotated by the plane's yaw about a centre point, so the
    mid-sagittal line is vertical and in the canvas' middle column and the brain's centre in its middle row.
    The same head placed anywhere in the image, or turned in the axial plane, lands on the same canvas pixels."""

    yaw_rad: float
    centre_xy_mm: tuple[float, float]  # index-mm of the source point that maps to the canvas centre
    spacing_xy: tuple[float, float]
    size: int
    source_shape_yx: tuple[int, int]
    used_plane: bool

    def _grid(self):
        c = float(self.size // 2)
        v, u = np.mgrid[0 : self.size, 0 : self.size].astype(np.float64)
        du, dv = (u - c) * self.spacing_xy[0], (v - c) * self.spacing_xy[1]
        cos, sin = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        x = self.centre_xy_mm[0] + cos * du - sin * dv
        y = self.centre_xy_mm[1] + sin * du + cos * dv
        return y / self.spacing_xy[1], x / self.spacing_xy[0]  # source pixel coordinates (row, col)

    def forward(self, vol: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """(z, y, x) on the source grid -> (z, size, size) on the canvas."""
        rows, cols = self._grid()
        out = np.empty((vol.shape[0], self.size, self.size), np.float32)
        for k in range(vol.shape[0]):
            out[k] = ndi.map_coordinates(np.asarray(vol[k], np.float32), [rows, cols], order=order, mode="constant", cval=cval)
        return out

    def inverse(self, canvas: np.ndarray, order: int = 1) -> np.ndarray:
        """(z, size, size) on the canvas -> (z, y, x) on the source grid (0 outside the canvas)."""
        h, w = self.source_shape_yx
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        dx, dy = x * self.spacing_xy[0] - self.centre_xy_mm[0], y * self.spacing_xy[1] - self.centre_xy_mm[1]
        cos, sin = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        c = float(self.size // 2)
        u = (cos * dx + sin * dy) / self.spacing_xy[0] + c
        v = (-sin * dx + cos * dy) / self.spacing_xy[1] + c
        out = np.empty((canvas.shape[0], h, w), np.float32)
        for k in range(canvas.shape[0]):
            out[k] = ndi.map_coordinates(canvas[k], [v, u], order=order, mode="constant", cval=0.0)
        return out

    def to_dict(self) -> dict:
        return {"rotated_deg": round(math.degrees(self.yaw_rad), 3), "centre_xy_mm": [round(v, 2) for v in self.centre_xy_mm],
                "canvas_px": self.size, "used_plane": self.used_plane}


def canonical_pose(brain: np.ndarray, spacing_zyx, plane: MidPlane | None, fov_mm: float = 270.0,
                   divisor: int = 8, rotate: bool = False) -> CanonicalPose:
    """The canonical pose of an axial volume: centred on the midline at the brain's centre (from the trusted
    mid-sagittal plane; the brain's centre alone otherwise) on a fixed canvas.

    ``rotate=False`` (default): translation by whole pixels only - the canvas samples the source exactly, no
    interpolation, so whole-pixel shifts of the head give identical network input and output. ``rotate=True``
    also turns the slices by the plane's yaw (interpolated), so a head turned in the axial plane lands upright. It
    is used for models trained with rotation augmentation (``PreprocessConfig.canonical_rotation``): on a model
    trained on unturned, uninterpolated slices it cost 1.2 dB in-brain PSNR and 21 mL of false-bright brain per
    sample case (measured on the earlier demo)."""
    sp = np.asarray(spacing_zyx, float)
    sx, sy = float(sp[2]), float(sp[1])
    zyx = np.argwhere(np.asarray(brain) > 0)
    centre = (zyx.mean(0)[::-1] * sp[::-1]) if len(zyx) else np.array([brain.shape[2] * sx, brain.shape[1] * sy, 0]) / 2
    yaw, used = 0.0, False
    if plane is not None and plane.trusted:
        n = np.asarray(plane.normal_xyz, float)
        yaw = math.atan2(n[1], n[0]) if rotate else 0.0
        centre = centre - (float(n @ centre) - plane.offset_mm) * n  # the point of the plane nearest the centre
        used = True
    if not rotate:  # whole pixels: the canvas coincides with source pixels
        centre = np.array([round(centre[0] / sx) * sx, round(centre[1] / sy) * sy, 0.0])
    size = int(math.ceil(fov_mm / min(sx, sy) / divisor) * divisor)
    return CanonicalPose(yaw, (float(centre[0]), float(centre[1])), (sx, sy), size, tuple(brain.shape[1:]), used)
