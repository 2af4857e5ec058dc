"""The real MONAI Label server on loopback, called with monailabel's client and plain HTTP."""
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from monailabel.client import MONAILabelClient

from conftest import ROOT, SAMPLE, arr
from server_utils import AUTH_ENV, KeycloakRealm, self_signed_cert, sample_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("srv"), n=4).wait()
    yield s
    s.stop()


def _post_infer(url, ct, mask=None, model="ct2dwi", **kw):
    files = {"file": (ct.name, ct.read_bytes())}
    if mask is not None:
        files["label"] = (mask.name, mask.read_bytes())
    return requests.post(f"{url}/infer/{model}?output=image", files=files, timeout=300, **kw)


def _case(i):
    cid = f"phantom_{i:03d}"
    return SAMPLE / f"{cid}.nii.gz", SAMPLE / "labels" / "brainmask" / f"{cid}.nii.gz", SAMPLE / "labels" / "dwi" / f"{cid}.nii.gz"


def test_info_lists_model_and_trainer(server):
    info = MONAILabelClient(server.url).info()
    assert info["models"]["ct2dwi"]["ready"] is True
    assert info["models"]["ct2dwi"]["checkpoint"] == "jmmda_demo.pt"
    assert "SYNTHETIC" in info["models"]["ct2dwi"]["output"]
    assert "ct2dwi" in info["trainers"]


def test_infer_round_trip_with_monailabel_client(server, tmp_path):
    ct, mask, _ = _case(7)
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    client.update_auth({"token_type": "Bearer", "access_token": server.token})  # the token printed at start
    out_path, params = client.infer("ct2dwi", "", {}, label_in=str(mask), file=str(ct))
    assert "SYNTHETIC" in out_path
    out, ref = sitk.ReadImage(out_path), sitk.ReadImage(str(ct))
    assert out.GetSize() == ref.GetSize() and out.GetSpacing() == ref.GetSpacing()
    assert out.GetOrigin() == ref.GetOrigin() and out.GetDirection() == ref.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    assert "SYNTHETIC" in out.GetMetaData("descrip")
    a, m = arr(out), arr(sitk.ReadImage(str(mask)))
    assert np.all(a[m == 0] == 0) and 0 < a[m > 0].mean() <= 1
    assert params["synthetic"] is True and params["mask_source"] == "supplied"
    assert params["checkpoint"] == "jmmda_demo.pt" and params["model_card"]["phantom_trained"] is True


def test_infer_auto_mask_and_datastore_image(server):
    ct, _, _ = _case(7)
    r = _post_infer(server.url, ct)
    assert r.status_code == 200
    r2 = requests.post(f"{server.url}/infer/ct2dwi?image=phantom_001&output=json", timeout=300)
    assert r2.status_code == 200 and r2.json()["mask_source"] == "automatic (CT)"


@pytest.mark.parametrize(
    "kind,expect",
    [
        ("mask_geometry", "geometry does not match"),
        ("corrupt", "corrupt"),
        ("empty_mask", "empty"),
        ("image_2d", "3-D volume"),
        ("not_ct", "Hounsfield"),
    ],
)
def test_bad_inputs_get_clear_4xx(server, tmp_path, kind, expect):
    ct, mask, dwi = _case(7)
    if kind == "mask_geometry":
        m = sitk.ReadImage(str(mask))[:, :, 2:30]
        mask = tmp_path / "m.nii.gz"
        sitk.WriteImage(m, str(mask))
    elif kind == "corrupt":
        ct = tmp_path / "ct.nii.gz"
        ct.write_bytes(_case(7)[0].read_bytes()[:5000])
        mask = None
    elif kind == "empty_mask":
        m = sitk.ReadImage(str(mask)) * 0
        mask = tmp_path / "m.nii.gz"
        sitk.WriteImage(m, str(mask))
    elif kind == "image_2d":
        ct = tmp_path / "ct2d.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(_case(7)[0]))[:, :, 10], str(ct))
        mask = None
    elif kind == "not_ct":
        ct, mask = dwi, None
    r = _post_infer(server.url, ct, mask)
    assert 400 <= r.status_code < 500, r.text
    assert expect in r.json()["detail"]


def test_unknown_model_and_bad_params(server):
    ct, _, _ = _case(7)
    assert _post_infer(server.url, ct, model="nope").status_code == 404
    r = requests.post(f"{server.url}/infer/ct2dwi", files={"file": ("ct.nii.gz", ct.read_bytes())}, data={"params": "{oops"}, timeout=60)
    assert r.status_code == 422


def test_concurrent_requests_all_correct_and_server_stays_responsive(server, tmp_path):
    ids = [7, 6, 5, 4]
    ref, single = {}, []
    for i in ids[:2]:
        t = time.time()
        ref[i] = arr(sitk.ReadImage(str(_write_tmp(_post_infer(server.url, *_case(i)[:2]), tmp_path))))
        single.append(time.time() - t)
    info_times = []
    done = threading.Event()

    def poll_info():
        while not done.is_set():
            t = time.time()
            assert requests.get(f"{server.url}/info/", timeout=60).status_code == 200
            info_times.append(time.time() - t)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_info)
    poller.start()
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda i: (i, _post_infer(server.url, *_case(i)[:2])), ids + ids[:2]))
    done.set()
    poller.join()
    for i, r in results:
        assert r.status_code == 200
        out = arr(sitk.ReadImage(str(_write_tmp(r, tmp_path))))
        assert out.shape == arr(sitk.ReadImage(str(_case(i)[0]))).shape
        if i in ref:
            np.testing.assert_allclose(out, ref[i], atol=1e-5)  # no cross-talk between requests
    # /info answered many times while the six inferences were running
    # /info kept answering quickly while the six inferences ran: a blocked event loop would make
    # each poll wait for the running inference (about half a single inference on average)
    assert len(info_times) >= 3
    assert float(np.median(info_times)) < 0.25 * min(single), (info_times, single)


def _write_tmp(resp, folder, _n=[0]):
    assert resp.status_code == 200, resp.text
    _n[0] += 1
    p = folder / f"out{_n[0]}.nii.gz"
    p.write_bytes(resp.content)
    return p


def test_label_tag_path_traversal_is_refused(server, tmp_path):
    _, mask, _ = _case(0)
    outside = server.studies.parent / "x.nii.gz"
    for tag in ("../../x", "..", "a/b", "../x"):
        r = requests.put(f"{server.url}/datastore/label", params={"image": "phantom_000", "tag": tag},
                         files={"label": ("x.nii.gz", mask.read_bytes())}, timeout=60)
        assert r.status_code == 400, (tag, r.text)
    r = requests.put(f"{server.url}/datastore/label", params={"image": "../phantom_000", "tag": "final"},
                     files={"label": ("x.nii.gz", mask.read_bytes())}, timeout=60)
    assert r.status_code == 400
    assert not outside.exists() and not (server.studies.parent / "x").exists()
    assert not any(p.name.startswith("x") for p in server.studies.parent.rglob("x*") if "studies" not in str(p))
    # a proper tag still works
    r = requests.put(f"{server.url}/datastore/label", params={"image": "phantom_000", "tag": "reviewed"},
                     files={"label": ("x.nii.gz", mask.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    assert (server.studies / "labels" / "reviewed" / "phantom_000.nii.gz").exists()


def _train_wait(url, timeout=400, want=("DONE", "ERROR", "STOPPED")):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = requests.get(f"{url}/train/", timeout=30).json()
        if st.get("status") in want:
            return st
        time.sleep(1)
    raise TimeoutError(st)


def test_training_publishes_model_used_by_next_infer(server):
    published = server.app_dir / "model" / "versions" / "v1" / "model.pt"
    assert not published.exists()
    client = MONAILabelClient(server.url)
    client.update_auth({"token_type": "Bearer", "access_token": server.token})
    res = client.train_start("ct2dwi", {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4, "val_fraction": 0.25})
    assert res["status"] in ("SUBMITTED", "RUNNING")
    st = _train_wait(server.url)
    assert st["status"] == "DONE", st
    assert published.exists()
    # a finished run is a candidate: still the demo served until an admin promotes it
    assert requests.get(f"{server.url}/info/", timeout=30).json()["models"]["ct2dwi"]["checkpoint"] == "jmmda_demo.pt"
    listed = requests.get(f"{server.url}/train/ct2dwi/versions", timeout=30).json()["versions"]
    assert [v["candidate"] for v in listed] == [False, True]
    assert requests.post(f"{server.url}/train/ct2dwi/versions/1/promote", timeout=60).status_code == 200
    assert requests.get(f"{server.url}/info/", timeout=30).json()["models"]["ct2dwi"]["checkpoint"] == "v1"
    assert not requests.get(f"{server.url}/train/ct2dwi/versions", timeout=30).json()["versions"][1]["candidate"]
    audit = [ln for ln in server.log().splitlines() if '"event": "train_start"' in ln or '"event": "promote"' in ln]
    assert len(audit) >= 2
    r = requests.post(f"{server.url}/infer/ct2dwi?image=phantom_000&output=json", timeout=300)
    assert r.status_code == 200 and r.json()["checkpoint"] == "v1" and r.json()["version"] == 1


def test_stopped_training_leaves_previous_model_valid(server):
    served = server.app_dir / "model" / "served.json"
    before = served.read_bytes() if served.exists() else None
    versions = sorted(p.name for p in (server.app_dir / "model" / "versions").iterdir())
    current = server.app_dir / "model" / "versions" / "v1" / "model.pt"
    current = current if current.exists() else server.app_dir / "model" / "jmmda_demo.pt"
    digest = hashlib.sha256(current.read_bytes()).hexdigest()
    r = requests.post(f"{server.url}/train/ct2dwi", json={"epochs": 50, "batch_size": 2}, timeout=30)
    assert r.status_code == 200
    _train_wait(server.url, timeout=120, want=("RUNNING",))
    time.sleep(8)  # let it write checkpoints mid-run
    client = MONAILabelClient(server.url)
    client.update_auth({"token_type": "Bearer", "access_token": server.token})
    stopped = client.train_stop()
    assert stopped["status"] == "STOPPED"
    assert requests.get(f"{server.url}/train/", timeout=30).json()["status"] == "STOPPED"
    assert hashlib.sha256(current.read_bytes()).hexdigest() == digest
    assert (served.read_bytes() if served.exists() else None) == before  # still the same version served
    assert sorted(p.name for p in (server.app_dir / "model" / "versions").iterdir()) == versions  # nothing published
    r = requests.post(f"{server.url}/infer/ct2dwi?image=phantom_002&output=json", timeout=300)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ second server: TLS, no model, CORS
@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("bare")
    env = {"MONAI_LABEL_CORS_ORIGINS": '["https://viewer.example.org"]', "CT2DWI_CORS_ORIGINS": "http://slicer.local:8080",
           "CT2DWI_MAX_UPLOAD_MB": "1"}
    s = sample_server(base, n=1, with_demo=False, env=env, conf={"demo_model": "false"}, tls=self_signed_cert(base)).wait()
    yield s
    s.stop()


def test_tls_only(bare_server):
    assert bare_server.url.startswith("https://")
    assert requests.get(f"{bare_server.url}/info/", timeout=30, verify=bare_server.verify).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(bare_server.url.replace("https://", "http://") + "/info/", timeout=30)


def test_no_checkpoint_refuses_instead_of_random_weights(bare_server):
    info = requests.get(f"{bare_server.url}/info/", timeout=30, verify=bare_server.verify).json()
    assert info["models"]["ct2dwi"]["ready"] is False
    r = _post_infer(bare_server.url, _case(0)[0], verify=bare_server.verify)
    assert r.status_code == 503 and "no trained JMMDA-GAN checkpoint" in r.json()["detail"]


def test_oversized_upload_refused(bare_server):
    r = requests.post(f"{bare_server.url}/infer/ct2dwi", files={"file": ("big.nii.gz", b"0" * (2 * 2**20))},
                      timeout=60, verify=bare_server.verify)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]


def test_cors_origins_configured_without_crash(bare_server):
    def preflight(origin):
        return requests.options(f"{bare_server.url}/info/", timeout=30, verify=bare_server.verify, headers={
            "Origin": origin, "Access-Control-Request-Method": "GET"})

    for allowed in ("https://viewer.example.org", "http://slicer.local:8080"):
        r = preflight(allowed)
        assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == allowed
    r = preflight("https://evil.example.com")
    assert r.headers.get("access-control-allow-origin") is None


# ------------------------------------------------------------------ third server: Keycloak-style auth
@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    realm = KeycloakRealm()
    env = {**AUTH_ENV, "MONAI_LABEL_AUTH_REALM_URI": realm.uri}
    s = sample_server(tmp_path_factory.mktemp("auth"), n=1, env=env).wait(path="/info/", ok=(200, 401))
    s.key = realm.key
    yield s
    s.stop()
    realm.stop()


def _token(key, roles, exp=3600, alg="RS256"):
    import jwt

    from server_utils import CLAIMS

    now = int(time.time())
    payload = {"preferred_username": "dr.who", "realm_access": {"roles": roles}, "iat": now, "exp": now + exp, **CLAIMS}
    return jwt.encode(payload, key, algorithm=alg)


def test_keycloak_tokens_are_accepted_and_checked(auth_server):
    from cryptography.hazmat.primitives.asymmetric import rsa

    url = f"{auth_server.url}/info/"
    assert requests.get(url, timeout=30).status_code == 401
    good = _token(auth_server.key, ["monailabel-user"])
    assert requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=30).status_code == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _token(other_key, ["monailabel-user", "monailabel-admin"])
    assert requests.get(url, headers={"Authorization": f"Bearer {forged}"}, timeout=30).status_code == 401
    expired = _token(auth_server.key, ["monailabel-user"], exp=-10)
    assert requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=30).status_code == 401
    # a user without the admin role may not start training
    r = requests.post(f"{auth_server.url}/train/ct2dwi", json={}, headers={"Authorization": f"Bearer {good}"}, timeout=30)
    assert r.status_code == 403
    # infer route (ours) honours auth too
    ct = _case(0)[0]
    assert _post_infer(auth_server.url, ct).status_code == 401
    r = _post_infer(auth_server.url, ct, headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200


def test_label_for_a_stored_ct_that_became_unreadable_is_a_clear_409(server):
    ct, mask, _ = _case(0)
    r = requests.put(f"{server.url}/datastore/", params={"image": "damaged_ct"},
                     files={"file": ("damaged_ct.nii.gz", ct.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    stored = next(server.studies.glob("damaged_ct.*"))
    stored.write_bytes(stored.read_bytes()[:2000])  # the disk copy is damaged after it was accepted
    r = requests.put(f"{server.url}/datastore/label", params={"image": "damaged_ct", "tag": "brainmask"},
                     files={"label": ("m.nii.gz", mask.read_bytes())}, timeout=60)
    assert r.status_code == 409, r.text
    assert "damaged_ct" in r.json()["detail"] and "replace the image" in r.json()["detail"]
    assert not (server.studies / "labels" / "brainmask" / "damaged_ct.nii.gz").exists()


def test_probability_map_through_the_server_and_the_slicer_client(server, tmp_path):
    """Probability-map issue, server part: /info says whether the served model has a probability head; the map
    comes as its own NIfTI (output=probability, or a 'probability' part of output=all with probability=true) on
    the CT grid, labelled SYNTHETIC; the Slicer client saves it beside the DWI."""
    sys_path = str(ROOT / "slicer_extension" / "CT2DWI")
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from CT2DWILib.client import CT2DWIClient

    info = requests.get(f"{server.url}/info/", timeout=30).json()["models"]["ct2dwi"]
    assert info["probability_map"] is True  # the demo model (lesion recipe) has the head
    ct, mask = _case(1)[:2]
    r = requests.post(f"{server.url}/infer/ct2dwi?output=probability",
                      files={"file": ("ct.nii.gz", ct.read_bytes()), "label": ("m.nii.gz", mask.read_bytes())}, timeout=300)
    assert r.status_code == 200 and "PROBABILITY" in r.headers["content-disposition"]
    p = tmp_path / "prob.nii.gz"
    p.write_bytes(r.content)
    img, ref = sitk.ReadImage(str(p)), sitk.ReadImage(str(ct))
    assert img.GetSize() == ref.GetSize() and img.GetOrigin() == ref.GetOrigin()
    a = sitk.GetArrayFromImage(img)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0.5  # phantom_001's MCA infarct
    assert "SYNTHETIC" in img.GetMetaData("descrip")
    out, params = CT2DWIClient(server.url, token=server.token).infer(ct, mask, tmp_path / "slicer", probability=True)
    assert out.exists() and params["probability_path"] and params["probability"]["temperature"] > 0
    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(params["probability_path"])), a, atol=1e-6)
    # without probability=true the multipart answer has no map, and the info does not pretend to
    out, params = CT2DWIClient(server.url, token=server.token).infer(ct, mask, tmp_path / "plain")
    assert "probability_path" not in params and "probability" not in params
