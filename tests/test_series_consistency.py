"""Series consistency (pose/series issue, item 2): DICOM written here with pydicom alone (not the project's
writers); every inconsistency is refused naming the series, the values and a slice."""
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from jmmda_model.clinical.dicom import read_dicom_series
from jmmda_model.errors import InputError

SERIES = "1.2.826.0.1.3680043.8.498.99"


def write_series(folder: Path, n=20, rows=48, cols=48, spacing=lambda k: (0.5, 0.5), shift=lambda k: (0.0, 0.0),
                 step=2.0, tilt=None):
    """n axial CT slices: slice k at z = k*step, its first pixel moved in plane by shift(k) mm (x, y)."""
    folder.mkdir(parents=True)
    study, frame = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:256, 0:cols]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "X", study, SERIES
        ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "", ""
        ds.SeriesNumber, ds.Manufacturer = 3, "pydicom test writer"
        ds.FrameOfReferenceUID, ds.InstanceNumber = frame, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        sx, sy = spacing(k)
        dx, dy = shift(k)
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = [f"{-12 + dx:.4f}", f"{-12 + dy:.4f}", f"{k * step:.4f}"]
        if tilt is not None:
            ds.GantryDetectorTilt = f"{tilt:.1f}"
        ds.Rows, ds.Columns = rows(k) if callable(rows) else rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        r = ds.Rows
        img = np.where(((yy[:r] - r / 2) ** 2 + (xx[:r] - cols / 2) ** 2) < (r / 3) ** 2, 40, -1000).astype(np.int16)
        ds.PixelData = img.tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(folder / f"IM{k:04d}.dcm", write_like_original=False)
    return folder


def test_clean_series_reads(tmp_path):
    img = read_dicom_series(write_series(tmp_path / "ok"))
    assert img.GetSize() == (48, 48, 20) and abs(img.GetSpacing()[2] - 2.0) < 1e-6


def test_mixed_pixel_spacing_is_refused_not_read_as_tilt(tmp_path):
    d = write_series(tmp_path / "mix", spacing=lambda k: (0.45, 0.45) if k >= 10 else (0.5, 0.5))
    with pytest.raises(InputError, match=r"mixes PixelSpacing values \(\(0\.5, 0\.5\) in IM0000\.dcm.*\(0\.45, 0\.45\)") as e:
        read_dicom_series(d)
    assert SERIES in str(e.value)


def test_mixed_matrix_size_is_refused(tmp_path):
    d = write_series(tmp_path / "rows", rows=lambda k: 40 if k == 7 else 48)
    with pytest.raises(InputError, match="mixes Rows values"):
        read_dicom_series(d)


def test_step_offset_between_halves_is_refused_not_called_tilt(tmp_path):
    d = write_series(tmp_path / "step", shift=lambda k: (0.0, 3.0 if k >= 10 else 0.0))
    with pytest.raises(InputError, match=r"jump 3\.00 mm in plane between IM0009\.dcm .* and IM0010\.dcm"):
        read_dicom_series(d)


def test_shear_needs_a_matching_tilt_tag(tmp_path):
    shear = lambda k: (0.0, k * 2.0 * np.tan(np.radians(12.0)))  # noqa: E731 - steady 12 degree shear
    with pytest.raises(InputError, match="GantryDetectorTilt .* is missing"):
        read_dicom_series(write_series(tmp_path / "notag", shift=shear))
    with pytest.raises(InputError, match="GantryDetectorTilt says 20.0"):
        read_dicom_series(write_series(tmp_path / "wrongtag", shift=shear, tilt=20.0))
    img = read_dicom_series(write_series(tmp_path / "tag", shift=shear, tilt=12.0))
    assert "gantry tilt of 12.0 degrees corrected" in img.GetMetaData("jmmda_dicom_notes")


def _synthetic_on(ct_dir, brain_fn):
    import SimpleITK as sitk

    ref = read_dicom_series(ct_dir)
    a = np.zeros(sitk.GetArrayFromImage(ref).shape, np.float32)
    for k in range(a.shape[0]):
        a[k][brain_fn(k, a.shape[1:])] = 0.3 + 0.01 * k
    img = sitk.GetImageFromArray(a)
    img.CopyInformation(ref)
    return img, a


def test_burned_in_text_never_covers_brain(tmp_path):
    """Brain up to the top row (high vertex) in some slices, and a tilted series: the SYNTHETIC text goes where
    the brain is not, or - when no band is free - is left out on that slice and the slice says so."""
    import pydicom

    from jmmda_model.clinical.dicom import export_synthetic_dwi

    shear = lambda k: (0.0, k * 2.0 * np.tan(np.radians(10.0)))  # noqa: E731
    for name, kw in (("plain", {}), ("tilted", {"shift": shear, "tilt": 10.0})):
        ct = write_series(tmp_path / name, n=8, rows=200, cols=200, **kw)

        def brain(k, shape):
            yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
            top = 0 if k % 3 == 0 else 40  # every third slice: brain from the very first row
            full = k == 5  # one slice: brain everywhere but a thin rim (no room for any text)
            return (yy >= 2) & (yy < shape[0] - 2) & (xx >= 2) & (xx < shape[1] - 2) if full else (yy >= top) & (yy < 150) & (abs(xx - 100) < 70)

        syn, a = _synthetic_on(ct, brain)
        out = export_synthetic_dwi(syn, ct, tmp_path / f"out_{name}")
        for k, p in enumerate(sorted(out)):
            ds = pydicom.dcmread(p)
            px = ds.pixel_array
            inside = a[k] > 0
            assert np.array_equal(px[inside], np.round(a[k][inside] * 1000).astype(px.dtype)), (name, k)
            if k == 5:
                assert ds.BurnedInAnnotation == "NO" and "not burned in" in ds.ImageComments
            else:
                assert ds.BurnedInAnnotation == "YES" and (px[~inside] > 0).sum() > 50, (name, k)


def test_lossy_source_stays_lossy(tmp_path):
    import pydicom

    from jmmda_model.clinical.dicom import export_synthetic_dwi

    ct = write_series(tmp_path / "lossy", rows=64, cols=64)
    for p in sorted(ct.iterdir()):
        ds = pydicom.dcmread(p)
        ds.LossyImageCompression, ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = "01", "8", "ISO_10918_1"
        ds.save_as(p, write_like_original=False)
    syn, _ = _synthetic_on(ct, lambda k, s: np.ones(s, bool))
    ds = pydicom.dcmread(export_synthetic_dwi(syn, ct, tmp_path / "out", burn_in=False)[0])
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"


def test_monochrome1_is_refused_for_what_it_is(tmp_path):
    import pydicom

    d = write_series(tmp_path / "m1", n=6)
    for p in d.iterdir():
        ds = pydicom.dcmread(p)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(p, write_like_original=False)
    with pytest.raises(InputError, match="PhotometricInterpretation MONOCHROME1: only MONOCHROME2"):
        read_dicom_series(d)


def test_truncated_file_and_undecodable_transfer_syntax_are_named(tmp_path):
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    d = write_series(tmp_path / "trunc", n=6)
    victim = sorted(d.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-3000])
    with pytest.raises(InputError, match=r"IM0003\.dcm is truncated"):
        read_dicom_series(d)
    d2 = write_series(tmp_path / "j2k", n=6)
    for p in d2.iterdir():
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(100)])  # not a decodable codestream
        ds["PixelData"].is_undefined_length = True
        ds.save_as(p, write_like_original=False)
    with pytest.raises(InputError, match=r"IM0000\.dcm: its transfer syntax JPEG 2000"):
        read_dicom_series(d2)


def test_enhanced_multiframe_ct_is_named_not_reported_missing(tmp_path):
    import pydicom

    d = write_series(tmp_path / "mf", n=2)
    for p in sorted(d.iterdir())[1:]:
        p.unlink()
    p = next(d.iterdir())
    ds = pydicom.dcmread(p)
    del ds.ImagePositionPatient
    del ds.ImageOrientationPatient
    ds.NumberOfFrames = 2
    ds.PerFrameFunctionalGroupsSequence = [pydicom.Dataset(), pydicom.Dataset()]
    ds.save_as(p, write_like_original=False)
    with pytest.raises(InputError, match=r"enhanced \(multi-frame\) DICOM images \(IM0000\.dcm\), which are not supported"):
        read_dicom_series(d)
