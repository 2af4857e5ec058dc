"""Geometry in one place: orientation (axial-first LPS arrays and back), in-plane resampling, resampling onto a
grid, grid comparison and copying. Every other module asks this one."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol, atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, tol * float(np.max(a.GetSpacing()))) * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def copy_geometry(arr_zyx: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_zyx)
    img.CopyInformation(ref)
    return img


def orientation_code(img: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


def to_axial(img: sitk.Image) -> sitk.Image:
    """Permutes/flips (no interpolation) so that array axis 0 runs inferior->superior (LPS).
    Then ``GetArrayFromImage(...)[k]`` is axial slice k. An image already in LPS order is returned as is (no
    copy: a thin-slice series is hundreds of MB)."""
    if orientation_code(img) == "LPS":
        return img
    return sitk.DICOMOrient(img, "LPS")


def from_axial(img: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """Inverse of :func:`to_axial`; the result carries the exact geometry of ``ref``."""
    code = orientation_code(ref)
    back = img if orientation_code(img) == code else sitk.DICOMOrient(img, code)
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
    new_size = [max(2, int(round(size[i] * sp[i] / new_sp[i]))) for i in range(2)] + [size[2]]
    d = np.array(img.GetDirection()).reshape(3, 3)
    # keep the physical centre of the field of view
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size]))
    origin = centre - d @ (np.array([(new_size[i] - 1) / 2 * new_sp[i] for i in range(3)]))
    pix = img.GetPixelID()
    mm = sitk.MinimumMaximumImageFilter()
    mm.Execute(img)
    fill = 0.0 if label else float(mm.GetMinimum())
    out = None
    # in chunks of slices: the full-resolution float copy of the smoothing never exists at once (a 320-slice
    # 0.5 mm series held 2 x 336 MB here)
    chunk = max(1, int(2**25 // max(size[0] * size[1], 1)))
    for k0 in range(0, size[2], chunk):
        part = img[:, :, k0 : min(size[2], k0 + chunk)]
        if not label and max(sigma) > 0:
            smooth = sitk.Cast(part, sitk.sitkFloat32)
            for axis, sg in enumerate(sigma):
                if sg > 0:
                    f = sitk.RecursiveGaussianImageFilter()
                    f.SetSigma(sg)
                    f.SetDirection(axis)
                    f.SetNormalizeAcrossScale(False)
                    smooth = f.Execute(smooth)
            part = sitk.Cast(sitk.Round(smooth), pix) if pix not in (sitk.sitkFloat32, sitk.sitkFloat64) else sitk.Cast(smooth, pix)
        o = np.array(origin) + d @ np.array([0.0, 0.0, k0 * new_sp[2]])
        res = sitk.Resample(part, [new_size[0], new_size[1], part.GetSize()[2]], sitk.Transform(),
                            sitk.sitkNearestNeighbor if label else sitk.sitkLinear, tuple(o), new_sp, img.GetDirection(),
                            fill, pix)
        a = sitk.GetArrayViewFromImage(res)
        if out is None:
            out = np.empty((size[2], new_size[1], new_size[0]), a.dtype)
        out[k0 : k0 + a.shape[0]] = a
    result = sitk.GetImageFromArray(out)
    result.SetSpacing(new_sp)
    result.SetOrigin(tuple(float(v) for v in origin))
    result.SetDirection(img.GetDirection())
    return result


def resample_to(reference: sitk.Image, moving: sitk.Image, transform: sitk.Transform | None = None,
                label: bool = False) -> sitk.Image:
    """Moving image on the reference grid (linear, or nearest neighbour for labels)."""
    return sitk.Resample(
        moving, reference, transform or sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
        0.0, moving.GetPixelID(),
    )
