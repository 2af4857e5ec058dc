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
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .imageio import InputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SYNTHETIC_SERIES_DESCRIPTION = "SYNTHETIC DWI (JMMDA-GAN) - NOT FOR DIAGNOSIS"
DWI_SCALE = 1000.0  # stored value = normalised DWI x 1000


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Reads one DICOM series from a folder (the only one, or the one with ``series_uid``),
    applying rescale slope/intercept (CT in HU)."""
    folder = Path(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not uids:
        raise InputError(f"no DICOM series found in {folder}")
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(f"{folder} holds {len(uids)} DICOM series; choose one by SeriesInstanceUID: {', '.join(uids)}")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"series {series_uid} not found in {folder}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) < 2:
        raise InputError(f"DICOM series {series_uid} has {len(files)} slice(s); a 3-D volume is required")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {series_uid}: {exc}") from exc
    return img


def _slices_sorted(folder: Path) -> list[Dataset]:
    dss = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are ignored
            continue
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            dss.append(ds)
    if not dss:
        raise InputError(f"no DICOM images found in {folder}")
    iop = np.array(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(dss, key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))


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
                         model_name: str = "JMMDA-GAN", checkpoint: str = "") -> list[Path]:
    """Writes the synthetic DWI (on the CT grid) as an MR Image Storage series beside the source CT.

    The CT's patient, study and frame of reference are kept; series and instance UIDs are new. Each
    slice references the CT slice it was computed from (SourceImageSequence)."""
    ct_dir = Path(ct_dicom_dir)
    src = _slices_sorted(ct_dir)
    if synthetic.GetSize()[2] != len(src):
        raise InputError(f"synthetic volume has {synthetic.GetSize()[2]} slices but the CT series has {len(src)}")
    # the synthetic must lie on the CT grid: compare slice positions and in-plane geometry
    iop, positions, pixel_spacing, thickness = _geometry(synthetic)
    src_iop = np.array(src[0].ImageOrientationPatient, float)
    if not np.allclose(iop, src_iop, atol=1e-3):
        raise InputError("synthetic DWI orientation differs from the CT series")
    for k, ds in enumerate(src):
        if not np.allclose(positions[k], np.array(ds.ImagePositionPatient, float), atol=1e-2):
            raise InputError(f"synthetic DWI slice {k} is not at the CT slice position; it must be on the CT grid")
        if (int(ds.Rows), int(ds.Columns)) != (synthetic.GetSize()[1], synthetic.GetSize()[0]):
            raise InputError("synthetic DWI in-plane size differs from the CT series")
    arr = sitk.GetArrayFromImage(synthetic).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("synthetic DWI contains NaN/inf")
    stored = np.clip(np.round(arr * DWI_SCALE), 0, 65535).astype(np.uint16)
    nz = stored[stored > 0]
    lo, hi = (np.percentile(nz, [1, 99]) if nz.size else (0, 1000))
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
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.SeriesDescription = SYNTHETIC_SERIES_DESCRIPTION
        ds.ImageType = ["DERIVED", "SECONDARY", "SYNTHETIC"]
        ds.DerivationDescription = derivation
        ds.ImageComments = "SYNTHETIC image - not for diagnosis. Pixel value = normalised DWI x 1000."
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
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
        ds.ImagePositionPatient = list(src_ds.ImagePositionPatient)
        ds.ImageOrientationPatient = list(src_ds.ImageOrientationPatient)
        ds.PixelSpacing = [_fmt(v) for v in pixel_spacing]
        ds.SliceThickness = _fmt(thickness)
        ds.WindowCenter, ds.WindowWidth = _fmt((lo + hi) / 2), _fmt(max(hi - lo, 1))
        _pixel_module(ds, stored[k], signed=False)
        p = out / f"SYNTHETIC_DWI_{k + 1:04d}.dcm"
        ds.save_as(p, write_like_original=False)
        paths.append(p)
    return paths


def read_synthetic_series(folder: str | Path) -> sitk.Image:
    """Reads an exported synthetic series back as float32 normalised DWI."""
    img = read_dicom_series(folder)
    return sitk.Cast(img, sitk.sitkFloat32) / DWI_SCALE


def stow(paths: list[Path], url: str, username: str | None = None, password: str | None = None) -> int:
    """STOW-RS the files to a DICOMweb endpoint (e.g. http://host:8042/dicom-web). Returns the count."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    session = create_session_from_user_pass(username, password) if username else None
    client = DICOMwebClient(url=url, session=session)
    datasets = [pydicom.dcmread(p) for p in paths]
    client.store_instances(datasets)
    return len(datasets)
