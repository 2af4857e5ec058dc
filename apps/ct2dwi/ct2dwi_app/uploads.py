"""Uploads and per-request scratch space that never outlive the request.

* ``BodyLimit``: an ASGI middleware that counts the bytes a request body really carries (``Content-Length``
  and ``Transfer-Encoding: chunked`` alike) and answers 413 once it passes the limit.
* ``ScratchSpace``: one private (0700) folder per server process under ``<TMPDIR>/ct2dwi-scratch``; each
  request gets a sub-folder that is removed on every path (success, 4xx, 5xx, client gone). Folders of
  processes that died (killed mid-request) are swept at start-up, as are ``SYNTHETIC_DWI_*`` results older
  versions left in TMPDIR.
* ``save_upload``: streams an ``UploadFile`` into a request folder under a fixed name; the client's file
  name is only used for its suffix (an allowlist) and, cleaned, to name the file in messages.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from jmmda_model.clinical.imageio import UPLOAD_SUFFIXES, image_suffix
from jmmda_model.errors import InputError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = int(float(os.environ.get("CT2DWI_MAX_UPLOAD_MB", "2048")) * 2**20)
_CHUNK = 1 << 20


class BodyTooLarge(Exception):
    pass


def _too_large_message(limit: int) -> bytes:
    return json.dumps(
        {"detail": f"request body exceeds the limit of {limit / 2**20:.0f} MiB (CT2DWI_MAX_UPLOAD_MB)"}
    ).encode()


#: seconds a request body may pause between two chunks (CT2DWI_BODY_TIMEOUT_S): a client that stops sending is
#: answered 408 and its connection closed, so half-sent uploads cannot pile up
BODY_TIMEOUT_S = float(os.environ.get("CT2DWI_BODY_TIMEOUT_S", "60"))


class BodyTimeout(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over ``limit`` bytes, declared or streamed; 408 when the body stops
    arriving for ``timeout`` seconds (only while the body is incomplete: afterwards receive() passes through,
    since responses listen on it for the client's disconnect)."""

    def __init__(self, app, limit: int = MAX_UPLOAD_BYTES, timeout: float | None = None):
        self.app = app
        self.limit = limit
        self.timeout = BODY_TIMEOUT_S if timeout is None else timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send)
        state = {"seen": 0, "over": False, "started": False, "body_done": False, "timed_out": False}

        async def counting_receive():
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                state["timed_out"] = True
                raise BodyTimeout() from None
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            if state["over"] or state["timed_out"]:
                return  # the 413 / 408 below replaces whatever the app tries to answer
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except (BodyTooLarge, BodyTimeout):
            pass
        except Exception:
            if not (state["over"] or state["timed_out"]):
                raise
        if state["over"] and not state["started"]:
            await self._refuse(send)
        elif state["timed_out"] and not state["started"]:
            body = json.dumps({"detail": f"request body stalled for more than {self.timeout:g} s "
                                         "(CT2DWI_BODY_TIMEOUT_S); send it again"}).encode()
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

    async def _refuse(self, send):
        body = _too_large_message(self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class ScratchSpace:
    """Per-process private scratch folder with per-request sub-folders."""

    def __init__(self, base: str | Path | None = None):
        base = Path(base or os.environ.get("CT2DWI_SCRATCH") or Path(tempfile.gettempdir()) / "ct2dwi-scratch")
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        self.base = base
        me = psutil.Process()
        self.root = base / f"proc-{me.pid}-{int(me.create_time())}"
        self.sweep()
        self.root.mkdir(mode=0o700, exist_ok=True)

    def sweep(self) -> list[str]:
        """Removes folders of server processes that no longer run, and stale results of older versions."""
        removed = []
        for d in self.base.glob("proc-*"):
            m = re.fullmatch(r"proc-(\d+)-(\d+)", d.name)
            alive = False
            if m:
                try:
                    alive = int(psutil.Process(int(m.group(1))).create_time()) == int(m.group(2))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    alive = False
            if not alive:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        for f in Path(tempfile.gettempdir()).glob("SYNTHETIC_DWI_*.nii.gz"):
            if time.time() - f.stat().st_mtime > 60:
                f.unlink(missing_ok=True)
                removed.append(f.name)
        if removed:
            log.warning("removed %d stale scratch item(s) left by killed requests", len(removed))
        return removed

    def request_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="req-", dir=self.root))

    @staticmethod
    def remove(path: Path | None) -> None:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def display_name(filename: str | None, fallback: str) -> str:
    """The client's file name fit for messages: last path part, printable, at most 100 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:100].strip()
    return name or fallback


def save_upload(upload, folder: Path, role: str, what: str) -> tuple[Path, str]:
    """Copies ``upload`` (already bounded by ``BodyLimit``) to ``folder/<role><suffix>``; returns (path, the
    client's cleaned file name)."""
    name = display_name(upload.filename, f"uploaded {what}")
    suffix = image_suffix(name)
    if suffix is None:
        raise InputError(f"{what}: {name}: unsupported file type; send one of {', '.join(UPLOAD_SUFFIXES)}")
    dest = folder / f"{role}{suffix}"
    written = 0
    with open(dest, "xb") as out:
        while True:
            chunk = upload.file.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            out.write(chunk)
    if written == 0:
        raise InputError(f"{what}: file is empty: {name}")
    return dest, name
