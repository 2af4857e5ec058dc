"""Automatic brain mask from a head CT (SimpleITK): used when no mask is supplied."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..errors import InputError


def _largest_component(mask: sitk.Image) -> sitk.Image:
    cc = sitk.ConnectedComponent(mask)
    rel = sitk.RelabelComponent(cc, sortByObjectSize=True)
    return sitk.Cast(rel == 1, sitk.sitkUInt8)


def ct_brain_mask(ct: sitk.Image, erode_mm: float = 3.0, coarse_mm: float = 2.0) -> sitk.Image:
    """Brain (parenchyma + CSF spaces) inside the skull of a non-contrast head CT in HU.

    Steps: smooth; soft-tissue/CSF range (-20..100 HU) excluding a dilated bone mask (>250 HU);
    erode to cut the scalp and bridges, keep the largest component, dilate back, restrict to
    soft tissue, then fill holes slice by slice (ventricles) and in 3-D.

    Images finer than ``coarse_mm`` are first averaged down by whole factors (BinShrink) and the mask is put back
    on the CT grid by nearest neighbour: a 0.5 mm thin-slice series is 64x fewer voxels to process. At 2 mm the
    mask is as good as at full resolution (a 0.9 x 0.9 x 1 mm phantom: Dice 0.985 against its true brain either
    way, 0.6 s instead of 4.3 s), and the network works at 1.8 mm anyway.
    """
    factors = [max(1, int(coarse_mm // s)) for s in ct.GetSpacing()]
    if max(factors) > 1:
        coarse = ct_brain_mask(sitk.BinShrink(sitk.Cast(ct, sitk.sitkFloat32), factors), erode_mm, coarse_mm=0.0)
        return sitk.Cast(sitk.Resample(coarse, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0), sitk.sitkUInt8)
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


#: plausible adult intracranial volume (mL) and largest head width (mm)
BRAIN_ML_RANGE = (500.0, 3000.0)
MAX_HEAD_WIDTH_MM = 280.0
MIN_SKULL_FRACTION = 0.25
#: voxel pitch (mm) the head check works at (every n-th voxel of finer images)
COARSE_MM = 2.0


def check_head_ct(ct: sitk.Image, brain: np.ndarray) -> dict:
    """Refuses a CT that is not a head CT (InputError), from three independent signs:

    * brain-mask volume outside ``BRAIN_ML_RANGE`` (an abdomen gave a 5,365 mL "brain");
    * body wider than ``MAX_HEAD_WIDTH_MM`` in the slices that hold the mask (heads are ~140-200 mm wide);
    * the mask not enclosed by bone: less than ``MIN_SKULL_FRACTION`` of the 3-12 mm shell around it in its
      axial slices is bone (> 300 HU), i.e. no skull.
    ``brain`` is the mask as a (z, y, x) array on ``ct``'s grid. Returns the measured values.

    Width and skull shell are measured on every n-th voxel per axis (about ``COARSE_MM`` apart, no interpolation):
    a 0.5 mm thin-slice series took 80 s for the shell's morphology at full resolution, about 1 s this way."""
    sp_full = np.array(ct.GetSpacing(), float)  # x, y, z
    b_full = np.asarray(brain) > 0
    ml = float(b_full.sum()) * float(np.prod(sp_full)) / 1000.0
    step = [max(1, int(COARSE_MM // s)) for s in sp_full[::-1]]  # numpy (z, y, x) strides
    sl = tuple(slice(None, None, k) for k in step)
    a = sitk.GetArrayViewFromImage(ct)[sl]
    b = b_full[sl]
    sp = sp_full * np.array(step[::-1], float)
    facts = {"brain_ml": round(ml, 1)}
    if not BRAIN_ML_RANGE[0] <= ml <= BRAIN_ML_RANGE[1]:
        raise InputError(f"CT: the brain mask is {ml:.0f} mL, outside the {BRAIN_ML_RANGE[0]:.0f}-{BRAIN_ML_RANGE[1]:.0f} mL of an "
                         "adult head; is this a head CT (and the mask a brain mask)?")
    # work in the image's own axes; the slice axis is the one closest to superior-inferior
    d = np.array(ct.GetDirection()).reshape(3, 3)
    slice_axis_xyz = int(np.argmax(np.abs(d[2])))  # image axis (x=0,y=1,z=2) most aligned with patient S
    arr_axis = 2 - slice_axis_xyz  # numpy axis order is (z, y, x)
    inplane = [i for i in range(3) if i != slice_axis_xyz]
    widths = []
    for k in np.nonzero(b.any(axis=tuple(i for i in range(3) if i != arr_axis)))[0][::2]:
        body = np.take(a, k, axis=arr_axis) > -300
        if body.any():
            ext = [np.ptp(np.nonzero(body.any(axis=1 - j))[0]) + 1 for j in range(2)]
            # np.take drops arr_axis: remaining numpy axes are the two in-plane image axes, reversed
            sizes = [ext[j] * sp[inplane[::-1][j]] for j in range(2)]
            widths.append(max(sizes))
    width = float(np.median(widths)) if widths else 0.0
    facts["head_width_mm"] = round(width, 1)
    if width > MAX_HEAD_WIDTH_MM:
        raise InputError(f"CT: the body is {width:.0f} mm wide where the brain mask lies (a head is ~140-200 mm); "
                         "this does not look like a head CT")
    r_in = [max(1, int(round(3.0 / s))) for s in sp[::-1]]
    r_out = [max(1, int(round(12.0 / s))) for s in sp[::-1]]
    r_in[arr_axis] = r_out[arr_axis] = 0  # in-plane shell: thick slices would otherwise reach the skull base
    near = ndi.binary_dilation(b, structure=_ellipsoid(r_in))
    shell = ndi.binary_dilation(b, structure=_ellipsoid(r_out)) & ~near
    frac = float((a[shell] > 300).mean()) if shell.any() else 0.0
    facts["skull_fraction"] = round(frac, 3)
    if frac < MIN_SKULL_FRACTION:
        raise InputError(f"CT: only {frac:.0%} of the tissue around the brain mask is bone; no skull encloses it, "
                         "so this does not look like a head CT with a brain mask")
    return facts


def _ellipsoid(radii) -> np.ndarray:
    r = [max(int(x), 0) for x in radii]
    g = np.ogrid[tuple(slice(-x, x + 1) for x in r)]
    return sum((gi / max(x, 1)) ** 2 if x else gi.astype(float) ** 2 for gi, x in zip(g, r)) <= 1.0
