"""Model versions (publish, promote, roll back, crash safety) and the training page in a real browser."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest
import requests

from conftest import DEMO_MODEL
from server_utils import APP, Server, copy_app, copy_studies, json_events, sample_server

sys.path.insert(0, str(APP))
from ct2dwi_app.versions import ModelVersions, VersionError  # noqa: E402

pytestmark = [pytest.mark.timeout(900)]


# ---------------------------------------------------------------- versions, no server
def test_versions_publish_promote_and_fall_back(tmp_path):
    (tmp_path / "model").mkdir()
    demo = tmp_path / "model" / "jmmda_demo.pt"
    shutil.copy(DEMO_MODEL, demo)
    v = ModelVersions(tmp_path / "model", demo)
    assert v.served_id() == 0 and [x["id"] for x in v.list()] == [0]
    assert v.publish(demo, {"note": "first"}) == 1 and v.served_id() == 1
    assert v.publish(demo, {"note": "second"}, promote=False) == 2 and v.served_id() == 1
    assert v.promote(2)["previous"] == 1 and v.served_id() == 2
    assert v.promote(0)["version"] == 0 and v.served_path() == demo  # roll back to the demo
    with pytest.raises(VersionError, match="does not exist"):
        v.promote(9)
    (tmp_path / "model" / "versions" / "v2" / "model.pt").write_bytes(b"garbage")
    with pytest.raises(VersionError, match="unusable"):
        v.promote(2)
    assert v.served_id() == 0
    v.pointer.write_text("{not json")  # a pointer damaged outside our atomic writes
    assert v.served_id() == 2 and v.list()[-1]["served"]  # newest version, never nothing
    assert v.meta(1)["note"] == "first" and v.meta(1)["id"] == 1


def test_publish_refuses_an_unreadable_checkpoint(tmp_path):
    from jmmda_model.checkpoint import CheckpointError

    (tmp_path / "model").mkdir()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    v = ModelVersions(tmp_path / "model", None)
    with pytest.raises(CheckpointError):
        v.publish(bad, {})
    assert v.ids() == [] and v.served_id() is None


CRASHER = r"""
import sys, itertools
sys.path.insert(0, sys.argv[1])
from ct2dwi_app.versions import ModelVersions
v = ModelVersions(sys.argv[2], sys.argv[3])
print("ready", flush=True)
for k in itertools.count():
    v.promote(1 + k % 2)
"""


def test_kill_during_promote_leaves_exactly_one_valid_served_model(tmp_path):
    from jmmda_model.checkpoint import load

    model = tmp_path / "model"
    model.mkdir()
    demo = model / "jmmda_demo.pt"
    shutil.copy(DEMO_MODEL, demo)
    v = ModelVersions(model, demo)
    v.publish(demo, {"n": 1})
    v.publish(demo, {"n": 2})
    for i in range(5):
        p = subprocess.Popen([sys.executable, "-c", CRASHER, str(APP), str(model), str(demo)], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.13 * i)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        fresh = ModelVersions(model, demo)
        served = fresh.served_id()
        assert served in (1, 2)
        json.loads(fresh.pointer.read_text())  # the pointer itself is always a complete file
        load(fresh.served_path())
        fresh.sweep()
        assert not list(model.glob(".served.json.*.tmp"))


def test_the_served_version_is_scored_once_while_it_and_the_cases_are_unchanged(tmp_path, monkeypatch):
    """Candidates compared one after another with the same served version: the served model's inference runs once;
    another served version, a changed case file (also inside a DICOM folder) or another device scores it again."""
    from ct2dwi_app import candidates

    from jmmda_model.data import Case

    scored = []

    def fake_score(model, cases, device=None):
        scored.append(Path(model).name)
        return {"cases": len(cases), "psnr_brain": 30.0, "qualifying_sensitivity": 1.0, "false_bright_ml": 0.0,
                "lesions_darker": 0}

    monkeypatch.setattr(candidates, "score_model", fake_score)
    monkeypatch.setattr(candidates, "_served_scores", type(candidates._served_scores)())
    model = tmp_path / "model"
    model.mkdir()
    demo = model / "jmmda_demo.pt"
    shutil.copy(DEMO_MODEL, demo)
    v = ModelVersions(model, demo)
    v.publish(demo, {"n": 1}, promote=False)
    (tmp_path / "dicom").mkdir()
    for name in ("1.dcm", "2.dcm"):
        (tmp_path / "dicom" / name).write_bytes(b"slice " + name.encode())
    for name in ("dwi.nii.gz", "mask.nii.gz"):
        (tmp_path / name).write_bytes(name.encode())
    cases = [Case("a", tmp_path / "dicom", tmp_path / "dwi.nii.gz", tmp_path / "mask.nii.gz")]

    def compare(device="cpu"):
        """How many models were scored for one comparison (2: candidate and served; 1: the candidate only)."""
        n = len(scored)
        out = candidates.compare_with_served(v, demo, cases, device=device)
        assert out["served"]["psnr_brain"] == 30.0 and out["worse_on_lesions"] == []
        return len(scored) - n

    assert compare() == 2
    assert compare() == 1  # the served scores are kept
    (tmp_path / "dwi.nii.gz").write_bytes(b"another dwi")
    assert compare() == 2
    assert compare() == 1
    (tmp_path / "dicom" / "2.dcm").write_bytes(b"slice 2, edited")  # one file of a DICOM folder
    assert compare() == 2
    assert compare(device="cuda") == 2
    v.promote(1)  # v1 is a byte-for-byte copy of the demo: kept by content
    assert compare() == 1
    v.path(1).write_bytes(demo.read_bytes() + b"\0")  # the served file itself changed
    assert compare() == 2


# ---------------------------------------------------------------- versions on the real server
@pytest.fixture(scope="module")
def vserver(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("ver"), n=3).wait()
    yield s
    s.stop()


def _served(url):
    return requests.get(f"{url}/info/", timeout=30).json()["models"]["ct2dwi"]["version"]


@pytest.mark.server
def test_versions_api_promote_and_rollback_without_restart(vserver):
    model = vserver.app_dir / "model"
    v = ModelVersions(model, model / "jmmda_demo.pt")
    v.publish(model / "jmmda_demo.pt", {"note": "copy of the demo, as if retrained"})
    listed = requests.get(f"{vserver.url}/train/ct2dwi/versions", timeout=30).json()["versions"]
    assert [x["id"] for x in listed] == [0, 1] and listed[1]["served"] and listed[1]["note"].startswith("copy")
    assert _served(vserver.url) == 1
    r = requests.post(f"{vserver.url}/infer/ct2dwi?image=phantom_000&output=json", timeout=300)
    assert r.json()["version"] == 1
    r = requests.post(f"{vserver.url}/train/ct2dwi/versions/0/promote", timeout=30)
    assert r.status_code == 200 and r.json() == {**r.json(), "version": 0, "previous": 1}
    r = requests.post(f"{vserver.url}/infer/ct2dwi?image=phantom_000&output=json", timeout=300)
    assert r.json()["version"] == 0 and r.json()["checkpoint"] == "jmmda_demo.pt"
    assert requests.post(f"{vserver.url}/train/ct2dwi/versions/42/promote", timeout=30).status_code == 404
    assert requests.post(f"{vserver.url}/train/ct2dwi/versions/x/promote", timeout=30).status_code == 422
    status = requests.get(f"{vserver.url}/train/ct2dwi/status", timeout=30).json()
    assert status["served_version"] == 0 and status["task"]["status"] in ("NONE", "DONE", "STOPPED")


@pytest.mark.server
def test_served_version_survives_a_restart(tmp_path):
    app = copy_app(tmp_path / "app")
    studies = copy_studies(tmp_path / "studies", n=1)
    model = app / "model"
    v = ModelVersions(model, model / "jmmda_demo.pt")
    v.publish(model / "jmmda_demo.pt", {})
    v.publish(model / "jmmda_demo.pt", {})
    v.promote(1)
    (model / ".served.json.999999.tmp").write_text('{"version": 2')  # a promote that died mid-write
    s = Server(app, studies).wait()
    try:
        assert _served(s.url) == 1
        assert not (model / ".served.json.999999.tmp").exists()
    finally:
        s.stop()


# ---------------------------------------------------------------- the page in a real browser
def _type(drv, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    el = drv.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(text)


@contextmanager
def _browser():
    """Headless chromium whose profile and temporary files live in a folder of its own, removed afterwards.
    Chromium had left an empty ``org.chromium.Chromium.*`` folder in the system's TMPDIR at every run (60 had
    gathered); after a run that passed, nothing of the browser may be left there. The folder is a short one in the
    system's TMPDIR: chromium puts a Unix socket in it, and a socket's path must stay under 108 bytes (the test's
    own tmp_path is too deep)."""
    chromedriver = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromedriver or not chromium:
        pytest.skip("chromium + chromium-driver not installed (Debian packages; ./run.sh test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    system_tmp = Path(tempfile.gettempdir())

    def browser_files():
        return {p.name for p in system_tmp.iterdir() if p.name.startswith(("org.chromium.", ".org.chromium.", "scoped_dir"))}

    before = browser_files()
    home = Path(tempfile.mkdtemp(prefix="ct2dwi-browser-"))
    try:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800", "--disable-gpu",
                  f"--user-data-dir={home / 'profile'}"):
            opts.add_argument(a)
        drv = webdriver.Chrome(service=Service(chromedriver, env={**os.environ, "TMPDIR": str(home)}), options=opts)
        try:
            yield drv
        finally:
            drv.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    left = browser_files() - before
    assert not left, f"the browser left {sorted(left)} in {system_tmp}"


@pytest.mark.server
@pytest.mark.slow
def test_training_page_in_chromium(vserver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with _browser() as drv:
        drv.get(f"{vserver.url}/ui/")  # without the access token: the page is refused
        assert "needs the server's access token" in drv.page_source
        drv.get(f"{vserver.url}/ui/?token={vserver.token}")
        assert "token=" not in drv.current_url  # taken out of the address bar and history
        wait = WebDriverWait(drv, 240, poll_frequency=0.5)
        wait.until(EC.text_to_be_present_in_element((By.ID, "auth-state"), "Authentication is off"))
        assert "SYNTHETIC" in drv.find_element(By.CLASS_NAME, "banner").text
        # a refused option shows the server's 422 inline
        _type(drv, "lr", "abc")
        drv.find_element(By.ID, "start").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "start-error"), "lr must be a number"))
        # the DDP options travel with the request and are checked by the server too
        drv.find_element(By.ID, "multi_gpu").click()
        _type(drv, "gpus", "0,0")
        drv.find_element(By.ID, "start").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "start-error"), "gpus must be"))
        drv.find_element(By.ID, "multi_gpu").click()
        _type(drv, "gpus", "all")
        # a tiny run: curve and sample appear
        for field, value in (("lr", "0.0002"), ("epochs", "2"), ("batch_size", "2"), ("max_steps_per_epoch", "2"), ("val_fraction", "0.34")):
            _type(drv, field, value)
        drv.find_element(By.ID, "start").click()
        wait.until(lambda d: d.find_element(By.ID, "start-error").text == "")
        wait.until(lambda d: int(d.find_element(By.ID, "val-chart").get_attribute("data-points") or 0) >= 1)
        wait.until(lambda d: d.find_element(By.ID, "sample").is_displayed())
        assert int(drv.find_element(By.ID, "loss-chart").get_attribute("data-points")) >= 3  # per step
        assert drv.find_element(By.ID, "loss-chart").get_attribute("data-log") == "1"  # losses on a log axis
        wait.until(EC.text_to_be_present_in_element((By.ID, "run-state"), "Training finished"))
        assert drv.find_element(By.ID, "run-state").get_attribute("data-task") == "DONE"
        wait.until(EC.presence_of_element_located((By.ID, "version-2")))  # published as a new version...
        row = drv.find_element(By.ID, "version-2")
        assert "candidate" in row.get_attribute("class") and "not served until promoted" in row.text  # ...as a candidate
        assert _served(vserver.url) != 2
        # ...compared with the served version (the demo, v0, here) on the same validation case, lesion metrics first
        panel = wait.until(EC.presence_of_element_located((By.ID, "comparison-2")))
        assert f"served v{_served(vserver.url)}" in panel.text and "lesions shown (all)" in panel.text and "in-brain PSNR dB" in panel.text
        worse = "WARNING" in panel.text
        # the served version's row shows its own numbers from that comparison (the demo is no row of dashes)
        served_row = drv.find_element(By.ID, f"version-{_served(vserver.url)}").text
        assert "(as compared)" in served_row
        drv.find_element(By.ID, "promote-2").click()  # the admin promotes it (confirming when it is worse on lesions)
        if worse:
            WebDriverWait(drv, 10).until(EC.alert_is_present()).accept()
        wait.until(lambda d: "served" in d.find_element(By.ID, "version-2").get_attribute("class"))
        # the TensorBoard logs of the finished run are one click away
        assert drv.find_element(By.ID, "tensorboard").is_enabled()
        # a long run, stopped from the page; the served version stays
        _type(drv, "epochs", "500")
        drv.find_element(By.ID, "start").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "run-state"), "Training is running"))
        drv.find_element(By.ID, "start").click()  # a second run while one runs: said plainly
        wait.until(EC.text_to_be_present_in_element((By.ID, "start-error"), "already in progress"))
        drv.find_element(By.ID, "stop").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "run-state"), "Training was stopped"))
        wait.until(lambda d: d.find_element(By.ID, "run-state").get_attribute("data-run") == "stopped")  # the run agrees
        text = drv.find_element(By.TAG_NAME, "main").text
        assert "Task:" not in text and "DELETE" not in text and "NONE" not in text
        # the finished run's curves are overlaid (dashed) on the stopped one's
        drv.find_element(By.ID, "overlay").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#psnr-chart polyline[stroke-dasharray='4 3']"))
        assert _served(vserver.url) == 2
        # roll back to the demo model from the versions table
        drv.find_element(By.ID, "promote-0").click()
        wait.until(lambda d: "served" in d.find_element(By.ID, "version-0").get_attribute("class"))
        assert _served(vserver.url) == 0
        drv.save_screenshot(str(tmp_path / "training_page.png"))
        assert (tmp_path / "training_page.png").stat().st_size > 10000
        shots = os.environ.get("CT2DWI_SCREENSHOT_DIR")  # keep the screenshot where a person can look at it
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "training_page.png", Path(shots) / "training_page.png")
        logs = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")]
        assert all(("401" in e["message"] or "404" in e["message"] or "409" in e["message"] or "422" in e["message"]) for e in logs), logs


class PrefixProxy:
    """A reverse proxy on loopback that serves the server under /ct2dwi/ (as nginx does with
    ``location /ct2dwi/ { proxy_pass http://127.0.0.1:8000/; proxy_set_header Host $host; }``)."""

    def __init__(self, backend: str, prefix: str = "/ct2dwi"):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(backend)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                if not self.path.startswith(prefix + "/"):
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                conn.request(self.command, self.path[len(prefix):], body=body or None, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}{prefix}"

    def stop(self):
        self.httpd.shutdown()


@pytest.mark.server
@pytest.mark.slow
def test_training_page_works_behind_a_path_prefix(vserver):
    """Deployment issue: the page calls the API relative to where it is served, so a reverse proxy can mount the
    server under a prefix; reads and a write (promote) go through the proxy."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    proxy = PrefixProxy(vserver.url)
    try:
        with _browser() as drv:
            drv.get(f"{proxy.url}/ui/?token={vserver.token}")
            wait = WebDriverWait(drv, 120, poll_frequency=0.5)
            wait.until(EC.text_to_be_present_in_element((By.ID, "auth-state"), "Authentication is off"))
            wait.until(lambda d: d.find_elements(By.ID, "version-0"))  # a read through the prefix
            served = _served(vserver.url)
            others = [v["id"] for v in requests.get(f"{vserver.url}/train/ct2dwi/versions", timeout=30).json()["versions"]
                      if v["id"] != served]
            if others:  # a write through the prefix (the page's own origin): serve another version, then restore
                drv.find_element(By.ID, f"promote-{others[0]}").click()
                wait.until(lambda d: "served" in d.find_element(By.ID, f"version-{others[0]}").get_attribute("class"))
                assert _served(vserver.url) == others[0]
                requests.post(f"{vserver.url}/train/ct2dwi/versions/{served}/promote", timeout=30)
    finally:
        proxy.stop()


def test_a_candidate_never_goes_live_by_itself(tmp_path):
    """Deployment issue, item 1: a finished run is published as a candidate; neither publishing nor a missing or
    damaged pointer serves it; promotion does, and marks it."""
    demo = tmp_path / "jmmda_demo.pt"
    shutil.copy(DEMO_MODEL, demo)
    v = ModelVersions(tmp_path / "model", demo=demo)
    assert v.publish(demo, {"candidate": True}, promote=False) == 1
    assert v.served_id() == 0 and v.list()[1]["candidate"]
    v.pointer.unlink()
    assert v.served_id() == 0  # no pointer: still not the candidate
    v.promote(1)
    assert v.served_id() == 1 and not v.list()[1]["candidate"] and v.meta(1)["ever_served"]
    v.promote(0)
    assert v.served_id() == 0 and not v.list()[1]["candidate"]  # once served, an ordinary earlier version


@pytest.mark.server
@pytest.mark.slow
def test_a_page_from_another_origin_cannot_drive_the_server(tmp_path):
    """Security round two, item 3: a page served from a second origin on loopback submits a cross-site form
    (promote) and fires a text/plain fetch (start training) at a server with sign-in off. Chromium sends them
    with Origin set; the server refuses both (no token, other origin) and nothing changes."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = sample_server(tmp_path / "srv", n=1).wait()
    site = tmp_path / "evil"
    site.mkdir()
    (site / "index.html").write_text(f"""<!doctype html><title>evil</title>
<form id="f" method="POST" action="{s.url}/train/ct2dwi/versions/0/promote" target="sink"></form>
<iframe name="sink"></iframe><pre id="out">pending</pre>
<script>
fetch("{s.url}/train/ct2dwi", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: ""}})
  .then(() => {{ document.getElementById("out").textContent = "sent"; }})
  .catch((e) => {{ document.getElementById("out").textContent = "sent (" + e + ")"; }});
document.getElementById("f").submit();
</script>""")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(site), **k)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with _browser() as drv:
            drv.get(f"http://127.0.0.1:{httpd.server_port}/index.html")  # another origin: another port
            WebDriverWait(drv, 60).until(lambda d: d.find_element(By.ID, "out").text.startswith("sent"))
            time.sleep(2)  # let the form post land
            log = s.log()
            assert '"path": "/train/ct2dwi", "status": 403' in log  # the fetch arrived and was refused
            assert '"path": "/train/ct2dwi/versions/0/promote", "status": 403' in log  # so was the form
            assert requests.get(f"{s.url}/train/", timeout=30).json()["status"] == "NONE"  # no training started
    finally:
        httpd.shutdown()
        s.stop()


@pytest.mark.server
def test_promotion_gate_and_publishing_a_model_trained_elsewhere(vserver, tmp_path):
    """Deployment issue, item 1: a candidate worse on lesions than the served version is refused promotion (409,
    naming where it is worse) unless confirmed, and the confirmation is audited; a checkpoint, a TorchScript
    export and a bundle zip trained elsewhere are published over REST as candidates, compared with the served
    version on the same validation cases; anything else is 422 and publishes nothing."""
    import zipfile

    from jmmda_model.bundle import export_bundle

    model = vserver.app_dir / "model"
    v = ModelVersions(model, model / "jmmda_demo.pt")
    served = _served(vserver.url)
    worse = ["shows fewer lesions (0.00 vs 0.50)"]
    vid = v.publish(model / "jmmda_demo.pt", {"candidate": True, "comparison": {"worse_on_lesions": worse}}, promote=False)
    r = requests.post(f"{vserver.url}/train/ct2dwi/versions/{vid}/promote", timeout=30)
    assert r.status_code == 409 and "worse on lesions" in r.json()["detail"] and "confirm=true" in r.json()["detail"]
    assert _served(vserver.url) == served
    r = requests.post(f"{vserver.url}/train/ct2dwi/versions/{vid}/promote?confirm=true", timeout=30)
    assert r.status_code == 200 and _served(vserver.url) == vid
    assert any(e.get("confirmed_worse_on_lesions") == worse and e["version"] == vid for e in json_events(vserver.log(), "promote"))
    requests.post(f"{vserver.url}/train/ct2dwi/versions/{served}/promote", timeout=30)  # as before

    bundle = export_bundle(model / "jmmda_demo.pt", tmp_path / "bundle")
    ts = tmp_path / "demo.ts"
    shutil.copy(bundle / "models" / "model.ts", ts)  # the bundle's TorchScript export (one trace, not two)
    zpath = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in bundle.rglob("*"):
            if f.is_file():
                z.write(f, f"jmmda_bundle/{f.relative_to(bundle)}")
    before = len(v.ids())
    for path, kind in ((model / "jmmda_demo.pt", "checkpoint"), (ts, "torchscript"), (zpath, "bundle")):
        with open(path, "rb") as f:
            r = requests.post(f"{vserver.url}/train/ct2dwi/versions", files={"model": (path.name, f)}, timeout=300)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["candidate"] and body["format"] == kind
        cmp_ = body["comparison"]
        assert cmp_["served"]["version"] == served and cmp_["cases"] and cmp_["candidate"]["cases"] == len(cmp_["cases"])
        # the same model as the served demo: the same numbers, so not worse on lesions
        assert cmp_["worse_on_lesions"] == [] and abs(cmp_["candidate"]["psnr_brain"] - cmp_["served"]["psnr_brain"]) < 0.05
        meta = v.meta(body["version"])
        assert meta["candidate"] and meta["uploaded_file"] == path.name and meta["format"] == kind
        assert _served(vserver.url) == served  # never live by itself
    assert len(v.ids()) == before + 3
    # compared again with the version served now (here the same one): stored in the version's record
    last = v.ids()[-1]
    r = requests.post(f"{vserver.url}/train/ct2dwi/versions/{last}/compare", timeout=300)
    assert r.status_code == 200 and r.json()["served"]["version"] == served and v.meta(last)["comparison"] == r.json()
    assert requests.post(f"{vserver.url}/train/ct2dwi/versions/999/compare", timeout=30).status_code == 404
    for name, data, expect in (("model.pt", b"not a model", "not a model file"),
                               ("notes.txt", b"x", "unsupported file type"),
                               ("demo.zip", zipfile_bytes(), "bundle"),
                               ("tagged.ts", tagged_torchscript_bytes(), "not a usable JMMDA-GAN TorchScript")):
        r = requests.post(f"{vserver.url}/train/ct2dwi/versions", files={"model": (name, data)}, timeout=60)
        assert r.status_code == 422 and expect in r.json()["detail"], (name, r.text)
    assert len(v.ids()) == before + 3
    r = requests.post(f"{vserver.url}/train/ct2dwi/versions", files={"model": ("m.pt", b"x")}, timeout=60,
                      headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code in (401, 403)
    # the CLI path: checked locally, then the same route
    cli = [sys.executable, "-m", "jmmda_model.cli", "publish", "--server", vserver.url, f"--token={vserver.token}"]
    out = subprocess.run([*cli, "--model", str(ts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "as candidate version" in out.stdout and "NOT served" in out.stdout, out.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    out = subprocess.run([*cli, "--model", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "bad.pt" in out.stderr
    out = subprocess.run([*cli[:5], "http://127.0.0.1:1", "--model", str(ts)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3 and "cannot reach" in out.stderr
    assert len(v.ids()) == before + 4 and _served(vserver.url) == served


def tagged_torchscript_bytes() -> bytes:
    """A TorchScript file carrying the export's format tag but no generator configuration."""
    import io

    import torch

    from jmmda_model.export import META_NAME, TORCHSCRIPT_FORMAT

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Identity()), buf,
                   _extra_files={META_NAME: json.dumps({"format": TORCHSCRIPT_FORMAT, "size_divisor": 8})})
    return buf.getvalue()


def zipfile_bytes() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("b/configs/inference.json", "{}")
        z.writestr("b/models/model.pt", b"nope")
    return buf.getvalue()

