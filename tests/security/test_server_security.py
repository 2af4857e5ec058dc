"""Attacks on the real server over loopback, as a hostile client would send them (issue: server fails closed).

Every test here failed against the server as it was before the allowlist app (MONAI Label 0.8.5's own routes
behind a few middlewares)."""
from __future__ import annotations

import gzip
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import requests
import SimpleITK as sitk

from conftest import SAMPLE
from server_utils import APP, sample_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

CT = SAMPLE / "phantom_007.nii.gz"
MASK = SAMPLE / "labels" / "brainmask" / "phantom_007.nii.gz"
RSS_LIMIT = 1.5 * 2**30


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("sec")
    tmp = base / "tmp"
    stale = tmp / "ct2dwi-scratch" / "proc-999999-1" / "req-x"  # left by a server killed mid-request
    stale.mkdir(parents=True)
    (stale / "ct.nii.gz").write_bytes(CT.read_bytes())
    old = tmp / "SYNTHETIC_DWI_abc.nii.gz"  # left in TMPDIR by the previous version
    old.write_bytes(b"x")
    import os

    os.utime(old, (time.time() - 3600, time.time() - 3600))
    s = sample_server(base, n=2, env={"TMPDIR": str(tmp), "CT2DWI_MAX_UPLOAD_MB": "64"}).wait()
    s.tmp = tmp
    yield s
    s.stop()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class PeakRSS:
    """Samples the server process's resident memory every 20 ms while the block runs."""

    def __init__(self, pid):
        self.proc = psutil.Process(pid)
        self.peak = 0

    def __enter__(self):
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def post_infer(url, files, params=None, query="output=json", **kw):
    data = {"params": json.dumps(params)} if params is not None else None
    return requests.post(f"{url}/infer/ct2dwi?{query}", files=files, data=data, timeout=300, **kw)


def nifti_bytes(shape, dtype=np.int16, data: bytes | None = None) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0\0\0\0" + (data or b"")


def gzip_stream(head: bytes, zeros: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(head)]
    block = bytes(1 << 24)
    for _ in range(zeros // len(block)):
        out.append(c.compress(block))
    out.append(c.compress(bytes(zeros % len(block))))
    out.append(c.flush())
    return b"".join(out)


# ---------------------------------------------------------------- route allowlist
@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", "/session/?uncompress=true"), ("GET", "/session/x"), ("POST", "/reload"),
        ("POST", "/infer/wsi/ct2dwi"), ("POST", "/infer/wsi_v2/ct2dwi"), ("POST", "/batch/infer/ct2dwi"),
        ("POST", "/scoring/dice"), ("POST", "/activelearning/random"), ("GET", "/model/ct2dwi"),
        ("GET", "/proxy/dicom/x"), ("GET", "/ohif/"), ("GET", "/static/favicon.ico"), ("GET", "/docs"),
        ("GET", "/datastore/image?image=phantom_000"),         ("PUT", "/datastore/updatelabelinfo"), ("GET", "/logs/gpu"), ("GET", "/auth/token/valid"),
    ],
)
def test_routes_outside_the_allowlist_are_404(srv, method, path):
    r = requests.request(method, srv.url + path, timeout=30)
    assert r.status_code == 404, (method, path, r.status_code, r.text[:200])


def test_methods_outside_the_allowlist_are_refused(srv):
    for method, path in (("DELETE", "/datastore/?id=phantom_000"), ("DELETE", "/datastore/label?id=phantom_000&tag=dwi"),
                         ("PUT", "/info/"), ("GET", "/infer/ct2dwi"),
                         ("GET", "/datastore/label?label=phantom_000&tag=dwi")):
        assert requests.request(method, srv.url + path, timeout=30).status_code in (404, 405), (method, path)
    assert (srv.studies / "phantom_000.nii.gz").exists()


def test_session_tar_with_traversal_writes_nothing(srv):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("../../../main.py", str(srv.base / "pwned.txt"), "../pwned2.txt"):
            data = b"print('pwned')\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = (srv.app_dir / "main.py").read_bytes()
    r = requests.put(f"{srv.url}/session/?uncompress=true", files={"files": ("s.tar.gz", buf.getvalue())}, timeout=30)
    assert r.status_code == 404
    assert (srv.app_dir / "main.py").read_bytes() == before
    assert not list(srv.base.rglob("pwned*"))
    assert requests.post(f"{srv.url}/reload", timeout=30).status_code == 404


# ---------------------------------------------------------------- params JSON
@pytest.mark.parametrize(
    "params",
    [
        {"image": "/etc/hostname"},
        {"image": str(SAMPLE / "phantom_000.nii.gz")},
        {"save_label": True, "label_tag": "dwi"},
        {"label": "/etc/passwd"},
        {"device": "cpu", "client_id": "x"},
    ],
)
def test_params_cannot_override_paths_or_write_labels(srv, params):
    dwi = srv.studies / "labels" / "dwi" / "phantom_000.nii.gz"
    digest = dwi.read_bytes()
    r = requests.post(f"{srv.url}/infer/ct2dwi?image=phantom_000&output=json", data={"params": json.dumps(params)}, timeout=60)
    assert r.status_code == 422, r.text
    assert "not accepted" in r.json()["detail"]
    assert "/etc" not in r.json()["detail"] or "'image'" in r.json()["detail"] or "'label'" in r.json()["detail"]
    assert dwi.read_bytes() == digest


def test_client_id_param_is_accepted(srv):
    r = requests.post(f"{srv.url}/infer/ct2dwi?image=phantom_000&output=json", data={"params": json.dumps({"client_id": "slicer"})},
                      timeout=300)
    assert r.status_code == 200, r.text


def test_params_must_be_an_object(srv):
    for bad in ("[1, 2]", '"x"', "{oops"):
        r = requests.post(f"{srv.url}/infer/ct2dwi?image=phantom_000&output=json", data={"params": bad}, timeout=60)
        assert r.status_code == 422, bad


# ---------------------------------------------------------------- traversal and names in every input
@pytest.mark.parametrize("value", ["../phantom_000", "..", "a/b", "okname\n", "phantom_000\n", "x\\y", "/etc/passwd", "%2e%2e"])
def test_traversal_in_query_ids_and_tags(srv, value):
    before = sorted(srv.base.rglob("*"))
    r = requests.post(f"{srv.url}/infer/ct2dwi", params={"image": value, "output": "json"}, timeout=60)
    assert r.status_code == 400, (value, r.text)
    r = requests.put(f"{srv.url}/datastore/label", params={"image": "phantom_000", "tag": value},
                     files={"label": ("m.nii.gz", MASK.read_bytes())}, timeout=60)
    assert r.status_code == 400, (value, r.text)
    r = requests.put(f"{srv.url}/datastore/", params={"image": value}, files={"file": ("ct.nii.gz", CT.read_bytes())}, timeout=60)
    assert r.status_code == 400, (value, r.text)
    assert [p for p in sorted(srv.base.rglob("*")) if "server_" not in p.name and "logs" not in p.parts] == \
        [p for p in before if "server_" not in p.name and "logs" not in p.parts]


def test_unknown_image_id_is_404(srv):
    r = requests.post(f"{srv.url}/infer/ct2dwi?image=nope&output=json", timeout=60)
    assert r.status_code == 404 and "not in the datastore" in r.json()["detail"]


@pytest.mark.parametrize("filename", ["..\\..\\evil.nii.gz", "../../evil.nii.gz", "/etc/evil.nii.gz", "ev\x00il.nii.gz",
                                      "evil.mhd", "evil.nii.gz.sh", ""])
def test_upload_file_names_cannot_escape_or_crash(srv, filename):
    r = post_infer(srv.url, {"file": (filename, CT.read_bytes())})
    assert r.status_code in (200, 422), (filename, r.status_code, r.text)
    if r.status_code == 422:
        assert "unsupported file type" in r.json()["detail"] or "not" in r.json()["detail"]
    assert not list(srv.base.rglob("evil*"))


def test_request_without_any_ct_is_422(srv):
    r = requests.post(f"{srv.url}/infer/ct2dwi?output=json", data={"params": "{}"}, timeout=60)
    assert r.status_code == 422 and "no CT given" in r.json()["detail"]


def test_detached_header_upload_refused(srv):
    mha = ("ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\n"
           "ElementDataFile = /etc/passwd\n").encode()
    r = post_infer(srv.url, {"file": ("scan.mha", mha)})
    assert r.status_code == 422 and "separate data file" in r.json()["detail"]


def test_errors_name_the_users_file_not_server_paths(srv):
    r = post_infer(srv.url, {"file": ("patient_scan.nii.gz", CT.read_bytes()[:4000])})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "patient_scan.nii.gz" in detail
    assert str(srv.tmp) not in detail and "req-" not in detail


def test_info_shows_no_server_paths(srv):
    text = requests.get(f"{srv.url}/info/", timeout=30).text
    for p in (srv.app_dir, srv.studies, srv.tmp, APP):
        assert str(p) not in text
    assert '"/' not in text


# ---------------------------------------------------------------- header and gzip bombs
@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    out = {
        "header_2000cubed.nii": nifti_bytes((2000, 2000, 2000)),
        "header_2000cubed.nii.gz": gzip.compress(nifti_bytes((2000, 2000, 2000))),
        "header_1100cubed.nii.gz": gzip.compress(nifti_bytes((1100, 1100, 1100))),
        # header says 64^3 int16 (0.5 MB); the gzip stream inflates to 1 GiB
        "gzip_bomb.nii.gz": gzip_stream(nifti_bytes((64, 64, 64)), 1 << 30),
        # a within-limit header whose 300 MB of zeros are no CT
        "zeros_512x512x600.nii.gz": gzip_stream(nifti_bytes((512, 512, 600)), 512 * 512 * 600 * 2),
    }
    for k, v in out.items():
        (d / k).write_bytes(v)
    return d


@pytest.mark.parametrize("name,expect", [
    ("header_2000cubed.nii", "exceeds the limit"),
    ("header_2000cubed.nii.gz", "exceeds the limit"),
    ("header_1100cubed.nii.gz", "exceeds the limit"),
    ("gzip_bomb.nii.gz", "more data than its header declares"),
    ("zeros_512x512x600.nii.gz", "Hounsfield"),
])
def test_bombs_refused_with_bounded_memory(srv, bombs, name, expect):
    data = (bombs / name).read_bytes()
    assert len(data) < 3 * 2**20  # small files...
    t0 = time.time()
    with PeakRSS(srv.proc.pid) as rss:
        r = post_infer(srv.url, {"file": (name, data)})
    assert r.status_code == 422, r.text
    assert expect in r.json()["detail"] and name in r.json()["detail"]
    assert rss.peak < RSS_LIMIT, f"server RSS peaked at {rss.peak / 2**30:.2f} GiB"
    assert time.time() - t0 < 60


# ---------------------------------------------------------------- silently wrong images
def _ct_array():
    return sitk.GetArrayFromImage(sitk.ReadImage(str(CT))).astype(np.float32)


def test_truncated_and_nonfinite_nifti_refused(srv, tmp_path):
    img = sitk.ReadImage(str(CT))
    raw = tmp_path / "ct.nii"
    sitk.WriteImage(img, str(raw))
    data = raw.read_bytes()
    cases = {
        "trunc.nii": data[: len(data) * 3 // 4],
        "short_in_valid_gzip.nii.gz": gzip.compress(data[: len(data) * 3 // 4]),
    }
    for bad in (np.nan, np.inf):
        a = _ct_array()
        a[18, 40, 40] = bad
        f = sitk.GetImageFromArray(a)
        f.CopyInformation(img)
        p = tmp_path / "nonfinite.nii.gz"
        sitk.WriteImage(f, str(p))
        cases[f"ct_{bad}.nii.gz"] = p.read_bytes()
    for name, blob in cases.items():
        r = post_infer(srv.url, {"file": (name, blob)})
        assert r.status_code == 422, (name, r.text)
        detail = r.json()["detail"]
        assert name in detail and ("truncated" in detail or "NaN or infinite" in detail), detail
    m = tmp_path / "m.nii.gz"  # a NaN inside the mask too
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(MASK))).astype(np.float32)
    a[0, 0, 0] = np.nan
    f = sitk.GetImageFromArray(a)
    f.CopyInformation(img)
    sitk.WriteImage(f, str(m))
    r = post_infer(srv.url, {"file": ("ct.nii.gz", CT.read_bytes()), "label": ("mask_nan.nii.gz", m.read_bytes())})
    assert r.status_code == 422 and "mask_nan.nii.gz" in r.json()["detail"]


# ---------------------------------------------------------------- upload size, chunked
def test_chunked_upload_over_limit_is_413(srv):
    boundary = "xyzBOUNDARY"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.nii.gz\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        block = b"\0" * (1 << 20)
        for _ in range(100):  # 100 MiB against a 64 MiB limit, no Content-Length
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    with PeakRSS(srv.proc.pid) as rss:
        try:
            r = requests.post(f"{srv.url}/infer/ct2dwi", data=body(), timeout=120,
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            status = r.status_code
            assert "exceeds the limit" in r.json()["detail"]
        except requests.ConnectionError:
            status = 413  # the server may close the connection after its 413 while we still send
    assert status == 413
    assert rss.peak < RSS_LIMIT
    assert requests.get(f"{srv.url}/info/", timeout=30).status_code == 200


def test_lying_content_length_is_413(srv):
    # requests would correct Content-Length itself: a raw socket sends the lie
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"POST /infer/ct2dwi HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 999999999999\r\n\r\n--b\r\n")
        reply = s.recv(4096).decode(errors="replace")
    assert " 413 " in reply.splitlines()[0], reply


# ---------------------------------------------------------------- patient data at rest
def test_startup_swept_stale_scratch_and_results(srv):
    assert not (srv.tmp / "ct2dwi-scratch" / "proc-999999-1").exists()
    assert not (srv.tmp / "SYNTHETIC_DWI_abc.nii.gz").exists()


def test_no_files_left_after_20_failing_requests(srv, bombs):
    def wait_clean(before, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if files_under(srv.tmp) == before:
                return True
            time.sleep(0.5)
        return False

    before = files_under(srv.tmp)
    bad_inputs = [
        {"file": ("trunc.nii.gz", CT.read_bytes()[:5000])},
        {"file": ("ct.nii.gz", CT.read_bytes()), "label": ("empty.nii.gz", b"")},
        {"file": ("x.mhd", b"ObjectType = Image\n")},
        {"file": ("dwi.nii.gz", (SAMPLE / "labels" / "dwi" / "phantom_007.nii.gz").read_bytes())},
        {"file": ("gzip_bomb.nii.gz", (bombs / "gzip_bomb.nii.gz").read_bytes())},
    ]
    codes = []
    for i in range(20):
        r = post_infer(srv.url, bad_inputs[i % len(bad_inputs)], query="output=image")
        codes.append(r.status_code)
    assert all(400 <= c < 500 for c in codes), codes
    r = post_infer(srv.url, {"file": ("ok.nii.gz", CT.read_bytes())}, query="output=image")
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('SYNTHETIC_DWI_ok.nii.gz"')
    # a client that sends a whole request, then hangs up before the answer
    files = {"file": ("ct.nii.gz", CT.read_bytes())}
    req = requests.Request("POST", f"{srv.url}/infer/ct2dwi?output=image", files=files).prepare()
    head = f"POST /infer/ct2dwi?output=image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {req.headers['Content-Type']}\r\n" \
           f"Content-Length: {len(req.body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + req.body)
        time.sleep(0.3)
    assert wait_clean(before), files_under(srv.tmp)


def test_upload_is_streamed_once_into_the_request_folder(srv, tmp_path):
    """#22 item 5: an upload took 2x its size in TMPDIR (Starlette spooled it to an unnamed temp file, then the
    server copied it into the request folder). Paused half-way through the body, the server now holds the part
    already received in the request folder only, and no other file in TMPDIR; finished, the request succeeds."""
    from server_utils import TOKENS

    ct = tmp_path / "ct_plain.nii"  # uncompressed: 1.2 MB, past Starlette's 1 MB in-memory spool
    sitk.WriteImage(sitk.ReadImage(str(CT)), str(ct))
    req = requests.Request("POST", f"{srv.url}/infer/ct2dwi?output=json",
                           files={"file": ("ct_plain.nii", ct.read_bytes())}).prepare()
    body = req.body
    head = (f"POST /infer/ct2dwi?output=json HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKENS[srv.url]}\r\n"
            f"Content-Type: {req.headers['Content-Type']}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    half = 1_100_000
    proc = psutil.Process(srv.proc.pid)
    scratch = srv.tmp / "ct2dwi-scratch"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as c:
        c.sendall(head.encode() + body[:half])
        deadline, landed = time.time() + 20, []
        while time.time() < deadline:
            landed = [f for f in scratch.glob("proc-*/req-*/ct.nii") if f.stat().st_size > 1_000_000]
            if landed:
                break
            time.sleep(0.1)
        assert landed, "the received part of the upload is not in the request folder"
        open_tmp = [f.path for f in proc.open_files()
                    if f.path.startswith(str(srv.tmp)) and not f.path.startswith(str(scratch))]
        assert open_tmp == [], f"a second copy of the upload is open in TMPDIR: {open_tmp}"
        c.sendall(body[half:])
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    status = reply.split(b"\r\n", 1)[0].decode()
    assert " 200 " in status, reply[:400]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1].decode())["synthetic"] is True


def test_form_tricks_are_refused_with_422(srv):
    """The streamed form reader refuses what FastAPI's parser let through or answered vaguely: the CT sent twice,
    the CT as a text field, an unterminated multipart body, a file type outside the allowlist."""
    ct = CT.read_bytes()
    cases = [
        ([("file", ("a.nii.gz", ct)), ("file", ("b.nii.gz", ct))], "sent twice"),
        ([("file", (None, "not a file"))], "send it as a file"),
        ([("file", ("ct.dcm", ct))], "unsupported file type"),
    ]
    for files, expect in cases:
        r = requests.post(f"{srv.url}/infer/ct2dwi?output=json", files=files, timeout=60)
        assert r.status_code == 422 and expect in r.json()["detail"], (expect, r.status_code, r.text)
    req = requests.Request("POST", f"{srv.url}/infer/ct2dwi?output=json", files={"file": ("ct.nii.gz", ct)}).prepare()
    cut = req.body[: len(req.body) - 40]  # the closing boundary never comes, though the body is complete
    r = requests.post(f"{srv.url}/infer/ct2dwi?output=json", data=cut,
                      headers={"Content-Type": req.headers["Content-Type"]}, timeout=60)
    assert r.status_code == 422 and "incomplete" in r.json()["detail"], r.text


# ---------------------------------------------------------------- CORS
def test_cors_is_closed_by_default(srv):
    for headers in ({"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},):
        r = requests.options(f"{srv.url}/infer/ct2dwi", headers=headers, timeout=30)
        assert "access-control-allow-origin" not in r.headers
        assert "access-control-allow-credentials" not in r.headers
    r = requests.get(f"{srv.url}/info/", headers={"Origin": "https://evil.example.com"}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- training options
@pytest.mark.parametrize("body,expect", [
    ({"lr": "abc"}, "lr must be a number"),
    ({"epochs": -1}, "epochs must be an integer"),
    ({"batch_size": 0}, "batch_size must be an integer"),
    ({"val_fraction": 2}, "val_fraction must be a number"),
    ({"device": "tpu"}, "invalid device"),
    ({"epochs": 1, "learning_rate": 0.1}, "unknown option"),
    ({"fine_tune": "yes"}, "fine_tune must be true or false"),
])
def test_training_options_validated_at_post(srv, body, expect):
    r = requests.post(f"{srv.url}/train/ct2dwi", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert expect in r.json()["detail"]


def test_one_training_at_a_time_and_stop_starts_nothing(srv):
    run_dir = srv.app_dir / "model" / "train_run"
    r = requests.post(f"{srv.url}/train/ct2dwi", json={"epochs": 50, "batch_size": 2}, timeout=30)
    assert r.status_code == 200, r.text
    r2 = requests.post(f"{srv.url}/train/ct2dwi", json={"epochs": 1}, timeout=30)
    assert r2.status_code == 409 and "already in progress" in r2.json()["detail"]
    t0 = time.time()
    while not (run_dir / "status.json").exists() and time.time() - t0 < 120:
        time.sleep(0.5)
    assert requests.delete(f"{srv.url}/train/", timeout=60).json()["status"] == "STOPPED"
    time.sleep(3)
    runs = requests.get(f"{srv.url}/train/?all=true", timeout=30).json()
    assert [t["status"] for t in runs] == ["STOPPED"], runs
    assert (run_dir / "status.json").exists()  # the stopped run's folder survives (resumable)
    assert "request" not in json.dumps(runs)


# ---------------------------------------------------------------- secure by default
def _serve(args, env=None, cwd=None):
    import os

    e = {**os.environ, "CT2DWI_STATE_DIR": str(Path(cwd or ".") / "state"), **(env or {})}
    return subprocess.run([sys.executable, str(APP / "serve.py"), *args], capture_output=True, text=True, timeout=120,
                          env=e, cwd=cwd)


def test_refuses_public_host_without_auth(tmp_path):
    r = _serve(["--studies", str(tmp_path), "--host", "0.0.0.0", "--port", "1"], cwd=tmp_path)
    assert r.returncode == 2 and "authentication disabled" in r.stderr and "--insecure" in r.stderr
    r = _serve(["--studies", str(tmp_path), "--host", "0.0.0.0", "--port", "1", "--insecure", "--dryrun"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_refuses_more_than_one_worker_process(tmp_path):
    """Several uvicorn workers would each have their own inference slots, token and training child (and lose the
    request-head timeout): refused, exit 2."""
    for opt in (["--workers", "2"], ["--workers=4"], ["-w", "3"]):
        r = _serve(["--studies", str(tmp_path), "--port", "1", *opt], cwd=tmp_path)
        assert r.returncode == 2 and "--workers" in r.stderr, (opt, r.stderr[-500:])


def test_refuses_hmac_token_algorithms(tmp_path):
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "CT2DWI_AUTH_ALGORITHMS": "RS256,HS256"}
    r = _serve(["--studies", str(tmp_path), "--port", "1", "--dryrun"], env=env, cwd=tmp_path)
    assert r.returncode == 2 and "HS256" in r.stderr


def test_refuses_an_unknown_model_format(tmp_path):
    r = _serve(["--studies", str(tmp_path), "--port", "1", "--conf", "model_format", "onnx", "--dryrun"], cwd=tmp_path)
    assert r.returncode == 2 and "model_format must be checkpoint or torchscript" in r.stderr and "'onnx'" in r.stderr
    r = _serve(["--studies", str(tmp_path), "--port", "1", "--conf", "model_format", "torchscript", "--dryrun"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _serve(["--studies", str(tmp_path), "--port", "1", "--conf", "flip_average", "ture", "--dryrun"], cwd=tmp_path)
    assert r.returncode == 2 and "flip_average must be true or false" in r.stderr and "'ture'" in r.stderr


def test_non_head_ct_is_422(srv, tmp_path):
    from test_clinical_integrity import _abdomen_like

    p = tmp_path / "abdomen.nii.gz"
    sitk.WriteImage(_abdomen_like(), str(p))
    r = post_infer(srv.url, {"file": ("abdomen_ct.nii.gz", p.read_bytes())})
    assert r.status_code == 422 and "head" in r.json()["detail"] and "abdomen_ct.nii.gz" in r.json()["detail"]
