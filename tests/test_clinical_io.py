"""DICOM/NIfTI import, rigid registration, data-set importers, synthetic DICOM export, STOW to Orthanc."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk

from jmmda_model.data import find_cases
from jmmda_model.clinical.dicom import (
    SYNTHETIC_SERIES_DESCRIPTION,
    export_synthetic_dwi,
    read_dicom_series,
    read_synthetic_series,
    stow,
    write_ct_series,
)
from jmmda_model.clinical.geometry import resample_to, same_geometry
from jmmda_model.clinical.imageio import read_image
from jmmda_model.clinical.importers import discover_apis, discover_isles24, import_apis, import_isles24
from jmmda_model.clinical.registration import register_rigid, target_registration_error
from jmmda_model.errors import InputError

from conftest import arr, read
from server_utils import free_port


@pytest.fixture()
def ct_dicom(tmp_path, sample_cases):
    ct = read(sample_cases[0].ct)
    d = tmp_path / "ct_dicom"
    write_ct_series(ct, d)
    return ct, d


def test_dicom_ct_import_matches_nifti(ct_dicom):
    ct, d = ct_dicom
    img = read_image(d, "CT")  # a folder is read as a DICOM series
    assert same_geometry(img, ct)
    assert np.array_equal(arr(img), arr(ct))
    ds = pydicom.dcmread(sorted(d.iterdir())[0])
    assert ds.Modality == "CT" and ds.RescaleType == "HU"


def test_dicom_folder_errors(tmp_path, ct_dicom):
    ct, d = ct_dicom
    two = tmp_path / "two"
    shutil.copytree(d, two)
    write_ct_series(ct, tmp_path / "other")
    for p in (tmp_path / "other").iterdir():
        shutil.copy(p, two / f"b_{p.name}")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_dicom_series(two)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(d.iterdir())[0], one / "x.dcm")
    with pytest.raises(InputError, match="3-D volume"):
        read_dicom_series(one)


def test_synthetic_dicom_export_round_trip(ct_dicom, tmp_path):
    ct, d = ct_dicom
    rng = np.random.default_rng(0)
    syn = sitk.GetImageFromArray(rng.uniform(0, 1, sitk.GetArrayFromImage(ct).shape).astype(np.float32))
    syn.CopyInformation(ct)
    paths = export_synthetic_dwi(syn, d, tmp_path / "syn", checkpoint="jmmda_demo.pt", burn_in=False)
    back = read_synthetic_series(tmp_path / "syn")
    assert same_geometry(back, ct)
    np.testing.assert_allclose(arr(back), arr(syn), atol=0.5e-3 + 1e-6)
    src = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in d.iterdir()}
    first_src = next(iter(src.values()))
    sop_uids = set()
    for p in paths:
        ds = pydicom.dcmread(p)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "SYNTHETIC" in ds.SeriesDescription and ds.SeriesDescription == SYNTHETIC_SERIES_DESCRIPTION
        assert "not for diagnosis" in ds.DerivationDescription and first_src.SeriesInstanceUID in ds.DerivationDescription
        assert ds.StudyInstanceUID == first_src.StudyInstanceUID and ds.PatientID == first_src.PatientID
        assert ds.FrameOfReferenceUID == first_src.FrameOfReferenceUID
        assert ds.SeriesInstanceUID != first_src.SeriesInstanceUID and ds.SOPInstanceUID not in src
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID in src
        np.testing.assert_allclose(np.array(src[ref.ReferencedSOPInstanceUID].ImagePositionPatient, float),
                                   np.array(ds.ImagePositionPatient, float))
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(paths) == len(src)


def test_export_refuses_result_off_the_ct_grid(ct_dicom, tmp_path):
    ct, d = ct_dicom
    syn = sitk.Cast(ct, sitk.sitkFloat32) * 0
    syn.SetOrigin(tuple(o + 5 for o in ct.GetOrigin()))
    with pytest.raises(InputError, match="CT series' grid"):
        export_synthetic_dwi(syn, d, tmp_path / "bad")
    with pytest.raises(InputError, match="CT series' grid"):
        export_synthetic_dwi(sitk.Cast(ct, sitk.sitkFloat32)[:, :, :10], d, tmp_path / "bad2")


@pytest.mark.slow
def test_rigid_registration_recovers_known_transform(sample_cases):
    ct = read(sample_cases[1].ct)
    dwi = sitk.Cast(read(sample_cases[1].dwi), sitk.sitkFloat32)
    brain = read(sample_cases[1].brainmask)
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    truth = sitk.Euler3DTransform(centre, np.deg2rad(2.0), np.deg2rad(-3.0), np.deg2rad(6.0), (4.0, -6.0, 3.0))
    # move the DWI: its content is now where the true transform maps CT points
    moved = sitk.Resample(dwi, dwi, truth.GetInverse(), sitk.sitkLinear, 0.0)
    est = register_rigid(ct, moved)
    pts = np.array([brain.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]])
                    for idx in np.argwhere(arr(brain) > 0)[::500]])
    before = target_registration_error(truth, sitk.Euler3DTransform(), pts)
    tre = target_registration_error(truth, est, pts)
    assert before.mean() > 5
    # the phantom DWI carries EPI distortion (up to ~4 mm near the skull base) that no rigid transform removes
    assert tre.mean() < 3.0 and tre.max() < 6.0, (tre.mean(), tre.max())
    on_ct = resample_to(ct, moved, est)
    assert same_geometry(on_ct, ct)


def _fabricate_apis(root, sample_cases):
    (root / "train").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, c in enumerate(sample_cases[:2]):
        shutil.copy(c.ct, root / "train" / f"train_{i:03d}_ncct.nii.gz")
        shutil.copy(c.dwi, root / "train" / f"train_{i:03d}_adc.nii.gz")  # stands in for ADC
        shutil.copy(c.lesion, root / "masks" / f"train_{i:03d}_mask.nii.gz")
    # only case 1 has a DWI, on a different (coarser) grid -> must be put on the CT grid
    dwi = read(sample_cases[1].dwi)
    shifted = sitk.Resample(dwi, [48, 56, 18], sitk.Transform(), sitk.sitkLinear, dwi.GetOrigin(),
                            [5.0, 5.0, 10.0], dwi.GetDirection(), 0.0, dwi.GetPixelID())
    sitk.WriteImage(shifted, str(root / "train" / "train_001_dwi.nii.gz"))


def test_apis_importer(tmp_path, sample_cases):
    src = tmp_path / "APIS"
    _fabricate_apis(src, sample_cases)
    cases = discover_apis(src)
    assert set(cases) == {"train_000", "train_001"} and cases["train_000"]["lesion"].name == "train_000_mask.nii.gz"
    store = tmp_path / "studies"
    rep = import_apis(src, store)
    assert rep.imported == ["apis_train_000", "apis_train_001"] and rep.without_dwi == ["apis_train_000"]
    assert "apis_train_001:dwi" in rep.resampled
    # resampling MR onto CT without registration is said loudly (separate acquisitions: masks may be misaligned)
    assert "WARNING" in rep.summary() and "WITHOUT registration" in rep.summary() and "--register" in rep.summary()
    found = {c.id: c for c in find_cases(store, require=("brainmask",))}
    assert set(found) == {"apis_train_000", "apis_train_001"}
    ct = read(found["apis_train_001"].ct)
    for tag in ("dwi", "brainmask", "lesion"):
        assert same_geometry(read(getattr(found["apis_train_001"], tag)), ct)
    assert (store / "labels" / "adc" / "apis_train_000.nii.gz").exists()
    # the computed brain mask agrees with the phantom's
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())  # noqa: E731
    assert dice(arr(read(found["apis_train_000"].brainmask)) > 0, arr(read(sample_cases[0].brainmask)) > 0) > 0.9
    assert [c.id for c in find_cases(store)] == ["apis_train_001"]  # only the case with DWI is trainable
    again = import_apis(src, store)
    assert not again.imported and "already in the datastore" in again.failed["apis_train_000"]


def test_isles24_importer(tmp_path, sample_cases):
    src = tmp_path / "ISLES24"
    for i, c in enumerate(sample_cases[:2]):
        sub = f"sub-stroke{i + 1:04d}"
        raw = src / "rawdata" / sub / "ses-01"
        der = src / "derivatives" / sub / "ses-02"
        raw.mkdir(parents=True)
        der.mkdir(parents=True)
        shutil.copy(c.ct, raw / f"{sub}_ses-01_ncct.nii.gz")
        shutil.copy(c.dwi, der / f"{sub}_ses-02_space-ncct_dwi.nii.gz")
        shutil.copy(c.dwi, der / f"{sub}_ses-02_space-ncct_adc.nii.gz")
        shutil.copy(c.lesion, der / f"{sub}_ses-02_space-ncct_lesion-msk.nii.gz")
        (src / "rawdata" / sub / "ses-01" / f"{sub}_ses-01_ctp.nii.gz").write_bytes(b"")  # other modalities ignored
    assert set(discover_isles24(src)) == {"sub-stroke0001", "sub-stroke0002"}
    store = tmp_path / "studies"
    rep = import_isles24(src, store)
    assert rep.imported == ["isles24_sub-stroke0001", "isles24_sub-stroke0002"] and not rep.failed
    cases = find_cases(store)
    assert len(cases) == 2 and all(c.lesion for c in cases)
    np.testing.assert_array_equal(arr(read(cases[0].dwi)), arr(read(sample_cases[0].dwi)))


def test_importer_reports_bad_cases(tmp_path, sample_cases):
    src = tmp_path / "APIS"
    (src / "train").mkdir(parents=True)
    shutil.copy(sample_cases[0].dwi, src / "train" / "train_005_ncct.nii.gz")  # an MR file named as CT
    rep = import_apis(src, tmp_path / "studies")
    assert not rep.imported and "Hounsfield" in rep.failed["apis_train_005"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no ISLES"):
        import_isles24(empty, tmp_path / "studies")


# ------------------------------------------------------------------ Orthanc (Debian package) on loopback
@pytest.fixture()
def orthanc(tmp_path):
    exe = shutil.which("Orthanc")
    plugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    if exe is None:
        pytest.skip("Orthanc not installed (Debian packages orthanc + orthanc-dicomweb; run.sh installs them as root)")
    port, dicom_port = free_port(), free_port()
    cfg = {
        "Name": "JMMDA-TEST", "HttpPort": port, "DicomPort": dicom_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([exe, str(tmp_path / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(url + "/system", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("Orthanc did not start")
    yield url
    proc.terminate()
    proc.wait(10)


def test_stow_synthetic_series_to_orthanc(orthanc, ct_dicom, tmp_path):
    ct, d = ct_dicom
    syn = sitk.Cast(ct, sitk.sitkFloat32) * 0 + 0.5
    paths = export_synthetic_dwi(syn, d, tmp_path / "syn")
    assert stow(sorted(d.iterdir()), orthanc + "/dicom-web") == len(paths)
    assert stow(paths, orthanc + "/dicom-web") == len(paths)
    series = requests.get(orthanc + "/series?expand", timeout=10).json()
    descs = sorted(s["MainDicomTags"].get("SeriesDescription", "") for s in series)
    assert SYNTHETIC_SERIES_DESCRIPTION in descs and len(series) == 2
    assert len({s["ParentStudy"] for s in series}) == 1  # the synthetic series sits in the CT's study
    syn_series = next(s for s in series if "SYNTHETIC" in s["MainDicomTags"].get("SeriesDescription", ""))
    assert len(syn_series["Instances"]) == len(paths)
    # DICOMweb QIDO finds it by description
    q = requests.get(orthanc + "/dicom-web/series", params={"includefield": "0008103E"}, timeout=10).json()
    assert sum("SYNTHETIC" in s.get("0008103E", {}).get("Value", [""])[0] for s in q) == 1


@pytest.mark.server
@pytest.mark.timeout(600)
def _mixed_spacing_copy(src: Path, dst: Path) -> str:
    """A copy of the series under new UIDs whose middle slice claims another PixelSpacing (a series the
    project's reader refuses and a plain ITK series read takes); returns its SeriesInstanceUID."""
    from pydicom.uid import generate_uid

    dst.mkdir()
    files = sorted(src.iterdir())
    series_uid = generate_uid()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if i == len(files) // 2:
            ds.PixelSpacing = [float(v) * 1.1 for v in ds.PixelSpacing]
        ds.save_as(dst / f.name)
    return series_uid


def test_server_on_a_dicomweb_datastore_offline(orthanc, ct_dicom, tmp_path):
    """--studies http://orthanc/dicom-web starts without downloading dcmqi (PyPI dcmqi provides
    itkimage2segimage), synthesizes from a CT stored in Orthanc, and answers 404 for an unknown image id.

    The CT is read from its downloaded series by the project's reader, not converted by MONAI Label: a series
    mixing PixelSpacing values is refused (422, naming the series and the field), and no copy of the CT is left
    in TMPDIR (MONAI Label's conversion left one NIfTI there per CT)."""
    from server_utils import Server, copy_app

    ct, d = ct_dicom
    assert stow(sorted(d.iterdir()), orthanc + "/dicom-web") == ct.GetSize()[2]
    series_uid = pydicom.dcmread(sorted(d.iterdir())[0]).SeriesInstanceUID
    mixed_uid = _mixed_spacing_copy(d, tmp_path / "mixed")
    assert stow(sorted((tmp_path / "mixed").iterdir()), orthanc + "/dicom-web") == ct.GetSize()[2]
    app = copy_app(tmp_path / "app")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    s = Server(app, orthanc + "/dicom-web", env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache"),
                                                 "TMPDIR": str(tmpdir)}).wait(timeout=180)
    try:
        assert not list((app / "bin").glob("itkimage2segimage*"))  # nothing downloaded into the app
        images = requests.get(f"{s.url}/datastore/", timeout=60).json()["images"]
        assert series_uid in images and mixed_uid in images
        r = requests.post(f"{s.url}/infer/ct2dwi?image={series_uid}&output=json", timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["synthetic"] is True
        r = requests.post(f"{s.url}/infer/ct2dwi?image={mixed_uid}&output=json", timeout=120)
        assert r.status_code == 422, r.text
        assert mixed_uid in r.text and "PixelSpacing" in r.text
        r = requests.post(f"{s.url}/infer/ct2dwi?image=1.2.3.4.5&output=json", timeout=60)
        assert r.status_code == 404
        assert "dcmqi-1.2.4" not in s.log()
        left = [p.relative_to(tmpdir) for p in tmpdir.rglob("*") if p.is_file()]
        assert left == [], f"files left in TMPDIR: {left}"
    finally:
        s.stop()
