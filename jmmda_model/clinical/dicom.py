"""DICOM in and out.

* :func:`read_dicom_series` - one series from a folder (SimpleITK/GDCM), rescale applied (CT in HU);
* :func:`write_ct_series` - a CT volume as a CT Image Storage series (tests, phantom export);
* :func:`export_synthetic_dwi` - the synthetic DWI as an MR series that references the source CT:
  same patient/study/frame of reference, new series/SOP UIDs, ImageType DERIVED\\SECONDARY,
  SeriesDescription containing SYNTHETIC, DerivationDescription and SourceImageSequence;
* :func:`stow` - STOW-RS upload to a DICOMweb server (e.g. Orthanc) with dicomweb-client.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..errors import InputError, PacsError
from .geometry import orientation_code

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SYNTHETIC_SERIES_DESCRIPTION = "SYNTHETIC DWI (JMMDA-GAN) - NOT FOR DIAGNOSIS"
DWI_SCALE = 1000.0  # stored value = normalised DWI x 1000


def _image_headers(folder: Path, multiframe: list | None = None):
    """(header, path) of every DICOM image in a folder that has a position and an orientation, by file name;
    files that are not DICOM are skipped; enhanced (multi-frame) images are collected in ``multiframe``."""
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001, S112 - non-DICOM files in the folder are ignored
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            yield ds, p
        elif multiframe is not None and ("PerFrameFunctionalGroupsSequence" in ds or int(getattr(ds, "NumberOfFrames", 1) or 1) > 1):
            multiframe.append(p)


def list_series(folder: str | Path) -> list[dict]:
    """Every image series in a folder: UID, description, number of images, orientation, modality."""
    return _summarise(list(_image_headers(Path(folder))))


def _summarise(headers) -> list[dict]:
    series: dict[str, dict] = {}
    for ds, _ in headers:
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            continue
        s = series.setdefault(uid, {"uid": uid, "description": str(getattr(ds, "SeriesDescription", "") or ""),
                                    "modality": str(getattr(ds, "Modality", "") or ""), "images": 0, "orientations": set()})
        s["images"] += 1
        s["orientations"].add(_orientation_label(ds.ImageOrientationPatient))
    out = []
    for s in series.values():
        s["orientation"] = "/".join(sorted(s.pop("orientations"))) or "?"
        out.append(s)
    return sorted(out, key=lambda s: -s["images"])


def _orientation_label(iop) -> str:
    n = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(n)))]


def _series_table(series: list[dict]) -> str:
    return "; ".join(f"{s['uid']} ({s['modality']} '{s['description']}', {s['images']} images, {s['orientation']})" for s in series)


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Reads one DICOM series from a folder (the only one, or the one with ``series_uid``), rescale applied
    (CT in HU), with its geometry checked from the headers:

    * localizers/scouts in the series (ImageType LOCALIZER, or an orientation other than the series'
      majority) are left out; mixed orientations otherwise are refused;
    * slices must be evenly spaced along the slice normal: a missing slice, a gap or duplicate positions
      are refused with the positions named (ITK would silently stretch the spacing);
    * a gantry tilt (slice positions sheared along the slice normal) is corrected by shifting every slice in
      plane onto an orthogonal grid, as dcm2niix does, and reported in the image's metadata."""
    return _read_series(Path(folder), series_uid)[0]


def _read_series(folder: Path, series_uid: str | None):
    """(volume, its sorted slice headers); the folder's headers are read once."""
    if not folder.is_dir():
        raise InputError(f"DICOM folder not found: {folder}")
    multiframe: list = []
    headers = list(_image_headers(folder, multiframe))
    series = _summarise(headers)
    if not series:
        if multiframe:
            raise InputError(f"{folder} holds enhanced (multi-frame) DICOM images ({multiframe[0].name}"
                             f"{f' and {len(multiframe) - 1} more' if len(multiframe) > 1 else ''}), which are not "
                             "supported; export the CT as a classic single-frame series")
        raise InputError(f"no DICOM series found in {folder}")
    if series_uid is None:
        if len(series) > 1:
            raise InputError(f"{folder} holds {len(series)} DICOM series; choose one with --series-uid: {_series_table(series)}")
        series_uid = series[0]["uid"]
    elif series_uid not in {s["uid"] for s in series}:
        raise InputError(f"series {series_uid} not found in {folder}; it holds: {_series_table(series)}")
    dss, paths, notes = _series_slices(headers, series_uid)
    photometric = {str(getattr(d, "PhotometricInterpretation", "")).strip() for d in dss}
    if photometric - {"MONOCHROME2"}:
        raise InputError(f"DICOM series {series_uid} has PhotometricInterpretation {', '.join(sorted(photometric))}: only "
                         "MONOCHROME2 CT is supported (MONOCHROME1 inverts the grey scale; colour is not a CT)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in paths])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {series_uid}: {_unreadable_reason(paths)}") from exc
    return _apply_geometry(img, dss, notes), dss


def _unreadable_reason(paths) -> str:
    """Which file of a series could not be decoded, and why (truncated pixel data, or a transfer syntax that no
    decoder here handles)."""
    for p in paths:
        try:
            ds = pydicom.dcmread(p)
        except Exception as exc:  # noqa: BLE001
            return f"{Path(p).name} is truncated or corrupt ({exc.__class__.__name__})"
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if "PixelData" not in ds:
            return f"{Path(p).name} has no pixel data"
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8 * int(getattr(ds, "SamplesPerPixel", 1) or 1)
        if ts is not None and not ts.is_compressed and len(ds.PixelData) < expected:
            return f"{Path(p).name} is truncated: {len(ds.PixelData)} of {expected} bytes of pixel data"
        if ts is not None and ts.is_compressed:
            try:
                ds.pixel_array  # noqa: B018 - decodes, or says why not
            except Exception:  # noqa: BLE001
                return (f"{Path(p).name}: its transfer syntax {ts.name} ({ts}) cannot be decoded here; "
                        "convert the series (e.g. dcmdjpeg / gdcmconv --raw) or install a decoder for it")
    return "the image reader failed on it (no single file could be blamed)"


def _series_slices(headers, series_uid: str):
    """Headers and files of the series' image slices, sorted along the normal, after the checks above."""
    items = [(ds, p) for ds, p in headers if str(getattr(ds, "SeriesInstanceUID", "")) == series_uid]
    notes = []
    loc = [it for it in items if "LOCALIZER" in [str(x).upper() for x in getattr(it[0], "ImageType", [])]]
    if loc:
        notes.append(f"{len(loc)} localizer image(s) left out")
        items = [it for it in items if it not in loc]
    labels = [tuple(np.round(np.array(it[0].ImageOrientationPatient, float), 3)) for it in items]
    if labels:
        major = max(set(labels), key=labels.count)
        other = [it for it, lab in zip(items, labels) if lab != major]
        if other and len(other) <= 3 and len(other) < len(items) / 4:
            notes.append(f"{len(other)} image(s) with another orientation (scout) left out")
            items = [it for it, lab in zip(items, labels) if lab == major]
        elif other:
            raise InputError(f"DICOM series {series_uid} mixes image orientations ({len(set(labels))} different); "
                             "it cannot be read as one volume")
    if len(items) < 2:
        raise InputError(f"DICOM series {series_uid} has {len(items)} slice(s); a 3-D volume is required")
    iop = np.array(items[0][0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    items.sort(key=lambda it: float(np.dot(normal, np.array(it[0].ImagePositionPatient, float))))
    z = np.array([float(np.dot(normal, np.array(it[0].ImagePositionPatient, float))) for it in items])
    dz = np.diff(z)
    if np.any(dz < 1e-3):
        k = int(np.argmin(dz))
        raise InputError(f"DICOM series {series_uid} has two slices at the same position ({z[k]:.2f} mm); "
                         "duplicate or overlapping acquisitions must be separated first")
    step = float(np.median(dz))
    bad = np.nonzero(np.abs(dz - step) > max(0.01 * step, 0.05))[0]
    if bad.size:
        where = ", ".join(f"{z[k]:.2f}->{z[k + 1]:.2f} mm" for k in bad[:5])
        raise InputError(f"DICOM series {series_uid} is not evenly spaced (usual step {step:.2f} mm; gaps or missing "
                         f"slices at {where}); a volume built from it would be silently distorted")
    _check_consistent(items, series_uid)
    _check_shear(items, series_uid, iop)
    return [it[0] for it in items], [it[1] for it in items], notes


def _slice_name(it) -> str:
    return f"{Path(it[1]).name} (instance {getattr(it[0], 'InstanceNumber', '?')})"


def _check_consistent(items, series_uid: str) -> None:
    """Every slice of one volume must share pixel spacing, matrix size and orientation; refuse naming the values
    and a slice of each (a 0.45 / 0.5 mm mix once read as a 6.6 degree "tilt")."""
    fields = {
        "PixelSpacing": lambda ds: tuple(round(float(v), 4) for v in getattr(ds, "PixelSpacing", []) or []),
        "Rows": lambda ds: int(getattr(ds, "Rows", 0) or 0),
        "Columns": lambda ds: int(getattr(ds, "Columns", 0) or 0),
        "ImageOrientationPatient": lambda ds: tuple(round(float(v), 4) for v in ds.ImageOrientationPatient),
    }
    for field, get in fields.items():
        seen: dict = {}
        for it in items:
            seen.setdefault(get(it[0]), it)
        if len(seen) > 1:
            values = "; ".join(f"{v} in {_slice_name(it)}" for v, it in list(seen.items())[:4])
            raise InputError(f"DICOM series {series_uid} mixes {field} values ({values}); its slices do not form one "
                             "volume")


def _check_shear(items, series_uid: str, iop: np.ndarray) -> None:
    """Slice positions may move in plane only as a gantry tilt does: a steady shear (in-plane offset linear in the
    slice index) whose angle matches GantryDetectorTilt. A jump between parts of the series, or a shear without a
    matching tilt tag, is refused."""
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([np.array(it[0].ImagePositionPatient, float) for it in items])
    off = np.stack([(pos - pos[0]) @ row, (pos - pos[0]) @ col], 1)  # in-plane offsets, mm
    k = np.arange(len(pos), dtype=float)
    coef = np.polyfit(k, off, 1)  # (2, 2): slope and intercept per axis
    resid = np.abs(off - (np.outer(k, coef[0]) + coef[1])).max(0)
    spacing = [float(v) for v in getattr(items[0][0], "PixelSpacing", [1.0, 1.0])]
    if resid.max() > max(0.1, 0.25 * min(spacing)):
        j = int(np.argmax(np.abs(np.diff(off, axis=0) - coef[0]).max(1)))  # the step furthest from the steady one
        raise InputError(
            f"DICOM series {series_uid}: slice positions jump {np.abs(off[j + 1] - off[j]).max():.2f} mm in plane "
            f"between {_slice_name(items[j])} and {_slice_name(items[j + 1])}, which no gantry tilt explains "
            "(a steady shear would); the slices do not form one volume")
    dz = float(np.median(np.diff(pos @ normal)))
    shear = float(np.hypot(*coef[0]))
    measured = float(np.degrees(np.arctan2(shear, abs(dz))))
    if measured > 0.1:
        tag = getattr(items[0][0], "GantryDetectorTilt", None)
        if tag is None or str(tag).strip() == "":
            raise InputError(f"DICOM series {series_uid}: slice positions are sheared by {measured:.1f} degrees but "
                             "GantryDetectorTilt (0018,1120) is missing; a tilt is accepted only when the tag states it")
        if abs(abs(float(tag)) - measured) > 0.5:
            raise InputError(f"DICOM series {series_uid}: slice positions are sheared by {measured:.1f} degrees but "
                             f"GantryDetectorTilt says {float(tag):.1f}; the series is inconsistent")


def _apply_geometry(img: sitk.Image, dss, notes) -> sitk.Image:
    """Geometry from the headers; a gantry tilt (positions not along the normal) is corrected in plane."""
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.array([np.array(d.ImagePositionPatient, float) for d in dss])
    step_vec = (pos[-1] - pos[0]) / (len(pos) - 1)
    dz = float(np.dot(step_vec, normal))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(dz) / max(np.linalg.norm(step_vec), 1e-9)))))
    sx, sy = img.GetSpacing()[:2]
    if tilt > 0.1:
        arr = sitk.GetArrayFromImage(img).astype(np.float32)
        fill = float(arr.min())
        from scipy import ndimage as ndi

        for k in range(arr.shape[0]):
            off = pos[k] - pos[0]
            shift_x = float(np.dot(off, row)) / sx  # in-plane offset of this slice's first voxel, in pixels
            shift_y = float(np.dot(off, col)) / sy
            arr[k] = ndi.shift(arr[k], (shift_y, shift_x), order=1, mode="constant", cval=fill)
        out = sitk.GetImageFromArray(np.round(arr).astype(sitk.GetArrayViewFromImage(img).dtype)
                                     if sitk.GetArrayViewFromImage(img).dtype.kind in "iu" else arr)
        notes.append(f"gantry tilt of {tilt:.1f} degrees corrected (slices shifted in plane onto an orthogonal grid)")
        img = out
    img.SetSpacing((float(sx), float(sy), abs(dz)))
    img.SetOrigin(tuple(float(v) for v in pos[0]))
    img.SetDirection(tuple(float(v) for v in np.stack([row, col, normal * np.sign(dz)], 1).ravel()))
    if notes:
        img.SetMetaData("jmmda_dicom_notes", "; ".join(notes))
    return img


def _geometry(img: sitk.Image):
    d = np.array(img.GetDirection()).reshape(3, 3)
    iop = [float(x) for x in np.concatenate([d[:, 0], d[:, 1]])]
    positions = [img.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(img.GetSize()[2])]
    sx, sy, sz = img.GetSpacing()
    return iop, positions, [float(sy), float(sx)], float(sz)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _base_dataset(sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1392.1"
    meta.ImplementationVersionName = "JMMDA_0_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _sop_ref(src: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    return ref


def _pixel_module(ds: Dataset, plane: np.ndarray, signed: bool):
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plane.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(plane.astype(np.int16 if signed else np.uint16)).tobytes()


def write_ct_series(ct: sitk.Image, out_dir: str | Path, patient_id="PHANTOM", patient_name="Phantom^CT",
                    study_uid: str | None = None, series_description="CT head (phantom)") -> list[Path]:
    """Writes an HU volume as a CT Image Storage series (RescaleIntercept 0, slope 1, int16)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arr = sitk.GetArrayFromImage(ct)
    iop, positions, pixel_spacing, thickness = _geometry(ct)
    study_uid = study_uid or generate_uid()
    series_uid, for_uid = generate_uid(), generate_uid()
    now = _dt.datetime.now()
    paths = []
    for k in range(arr.shape[0]):
        ds = _base_dataset(CT_IMAGE_STORAGE, generate_uid())
        ds.PatientID, ds.PatientName = patient_id, patient_name
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer = "CT", "JMMDA phantom"
        ds.PatientPosition = "HFS"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.SeriesDescription = series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [_fmt(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_fmt(v) for v in iop]
        ds.PixelSpacing = [_fmt(v) for v in pixel_spacing]
        ds.SliceThickness = _fmt(thickness)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "80"
        _pixel_module(ds, arr[k], signed=True)
        p = out / f"CT_{k + 1:04d}.dcm"
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


def export_synthetic_dwi(synthetic: sitk.Image, ct_dicom_dir: str | Path, out_dir: str | Path,
                         model_name: str = "JMMDA-GAN", checkpoint: str = "", series_uid: str | None = None,
                         burn_in: bool = True) -> list[Path]:
    """Writes the synthetic DWI as an MR Image Storage series beside the source CT series.

    The CT's patient, study and frame of reference are kept; series and instance UIDs are new. Each slice
    references the CT slice it was computed from (SourceImageSequence). The synthetic volume may come in any
    axis order (RAS, flipped, ...) as long as it is the CT's physical grid: it is re-oriented onto the CT series'
    order; anything else (shifted, resampled, cropped) is refused rather than silently misaligned. ``burn_in`` writes
    "SYNTHETIC - NOT FOR DIAGNOSIS" into the pixels outside the brain of every slice (BurnedInAnnotation YES)."""

    ct_dir = Path(ct_dicom_dir)
    ref_img, src = _read_series(ct_dir, series_uid)
    synthetic = sitk.DICOMOrient(synthetic, orientation_code(ref_img))  # any axis order / flip of the same grid
    _require_ct_grid(synthetic, ref_img, "the synthetic DWI")
    tilted = "gantry tilt" in (ref_img.GetMetaData("jmmda_dicom_notes") if ref_img.HasMetaDataKey("jmmda_dicom_notes") else "")
    iop, positions, pixel_spacing, thickness = _geometry(ref_img)
    arr = sitk.GetArrayFromImage(synthetic).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("synthetic DWI contains NaN/inf")
    stored = np.clip(np.round(arr * DWI_SCALE), 0, 65535).astype(np.uint16)
    nz = stored[stored > 0]
    lo, hi = (np.percentile(nz, [1, 99]) if nz.size else (0, 1000))
    unmarked = []
    if burn_in:
        brain = stored > 0  # the synthetic image is 0 outside the brain mask
        for k in range(stored.shape[0]):
            marked = burn_in_text(stored[k], "SYNTHETIC - NOT FOR DIAGNOSIS", value=int(min(65535, max(2 * hi, 1000))),
                                  avoid=brain[k])
            if marked is None:
                unmarked.append(k + 1)
            else:
                stored[k] = marked
    lossy = any(str(getattr(d, "LossyImageCompression", "00")).strip() == "01" for d in src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    now = _dt.datetime.now()
    ref = src[0]
    derivation = (
        f"Synthetic diffusion-weighted image computed by {model_name}"
        + (f" ({checkpoint})" if checkpoint else "")
        + f" from CT series {ref.SeriesInstanceUID}; research use only, not for diagnosis"
    )[:1024]
    series_number = int(getattr(ref, "SeriesNumber", 1) or 1) + 1000
    paths = []
    for k, src_ds in enumerate(src):
        ds = _base_dataset(MR_IMAGE_STORAGE, generate_uid())
        for tag in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):
            if tag in src_ds:
                setattr(ds, tag, getattr(src_ds, tag))
        ds.FrameOfReferenceUID = src_ds.FrameOfReferenceUID
        ds.PositionReferenceIndicator = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.Modality = "MR"
        ds.Manufacturer = "JMMDA-GAN (software)"
        ds.PatientPosition = str(getattr(src_ds, "PatientPosition", "") or "HFS")
        ds.Laterality = ""  # a paired body part is not imaged (brain): Type 2C, present and empty
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.SeriesDescription = SYNTHETIC_SERIES_DESCRIPTION
        ds.ImageType = ["DERIVED", "SECONDARY", "SYNTHETIC"]
        ds.DerivationDescription = derivation
        burned = burn_in and (k + 1) not in unmarked
        ds.ImageComments = "SYNTHETIC image - not for diagnosis. Pixel value = normalised DWI x 1000." + (
            " The text SYNTHETIC is burned into the pixels outside the brain." if burned else
            " No room outside the brain on this slice: the SYNTHETIC text is not burned in here." if burn_in else "")
        ds.BurnedInAnnotation = "YES" if burned else "NO"
        # a lossy source stays lossy in what is derived from it (PS3.3 C.7.6.1.1.5)
        ds.LossyImageCompression = "01" if lossy else "00"
        if lossy:
            for tag in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
                vals = [getattr(d, tag) for d in src if tag in d]
                if vals:
                    setattr(ds, tag, vals[0])
        ds.SourceImageSequence = [_sop_ref(src_ds)]
        series_ref = Dataset()
        series_ref.SeriesInstanceUID = src_ds.SeriesInstanceUID
        series_ref.ReferencedInstanceSequence = [_sop_ref(src_ds)]
        ds.ReferencedSeriesSequence = [series_ref]
        # MR image module (no acquisition: research-mode placeholders)
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = ds.RepetitionTime = ""
        ds.EchoTrainLength = ""
        ds.ImagedNucleus = "1H"
        ds.DiffusionBValue = 1000
        # on the CT's own slices (positions as the CT wrote them); a tilted CT gets the corrected orthogonal grid
        ds.ImagePositionPatient = [_fmt(v) for v in positions[k]] if tilted else list(src_ds.ImagePositionPatient)
        ds.ImageOrientationPatient = [_fmt(v) for v in iop] if tilted else list(src_ds.ImageOrientationPatient)
        ds.PixelSpacing = [_fmt(v) for v in pixel_spacing]
        ds.SliceThickness = _fmt(thickness)
        ds.WindowCenter, ds.WindowWidth = _fmt((lo + hi) / 2), _fmt(max(hi - lo, 1))
        _pixel_module(ds, stored[k], signed=False)
        p = out / f"SYNTHETIC_DWI_{k + 1:04d}.dcm"
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


PROBABILITY_SERIES_DESCRIPTION = "SYNTHETIC AI infarct probability - NOT FOR DIAGNOSIS"


def export_probability_map(probability: sitk.Image, ct_dicom_dir: str | Path, out_dir: str | Path,
                           model_name: str = "JMMDA-GAN", checkpoint: str = "", series_uid: str | None = None,
                           temperature: float | None = None) -> Path:
    """Writes the infarct-probability map as a DICOM **Parametric Map** (highdicom), float 0..1 per voxel, one
    frame per CT slice, referencing the CT series (same patient, study and frame of reference; source images per
    frame); labelled as AI-derived and synthetic: series description and content description say so, content
    qualification RESEARCH. The map must lie on the CT series' grid; gantry-tilted series are refused (the frames
    would not sit on the source slices' planes)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__

    ct_dir = Path(ct_dicom_dir)
    ref_img, src = _read_series(ct_dir, series_uid)
    notes = ref_img.GetMetaData("jmmda_dicom_notes") if ref_img.HasMetaDataKey("jmmda_dicom_notes") else ""
    if "gantry tilt" in notes:
        raise InputError("the probability map cannot be written for a gantry-tilted CT series (its frames would not lie "
                         "on the source slices); export the NIfTI map instead")
    prob = sitk.DICOMOrient(probability, orientation_code(ref_img))
    _require_ct_grid(prob, ref_img, "the probability map")
    arr = sitk.GetArrayFromImage(prob).astype(np.float32)
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise InputError("the probability map must hold finite values in [0, 1]")
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="INFARCTP",
        lut_explanation=("SYNTHETIC AI infarct probability, phantom-calibrated"
                         + (f", T={temperature:.3f}" if temperature else ""))[:64],
        unit=codes.UCUM.NoUnits, value_range=(0.0, 1.0), slope=1.0, intercept=0.0)
    iop, _, pixel_spacing, step = _geometry(ref_img)
    geometry = {  # from the series' own positions (a source may lack SliceThickness)
        "pixel_measures": hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in pixel_spacing], slice_thickness=step,
                                                   spacing_between_slices=step),
        "plane_orientation": hd.PlaneOrientationSequence(coordinate_system="PATIENT", image_orientation=iop),
        "plane_positions": [hd.PlanePositionSequence(coordinate_system="PATIENT",
                                                     image_position=[float(v) for v in d.ImagePositionPatient]) for d in src],
    }
    try:
        pm = _parametric_map(hd, src, arr, mapping, model_name, checkpoint, __version__, geometry)
    except (AttributeError, ValueError, TypeError) as exc:  # highdicom needs a complete patient/study/series module
        raise InputError(f"cannot build the Parametric Map from CT series {src[0].SeriesInstanceUID}: {exc}") from exc
    pm.SeriesDescription = PROBABILITY_SERIES_DESCRIPTION
    pm.Laterality = ""  # Type 2C: a paired body part is not imaged (brain)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "SYNTHETIC_INFARCT_PROBABILITY.dcm"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pm.save_as(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
    return path


def _parametric_map(hd, src, arr, mapping, model_name, checkpoint, version, geometry):
    return hd.pm.ParametricMap(
        source_images=src, pixel_array=arr, series_instance_uid=hd.UID(), series_number=int(getattr(src[0], "SeriesNumber", 1) or 1) + 2000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="JMMDA-GAN (software)",
        manufacturer_model_name=f"{model_name}{' ' + checkpoint if checkpoint else ''}"[:64],
        software_versions=f"jmmda {version}", device_serial_number="none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        window_center=0.5, window_width=1.0,
        content_description=("SYNTHETIC AI-derived infarct probability; a low value never rules out an infarct; "
                             "not for diagnosis")[:64],
        content_creator_name="JMMDA-GAN^", content_label="INFARCT_PROB", content_qualification="RESEARCH",
        **geometry,
    )


def _require_ct_grid(img: sitk.Image, ref_img: sitk.Image, what: str) -> None:
    if not (img.GetSize() == ref_img.GetSize()
            and np.allclose(img.GetOrigin(), ref_img.GetOrigin(), atol=1e-2)
            and np.allclose(img.GetSpacing(), ref_img.GetSpacing(), atol=1e-3)
            and np.allclose(img.GetDirection(), ref_img.GetDirection(), atol=1e-4)):
        raise InputError(
            f"{what} is not on the CT series' grid (size {img.GetSize()} vs {ref_img.GetSize()} slices/pixels, "
            f"origin {tuple(round(v, 2) for v in img.GetOrigin())} vs {tuple(round(v, 2) for v in ref_img.GetOrigin())}); "
            "it must be computed from this CT series - a shifted or resampled result would be misaligned"
        )


def burn_in_text(plane: np.ndarray, text: str, value: int, avoid: np.ndarray | None = None) -> np.ndarray | None:
    """Writes ``text`` into a slice where it touches no pixel of ``avoid`` (the brain) within a 2-pixel margin:
    the largest size (up to ~90 % of the width) that fits in a band of rows above or below the brain, top band
    first. Returns None when no band is free even at the smallest size (the caller labels that slice otherwise);
    the text is drawn with a dark-free solid value so it reads on the dark background."""
    from PIL import Image, ImageDraw
    from scipy import ndimage as ndi

    h, w = plane.shape
    busy = np.zeros((h, w), bool) if avoid is None else ndi.binary_dilation(np.asarray(avoid, bool), iterations=2)
    words = text.split(" - ", 1)
    layouts = [[text]] + ([words] if len(words) == 2 else [])  # one line, else two (narrow matrices)
    for lines in layouts:
        canvas = Image.new("L", (max(len(t) for t in lines) * 6 + 4, 12 * len(lines)), 0)
        draw = ImageDraw.Draw(canvas)
        for i, t in enumerate(lines):
            draw.text((2, 1 + 12 * i), t, fill=255)
        for scale in range(max(1, int(w * 0.9 // canvas.width)), 0, -1):
            mark = np.asarray(canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)) > 127
            mh, mw = mark.shape
            if mh > h or mw > w:
                continue
            x0 = (w - mw) // 2
            rows_busy = busy[:, x0 : x0 + mw].any(1)
            for y0 in list(range(1, h - mh)) + [0]:  # top band first, then any free band (below the head)
                if not rows_busy[y0 : y0 + mh].any():
                    out = plane.copy()
                    region = out[y0 : y0 + mh, x0 : x0 + mw]
                    region[mark] = value
                    return out
    return None


def read_synthetic_series(folder: str | Path) -> sitk.Image:
    """Reads an exported synthetic series back as float32 normalised DWI."""
    img = read_dicom_series(folder)
    return sitk.Cast(img, sitk.sitkFloat32) / DWI_SCALE


#: requests of a STOW-RS / QIDO-RS call (the first and its retries) unless the caller says otherwise
STOW_ATTEMPTS = 5
STOW_MAX_ATTEMPTS = 10


def check_stow_attempts(attempts) -> int:
    """``attempts`` if it is a whole number from 1 to STOW_MAX_ATTEMPTS; ValueError otherwise."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= STOW_MAX_ATTEMPTS:
        raise ValueError(f"STOW attempts must be a whole number from 1 to {STOW_MAX_ATTEMPTS}, not {attempts!r}")
    return attempts


def stow(paths: list[Path], url: str, username: str | None = None, password: str | None = None,
         timeout: float = 120.0, attempts: int = STOW_ATTEMPTS) -> int:
    """STOW-RS the files to a DICOMweb endpoint (e.g. http://host:8042/dicom-web), then checks with QIDO-RS
    that the server holds every instance. Returns the number stored.

    ``attempts``: how often each request is tried (1 .. STOW_MAX_ATTEMPTS) when the server cannot be reached,
    does not answer, or answers 408 / 429 / 503 / 504, waiting 2, 4, 8 ... s in between (dicomweb-client's
    retrying): 5 attempts wait 30 s in all before a PACS that is down is reported.

    Credentials: ``username`` with ``password`` or the JMMDA_DICOMWEB_PASSWORD environment variable; without
    a user name, ~/.netrc is used for the host (requests' standard behaviour)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    check_stow_attempts(attempts)
    session = requests.Session()
    if username:
        session.auth = (username, password if password is not None else os.environ.get("JMMDA_DICOMWEB_PASSWORD", ""))
    client = DICOMwebClient(url=url, session=session)
    client.set_http_retry_params(retry=attempts > 1, max_attempts=attempts)
    tried = f" ({attempts} attempts)" if attempts > 1 else ""
    datasets = [pydicom.dcmread(p) for p in paths]
    if not datasets:
        raise PacsError("nothing to store")

    def call(what, fn):
        try:
            return fn()
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = {401: "authentication failed: check --user and the password (JMMDA_DICOMWEB_PASSWORD or ~/.netrc)",
                    403: "the account may not store into this PACS",
                    404: "no DICOMweb service at this URL (e.g. http://host:8042/dicom-web for Orthanc)"}.get(code, "the server refused")
            raise PacsError(f"{what} at {url} failed (HTTP {code}): {hint}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise PacsError(f"cannot reach the DICOMweb server at {url} (connection refused or host unreachable)"
                            f"{tried}") from exc
        except requests.exceptions.Timeout as exc:
            raise PacsError(f"the DICOMweb server at {url} did not answer within {timeout:.0f} s{tried}") from exc

    response = call("STOW-RS", lambda: client.store_instances(datasets))
    failed = len(getattr(response, "FailedSOPSequence", []) or []) if response is not None else 0
    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    found = call("QIDO-RS check", lambda: client.search_for_instances(study_instance_uid=study, series_instance_uid=series))
    wanted = {str(d.SOPInstanceUID) for d in datasets}
    stored = {str(x.get("00080018", {}).get("Value", [""])[0]) for x in found or []} & wanted
    if failed or len(stored) < len(wanted):
        raise PacsError(f"the PACS at {url} holds {len(stored)} of {len(wanted)} instances of series {series}"
                        + (f" ({failed} reported as failed by STOW-RS)" if failed else ""))
    return len(stored)
