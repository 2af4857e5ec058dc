"""HTTP client for the CT-to-DWI MONAI Label server (requests only; Slicer bundles it)."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import requests

MODEL = "ct2dwi"


class ServerError(RuntimeError):
    """A request failed; ``str(exc)`` is a message fit to show to the user."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class CT2DWIClient:
    def __init__(self, server_url: str, token: str | None = None, timeout: float = 600.0):
        url = (server_url or "").strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ServerError(f"invalid server URL {server_url!r}: expected http(s)://host:port")
        self.url = url
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    # ------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, **kw) -> requests.Response:
        try:
            r = requests.request(method, self.url + path, headers=self.headers, timeout=kw.pop("timeout", self.timeout), **kw)
        except requests.ConnectionError as exc:
            raise ServerError(f"cannot reach the CT-to-DWI server at {self.url} (is it running?)") from exc
        except requests.Timeout as exc:
            raise ServerError(f"the server at {self.url} did not answer in time") from exc
        if r.status_code >= 400:
            raise ServerError(self._message(r), r.status_code)
        return r

    @staticmethod
    def _message(r: requests.Response) -> str:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text.strip()[:500]
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        hint = {
            401: "authentication required or token invalid",
            403: "your account lacks the role for this action",
            404: "not found",
            422: "the input was rejected",
            503: "the server has no usable model",
        }.get(r.status_code, "server error")
        return f"{hint} (HTTP {r.status_code}): {detail}"

    # ------------------------------------------------------------------ API
    def info(self) -> dict:
        return self._request("GET", "/info/", timeout=30).json()

    def model_ready(self) -> tuple[bool, str]:
        m = self.info().get("models", {}).get(MODEL)
        if m is None:
            return False, f"the server does not offer the '{MODEL}' model"
        if not m.get("ready", False):
            return False, "the server has no trained checkpoint installed"
        return True, m.get("checkpoint") or ""

    def infer(self, ct_path: str | Path, mask_path: str | Path | None = None, out_dir: str | Path | None = None,
              cancel=None, probability: bool = False) -> tuple[Path, dict]:
        """Uploads CT (+ mask); returns (path of the SYNTHETIC DWI file, result parameters). With a
        ``cancel`` event the call returns (raising state.Cancelled) as soon as it is set. ``probability``: also
        asks for the infarct-probability map; its file is then ``params["probability_path"]`` (None when the
        served model has none - ``params["probability_note"]`` says why)."""
        files = {"file": (Path(ct_path).name, open(ct_path, "rb"))}
        if mask_path:
            files["label"] = (Path(mask_path).name, open(mask_path, "rb"))

        def call():
            try:
                query = "output=all" + ("&probability=true" if probability else "")
                return self._request("POST", f"/infer/{MODEL}?{query}", files=files, data={"params": "{}"})
            finally:
                for _, fh in files.values():
                    fh.close()

        if cancel is None:
            r = call()
        else:
            from .state import cancellable

            r = cancellable(call, cancel)
        params, image, parts = self._parse_multipart(r)
        if image is None:
            raise ServerError("the server answered without an image")
        out_dir = Path(out_dir or tempfile.mkdtemp(prefix="ct2dwi_"))
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / "SYNTHETIC_DWI.nii.gz"
        out.write_bytes(image)
        if probability:
            params["probability_path"] = None
            if parts.get("probability") is not None:
                p = out_dir / "SYNTHETIC_INFARCT_PROBABILITY.nii.gz"
                p.write_bytes(parts["probability"])
                params["probability_path"] = str(p)
        return out, params

    @staticmethod
    def _parse_multipart(r: requests.Response):
        from email.parser import BytesParser
        from email.policy import HTTP

        ctype = r.headers.get("content-type", "")
        if not ctype.startswith("multipart/"):
            return (r.json() if "json" in ctype else {}), None, {}
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + r.content)
        params, parts = {}, {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if name == "params":
                params = json.loads(payload.decode() or "{}")
            else:
                parts[name] = payload
        return params, parts.get("image"), parts

    def train_start(self, **params) -> dict:
        return self._request("POST", f"/train/{MODEL}", json=params, timeout=60).json()

    def train_status(self) -> dict:
        try:
            return self._request("GET", "/train/", timeout=30).json()
        except ServerError as exc:
            if exc.status == 404:
                return {"status": "NONE"}
            raise

    def versions(self) -> list[dict]:
        """Model versions on the server (the same list as the training page), the served one flagged."""
        return self._request("GET", f"/train/{MODEL}/versions", timeout=30).json()["versions"]

    def promote(self, version: int, confirm: bool = False) -> dict:
        """Serves ``version`` (admin); the server switches without a restart. A candidate worse on lesions than
        the served version is refused (409) unless ``confirm``."""
        query = "?confirm=true" if confirm else ""
        return self._request("POST", f"/train/{MODEL}/versions/{int(version)}/promote{query}", timeout=60).json()

    def train_stop(self) -> dict:
        r = self._request("DELETE", "/train/", timeout=60)
        return r.json() or {"status": "NONE"}


def default_server_url() -> str:
    return os.environ.get("CT2DWI_SERVER", "http://127.0.0.1:8000")
