"""No silently wrong geometry, no misregistered labels: fixtures built here from scratch (issue 14)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from jmmda_model.clinical.dicom import (
    PacsError,
    export_synthetic_dwi,
    list_series,
    read_dicom_series,
    read_synthetic_series,
    stow,
    write_ct_series,
)
from jmmda_model.clinical.geometry import same_geometry
from jmmda_model.errors import InputError

from conftest import arr, read
from server_utils import free_port

ROOT = Path(__file__).resolve().parents[1]


def _sphere_volume(size=(64, 64, 30), spacing=(2.0, 2.0, 4.0), centre_mm=(5.0, -8.0, 12.0), radius=15.0):
    """A CT-like volume: air, a water 'head' with a dense sphere, LPS axial grid centred on 0."""
    img = sitk.Image(list(size), sitk.sitkInt16)
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(size, spacing)))
    idx = np.indices(size[::-1]).astype(float)  # z, y, x
    pts = [idx[2 - i] * spacing[i] + img.GetOrigin()[i] for i in range(3)]
    head = (pts[0] / 55) ** 2 + (pts[1] / 55) ** 2 + (pts[2] / 80) ** 2 <= 1
    ball = sum((pts[i] - centre_mm[i]) ** 2 for i in range(3)) <= radius**2
    a = np.where(head, 30, -1000) + np.where(ball, 800, 0)
    out = sitk.GetImageFromArray(a.astype(np.int16))
    out.CopyInformation(img)
    return out


def _centroid_mm(img: sitk.Image, thr=400.0) -> np.ndarray:
    a = arr(img) > thr
    idx = np.argwhere(a).mean(0)[::-1]
    return np.array(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def _tilted_series(folder: Path, tilt_deg=15.0):
    """A gantry-tilted acquisition of the sphere volume: slice k lies at z_k along the normal but its first
    voxel is shifted along the column direction by z_k * tan(tilt) (the shear dcm2niix corrects)."""
    truth = _sphere_volume()
    write_ct_series(truth, folder)
    files = sorted(folder.iterdir())
    sx, sy, sz = truth.GetSpacing()
    nx, ny = truth.GetSize()[:2]
    for k, p in enumerate(files):
        ds = pydicom.dcmread(p)
        ipp = np.array(ds.ImagePositionPatient, float)
        ipp[1] += (ipp[2] - truth.GetOrigin()[2]) * np.tan(np.radians(tilt_deg))
        ds.ImagePositionPatient = [f"{v:.6g}" for v in ipp]
        ds.GantryDetectorTilt = f"{tilt_deg:.1f}"
        # resample the truth at this sheared slice's pixels
        grid = sitk.Image([nx, ny, 1], sitk.sitkInt16)
        grid.SetSpacing((sx, sy, sz))
        grid.SetOrigin(tuple(ipp))
        plane = sitk.GetArrayFromImage(sitk.Resample(truth, grid, sitk.Transform(), sitk.sitkLinear, -1000.0))[0]
        ds.PixelData = plane.astype(np.int16).tobytes()
        ds.save_as(p, write_like_original=False)
    return truth


def test_gantry_tilt_is_corrected_not_read_as_orthogonal(tmp_path):
    truth = _tilted_series(tmp_path / "tilt")
    naive = sitk.ImageSeriesReader()
    naive.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "tilt")))
    wrong = naive.Execute()
    img = read_dicom_series(tmp_path / "tilt")
    assert "gantry tilt of 15.0 degrees corrected" in img.GetMetaData("jmmda_dicom_notes")
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), np.eye(3), atol=1e-6)  # orthogonal grid
    err = np.linalg.norm(_centroid_mm(img) - _centroid_mm(truth))
    assert err < 1.0, err
    # the test is meaningful: a sheared volume read as orthogonal is off by millimetres
    assert np.abs(np.array(wrong.GetSpacing()[2]) - 4.0) > 0.05 or np.linalg.norm(_centroid_mm(wrong) - _centroid_mm(truth)) > 3


def test_missing_slice_and_duplicate_are_refused(tmp_path):
    d = tmp_path / "gap"
    write_ct_series(_sphere_volume(), d)
    files = sorted(d.iterdir())
    files[12].unlink()
    with pytest.raises(InputError, match="not evenly spaced"):
        read_dicom_series(d)
    dup = tmp_path / "dup"
    write_ct_series(_sphere_volume(), dup)
    ds = pydicom.dcmread(sorted(dup.iterdir())[3])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dup / "extra.dcm", write_like_original=False)
    with pytest.raises(InputError, match="same position"):
        read_dicom_series(dup)


def test_localizer_in_the_series_is_left_out(tmp_path):
    vol = _sphere_volume()
    d = tmp_path / "loc"
    write_ct_series(vol, d)
    ds = pydicom.dcmread(sorted(d.iterdir())[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]  # sagittal scout sharing the series UID
    ds.ImagePositionPatient = ["0", "-60", "60"]
    ds.save_as(d / "scout.dcm", write_like_original=False)
    img = read_dicom_series(d)
    assert img.GetSize() == vol.GetSize() and same_geometry(img, vol)
    assert np.array_equal(arr(img), arr(vol))
    assert "localizer" in img.GetMetaData("jmmda_dicom_notes")


def test_two_series_are_listed_and_chosen_by_uid(tmp_path):
    vol = _sphere_volume()
    d = tmp_path / "two"
    write_ct_series(vol, d, series_description="CT head 5mm")
    thin = tmp_path / "thin"
    write_ct_series(vol[:, :, :20], thin, series_description="CT head bone")
    for p in thin.iterdir():
        shutil.copy(p, d / f"b_{p.name}")
    series = list_series(d)
    assert {s["description"] for s in series} == {"CT head 5mm", "CT head bone"} and {s["images"] for s in series} == {30, 20}
    with pytest.raises(InputError, match="choose one with --series-uid") as e:
        read_dicom_series(d)
    assert "CT head bone" in str(e.value) and "axial" in str(e.value)
    uid = next(s["uid"] for s in series if s["images"] == 30)
    img = read_dicom_series(d, uid)
    assert img.GetSize()[2] == 30
    # export reads only the chosen series
    syn = sitk.Cast(img, sitk.sitkFloat32) * 0 + 0.3
    out = export_synthetic_dwi(syn, d, tmp_path / "syn", series_uid=uid, burn_in=False)
    assert len(out) == 30


def test_export_accepts_the_same_grid_in_another_axis_order(tmp_path):
    vol = _sphere_volume()
    d = tmp_path / "ct"
    write_ct_series(vol, d)
    rng = np.random.default_rng(0)
    syn = sitk.GetImageFromArray(rng.uniform(0, 1, arr(vol).shape).astype(np.float32))
    syn.CopyInformation(vol)
    for code in ("RAS", "LPI", "PIL"):
        other = sitk.DICOMOrient(syn, code)  # the identical physical grid stored in another axis order
        assert other.GetDirection() != vol.GetDirection()
        export_synthetic_dwi(other, d, tmp_path / code, burn_in=False)
        back = read_synthetic_series(tmp_path / code)
        assert same_geometry(back, vol)
        np.testing.assert_allclose(arr(back), arr(syn), atol=0.5e-3 + 1e-6)
    elsewhere = sitk.Image(syn)
    elsewhere.SetOrigin(tuple(o + 2 for o in syn.GetOrigin()))
    with pytest.raises(InputError, match="not on the CT series' grid"):
        export_synthetic_dwi(sitk.DICOMOrient(elsewhere, "RAS"), d, tmp_path / "far", burn_in=False)


def test_burned_in_marker_and_fields(tmp_path, sample_cases):
    ct = read(sample_cases[0].ct)
    d = tmp_path / "ct"
    write_ct_series(ct, d)
    # like a real result: 0.25 inside the brain mask, 0 outside (the text goes where no brain is)
    brain = sitk.Cast(read(sample_cases[0].brainmask) > 0, sitk.sitkFloat32)
    syn = sitk.Cast(ct, sitk.sitkFloat32) * 0 + brain * 0.25
    paths = export_synthetic_dwi(syn, d, tmp_path / "syn")
    burned = 0
    for k, p in enumerate(paths):  # series slice k = array slice k (LPS, same order)
        ds = pydicom.dcmread(p)
        px = ds.pixel_array
        inside = np.round(arr(syn)[k] * 1000) > 0
        assert np.all(px[inside] == 250)  # the brain itself is never written on
        if ds.BurnedInAnnotation == "YES":
            assert "SYNTHETIC" in ds.ImageComments and (px[~inside] > 250).sum() > 50  # the text, outside the brain
            burned += 1
        else:  # no free band on this 128-pixel slice: it says so
            assert "not burned in" in ds.ImageComments
    assert burned >= len(paths) // 3  # slices above and below the widest brain have room
    plain = export_synthetic_dwi(syn, d, tmp_path / "plain", burn_in=False)
    assert pydicom.dcmread(plain[10]).BurnedInAnnotation == "NO"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) not installed")
def test_exported_series_passes_dciodvfy(tmp_path, sample_cases):
    ct = read(sample_cases[0].ct)
    write_ct_series(ct, tmp_path / "ct")
    paths = export_synthetic_dwi(sitk.Cast(ct, sitk.sitkFloat32) * 0 + 0.25, tmp_path / "ct", tmp_path / "syn")
    r = subprocess.run(["dciodvfy", str(paths[0])], capture_output=True, text=True)
    errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, errors


# ---------------------------------------------------------------- non-head CT
def _abdomen_like():
    size, sp = (160, 120, 24), (2.5, 2.5, 5.0)
    z, y, x = np.indices(size[::-1]).astype(float)
    xm, ym = (x - size[0] / 2) * sp[0], (y - size[1] / 2) * sp[1]
    body = (xm / 170) ** 2 + (ym / 120) ** 2 <= 1
    fat = body & ((xm / 155) ** 2 + (ym / 105) ** 2 > 1)
    spine = ((xm / 18) ** 2 + ((ym - 70) / 18) ** 2) <= 1
    a = np.full(size[::-1], -1000.0)
    a[body] = 45
    a[fat] = -100
    a[spine] = 700
    a += np.random.default_rng(0).normal(0, 4, a.shape) * body
    img = sitk.GetImageFromArray(a.astype(np.int16))
    img.SetSpacing(sp)
    return img


def test_non_head_ct_is_refused_by_inference_and_cli(tmp_path):
    from jmmda_model.inference import Synthesizer

    from conftest import DEMO_MODEL

    abd = _abdomen_like()
    syn = Synthesizer(DEMO_MODEL, device="cpu")
    with pytest.raises(InputError, match="head CT|head"):
        syn(abd)
    p = tmp_path / "abdomen.nii.gz"
    sitk.WriteImage(abd, str(p))
    r = subprocess.run([sys.executable, "-m", "jmmda_model.cli", "infer", "--model", str(DEMO_MODEL), "--ct", str(p),
                        "--out", str(tmp_path / "x_synthetic.nii.gz")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "head" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x_synthetic.nii.gz").exists()


def test_infer_checks_the_output_name_before_inference(tmp_path, sample_cases):
    import time

    from conftest import DEMO_MODEL

    t = time.time()
    r = subprocess.run([sys.executable, "-m", "jmmda_model.cli", "infer", "--model", str(DEMO_MODEL), "--ct", str(sample_cases[0].ct),
                        "--out", str(tmp_path / "result.nii.gz")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "synthetic" in r.stderr and time.time() - t < 15


# ---------------------------------------------------------------- registration once per case, lesion included
def test_register_moves_lesion_with_the_same_transform(tmp_path, sample_cases):
    from jmmda_model.clinical.importers import import_apis

    c = sample_cases[3]
    ct = read(c.ct)
    src = tmp_path / "APIS"
    (src / "train").mkdir(parents=True)
    (src / "masks").mkdir()
    shutil.copy(c.ct, src / "train" / "train_001_ncct.nii.gz")
    centre = ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()])
    truth = sitk.Euler3DTransform(centre, np.deg2rad(2.0), np.deg2rad(-2.0), np.deg2rad(7.0), (6.0, -5.0, 3.0))
    mr_grid = sitk.Image([112, 128, 40], sitk.sitkFloat32)  # the MR's own grid: 2 x 2 x 4 mm
    mr_grid.SetSpacing((2.0, 2.0, 4.0))
    mr_grid.SetDirection(ct.GetDirection())
    mr_grid.SetOrigin(tuple(np.array(centre) - np.array(ct.GetDirection()).reshape(3, 3) @ (np.array([111, 127, 39]) / 2 * [2.0, 2.0, 4.0])))
    for tag, name, label in (("dwi", "train_001_dwi", False), ("dwi", "train_001_adc", False), ("lesion", "train_001_r1_mask", True),
                             ("lesion", "train_001_r2_mask", True)):
        img = read(getattr(c, tag))
        moved = sitk.Resample(img, mr_grid, truth.GetInverse(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear, 0.0,
                              img.GetPixelID())
        sitk.WriteImage(moved, str((src / "masks" if label else src / "train") / f"{name}.nii.gz"))
    (src / "train" / "train_009_adc.nii.gz").write_bytes(b"orphan")  # no CT: must be reported, not dropped silently
    store = tmp_path / "studies"
    rep = import_apis(src, store, register=True)
    assert rep.imported == ["apis_train_001"], rep.summary()
    facts = rep.registered["apis_train_001"]
    assert facts["dice"] > 0.9 and 5 < facts["rotation_deg"] < 9
    truth_les = arr(read(c.lesion)) > 0
    got = arr(read(store / "labels" / "lesion" / "apis_train_001.nii.gz")) > 0
    dice = 2 * (got & truth_les).sum() / (got.sum() + truth_les.sum())
    assert dice > 0.7, dice  # the lesion mask came back onto the CT with the MR images
    assert (store / "labels" / "lesion_r2" / "apis_train_001.nii.gz").exists()
    summary = rep.summary()
    assert "registered MR->CT once" in summary and "train/train_009_adc.nii.gz" in summary and "without a matching" in summary


def test_failed_registration_refuses_the_case(tmp_path, sample_cases, monkeypatch):
    from jmmda_model.clinical import importers

    c = sample_cases[0]
    src = tmp_path / "APIS"
    (src / "train").mkdir(parents=True)
    shutil.copy(c.ct, src / "train" / "train_002_ncct.nii.gz")
    dwi = read(c.dwi)
    off = sitk.Image(dwi)
    off.SetOrigin(tuple(o + 3.0 for o in dwi.GetOrigin()))
    sitk.WriteImage(off, str(src / "train" / "train_002_dwi.nii.gz"))
    monkeypatch.setattr(importers, "register_rigid", lambda *a, **k: sitk.Euler3DTransform((0, 0, 0), 0.0, 0.0, 1.2, (90.0, 0, 0)))
    rep = importers.import_apis(src, tmp_path / "studies", register=True)
    assert not rep.imported and "sanity check" in rep.failed["apis_train_002"]


def test_isles_subject_without_ncct_is_reported(tmp_path, sample_cases):
    from jmmda_model.clinical.importers import import_isles24

    src = tmp_path / "ISLES24"
    c = sample_cases[0]
    for sub, with_ct in (("sub-stroke0001", True), ("sub-stroke0002", False)):
        der = src / "derivatives" / sub / "ses-02"
        der.mkdir(parents=True)
        shutil.copy(c.dwi, der / f"{sub}_ses-02_space-ncct_dwi.nii.gz")
        if with_ct:
            raw = src / "rawdata" / sub / "ses-01"
            raw.mkdir(parents=True)
            shutil.copy(c.ct, raw / f"{sub}_ses-01_ncct.nii.gz")
    rep = import_isles24(src, tmp_path / "studies")
    assert rep.imported == ["isles24_sub-stroke0001"] and "sub-stroke0002" in rep.skipped


# ---------------------------------------------------------------- STOW failures are clear
class _Pacs(BaseHTTPRequestHandler):
    mode = "404"

    def _reply(self, code, body=b"", ctype="application/dicom+json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if _Pacs.mode == "404":
            return self._reply(404)
        if self.headers.get("Authorization") != "Basic dXNlcjpzZWNyZXQ=":  # user:secret
            return self._reply(401)
        return self._reply(200, b"{}")

    def do_GET(self):  # noqa: N802 - QIDO: the PACS kept nothing
        self._reply(200, b"[]")

    def log_message(self, *a):
        pass


@pytest.fixture()
def fake_pacs():
    srv = HTTPServer(("127.0.0.1", 0), _Pacs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/dicom-web"
    srv.shutdown()


def test_stow_failures_are_one_line_errors(tmp_path, fake_pacs, monkeypatch):
    vol = _sphere_volume()
    write_ct_series(vol, tmp_path / "ct")
    paths = export_synthetic_dwi(sitk.Cast(vol, sitk.sitkFloat32) * 0 + 0.2, tmp_path / "ct", tmp_path / "syn", burn_in=False)
    t0 = time.monotonic()
    with pytest.raises(PacsError, match=r"cannot reach.*\(2 attempts\)"):  # tried again after 2 s, and says so
        stow(paths, f"http://127.0.0.1:{free_port()}/dicom-web", attempts=2)
    assert 1.9 <= time.monotonic() - t0 < 5.5  # 2 tries, not 3 (2 + 4 s) nor dicomweb-client's default 5 (30 s)
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="STOW attempts"):
            stow(paths, fake_pacs, attempts=bad)
    _Pacs.mode = "404"
    with pytest.raises(PacsError, match="HTTP 404"):
        stow(paths, fake_pacs)
    _Pacs.mode = "auth"
    with pytest.raises(PacsError, match="HTTP 401.*authentication"):
        stow(paths, fake_pacs, username="user", password="wrong")
    monkeypatch.setenv("JMMDA_DICOMWEB_PASSWORD", "secret")
    with pytest.raises(PacsError, match=f"holds 0 of {len(paths)}"):  # accepted, but nothing is there: not "stored N"
        stow(paths, fake_pacs, username="user")
    syn_file = tmp_path / "syn_synthetic.nii.gz"
    sitk.WriteImage(sitk.Cast(vol, sitk.sitkFloat32) * 0 + 0.2, str(syn_file))
    r = subprocess.run([sys.executable, "-m", "jmmda_model.cli", "export-dicom", "--synthetic", str(syn_file), "--ct-dicom",
                        str(tmp_path / "ct"), "--out", str(tmp_path / "out2"), "--stow", f"http://127.0.0.1:{free_port()}/dicom-web",
                        "--stow-attempts", "1"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "attempts" not in r.stderr  # one try: none waited for
    r = subprocess.run([sys.executable, "-m", "jmmda_model.cli", "export-dicom", "--synthetic", str(syn_file), "--ct-dicom",
                        str(tmp_path / "ct"), "--out", str(tmp_path / "out3"), "--stow", fake_pacs, "--stow-attempts", "0"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--stow-attempts" in r.stderr and "from 1 to 10" in r.stderr, r.stderr
    assert not (tmp_path / "out3").exists()  # refused before anything was written
