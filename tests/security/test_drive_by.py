"""Round two (#22, items 3-4 in part): no framing, no answers to foreign Host headers (DNS rebinding), one
source of truth for the bind address. Against a real server on loopback."""
import os
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, SAMPLE
from server_utils import sample_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("driveby"), n=1).wait()
    yield s
    s.stop()


def test_foreign_host_header_is_refused(srv):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    for path in ("/info/", "/logs/", "/datastore/?output=all", "/ui/"):
        r = requests.get(f"{srv.url}{path}", headers={"Host": "evil.example"}, timeout=30)
        assert r.status_code == 400, (path, r.status_code)
    assert requests.get(f"{srv.url}/info/", timeout=30).status_code == 200  # 127.0.0.1:port itself


def test_no_page_can_be_framed(srv):
    for path in ("/info/", "/ui/", "/no-such-route"):
        r = requests.get(f"{srv.url}{path}", timeout=30)
        assert r.headers.get("X-Frame-Options") == "DENY", path
        assert "frame-ancestors 'none'" in r.headers.get("Content-Security-Policy", ""), path
    ui = requests.get(f"{srv.url}/ui/?token={srv.token}", timeout=30).headers["Content-Security-Policy"]
    assert "default-src 'self'" in ui  # the page's own policy is kept


def test_repeated_host_is_refused(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "apps" / "ct2dwi" / "serve.py"), "--studies", str(tmp_path),
                        "--host", "127.0.0.1", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--host given 2 times" in r.stderr


def test_run_sh_serve_host_reaches_the_guard(tmp_path):
    """./run.sh serve --host 0.0.0.0 used to pass --host twice; the guard checked 127.0.0.1 and the server bound
    0.0.0.0 with auth off. Now the one --host is the one checked: refused without auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL_AUTH")}
    env["STUDIES"] = str(tmp_path)
    env["CT2DWI_STATE_DIR"] = str(tmp_path / "state")
    r = subprocess.run(["bash", str(ROOT / "run.sh"), "serve", "--host", "0.0.0.0", "--port", "1"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 2 and "refusing to listen on 0.0.0.0" in r.stderr, r.stderr[-2000:]


def test_inference_slots_answer_503_with_retry_after(tmp_path):
    """Round two, item 2 (in part): with 1 running and no queue, concurrent requests past the first get 503 +
    Retry-After instead of adding up their memory."""
    import threading

    from conftest import SAMPLE

    s = sample_server(tmp_path, n=1, env={"CT2DWI_MAX_INFER": "1", "CT2DWI_INFER_QUEUE": "0"}).wait()
    try:
        ct = (SAMPLE / "phantom_000.nii.gz").read_bytes()
        results = []

        def go():
            r = requests.post(f"{s.url}/infer/ct2dwi?output=json", files={"file": ("ct.nii.gz", ct)}, timeout=300)
            results.append((r.status_code, r.headers.get("Retry-After")))

        threads = [threading.Thread(target=go) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(c for c, _ in results)
        assert 200 in codes and 503 in codes, codes
        assert all(ra for c, ra in results if c == 503)
        # afterwards the slot is free again
        r = requests.post(f"{s.url}/infer/ct2dwi?output=json", files={"file": ("ct.nii.gz", ct)}, timeout=300)
        assert r.status_code == 200
    finally:
        s.stop()


def test_wildcard_cors_origin_with_credentials_is_refused(tmp_path):
    env = {**os.environ, "MONAI_LABEL_CORS_ORIGINS": '["*"]'}
    r = subprocess.run([sys.executable, str(ROOT / "apps" / "ct2dwi" / "serve.py"), "--studies", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "not accepted as a CORS origin" in r.stderr


def test_logs_are_private(srv):
    logs = [p for p in srv.app_dir.rglob("*.log")]
    assert logs, "no log file written"
    for p in logs:
        assert p.stat().st_mode & 0o077 == 0, (p.name, oct(p.stat().st_mode))


def test_cross_site_writes_are_refused_but_api_clients_and_own_page_pass(srv):
    """Drive-by from a web page (auth off, loopback): an empty text/plain POST or a form POST from another origin
    carries ``Origin: https://evil.example`` (browsers always send it on cross-origin writes) -> 403 before any
    route runs. The server's own page (same origin) and clients without Origin (Slicer, scripts) still work."""
    evil = {"Origin": "https://evil.example"}
    r = requests.post(f"{srv.url}/train/ct2dwi", data="", headers={**evil, "Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = requests.post(f"{srv.url}/train/ct2dwi/promote", data={"version": "0"}, headers=evil, timeout=30)
    assert r.status_code == 403
    r = requests.post(f"{srv.url}/infer/ct2dwi?image=x", headers={"Sec-Fetch-Site": "cross-site"}, timeout=30)
    assert r.status_code == 403
    r = requests.delete(f"{srv.url}/train/", headers={"Origin": "null"}, timeout=30)  # sandboxed frames send null
    assert r.status_code == 403
    # same origin (the training page) and no Origin (API clients) reach the route (404: unknown image id)
    own = {"Origin": srv.url}
    assert requests.post(f"{srv.url}/infer/ct2dwi?image=nope", headers=own, timeout=30).status_code == 404
    assert requests.post(f"{srv.url}/infer/ct2dwi?image=nope", timeout=30).status_code == 404
    # reads are not affected (CORS keeps their answers from other origins' scripts)
    assert requests.get(f"{srv.url}/info/", headers=evil, timeout=30).status_code == 200


def test_training_log_lines_show_no_paths_to_the_user_role():
    sys.path.insert(0, str(ROOT / "apps" / "ct2dwi"))
    from ct2dwi_server import _public_task, redact_paths

    line = "INFO resumed from /srv/ct2dwi/model/train_run/checkpoints/last.pt at epoch 3 (see http://kc/realms/x)"
    assert redact_paths(line) == "INFO resumed from <...>/last.pt at epoch 3 (see http://kc/realms/x)"
    task = {"status": "RUNNING", "request": {"x": 1}, "details": [line]}
    assert "/srv/" not in str(_public_task(task, redact=True)) and "request" not in _public_task(task, redact=True)
    assert "/srv/" in str(_public_task(task, redact=False))  # admins (and auth off) see the full log


def test_changes_need_the_access_token_when_auth_is_off(srv, tmp_path):
    """Like Jupyter: the server prints a token at start and every change needs it (another local user, process or
    page cannot drive it); reads stay open on loopback; the page needs it too."""
    none = {"Authorization": ""}  # send no token (the test client otherwise sends the server's)
    for method, path in (("POST", "/train/ct2dwi"), ("DELETE", "/train/"), ("POST", "/train/ct2dwi/versions/0/promote"),
                         ("POST", "/infer/ct2dwi?image=phantom_000"), ("PUT", "/datastore/?image=x")):
        r = requests.request(method, f"{srv.url}{path}", headers=none, timeout=30)
        assert r.status_code == 403 and "access token" in r.json()["detail"], (method, path, r.status_code)
        r = requests.request(method, f"{srv.url}{path}", headers={"Authorization": "Bearer wrong-token-0123456789"}, timeout=30)
        assert r.status_code == 403, (method, path)
    for header in ({"Authorization": f"Bearer {srv.token}"}, {"Authorization": f"token {srv.token}"},
                   {"X-CT2DWI-Token": srv.token}):
        r = requests.post(f"{srv.url}/infer/ct2dwi?image=nope", headers={**none, **header} if "X-CT2DWI-Token" in header
                          else header, timeout=30)
        assert r.status_code == 404, header  # past the token check: the image id is unknown
    assert requests.get(f"{srv.url}/info/", timeout=30).status_code == 200
    assert requests.get(f"{srv.url}/ui/", timeout=30).status_code == 401
    assert requests.get(f"{srv.url}/ui/?token=nope", timeout=30).status_code == 401
    assert requests.get(f"{srv.url}/ui/?token={srv.token}", timeout=30).status_code == 200
    assert requests.get(f"{srv.url}/ui/app.js", timeout=30).status_code == 200  # static code holds no secret
    # the start-up output names the token and the page address
    assert f"/ui/?token={srv.token}" in srv.log()


def test_stalled_body_gets_408_and_the_connection_closes(tmp_path):
    """Round two, item 2: a client that sends headers and part of a body and then stops no longer holds a
    connection and a request slot open for ever (CT2DWI_BODY_TIMEOUT_S, default 60; 2 s here)."""
    import socket
    import time as _time

    s = sample_server(tmp_path, n=1, env={"CT2DWI_BODY_TIMEOUT_S": "2"}).wait()
    try:
        t0 = _time.time()
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"POST /infer/ct2dwi HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + s.token.encode()
                      + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            reply = c.recv(4096).decode(errors="replace")
            rest = c.recv(4096)  # the server closes the connection after the 408
        assert " 408 " in reply.splitlines()[0], reply
        assert rest == b"" or b"stalled" in rest or "stalled" in reply
        assert _time.time() - t0 < 20
        # a normal upload still works on the same server
        ct = (SAMPLE / "phantom_000.nii.gz").read_bytes()
        assert requests.post(f"{s.url}/infer/ct2dwi?output=json", files={"file": ("ct.nii.gz", ct)}, timeout=300).status_code == 200
    finally:
        s.stop()


def test_half_open_connections_are_bounded_and_time_out(tmp_path):
    """Round two, item 2: clients that connect and send half a request header hold at most
    CT2DWI_MAX_CONNECTIONS (64 by default; 8 here) connections; past that the server answers 503 at once instead of
    accumulating them. And they do not hold them for ever: a connection with no complete request head after
    CT2DWI_HEADER_TIMEOUT_S (10 s by default; 2 here) is closed by the server, so it serves again while those
    clients are still connected (the landed server kept 200 half-open connections open)."""
    import socket
    import time as _time

    s = sample_server(tmp_path, n=1, env={"CT2DWI_MAX_CONNECTIONS": "8", "CT2DWI_HEADER_TIMEOUT_S": "2"}).wait()
    socks = []
    try:
        t0 = _time.time()
        for _ in range(12):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"GET /info/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its header
            socks.append(c)
        r = requests.get(f"{s.url}/healthz", timeout=10)
        assert r.status_code == 503
        # the server hangs up on each of them (recv sees the end of the stream; the client never closed)
        for c in socks[:8]:
            c.settimeout(15)
            assert c.recv(4096) == b""
        assert _time.time() - t0 < 15
        assert requests.get(f"{s.url}/healthz", timeout=10).status_code == 200
        # a slow but complete request is not cut: its head arrives in pieces within the timeout
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\n")
            _time.sleep(1.0)
            c.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert b" 200 " in c.recv(4096).split(b"\r\n")[0]
        assert "no complete request head" in s.log()
    finally:
        for c in socks:
            c.close()
        s.stop()


def test_a_stop_right_after_a_start_stops_the_run(monkeypatch):
    """DELETE /train/ between a run's submission and its process start (MONAI Label registers the process only once
    its worker thread has started it): the stop waits for the process and stops it, instead of answering "no run"
    while the run trains on (seen once under load in the full suite)."""
    import threading
    import time
    import types

    sys.path.insert(0, str(ROOT / "apps" / "ct2dwi"))
    import ct2dwi_server as srv_mod
    from monailabel.utils.async_tasks import utils as bg

    class FakeProcess:
        pid = 4242
        terminated = False

        def terminate(self):
            self.terminated = True

        def wait(self, timeout=None):
            return 0

    task = {"id": "t-1", "status": "SUBMITTED", "request": {}}
    proc = FakeProcess()
    monkeypatch.setitem(bg.background_tasks, "train", [task])
    monkeypatch.setitem(bg.background_processes, "train", {})
    monkeypatch.setattr(srv_mod, "_instance", lambda: types.SimpleNamespace(train_task=lambda name: None))
    monkeypatch.setattr(srv_mod, "TRAIN_SPAWN_WAIT_S", 10.0)

    def spawn():  # what MONAI Label's worker thread does a moment later
        time.sleep(0.5)
        bg.background_processes["train"]["t-1"] = proc
        task["status"] = "RUNNING"

    threading.Thread(target=spawn, daemon=True).start()
    res = srv_mod._stop_training("test")
    assert res is task and task["status"] == "STOPPED" and proc.terminated
    # nothing submitted, nothing running: answered at once
    bg.background_tasks["train"], bg.background_processes["train"] = [], {}
    t0 = time.monotonic()
    assert srv_mod._stop_training("test") is None and time.monotonic() - t0 < 1.0
