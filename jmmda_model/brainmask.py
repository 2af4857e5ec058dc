"""Automatic brain mask from a head CT (SimpleITK): used when no mask is supplied."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .imageio import InputError


def _largest_component(mask: sitk.Image) -> sitk.Image:
    cc = sitk.ConnectedComponent(mask)
    rel = sitk.RelabelComponent(cc, sortByObjectSize=True)
    return sitk.Cast(rel == 1, sitk.sitkUInt8)


def ct_brain_mask(ct: sitk.Image, erode_mm: float = 3.0) -> sitk.Image:
    """Brain (parenchyma + CSF spaces) inside the skull of a non-contrast head CT in HU.

    Steps: smooth; soft-tissue/CSF range (-20..100 HU) excluding a dilated bone mask (>250 HU);
    erode to cut the scalp and bridges, keep the largest component, dilate back, restrict to
    soft tissue, then fill holes slice by slice (ventricles) and in 3-D.
    """
    img = sitk.Cast(ct, sitk.sitkFloat32)
    sp = img.GetSpacing()
    smooth = sitk.SmoothingRecursiveGaussian(img, sigma=[min(s, 1.5) for s in sp])
    bone = sitk.BinaryThreshold(smooth, 250.0, 1e6, 1, 0)
    bone = sitk.BinaryDilate(bone, [max(1, int(round(1.5 / s))) for s in sp])
    soft = sitk.BinaryThreshold(smooth, -20.0, 100.0, 1, 0)
    cand = sitk.And(soft, sitk.Not(bone))
    radius = [max(1, int(round(erode_mm / s))) for s in sp]
    core = sitk.BinaryErode(cand, radius)
    if sitk.GetArrayViewFromImage(core).max() == 0:
        raise InputError("automatic brain mask failed: no intracranial soft tissue found; supply a brain mask")
    core = _largest_component(core)
    # grow back past the erosion; near the inner table only the (unsmoothed-bone) limit applies
    grow = [r + 1 for r in radius]
    inside = sitk.BinaryThreshold(smooth, -20.0, 150.0, 1, 0)
    brain = sitk.And(sitk.BinaryDilate(core, grow), inside)
    # fill holes per axial slice (index 0 after orientation to LPS is the slice axis)
    oriented = sitk.DICOMOrient(brain, "LPS")
    a = sitk.GetArrayFromImage(oriented).astype(bool)
    for k in range(a.shape[0]):
        a[k] = ndi.binary_fill_holes(a[k])
    a = ndi.binary_fill_holes(a)
    filled = sitk.GetImageFromArray(a.astype(np.uint8))
    filled.CopyInformation(oriented)
    out = sitk.DICOMOrient(filled, sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ct.GetDirection()))
    out.CopyInformation(ct)
    return sitk.Cast(out, sitk.sitkUInt8)
