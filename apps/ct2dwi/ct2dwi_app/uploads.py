"""Uploads and per-request scratch space that never outlive the request.

* ``BodyLimit``: an ASGI middleware that counts the bytes a request body really carries (``Content-Length``
  and ``Transfer-Encoding: chunked`` alike) and answers 413 once it passes the limit.
* ``ScratchSpace``: one private (0700) folder per server process under ``<TMPDIR>/ct2dwi-scratch``; each
  request gets a sub-folder that is removed on every path (success, 4xx, 5xx, client gone). Folders of
  processes that died (killed mid-request) are swept at start-up, as are ``SYNTHETIC_DWI_*`` results older
  versions left in TMPDIR.
* ``read_form``: reads a request's form once, as it arrives: each file part is written straight to its final
  place in the request folder under a fixed name (no spooled copy in TMPDIR, so an upload takes its size on
  disk once); the client's file name is only used for its suffix (an allowlist) and, cleaned, to name the file
  in messages. Text fields are bounded.
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

from jmmda_model.clinical.imageio import UPLOAD_SUFFIXES
from jmmda_model.errors import InputError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = int(float(os.environ.get("CT2DWI_MAX_UPLOAD_MB", "2048")) * 2**20)


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


def _upload_target(filename: str | None, folder: Path, role: str, what: str,
                   suffixes: tuple[str, ...] | None = None) -> tuple[Path, str]:
    """``folder/<role><suffix>`` for an allowed suffix of the client's file name (images by default)."""
    name = display_name(filename, f"uploaded {what}")
    allowed = suffixes or UPLOAD_SUFFIXES
    suffix = next((x for x in allowed if name.lower().endswith(x)), None)
    if suffix is None:
        raise InputError(f"{what}: {name}: unsupported file type; send one of {', '.join(allowed)}")
    return folder / f"{role}{suffix}", name


#: bytes a text field of a form may carry (params JSON and the like)
MAX_FIELD_BYTES = 1 << 16
MAX_PARTS = 16


class _FormSink:
    """python-multipart callbacks: file parts named in ``roles`` ({field: (role, what[, suffixes])}) go to
    ``folder/<role><suffix>`` as they arrive; other parts are text fields, bounded. Errors raise InputError."""

    def __init__(self, folder: Path, roles: dict[str, tuple]):
        self.folder, self.roles = folder, roles
        self.fields: dict[str, str] = {}
        self.files: dict[str, tuple[Path, str]] = {}
        self.parts = 0
        self.ended = False  # the closing boundary arrived
        self._reset()

    def _reset(self):
        self._headers: dict[str, bytes] = {}
        self._field, self._value = b"", b""
        self._name, self._out, self._buf, self._written, self._display = None, None, None, 0, None

    # -- callbacks (run in a worker thread, with parser.write)
    def on_part_begin(self):
        self._reset()
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InputError(f"the form has more than {MAX_PARTS} parts")

    def on_header_field(self, data, start, end):
        self._field += data[start:end]

    def on_header_value(self, data, start, end):
        self._value += data[start:end]

    def on_header_end(self):
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self):
        from python_multipart.multipart import parse_options_header

        _, opts = parse_options_header(self._headers.get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise InputError("a form part has no field name")
        if name in self.fields or name in self.files:
            raise InputError(f"the form field {display_name(name, 'field')!r} is sent twice")
        self._name = name
        filename = opts.get(b"filename")
        if name in self.roles:
            role, what, *allowed = self.roles[name]
            if filename is None:
                raise InputError(f"{what}: send it as a file (form field {name!r} with a file name)")
            dest, self._display = _upload_target(filename.decode("utf-8", "replace"), self.folder, role, what,
                                                 allowed[0] if allowed else None)
            self._out = open(dest, "xb")
            self.files[name] = (dest, self._display)
        else:
            self._buf = bytearray()

    def on_part_data(self, data, start, end):
        if self._out is not None:
            self._out.write(data[start:end])
            self._written += end - start
        elif self._buf is not None:
            self._buf += data[start:end]
            if len(self._buf) > MAX_FIELD_BYTES:
                raise InputError(f"form field {display_name(self._name, 'field')!r} exceeds {MAX_FIELD_BYTES} bytes")

    def on_part_end(self):
        if self._out is not None:
            self._out.close()
            self._out = None
            if self._written == 0:
                raise InputError(f"{self.roles[self._name][1]}: file is empty: {self._display}")
        elif self._buf is not None:
            try:
                self.fields[self._name] = self._buf.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"form field {display_name(self._name, 'field')!r} is not UTF-8 text") from exc
        self._reset()

    def on_end(self):
        self.ended = True

    def close(self):
        if self._out is not None:
            self._out.close()


async def read_form(request, folder: Path, roles: dict[str, tuple]) -> tuple[dict, dict]:
    """Reads the request's form (multipart/form-data or urlencoded) once, as it streams in (``BodyLimit`` bounds
    and times it). Returns (text fields, {field: (path, the client's cleaned file name)}). File parts named in
    ``roles`` ({field: (role, what[, suffixes])}) are written to ``folder/<role><suffix>``; no other copy is made. A body of
    another content type carries no form (nothing is read)."""
    from urllib.parse import parse_qsl

    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.concurrency import run_in_threadpool

    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype == b"application/x-www-form-urlencoded":
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FIELD_BYTES:
                raise InputError(f"the form exceeds {MAX_FIELD_BYTES} bytes; send files as multipart/form-data")
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise InputError("the form is not UTF-8 text") from exc
        if set(fields) & set(roles):
            raise InputError("files must be sent as multipart/form-data")
        return fields, {}
    if ctype != b"multipart/form-data":
        return {}, {}
    boundary = opts.get(b"boundary")
    if not boundary:
        raise InputError("multipart/form-data without a boundary")
    sink = _FormSink(folder, roles)
    callbacks = {k: getattr(sink, k) for k in ("on_part_begin", "on_part_data", "on_part_end", "on_header_field",
                                              "on_header_value", "on_header_end", "on_headers_finished", "on_end")}
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InputError(f"malformed multipart form ({exc})") from exc
    finally:
        sink.close()
    if not sink.ended:
        raise InputError("the upload is incomplete (the multipart form was not closed); send it again")
    return sink.fields, sink.files
