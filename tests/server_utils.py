"""Starts the real CT-to-DWI MONAI Label server (apps/ct2dwi/serve.py) on loopback for tests."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "ct2dwi"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_app(dst: Path, with_demo: bool = True) -> Path:
    ignore = shutil.ignore_patterns("logs", "train_run", "jmmda.pt", "versions", "served.json", ".versions.lock", "__pycache__", "bin", "lib",
                                    *(() if with_demo else ("*.pt",)))
    shutil.copytree(APP, dst, ignore=ignore)
    return dst


def copy_studies(dst: Path, n: int | None = None) -> Path:
    src = ROOT / "sample_data" / "studies"
    ids = sorted(p.name for p in src.glob("*.nii.gz"))[:n]
    for tag in ("dwi", "brainmask", "lesion"):
        (dst / "labels" / tag).mkdir(parents=True)
    for name in ids:
        shutil.copy(src / name, dst / name)
        for tag in ("dwi", "brainmask", "lesion"):
            shutil.copy(src / "labels" / tag / name, dst / "labels" / tag / name)
    return dst


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


#: access tokens of the servers the tests started, by base URL (see _send_tokens)
TOKENS: dict[str, str] = {}


def _send_tokens():
    """The tests act as API clients that hold each local server's access token (printed at its start, like
    Jupyter's): a write (POST/PUT/PATCH/DELETE) to a server started here carries ``Authorization: Bearer <token>``
    unless the test sets an Authorization header itself (its own bearer token, or "" to send none). Requests to
    anything else (Orthanc, realms) are untouched."""
    import requests.sessions

    original = requests.sessions.Session.request
    if getattr(original, "_ct2dwi_tokens", False):
        return

    def request(self, method, url, *args, **kwargs):
        base = next((b for b in TOKENS if str(url).startswith(b + "/")), None)
        if base and str(method).upper() in ("POST", "PUT", "PATCH", "DELETE"):
            headers = dict(kwargs.get("headers") or {})
            if not any(k.lower() == "authorization" for k in headers):
                headers["Authorization"] = f"Bearer {TOKENS[base]}"
            elif not next(v for k, v in headers.items() if k.lower() == "authorization"):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}  # "" = send none
            kwargs["headers"] = headers
        return original(self, method, url, *args, **kwargs)

    request._ct2dwi_tokens = True
    requests.sessions.Session.request = request


_send_tokens()


class Server:
    def __init__(self, app_dir: Path, studies: Path, env: dict | None = None, conf: dict | None = None, extra_args=(),
                 tls: tuple[Path, Path] | None = None):
        import secrets

        self.app_dir, self.studies, self.base = Path(app_dir), studies, Path(app_dir).parent
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.token = (env or {}).get("CT2DWI_TOKEN") or secrets.token_urlsafe(24)
        env = {**(env or {}), "CT2DWI_TOKEN": self.token}
        TOKENS[self.url] = self.token
        self.verify = str(tls[0]) if tls else True
        if tls:
            extra_args = (*extra_args, "--ssl_certfile", str(tls[0]), "--ssl_keyfile", str(tls[1]))
        self.log_path = Path(app_dir).parent / f"server_{self.port}.log"
        e = {**os.environ, "PYTHONUNBUFFERED": "1", "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false", **(env or {})}
        args = [sys.executable, str(Path(app_dir) / "serve.py"), "--app", str(app_dir), "--studies", str(studies),
                "--host", "127.0.0.1", "--port", str(self.port), *extra_args]
        for k, v in (conf or {}).items():
            args += ["--conf", k, str(v)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=e, cwd=str(app_dir.parent))

    def wait(self, timeout=120, path="/info/", headers=None, ok=(200,)):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                r = requests.get(self.url + path, timeout=5, headers=headers, verify=self.verify)
                if r.status_code in ok:
                    return self
            except (requests.ConnectionError, requests.exceptions.SSLError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server did not start in {timeout}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        import psutil

        try:  # training subprocesses are children of the server: none may outlive it
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def sample_server(base: Path, n: int, with_demo: bool = True, **kw) -> Server:
    """A server (not yet waited for) on copies of the app (``base/app``) and of ``n`` sample studies
    (``base/studies``); ``kw`` go to ``Server``."""
    return Server(copy_app(base / "app", with_demo=with_demo), copy_studies(base / "studies", n=n), **kw)


class KeycloakRealm:
    """A Keycloak-like realm on loopback that publishes an RSA public key (rotate with ``set_key``, take it
    down with ``up = False``); ``uri`` is what MONAI_LABEL_AUTH_REALM_URI points at."""

    def __init__(self):
        import base64
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        realm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if not realm.up:
                    self.send_response(502)
                    self.end_headers()
                    return
                body = json.dumps({"realm": "monailabel", "public_key": realm.key_b64}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self._b64 = base64.b64encode
        self.up = True
        self.key = self.set_key()
        self._srv = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self._srv.server_port}/realms/monailabel"

    def set_key(self, key=None):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_b64 = self._b64(der).decode()
        self.key = key
        return key

    def stop(self):
        self._srv.shutdown()


#: claims every test token carries: the server checks iss against CT2DWI_AUTH_ISSUER and requires aud
ISSUER = "https://sso.test.invalid/realms/monailabel"
CLAIMS = {"iss": ISSUER, "aud": "monailabel-app"}
AUTH_ENV = {"MONAI_LABEL_AUTH_ENABLE": "true", "CT2DWI_AUTH_ISSUER": ISSUER}


def json_events(log: str, event: str) -> list[dict]:
    """The JSON audit lines (``{"event": ...}``) of one kind in a server log, parsed."""
    import json

    out = []
    for line in log.splitlines():
        start = line.find('{"event": "' + event + '"')
        if start >= 0:
            out.append(json.loads(line[start:]))
    return out
