"""Keycloak/OIDC bearer tokens for the CT-to-DWI server (replaces MONAI Label 0.8.5's checks).

* Signatures are checked with the realm's public key and a pinned list of *asymmetric* algorithms
  (``CT2DWI_AUTH_ALGORITHMS``, default RS256). HMAC algorithms (HS*) are refused at start-up: with a public
  key as the "secret" anybody could sign tokens.
* ``exp``, ``iss`` and ``aud`` are required: ``iss`` must be the realm (``CT2DWI_AUTH_ISSUER``, default
  MONAI_LABEL_AUTH_REALM_URI), ``aud`` must hold ``CT2DWI_AUTH_AUDIENCE`` (default the client id,
  MONAI_LABEL_AUTH_CLIENT_ID; in Keycloak add an audience mapper for it).
* The realm key is cached for ``CT2DWI_AUTH_KEY_TTL`` seconds (default 300) and fetched again at once when a
  signature fails (key rotation), at most every ``CT2DWI_AUTH_REFETCH_S`` seconds (default 10). An unreachable realm, or one that serves a key that is
  not a valid public key of the pinned algorithms' type, answers 503 (not 500) and nothing is cached. The fetch
  has a short timeout (at most 5 s) and runs outside the cache lock, so a slow realm does not queue every request.
* Roles: ``monailabel-admin`` implies ``monailabel-user`` (roles are otherwise not hierarchical).
* With auth disabled every request acts as MONAI Label's default admin user; the server then refuses a
  non-loopback host unless started with ``--insecure`` (see serve.py).
"""
from __future__ import annotations

import logging
import os
import threading
import time

import jwt
import requests
from fastapi import HTTPException, Request

from monailabel.config import settings
from monailabel.endpoints.user.auth import DEFAULT_USER, User

log = logging.getLogger(__name__)

ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class AuthConfigError(ValueError):
    """The auth configuration is unsafe or invalid; the server refuses to start."""


def algorithms() -> list[str]:
    algs = [a.strip() for a in os.environ.get("CT2DWI_AUTH_ALGORITHMS", "RS256").split(",") if a.strip()]
    bad = [a for a in algs if a not in ASYMMETRIC]
    if not algs or bad:
        raise AuthConfigError(
            f"CT2DWI_AUTH_ALGORITHMS={','.join(algs) or '(empty)'}: only asymmetric algorithms are accepted "
            f"({', '.join(sorted(ASYMMETRIC))}); {', '.join(bad) or 'none given'} refused"
        )
    return algs


def check_config() -> None:
    """Raises AuthConfigError for a configuration the server must not start with."""
    if settings.MONAI_LABEL_AUTH_ENABLE:
        algorithms()
        if not settings.MONAI_LABEL_AUTH_REALM_URI.startswith(("http://", "https://")):
            raise AuthConfigError(f"MONAI_LABEL_AUTH_REALM_URI must be an http(s) URL, got {settings.MONAI_LABEL_AUTH_REALM_URI!r}")


class _KeyCache:
    def __init__(self):
        self.key: str | None = None
        self.fetched = 0.0
        self.lock = threading.Lock()

    def get(self, refresh: bool = False) -> str:
        ttl = float(os.environ.get("CT2DWI_AUTH_KEY_TTL", "300"))
        with self.lock:
            age = time.monotonic() - self.fetched
            refetch = float(os.environ.get("CT2DWI_AUTH_REFETCH_S", "10"))
            if self.key is not None and age <= ttl and not (refresh and age > refetch):
                return self.key
        key = self._fetch()  # outside the lock: a slow realm delays only the requests that need a new key
        with self.lock:
            self.key, self.fetched = key, time.monotonic()
        return key

    @staticmethod
    def _fetch() -> str:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        uri = settings.MONAI_LABEL_AUTH_REALM_URI
        unavailable = HTTPException(status_code=503, detail="the authentication realm cannot be reached or serves no usable key; try again later")
        try:
            r = requests.get(uri, timeout=min(float(settings.MONAI_LABEL_AUTH_TIMEOUT), 5.0))
            r.raise_for_status()
            key = r.json()["public_key"]
            pem = f"-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----"
            loaded = serialization.load_pem_public_key(pem.encode())
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            log.error("cannot fetch a usable public key from the realm %s: %s", uri, exc)
            raise unavailable from exc
        want = {a[:2] for a in algorithms()}
        kinds = {"RS": rsa.RSAPublicKey, "PS": rsa.RSAPublicKey, "ES": ec.EllipticCurvePublicKey, "Ed": ed25519.Ed25519PublicKey}
        if not any(isinstance(loaded, kinds[w]) for w in want if w in kinds):
            log.error("the realm %s serves a %s key, which does not fit CT2DWI_AUTH_ALGORITHMS=%s", uri,
                      type(loaded).__name__, ",".join(algorithms()))
            raise unavailable
        return pem


KEYS = _KeyCache()


def issuer() -> str:
    return (os.environ.get("CT2DWI_AUTH_ISSUER") or settings.MONAI_LABEL_AUTH_REALM_URI).rstrip("/")


def audience() -> str:
    return os.environ.get("CT2DWI_AUTH_AUDIENCE") or settings.MONAI_LABEL_AUTH_CLIENT_ID


def decode(token: str) -> dict:
    options = {"require": ["exp", "iss", "aud"], "verify_signature": True, "verify_exp": True, "verify_aud": True,
               "verify_iss": True}
    kw = {"algorithms": algorithms(), "audience": audience(), "issuer": issuer(), "options": options}
    try:
        return jwt.decode(token, KEYS.get(), **kw)
    except jwt.InvalidSignatureError:
        # the realm may have rotated its key: fetch it once more, then decide
        return jwt.decode(token, KEYS.get(refresh=True), **kw)


def user_from_payload(payload: dict) -> User:
    roles = payload
    for part in settings.MONAI_LABEL_AUTH_TOKEN_ROLES.split("#"):
        roles = roles.get(part) if isinstance(roles, dict) else None
    roles = [r for r in (roles or []) if isinstance(r, str)]
    if settings.MONAI_LABEL_AUTH_ROLE_ADMIN in roles and settings.MONAI_LABEL_AUTH_ROLE_USER not in roles:
        roles.append(settings.MONAI_LABEL_AUTH_ROLE_USER)
    return User(
        username=str(payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or "unknown"),
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=roles,
    )


def current_user(request: Request) -> User:
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return DEFAULT_USER
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    unauthorized = HTTPException(status_code=401, detail="a valid bearer token is required",
                                 headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized
    try:
        return user_from_payload(decode(token.strip()))
    except jwt.InvalidTokenError as exc:
        log.info("token refused: %s", exc)
        raise unauthorized from exc


def require(role: str):
    """FastAPI dependency: the current user must hold ``role`` (admin implies user)."""

    def dependency(request: Request) -> User:
        user = current_user(request)
        if settings.MONAI_LABEL_AUTH_ENABLE and role not in user.roles:
            raise HTTPException(status_code=403, detail=f'role "{role}" is required for this action')
        return user

    return dependency


USER = settings.MONAI_LABEL_AUTH_ROLE_USER
ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN
