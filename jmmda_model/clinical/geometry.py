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


def resample_to(reference: sitk.Image, moving: sitk.Image, transform: sitk.Transform | None = None,
                label: bool = False) -> sitk.Image:
    """Moving image on the reference grid (linear, or nearest neighbour for labels)."""
    return sitk.Resample(
        moving, reference, transform or sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
        0.0, moving.GetPixelID(),
    )
