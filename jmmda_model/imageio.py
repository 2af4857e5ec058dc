"""Reading and validating CT / mask / DWI volumes, with clear errors for bad input."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: refuse volumes above this many voxels (default ~ 512 x 512 x 1000); override with JMMDA_MAX_VOXELS
MAX_VOXELS = int(os.environ.get("JMMDA_MAX_VOXELS", 512 * 512 * 1000))
SYNTHETIC_NOTE = "SYNTHETIC DWI (JMMDA-GAN) - not for diagnosis"


class InputError(ValueError):
    """Input data cannot be used (the message says why and what to do). Maps to HTTP 4xx."""


def read_image(path: str | Path, what: str = "image") -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what}: file not found: {path}")
    if path.is_dir():
        from .dicom import read_dicom_series  # a folder means a DICOM series

        img = read_dicom_series(path)
    else:
        if path.stat().st_size == 0:
            raise InputError(f"{what}: file is empty: {path.name}")
        if path.name.endswith(".gz"):
            _verify_gzip(path, what)
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"{what}: cannot read {path.name} as a medical image (corrupt or unsupported format)") from exc
    check_volume(img, what)
    return img


def _verify_gzip(path: Path, what: str) -> None:
    """ITK reads a truncated .gz without complaint (zero-filled voxels); decompress fully first."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{what}: {path.name} is truncated or corrupt ({exc})") from exc


def check_volume(img: sitk.Image, what: str = "image") -> None:
    if img.GetDimension() != 3 or min(img.GetSize()) < 2:
        raise InputError(f"{what}: a 3-D volume is required, got size {img.GetSize()}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what}: a scalar (single-component) volume is required, got {img.GetNumberOfComponentsPerPixel()} components")
    n = int(np.prod(img.GetSize(), dtype=np.int64))
    if n > MAX_VOXELS:
        raise InputError(f"{what}: volume of {img.GetSize()} = {n} voxels exceeds the limit of {MAX_VOXELS} voxels; crop or resample it")
    sp = np.array(img.GetSpacing())
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{what}: invalid voxel spacing {tuple(sp)}")


def check_ct(ct: sitk.Image) -> np.ndarray:
    """Returns the CT array (z, y, x) as float32 after checking it looks like a head CT in HU."""
    a = sitk.GetArrayFromImage(ct).astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise InputError("CT: contains NaN or infinite values")
    p1, p999 = np.percentile(a, [1, 99.9])
    if p1 > -400 or p999 < 150 or a.max() > 40000:
        raise InputError(
            f"CT: intensities do not look like a CT in Hounsfield units (1st percentile {p1:.0f}, 99.9th {p999:.0f}); "
            "expected air near -1000 HU and bone above 300 HU. Is this an MR image or a CT without rescale slope/intercept?"
        )
    return a


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol, atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, tol * float(np.max(a.GetSpacing()))) * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def check_mask(mask: sitk.Image, ref: sitk.Image, what: str = "brain mask", min_ml: float = 50.0) -> np.ndarray:
    """Returns the mask array (z, y, x) as uint8 {0,1} after checking geometry and content."""
    if not same_geometry(mask, ref):
        raise InputError(
            f"{what}: geometry does not match the CT (mask size {mask.GetSize()} spacing {tuple(round(s, 4) for s in mask.GetSpacing())} "
            f"origin {tuple(round(o, 2) for o in mask.GetOrigin())}; CT size {ref.GetSize()} spacing "
            f"{tuple(round(s, 4) for s in ref.GetSpacing())} origin {tuple(round(o, 2) for o in ref.GetOrigin())}). "
            "Resample the mask onto the CT grid."
        )
    m = sitk.GetArrayFromImage(mask)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{what}: contains NaN or infinite values")
    m = (m > 0.5).astype(np.uint8)
    ml = float(m.sum()) * float(np.prod(mask.GetSpacing())) / 1000.0
    if ml == 0:
        raise InputError(f"{what}: mask is empty")
    if ml < min_ml:
        raise InputError(f"{what}: mask covers only {ml:.1f} mL (< {min_ml:.0f} mL); it cannot be a brain mask")
    return m


def copy_geometry(arr_zyx: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_zyx)
    img.CopyInformation(ref)
    return img


def label_synthetic(img: sitk.Image) -> sitk.Image:
    """Stamps the synthetic-image note into the metadata (NIfTI 'descrip', NRRD/MetaImage notes)."""
    img.SetMetaData("descrip", SYNTHETIC_NOTE[:79])
    img.SetMetaData("ITK_FileNotes", SYNTHETIC_NOTE[:79])
    return img


def write_image(img: sitk.Image, path: str | Path) -> Path:
    """Atomic write: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".nii.gz"
    tmp = path.with_name(f".{path.name.split('.')[0]}.{os.getpid()}.tmp{suffix}")
    sitk.WriteImage(img, str(tmp), useCompression=True)
    os.replace(tmp, path)
    return path
