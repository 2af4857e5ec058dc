"""Deployment issue, items 3-4: health and readiness without auth, Prometheus metrics for admins, one JSON audit
line per inference (hash, never names), JSON access lines without query strings, software facts in /info."""
import json

import pytest
import requests

from conftest import SAMPLE
from server_utils import json_events, sample_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("obs"), n=1).wait()
    yield s
    s.stop()


def test_health_readiness_info(srv):
    assert requests.get(f"{srv.url}/healthz", timeout=30).json() == {"status": "ok"}
    r = requests.get(f"{srv.url}/readyz", timeout=60)
    assert r.status_code == 200 and r.json() == {"ready": True}
    sw = requests.get(f"{srv.url}/info/", timeout=30).json()["software"]
    assert sw["jmmda"] == "0.2.0" and sw["torch"].startswith("2.") and sw["device"] in ("cpu", "cuda", "cuda:0")
    assert sw["git_commit"] != ""
    assert requests.get(f"{srv.url}/info/", timeout=30).json()["version"] == "0.2.0"


def test_inference_is_audited_and_counted(srv):
    ct = SAMPLE / "phantom_000.nii.gz"
    mask = SAMPLE / "labels" / "brainmask" / "phantom_000.nii.gz"
    r = requests.post(f"{srv.url}/infer/ct2dwi?output=json", files={"file": ("patient_x.nii.gz", ct.read_bytes()),
                                                                   "label": ("m.nii.gz", mask.read_bytes())}, timeout=300)
    assert r.status_code == 200
    bad = requests.post(f"{srv.url}/infer/ct2dwi?output=json", files={"file": ("patient_y.nii.gz", b"nope")}, timeout=60)
    assert bad.status_code == 422
    log = srv.log()
    audits = json_events(log, "inference")
    ok = [a for a in audits if a["outcome"] == "ok"]
    refused = [a for a in audits if a["outcome"] == "refused 422"]
    import hashlib

    assert ok and ok[-1]["input_sha256"] == hashlib.sha256(ct.read_bytes()).hexdigest()
    assert ok[-1]["model_version"] == 0 and ok[-1]["device"] == "cpu" and ok[-1]["seconds"] > 0 and ok[-1]["user"]
    assert refused and "patient_y" not in json.dumps(refused) and "patient_x" not in json.dumps(audits)
    access = json_events(log, "access")
    assert any(a["path"] == "/infer/ct2dwi" and a["status"] == 200 for a in access)
    assert all("?" not in a["path"] and "token" not in a["path"] for a in access)  # no query strings in the log
    m = requests.get(f"{srv.url}/metrics", timeout=30)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'ct2dwi_inferences_total{outcome="ok"}' in text and 'ct2dwi_inferences_total{outcome="refused 422"}' in text
    assert "ct2dwi_inference_seconds_bucket" in text and "ct2dwi_inference_queue 0.0" in text
    assert 'ct2dwi_requests_total{method="POST",route="/infer/ct2dwi",status="200"}' in text
    assert "ct2dwi_training_running 0.0" in text
