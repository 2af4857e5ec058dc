"""Token edge cases against the real server and a Keycloak-like realm on loopback."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import SAMPLE
from server_utils import AUTH_ENV, CLAIMS, KeycloakRealm, sample_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def realm():
    r = KeycloakRealm()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def realm_server(tmp_path_factory, realm):
    env = {**AUTH_ENV, "MONAI_LABEL_AUTH_REALM_URI": realm.uri, "MONAI_LABEL_AUTH_TIMEOUT": "3",
           "CT2DWI_AUTH_REFETCH_S": "1"}  # refetch after a failed signature at most every second (default 10)
    s = sample_server(tmp_path_factory.mktemp("authsec"), n=1, env=env).wait(path="/auth/")
    s.key = realm.key
    yield s
    s.stop()


def token(key, roles, exp: int | None = 3600, alg="RS256"):
    now = int(time.time())
    payload = {"preferred_username": "dr.who", "realm_access": {"roles": roles}, "iat": now, **CLAIMS}
    if exp is not None:
        payload["exp"] = now + exp
    return jwt.encode(payload, key, algorithm=alg)


def get_info(url, tok):
    return requests.get(f"{url}/info/", headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=30)


def test_token_without_exp_is_refused(realm_server):
    assert get_info(realm_server.url, token(realm_server.key, ["monailabel-user"])).status_code == 200
    assert get_info(realm_server.url, token(realm_server.key, ["monailabel-user"], exp=None)).status_code == 401


def test_admin_implies_user(realm_server):
    admin = token(realm_server.key, ["monailabel-admin"])
    assert get_info(realm_server.url, admin).status_code == 200
    assert requests.get(f"{realm_server.url}/logs/?lines=5", headers={"Authorization": f"Bearer {admin}"}, timeout=30).status_code == 200
    user = token(realm_server.key, ["monailabel-user"])
    assert requests.get(f"{realm_server.url}/logs/", headers={"Authorization": f"Bearer {user}"}, timeout=30).status_code == 403
    r = requests.put(f"{realm_server.url}/datastore/label?image=phantom_000&tag=x", headers={"Authorization": f"Bearer {user}"},
                     files={"label": ("m.nii.gz", (SAMPLE / "labels" / "brainmask" / "phantom_000.nii.gz").read_bytes())}, timeout=30)
    assert r.status_code == 403
    # the deployment issue's new admin routes: a user token cannot publish, compare or force a promotion
    hdr = {"Authorization": f"Bearer {user}"}
    r = requests.post(f"{realm_server.url}/train/ct2dwi/versions", headers=hdr, files={"model": ("m.pt", b"x")}, timeout=30)
    assert r.status_code == 403
    for path in ("/train/ct2dwi/versions/0/compare", "/train/ct2dwi/versions/0/promote?confirm=true"):
        assert requests.post(f"{realm_server.url}{path}", headers=hdr, timeout=30).status_code == 403, path
    assert requests.get(f"{realm_server.url}/train/ct2dwi/runs", headers=hdr, timeout=30).status_code == 200


def test_hs256_token_signed_with_the_public_key_is_refused(realm_server, realm):
    pem = f"-----BEGIN PUBLIC KEY-----\n{realm.key_b64}\n-----END PUBLIC KEY-----".encode()
    import hashlib
    import hmac

    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps({"realm_access": {"roles": ["monailabel-admin"]},
                                                "exp": int(time.time()) + 600}).encode()).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(pem, header + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    assert get_info(realm_server.url, (header + b"." + body + b"." + sig).decode()).status_code == 401


def test_key_rotation_is_picked_up_without_restart(realm_server, realm):
    old = realm_server.key
    assert get_info(realm_server.url, token(old, ["monailabel-user"])).status_code == 200
    new = realm.set_key()
    time.sleep(1.5)  # the server re-fetches a key after a failed signature at most every CT2DWI_AUTH_REFETCH_S
    assert get_info(realm_server.url, token(new, ["monailabel-user"])).status_code == 200
    assert get_info(realm_server.url, token(old, ["monailabel-user"])).status_code == 401
    realm_server.key = new


def test_unreachable_realm_is_503_not_500(realm_server, realm):
    realm.up = False
    try:
        time.sleep(1.5)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        r = get_info(realm_server.url, token(other, ["monailabel-user"]))  # forces a key fetch
        assert r.status_code == 503 and "cannot be reached" in r.json()["detail"]
        assert get_info(realm_server.url, None).status_code == 401
    finally:
        realm.up = True


def test_issuer_and_audience_are_required(realm_server):
    """Round two: iss must be the realm and aud must name this client (a token for another app is refused)."""
    now = int(time.time())
    base = {"preferred_username": "dr.who", "realm_access": {"roles": ["monailabel-user"]}, "iat": now, "exp": now + 600}
    for claims in ({**CLAIMS, "iss": "https://evil.example/realms/monailabel"}, {"aud": CLAIMS["aud"]},
                   {**CLAIMS, "aud": "another-app"}, {"iss": CLAIMS["iss"]}):
        tok = jwt.encode({**base, **claims}, realm_server.key, algorithm="RS256")
        assert get_info(realm_server.url, tok).status_code == 401, claims
    good = jwt.encode({**base, **CLAIMS, "aud": ["account", CLAIMS["aud"]]}, realm_server.key, algorithm="RS256")
    assert get_info(realm_server.url, good).status_code == 200


def test_malformed_or_foreign_realm_key_is_503_and_not_cached(realm_server, realm):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    good_b64 = realm.key_b64
    ec_der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        for served in ("bm90IGEga2V5", base64.b64encode(ec_der).decode()):  # garbage; an EC key while RS256 is pinned
            realm.key_b64 = served
            time.sleep(1.5)  # a failed signature refetches at most every CT2DWI_AUTH_REFETCH_S
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            r = get_info(realm_server.url, token(other, ["monailabel-user"]))  # forces a key fetch
            assert r.status_code == 503, r.text
            # the bad key was not cached: the good key still verifies good tokens
            assert get_info(realm_server.url, token(realm_server.key, ["monailabel-user"])).status_code == 200
    finally:
        realm.key_b64 = good_b64


def test_health_routes_need_no_token_and_metrics_need_admin(realm_server):
    """With sign-in on: a load balancer checks /healthz and /readyz without a token (and learns nothing else);
    /metrics is for admins."""
    assert requests.get(f"{realm_server.url}/healthz", timeout=30).json() == {"status": "ok"}
    r = requests.get(f"{realm_server.url}/readyz", timeout=60)
    assert r.status_code == 200 and set(r.json()) == {"ready"}
    assert requests.get(f"{realm_server.url}/metrics", timeout=30).status_code == 401
    user = token(realm_server.key, ["monailabel-user"])
    assert requests.get(f"{realm_server.url}/metrics", headers={"Authorization": f"Bearer {user}"}, timeout=30).status_code == 403
    admin = token(realm_server.key, ["monailabel-admin"])
    r = requests.get(f"{realm_server.url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert r.status_code == 200 and "ct2dwi_requests_total" in r.text
