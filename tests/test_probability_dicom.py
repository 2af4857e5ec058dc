"""The infarct-probability map as a DICOM Parametric Map (probability-map issue, item 3): written with highdicom
on a CT series built here with pydicom alone, read back, validated with dciodvfy and round-tripped through Orthanc
(STOW-RS, QIDO-RS, WADO-RS)."""
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from jmmda_model.clinical.dicom import PROBABILITY_SERIES_DESCRIPTION, export_probability_map, read_dicom_series, stow
from jmmda_model.errors import InputError
from test_clinical_io import orthanc  # noqa: F401 - the Orthanc fixture (Debian package, loopback)
from test_series_consistency import write_series

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def _prob_on(ct_dir):
    ref = read_dicom_series(ct_dir)
    z, y, x = np.indices(sitk.GetArrayFromImage(ref).shape)
    a = np.clip(np.exp(-((y - 30) ** 2 + (x - 34) ** 2) / 60.0) * (1 - np.abs(z - 6) / 8), 0, 1).astype(np.float32)
    img = sitk.GetImageFromArray(a)
    img.CopyInformation(ref)
    return img, a


@pytest.fixture()
def exported(tmp_path):
    ct = write_series(tmp_path / "ct", n=12, rows=64, cols=64)
    img, a = _prob_on(ct)
    path = export_probability_map(img, ct, tmp_path / "pm", checkpoint="jmmda_demo.pt", temperature=0.79)
    return ct, path, a


def test_parametric_map_reads_back_with_the_values_and_the_labels(exported):
    ct, path, a = exported
    ds = pydicom.dcmread(path)
    src = pydicom.dcmread(sorted(ct.iterdir())[0])
    assert ds.SOPClassUID == PARAMETRIC_MAP_STORAGE
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.SeriesDescription == PROBABILITY_SERIES_DESCRIPTION and "SYNTHETIC" in ds.ContentDescription
    assert ds.ContentQualification == "RESEARCH"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert int(ds.NumberOfFrames) == 12 and (ds.Rows, ds.Columns) == (64, 64)
    rwv = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert "SYNTHETIC" in rwv.LUTExplanation and "T=0.790" in rwv.LUTExplanation
    frames = np.frombuffer(ds.FloatPixelData, dtype="<f4").reshape(12, 64, 64)
    # frame k lies on source slice k: its plane position is that slice's ImagePositionPatient
    srcs = sorted((pydicom.dcmread(p) for p in ct.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    for fg, d in zip(ds.PerFrameFunctionalGroupsSequence, srcs):
        assert np.allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in d.ImagePositionPatient])
    assert {r.ReferencedSOPInstanceUID for r in ds.SourceImageSequence} == {d.SOPInstanceUID for d in srcs}
    np.testing.assert_allclose(frames, a, atol=1e-6)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_parametric_map_passes_dciodvfy(exported):
    r = subprocess.run(["dciodvfy", str(exported[1])], capture_output=True, text=True)
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, errors


def test_parametric_map_round_trips_through_orthanc(orthanc, exported):  # noqa: F811
    import requests
    from dicomweb_client.api import DICOMwebClient

    ct, path, a = exported
    assert stow(sorted(ct.iterdir()), orthanc + "/dicom-web") == 12
    assert stow([path], orthanc + "/dicom-web") == 1
    q = requests.get(orthanc + "/dicom-web/series", params={"includefield": "0008103E"}, timeout=10).json()
    hits = [s for s in q if s.get("0008103E", {}).get("Value", [""])[0] == PROBABILITY_SERIES_DESCRIPTION]
    assert len(hits) == 1
    ds = pydicom.dcmread(path)
    back = DICOMwebClient(orthanc + "/dicom-web").retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    frames = np.frombuffer(back.FloatPixelData, dtype="<f4")
    np.testing.assert_array_equal(frames, np.frombuffer(ds.FloatPixelData, dtype="<f4"))  # float: no quantisation


def test_off_grid_or_out_of_range_or_tilted_is_refused(tmp_path):
    ct = write_series(tmp_path / "ct", n=8, rows=64, cols=64)
    img, a = _prob_on(ct)
    shifted = sitk.Image(img)
    shifted.SetOrigin(tuple(v + 3.0 for v in img.GetOrigin()))
    with pytest.raises(InputError, match="not on the CT series' grid"):
        export_probability_map(shifted, ct, tmp_path / "o1")
    bad = sitk.GetImageFromArray(a * 2)
    bad.CopyInformation(img)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        export_probability_map(bad, ct, tmp_path / "o2")
    tilted = write_series(tmp_path / "tilt", n=8, rows=64, cols=64, shift=lambda k: (0.0, k * 2 * np.tan(np.radians(10))),
                          tilt=10.0)
    t_img, _ = _prob_on(tilted)
    with pytest.raises(InputError, match="gantry-tilted"):
        export_probability_map(t_img, tilted, tmp_path / "o3")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
