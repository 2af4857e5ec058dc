"""The CT-to-DWI server's ASGI app (``--uvicorn_app ct2dwi_server:app``): an allowlist, not MONAI Label's API.

MONAI Label 0.8.5's own FastAPI app exposes sessions (tar upload unpacked without member checks), /reload,
WSI and batch inference, scoring, active learning, a proxy and an OHIF viewer, with CORS open to every origin.
This module builds a new app holding only the routes this product uses; anything else is 404:

====================  =========  ======  =====================================================================
route                 method     role    what
====================  =========  ======  =====================================================================
/                     GET        -       short HTML page listing the API
/openapi.json         GET        -       API schema
/auth/                GET        -       whether auth is on, realm and client id (for clients)
/info/                GET        user    app, model and trainer info (no server paths)
/infer/ct2dwi         POST       user    CT (+ mask) upload or datastore ``image`` id -> SYNTHETIC DWI
/train/               GET        user    status of the last training run (``{"status": "NONE"}`` before one)
/train/ct2dwi         POST       admin   start training (options validated: 422; one run at a time: 409)
/train/               DELETE     admin   stop training (previous model kept)
/train/ct2dwi/status  GET        user    live run: progress, ETA, losses and validation metrics per epoch, log
/train/ct2dwi/sample.png GET     user    CT | real DWI | SYNTHETIC DWI of a validation case, latest epoch
/train/ct2dwi/versions GET       user    model versions (id, time, cases, options, metrics, card; which serves)
/train/ct2dwi/versions/{id}/promote POST admin serve that version (roll back/forward), no restart; a candidate worse
                                         on lesions than the served version needs ``?confirm=true`` (else 409)
/train/ct2dwi/versions POST      admin   publish a model trained elsewhere (.pt checkpoint, .ts, bundle .zip) as a
                                         candidate, compared with the served version on the validation cases
/train/ct2dwi/versions/{id}/compare POST admin compare a version with the one served now, again
/train/ct2dwi/runs    GET        user    per-epoch and per-step curves of earlier runs and the current one
/train/ct2dwi/tensorboard.tar.gz GET user the current run's TensorBoard event files
/ui/                  GET        -       the training page (static HTML/JS/CSS; its API calls carry the token)
/datastore/           GET        user    image ids and their label tags (``?output=stats``: counts)
/datastore/           PUT        admin   add a CT (``?image=<id>``)
/datastore/label      PUT        admin   add a label (``?image=<id>&tag=<tag>``) on the CT's grid
/logs/                GET        admin   last lines of the server log (``?lines=N``)
/healthz              GET        -       liveness (nothing else said)
/readyz               GET        -       readiness: a model is loadable and the datastore answers (200 / 503)
/metrics              GET        admin   Prometheus metrics (requests, latency, inference queue, training state)
====================  =========  ======  =====================================================================

Inference runs in FastAPI's thread pool (0.8.5's async route blocked the event loop). Uploads are bounded while
they stream (``BodyLimit``), kept in a private per-request folder removed on every path, checked from their
header before any voxel is read, and ``params`` accepts no keys but ``client_id``: no server paths, no label
writes. Bad input -> 4xx naming the user's file; no checkpoint -> 503, never random weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
import requests
from requests_toolbelt import MultipartEncoder

from monailabel.config import settings
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.async_tasks.task import AsyncTask

from ct2dwi_app import auth
from ct2dwi_app.datastore import DatastoreError, is_safe_name
from ct2dwi_app import observe
from ct2dwi_app.infer import NoModelError
from ct2dwi_app.candidates import MODEL_SUFFIXES
from ct2dwi_app.train import validate_options
from ct2dwi_app.uploads import BodyLimit, ScratchSpace, read_form
from jmmda_model.checkpoint import CheckpointError
from jmmda_model.clinical.geometry import same_geometry
from jmmda_model.clinical.imageio import read_image
from jmmda_model.errors import InputError
from jmmda_model.export import sha256
from jmmda_model.inference import DeviceError, pick_device

log = logging.getLogger(__name__)
MODEL = "ct2dwi"
auth.check_config()


def _cors_origins() -> list[str]:
    raw = os.environ.get("CT2DWI_CORS_ORIGINS", "").strip()
    return [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.scratch = ScratchSpace()
    instance = app_instance()
    instance.server_mode(True)
    instance.on_init_complete()
    trainer = instance.train_task(MODEL)
    if trainer is not None:  # a run the previous server left saying "running" is not running any more
        from ct2dwi_app.train import settle_status

        if settle_status(trainer.run_dir, "the server stopped during training; start it again with resume to go on"):
            log.warning("the last training run was interrupted by a server stop; its status now says so")
    yield
    _stop_training("the server is shutting down")  # the training child never outlives the server
    app.state.scratch.close()


app = FastAPI(title="CT-to-DWI (JMMDA-GAN) - SYNTHETIC DWI, not for diagnosis", docs_url=None, redoc_url=None,
              openapi_url="/openapi.json", lifespan=lifespan)
if _cors_origins():  # closed unless configured: no cross-origin reads of a server on the user's machine
    app.add_middleware(CORSMiddleware, allow_origins=_cors_origins(), allow_credentials=True,
                       allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=["Authorization", "Content-Type"])


def _allowed_hosts() -> list[str]:
    """Host headers answered (DNS rebinding): loopback names, the bound address, and CT2DWI_ALLOWED_HOSTS
    (comma-separated; needed behind a proxy or when binding 0.0.0.0, which otherwise answers any host)."""
    extra = [h.strip() for h in os.environ.get("CT2DWI_ALLOWED_HOSTS", "").split(",") if h.strip()]
    bound = os.environ.get("CT2DWI_BIND_HOST", "127.0.0.1").strip("[]")
    if bound in ("0.0.0.0", "::") and not extra:
        return ["*"]
    return ["localhost", "127.0.0.1", "::1", bound, *extra]


class FrameDeny:
    """Pure ASGI middleware: no page of this server may be framed by another site (clickjacking)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])]
                csp = next((v for k, v in headers if k.lower() == b"content-security-policy"), None)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-security-policy"]
                headers.append((b"content-security-policy",
                                (csp + b"; " if csp else b"") + b"frame-ancestors 'none'"))
                headers += [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


async def json_refusal(send, status: int, detail: str) -> None:
    """Answers an ASGI request from a middleware with ``{"detail": ...}`` and ``status``."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SameOriginWrites:
    """Pure ASGI middleware: a state-changing request (POST, PUT, PATCH, DELETE) sent by a browser from another
    site is refused with 403. Browsers name the page's origin in ``Origin`` on every cross-origin write (and
    ``Sec-Fetch-Site: cross-site``); API clients (Slicer, scripts) send neither and pass. Origins listed in
    CT2DWI_CORS_ORIGINS are allowed. This stops a web page from starting training, switching the served version
    or uploading with an empty text/plain POST or a form, also on a loopback server with auth off."""

    WRITES = {"POST", "PUT", "PATCH", "DELETE"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in self.WRITES:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            host = headers.get("host", "")
            same = origin is not None and origin.split("://", 1)[-1].rstrip("/") == host
            allowed = origin is not None and origin.rstrip("/") in _cors_origins()
            cross = (origin is not None and not same and not allowed) or (
                origin is None and headers.get("sec-fetch-site") == "cross-site")
            if cross:
                return await json_refusal(send, 403, "cross-site request refused: this server accepts changes only "
                                                     "from its own pages and from API clients")
        return await self.app(scope, receive, send)


def local_token() -> str:
    """The access token that stands in for sign-in while authentication is off (serve.py sets CT2DWI_TOKEN; a
    server started otherwise makes its own, which then nobody knows: changes fail closed)."""
    tok = os.environ.get("CT2DWI_TOKEN")
    if not tok:
        import secrets

        tok = os.environ["CT2DWI_TOKEN"] = secrets.token_urlsafe(24)
    return tok


def _token_ok(given: str | None) -> bool:
    import hmac

    return bool(given) and hmac.compare_digest(given.encode(), local_token().encode())


def _request_token(headers: dict) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return headers.get("x-ct2dwi-token")


class LocalToken:
    """Pure ASGI middleware: with authentication off, every state-changing request must carry the access token
    (``Authorization: Bearer <token>``, ``Authorization: token <token>`` or ``X-CT2DWI-Token``); 403 otherwise.
    Another local user, process or web page cannot start training, switch versions or write to the datastore."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and scope["method"] in SameOriginWrites.WRITES
                and not settings.MONAI_LABEL_AUTH_ENABLE):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not _token_ok(_request_token(headers)):
                return await json_refusal(send, 403, "this server's access token is required for changes "
                                                     "(authentication is off): send Authorization: Bearer <token>; the "
                                                     "token is printed when the server starts (CT2DWI_TOKEN)")
        return await self.app(scope, receive, send)


app.add_middleware(LocalToken)
app.add_middleware(SameOriginWrites)
app.add_middleware(BodyLimit)  # outside the token checks: an oversized or lying body is refused (413) first
app.add_middleware(TrustedHostMiddleware, allowed_hosts=_allowed_hosts())
app.add_middleware(FrameDeny)
app.add_middleware(observe.Observe)  # outermost: every answer is counted and logged, refusals too

USER = Depends(auth.require(auth.USER))
ADMIN = Depends(auth.require(auth.ADMIN))


def _instance():
    return app_instance()


def _check_name(value: str, what: str) -> str:
    if not is_safe_name(value):
        raise HTTPException(status_code=400, detail=f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only")
    return value


# ---------------------------------------------------------------- landing page, auth info
@app.get("/", include_in_schema=False)
def index():
    rows = "".join(
        f"<tr><td><code>{r.path}</code></td><td>{', '.join(sorted(r.methods - {'HEAD'}))}</td></tr>"
        for r in app.routes if getattr(r, "include_in_schema", False)
    )
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>CT-to-DWI server</title></head><body>"
        "<h1>CT-to-DWI (JMMDA-GAN) server</h1><p><strong>Every image it produces is a SYNTHETIC DWI, not for "
        f"diagnosis.</strong></p><table><tr><th>route</th><th>methods</th></tr>{rows}</table>"
        "<p>Training page: <a href='/ui/'>/ui/</a>. Schema: <a href='/openapi.json'>/openapi.json</a></p></body></html>"
    )


@app.get("/auth/", summary="Whether authentication is enabled")
def auth_info():
    return {"enabled": settings.MONAI_LABEL_AUTH_ENABLE, "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID,
            "realm": settings.MONAI_LABEL_AUTH_REALM_URI if settings.MONAI_LABEL_AUTH_ENABLE else None}


# ---------------------------------------------------------------- health, readiness, metrics
@app.get("/healthz", summary="Liveness: the process answers (no auth, nothing else)")
def healthz():
    return {"status": "ok"}


@app.get("/readyz", summary="Readiness: a model is loaded and the datastore answers (no auth; no details)")
def readyz():
    problems = []
    inst = _instance()
    task = inst.infer_task(MODEL)
    try:
        if task is None:
            problems.append("model")
        else:
            task.synthesizer()
    except Exception:  # noqa: BLE001 - readiness says no, the reason goes to the server log only
        log.exception("readiness: the model cannot be loaded")
        problems.append("model")
    try:
        inst.datastore().list_images()
    except Exception:  # noqa: BLE001
        log.exception("readiness: the datastore does not answer")
        problems.append("datastore")
    if problems:
        return JSONResponse({"ready": False, "failing": problems}, status_code=503)
    return {"ready": True}


@app.get("/metrics", summary="Prometheus metrics (admin)", response_class=PlainTextResponse)
def metrics(user=ADMIN):
    observe.QUEUE.set(SLOTS.waiting)
    observe.RUNNING.set(SLOTS.active)
    observe.TRAINING.set(1 if _train_running() else 0)
    return Response(observe.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


# ---------------------------------------------------------------- info
@app.get("/info/", summary="App, model and trainer info")
def info(user=USER):
    inst = _instance()
    task = inst.infer_task(MODEL)
    trainer = inst.train_task(MODEL)
    status = inst.datastore().status()
    return {
        "name": inst.name,
        "description": inst.description,
        "version": observe.software()["jmmda"],
        "labels": [],
        "models": {MODEL: task.info()} if task else {},
        "trainers": {MODEL: trainer.info()} if trainer else {},
        "train_stats": {MODEL: trainer.stats()} if trainer else {},
        "datastore": {"total": status.get("total"), "completed": status.get("completed"),
                      "label_tags": status.get("label_tags", {})},
        "software": {**observe.software(), "device": _device_used(task) if task is not None else None},
    }


# ---------------------------------------------------------------- inference
_PARAM_KEYS = {"client_id"}  # MONAILabelClient adds it; nothing else is accepted


def _parse_params(params: str) -> dict:
    try:
        p = json.loads(params or "{}")
    except json.JSONDecodeError as exc:
        raise HTTPException(status_code=422, detail="params must be a JSON object") from exc
    if not isinstance(p, dict):
        raise HTTPException(status_code=422, detail="params must be a JSON object")
    bad = sorted(k for k in p if k not in _PARAM_KEYS)
    if bad:
        raise HTTPException(status_code=422, detail=f"params key(s) {', '.join(map(repr, bad))} are not accepted by this server")
    return p


class InferenceSlots:
    """At most ``running`` inferences at once (CT2DWI_MAX_INFER, default 1) and ``queued`` waiting
    (CT2DWI_INFER_QUEUE, default 8); past that 503 with Retry-After, so concurrent large requests cannot add up
    their memory."""

    def __init__(self, running: int, queued: int):
        self.running, self.queued = max(1, running), max(0, queued)
        self._sem = threading.Semaphore(self.running)
        self._lock = threading.Lock()
        self.active = self.waiting = 0

    @contextlib.contextmanager
    def slot(self):
        with self._lock:
            if self.active + self.waiting >= self.running + self.queued:
                raise HTTPException(status_code=503, headers={"Retry-After": "15"},
                                    detail=f"the server is busy ({self.active} inference(s) running, {self.waiting} "
                                           "waiting); try again shortly")
            self.waiting += 1
        self._sem.acquire()
        with self._lock:
            self.waiting -= 1
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
            self._sem.release()


SLOTS = InferenceSlots(int(os.environ.get("CT2DWI_MAX_INFER", "1")), int(os.environ.get("CT2DWI_INFER_QUEUE", "8")))


def _datastore_image(image_id: str) -> Path:
    _check_name(image_id, "image id")
    ds = _instance().datastore()
    try:
        if image_id not in ds.list_images():
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore")
        return Path(ds.get_image_uri(image_id))
    except DatastoreError as exc:  # a DICOMweb server that failed or sent something else than the series
        raise HTTPException(status_code=502, detail=str(exc)) from exc
    except requests.RequestException as exc:
        raise HTTPException(status_code=502, detail=f"the DICOMweb server did not answer: {type(exc).__name__}") from exc


#: the form the upload routes read themselves (uploads.read_form streams files once, straight into the request
#: folder); described here for the API docs since the routes take no File() parameters
def _form_doc(files: dict[str, str], required: tuple = (), text: dict | None = None) -> dict:
    props = {k: {"type": "string", "format": "binary", "description": v} for k, v in files.items()}
    props.update({k: {"type": "string", "description": v} for k, v in (text or {}).items()})
    schema = {"type": "object", "properties": props, **({"required": list(required)} if required else {})}
    return {"requestBody": {"required": bool(required), "content": {"multipart/form-data": {"schema": schema}}}}


async def _read_upload_form(request: Request, folder: Path, roles: dict) -> tuple[dict, dict]:
    try:
        return await read_form(request, folder, roles)
    except InputError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


INFER_FORM = {"file": ("ct", "CT"), "label": ("mask", "brain mask")}


@app.post("/infer/{model}", summary="Synthesize a DWI (SYNTHETIC - not for diagnosis)",
          openapi_extra=_form_doc({"file": "the CT (.nii.gz, .nii, .nrrd, .mha)",
                                   "label": "optional brain mask on the CT grid"},
                                  text={"params": "JSON object; only client_id is accepted"}))
async def infer(
    request: Request,
    model: str,
    image: str = "",
    output: str = Query("all", pattern="^(image|json|all|probability)$"),
    probability: bool = False,
    user=USER,
):
    task = _instance().infer_task(model) if model == MODEL else None
    if task is None:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; this server offers {MODEL!r}")
    scratch: ScratchSpace = app.state.scratch
    folder = scratch.request_dir()
    try:
        fields, files = await _read_upload_form(request, folder, INFER_FORM)
        return await run_in_threadpool(_infer_in_folder, task, folder, fields, files, image, output, probability, user)
    except BaseException:
        scratch.remove(folder)
        raise


def _infer_in_folder(task, folder: Path, fields: dict, files: dict, image: str, output: str, probability: bool, user):
    scratch: ScratchSpace = app.state.scratch
    try:
        _parse_params(fields.get("params", "{}"))
        if "file" in files and image:
            raise HTTPException(status_code=422, detail="send either an uploaded file or an image id, not both")
        if "file" in files:
            ct_path, ct_name = files["file"]
        elif image:
            ct_path = _datastore_image(image)
            ct_name = image
        else:
            raise HTTPException(status_code=422, detail="no CT given: upload it as 'file' or name a datastore image with ?image=")
        mask_path, mask_name = files.get("label", (None, None))
        # datastore images get the same header check as uploads: a stored header must not name another file
        want_prob = probability or output == "probability"
        digest = (sha256(ct_path) if Path(ct_path).is_file()
                  else "folder:" + hashlib.sha256(str(image).encode()).hexdigest())
        t0 = time.perf_counter()
        try:
            with SLOTS.slot():
                out, result = task.run(ct_path, mask_path, folder, ct_name=ct_name, mask_name=mask_name,
                                       single_file=True, probability=want_prob)
        except BaseException as exc:
            code = getattr(_http_error(exc), "status_code", 500)
            observe.audit(_username(user), digest, _served_version(task), _device_used(task), time.perf_counter() - t0,
                          f"refused {code}" if code < 500 else f"failed {code}")
            raise
        observe.audit(_username(user), digest, result.get("version"), str(result.get("device")), time.perf_counter() - t0,
                      "ok")
        prob_path = Path(result.pop("probability_file")) if result.get("probability_file") else None
        if output == "probability" and prob_path is None:
            raise HTTPException(status_code=409, detail="the served model has no infarct-probability head "
                                                        "(GET /info/: probability_map false); ask for output=image")
        return _infer_response(out, result, output, folder, prob_path)
    except BaseException as exc:
        scratch.remove(folder)
        raise _http_error(exc) from exc


def _username(user) -> str:
    return str(getattr(user, "username", None) or "anonymous")


def _served_version(task):
    try:
        return task.versions.served_id()
    except Exception:  # noqa: BLE001
        return None


def _device_used(task) -> str:
    syn = getattr(task, "_syn", None)
    if syn is not None:
        return str(syn.device)
    try:
        return str(pick_device(task.device))
    except Exception:  # noqa: BLE001 - an unusable device is reported by /infer (503)
        return str(task.device)


def _infer_response(out: Path, result: dict, output: str, folder: Path, prob: Path | None = None) -> Response:
    """json: the info; image: the SYNTHETIC DWI (NIfTI, gzip); probability: the infarct-probability map (NIfTI,
    gzip); all: multipart with ``params`` (the info), ``image`` and, when asked with ``probability=true`` and the
    model has a lesion head, ``probability``."""
    if output == "json":
        ScratchSpace.remove(folder)
        return JSONResponse(result)
    if output in ("image", "probability"):
        f = out if output == "image" else prob
        return _CleanupFileResponse(f, folder, media_type="application/gzip", filename=f.name)
    fields = {"params": (None, json.dumps(result), "application/json"),
              "image": (out.name, out.read_bytes(), "application/gzip")}
    if prob is not None:
        fields["probability"] = (prob.name, prob.read_bytes(), "application/gzip")
    enc = MultipartEncoder(fields=fields)
    body = enc.to_string()
    ScratchSpace.remove(folder)
    return Response(content=body, media_type=enc.content_type)


class _CleanupFileResponse(FileResponse):
    """Removes the request folder whether or not the client stays to the end (a background task would not run
    when sending fails)."""

    def __init__(self, path: Path, folder: Path, **kw):
        super().__init__(path, **kw)
        self.folder = folder

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            ScratchSpace.remove(self.folder)


def _http_error(exc: BaseException) -> BaseException:
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, InputError):
        return HTTPException(status_code=422, detail=str(exc))
    if isinstance(exc, NoModelError):
        return HTTPException(status_code=503, detail=str(exc))
    if isinstance(exc, CheckpointError):
        return HTTPException(status_code=503, detail=f"model checkpoint unusable: {exc}")
    if isinstance(exc, DeviceError):
        return HTTPException(status_code=503, detail=f"compute device unusable: {exc}")
    if isinstance(exc, Exception):
        log.exception("inference failed")
        return HTTPException(status_code=500, detail=f"inference failed ({type(exc).__name__}); see the server log")
    return exc


# ---------------------------------------------------------------- training
_train_lock = threading.Lock()


def _train_running() -> bool:
    return any(t.get("status") in ("SUBMITTED", "RUNNING") for t in AsyncTask.status("train", all=True)[0] or [])


@app.get("/train/", summary="Status of the last training run")
def train_status(all: bool = False, user=USER):
    res, _ = AsyncTask.status("train", all)
    if res is None:
        return [] if all else {"status": "NONE"}
    admin = not settings.MONAI_LABEL_AUTH_ENABLE or auth.ADMIN in user.roles
    return _public_task(res, redact=not admin)


_ABS_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"]+)+/([^\s/'\"]+)")


def redact_paths(line: str) -> str:
    """Absolute paths in a log line -> their last component (the user role sees no server folders)."""
    return _ABS_PATH.sub(lambda m: f"<...>/{m.group(1)}", str(line))


def _public_task(t, redact: bool = False):
    if isinstance(t, list):
        return [_public_task(x, redact) for x in t]
    t = {k: v for k, v in t.items() if k != "request"}
    if "details" in t:
        t["details"] = [redact_paths(x) for x in t["details"]] if redact else list(t["details"])
    return t


#: seconds a stopping training child gets to finish its step and write its status before it is killed
TRAIN_STOP_GRACE_S = float(os.environ.get("CT2DWI_TRAIN_STOP_GRACE_S", "30"))
#: a stop that comes between a run's submission and its process start waits this long for the process to appear
TRAIN_SPAWN_WAIT_S = 30.0


def _stop_training(reason: str) -> dict | None:
    """Stops the training child: SIGTERM (it stops at its next step and writes status.json "stopped"), then,
    after CT2DWI_TRAIN_STOP_GRACE_S, kill. Returns the task record (status STOPPED), or None without a run."""
    import datetime
    import subprocess

    from monailabel.utils.async_tasks import utils as bg

    procs = dict(bg.background_processes.get("train") or {})
    t0 = time.monotonic()
    # MONAI Label registers the run's process only once its worker thread has started it: a stop right after a
    # start (a submitted run, no process yet) waits for it, instead of answering "no run" and letting it train on
    while not procs and _train_running() and time.monotonic() - t0 < TRAIN_SPAWN_WAIT_S:
        time.sleep(0.05)
        procs = dict(bg.background_processes.get("train") or {})
    if not procs:
        return None
    task_id, proc = next(iter(procs.items()))
    task = next((t for t in bg.background_tasks.get("train", []) if t["id"] == task_id), None)
    if task is not None:  # set first: the runner thread then keeps it whatever the exit code
        task["status"] = "STOPPED"
        task["end_ts"] = datetime.datetime.today().strftime("%Y-%m-%d %H:%M:%S")
    log.warning("stopping the training run (pid %d): %s", proc.pid, reason)
    try:
        proc.terminate()
        proc.wait(TRAIN_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.error("the training run did not stop within %g s; killing it", TRAIN_STOP_GRACE_S)
        AsyncTask.stop("train")
    except ProcessLookupError:
        pass
    trainer = _instance().train_task(MODEL)
    if trainer is not None:
        from ct2dwi_app.train import settle_status

        settle_status(trainer.run_dir, reason, stopped_run=True)
    return task


@app.post("/train/{model}", summary="Start retraining (admin)")
def train_start(model: str, params: Optional[dict] = Body(None), user=ADMIN):
    from ct2dwi_app.train import lock_holder

    trainer = _trainer(model)
    try:
        opts = validate_options(params or {})
    except InputError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    with _train_lock:
        if _train_running():
            raise HTTPException(status_code=409, detail="a training run is already in progress: stop it or wait for it")
        holder = lock_holder(trainer.run_dir)
        if holder is not None:  # e.g. a run a killed server left behind, still stopping
            raise HTTPException(status_code=409, detail=f"the training run folder is still held by process {holder} "
                                                        "(a run that is stopping); try again in a few seconds")
        trainer.mark_starting(opts)
        res, detail = AsyncTask.run("train", request={"model": MODEL}, params=opts, enqueue=False)
    if res is None:
        raise HTTPException(status_code=409, detail=detail)
    observe.audit_event("train_start", _username(user), options=opts)
    return _public_task(res)


@app.delete("/train/", summary="Stop the running training (admin); the previous model is kept")
def train_stop(user=ADMIN):
    with _train_lock:
        res = _stop_training(f"Stop by {_username(user)}")
    observe.audit_event("train_stop", _username(user), had_run=bool(res))
    return _public_task(res) if res else {"status": "NONE"}


def _finite(obj):
    """JSON cannot carry NaN/Inf: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _trainer(model: str):
    t = _instance().train_task(model) if model == MODEL else None
    if t is None:
        raise HTTPException(status_code=404, detail=f"unknown trainer {model!r}; this server offers {MODEL!r}")
    return t


@app.get("/train/{model}/status", summary="Live status of the training run (progress, curves, validation)")
def train_run_status(model: str, user=USER):
    trainer = _trainer(model)
    task, _ = AsyncTask.status("train")
    run = trainer.run_status()
    sample = trainer.run_dir / "samples" / "latest.png"
    return _finite({
        "task": _public_task(task) if task else {"status": "NONE"},
        "run": run,
        "served_version": trainer.versions.served_id(),
        "sample": sample.is_file(),
    })


@app.get("/train/{model}/runs", summary="Curves of earlier training runs and the current one (overlay)")
def train_runs(model: str, user=USER):
    return _finite({"runs": _trainer(model).runs()})


@app.get("/train/{model}/tensorboard.tar.gz", summary="The current run's TensorBoard logs (tensorboard --logdir)")
def train_tensorboard(model: str, user=USER):
    import io
    import tarfile

    folder = _trainer(model).run_dir / "tensorboard"
    events = sorted(p for p in folder.rglob("events.out.tfevents.*") if p.is_file()) if folder.is_dir() else []
    if not events:
        raise HTTPException(status_code=404, detail="the current run has written no TensorBoard logs yet")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in events:  # event files only, under a neutral folder name (no server paths)
            tar.add(f, arcname=f"tensorboard/{f.relative_to(folder)}", recursive=False)
    return Response(buf.getvalue(), media_type="application/gzip",
                    headers={"Content-Disposition": 'attachment; filename="ct2dwi_tensorboard.tar.gz"',
                             "Cache-Control": "no-store"})


@app.get("/train/{model}/sample.png", summary="Latest validation sample: CT | real DWI | SYNTHETIC DWI")
def train_sample(model: str, user=USER):
    f = _trainer(model).run_dir / "samples" / "latest.png"
    if not f.is_file():
        raise HTTPException(status_code=404, detail="no validation sample yet")
    return Response(f.read_bytes(), media_type="image/png", headers={"Cache-Control": "no-store"})


@app.get("/train/{model}/versions", summary="Model versions and which one serves")
def versions_list(model: str, user=USER):
    return _finite({"versions": _trainer(model).versions.list()})


@app.post("/train/{model}/versions/{vid}/promote", summary="Serve this model version (admin); atomic, no restart")
def versions_promote(model: str, vid: int, confirm: bool = False, user=ADMIN):
    from ct2dwi_app.versions import UnknownVersion, VersionError

    versions = _trainer(model).versions
    listed = next((v for v in versions.list() if v["id"] == vid), None)
    worse = ((listed or {}).get("comparison") or {}).get("worse_on_lesions") or []
    if listed is not None and listed.get("candidate") and worse and not confirm:
        # the gate: a candidate worse on lesions than the served version goes live only when confirmed
        raise HTTPException(status_code=409, detail=f"candidate version {vid} is worse on lesions than the served "
                            f"version: {'; '.join(worse)}. Promote with confirm=true to serve it anyway")
    try:
        record = versions.promote(vid)
    except VersionError as exc:
        raise HTTPException(status_code=404 if isinstance(exc, UnknownVersion) else 409, detail=str(exc)) from exc
    observe.audit_event("promote" if vid > (record.get("previous") or 0) else "rollback", _username(user),
                        version=vid, previous=record.get("previous"), confirmed_worse_on_lesions=worse if confirm else [])
    return record


MODEL_FORM = {"model": ("model", "model file", MODEL_SUFFIXES)}


@app.post("/train/{model}/versions", summary="Publish a model trained elsewhere as a candidate (admin)",
          openapi_extra=_form_doc({"model": "a JMMDA-GAN checkpoint (.pt), TorchScript export (.ts) or bundle (.zip)"},
                                  required=("model",)))
async def versions_publish(request: Request, model: str, user=ADMIN):
    """Checked and converted like a finished training run's model, compared with the served version on the same
    validation cases, published as a candidate: it goes live only when promoted."""
    from ct2dwi_app.candidates import publish_external

    trainer = _trainer(model)
    scratch: ScratchSpace = app.state.scratch
    folder = scratch.request_dir()
    try:
        _, files = await _read_upload_form(request, folder, MODEL_FORM)
        if "model" not in files:
            raise HTTPException(status_code=422, detail="no model given: upload it as the form field 'model'")
        path, name = files["model"]

        def publish():
            try:
                with SLOTS.slot():  # the comparison runs inference: it takes an inference slot
                    return publish_external(trainer.versions, path, name, folder, _instance().datastore(),
                                            _username(user), device=_instance().infer_task(MODEL).device)
            except CheckpointError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from exc

        result = await run_in_threadpool(publish)
    finally:
        scratch.remove(folder)
    observe.audit_event("publish", _username(user), version=result["version"], file=name, format=result["format"])
    return _finite(result)


@app.post("/train/{model}/versions/{vid}/compare", summary="Compare a version with the served one again (admin)")
def versions_compare(model: str, vid: int, user=ADMIN):
    """Re-runs the comparison of a candidate with the version served now (it may have changed since)."""
    from ct2dwi_app.candidates import compare_with_served, validation_cases
    from ct2dwi_app.versions import UnknownVersion

    versions = _trainer(model).versions
    path = versions.path(vid)
    if path is None:
        raise HTTPException(status_code=404, detail=f"model version {vid} does not exist")
    with SLOTS.slot():
        comparison = compare_with_served(versions, path, validation_cases(_instance().datastore()),
                                         device=_instance().infer_task(MODEL).device)
    try:
        versions.update_meta(vid, {"comparison": comparison})
    except UnknownVersion as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return _finite(comparison)


# ---------------------------------------------------------------- training page (static, same origin)
UI_DIR = Path(__file__).resolve().parent / "ui"
UI_FILES = {"": ("index.html", "text/html"), "index.html": ("index.html", "text/html"),
            "app.js": ("app.js", "text/javascript"), "style.css": ("style.css", "text/css")}


@app.get("/ui/{name:path}", include_in_schema=False)
def ui(name: str, token: str = ""):
    if name not in UI_FILES:
        raise HTTPException(status_code=404, detail="not found")
    if name in ("", "index.html") and not settings.MONAI_LABEL_AUTH_ENABLE and not _token_ok(token):
        return Response("<!doctype html><title>CT-to-DWI</title><p>This page needs the server's access token: open "
                        "the <code>/ui/?token=...</code> address printed when the server started.</p>",
                        status_code=401, media_type="text/html",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"})
    fname, mime = UI_FILES[name]
    return Response((UI_DIR / fname).read_bytes(), media_type=mime,
                    headers={"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:"})


# ---------------------------------------------------------------- datastore
@app.get("/datastore/", summary="Image ids and label tags")
def datastore_list(output: str = Query("list", pattern="^(list|stats)$"), user=USER):
    ds = _instance().datastore()
    if output == "stats":
        return ds.status()
    return {"images": {i: sorted(ds.get_labels_by_image_id(i)) for i in sorted(ds.list_images())}}


async def _stored_upload(request: Request, field: str, what: str, check):
    """Streams the form's ``field`` file into a request folder and checks it (header, voxels, ``check``) in a
    worker thread; returns (folder, path). The caller removes the folder."""
    scratch: ScratchSpace = app.state.scratch
    folder = scratch.request_dir()
    try:
        _, files = await _read_upload_form(request, folder, {field: ("upload", what)})
        if field not in files:
            raise HTTPException(status_code=422, detail=f"no {what} given: upload it as the form field {field!r}")
        path, name = files[field]

        def verify():
            try:
                check(read_image(path, what, name=name, single_file=True), name)
            except InputError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from exc

        await run_in_threadpool(verify)
        return folder, path
    except BaseException:
        scratch.remove(folder)
        raise


@app.put("/datastore/", summary="Add a CT to the datastore (admin)",
         openapi_extra=_form_doc({"file": "the CT (.nii.gz, .nii, .nrrd, .mha)"}, required=("file",)))
async def datastore_add_image(request: Request, image: str, user=ADMIN):
    _check_name(image, "image id")
    ds = _instance().datastore()
    if image in ds.list_images():
        raise HTTPException(status_code=409, detail=f"image {image!r} already exists")
    folder, path = await _stored_upload(request, "file", "CT", lambda img, name: None)
    try:
        await run_in_threadpool(ds.add_image, image, str(path), {"user": user.username})
    finally:
        ScratchSpace.remove(folder)
    return {"image": image}


@app.put("/datastore/label", summary="Add a label for a datastore image (admin)",
         openapi_extra=_form_doc({"label": "the label volume, on the CT grid"}, required=("label",)))
async def datastore_add_label(request: Request, image: str, tag: str, user=ADMIN):
    _check_name(tag, "label tag")

    def stored_ct():
        try:
            return read_image(_datastore_image(image), "CT")
        except InputError as exc:  # the CT already stored is unreadable: a state of the datastore, not of this upload
            raise HTTPException(status_code=409, detail=f"the stored CT of image {image!r} cannot be read ({exc}); "
                                                        "replace the image before adding labels") from exc

    ref = await run_in_threadpool(stored_ct)

    def on_ct_grid(img, name):
        if not same_geometry(img, ref):
            raise InputError(f"label {name}: geometry does not match image {image!r}; resample it onto the CT grid")

    folder, path = await _stored_upload(request, "label", f"label '{tag}'", on_ct_grid)
    try:
        label_id = await run_in_threadpool(_instance().datastore().save_label, image, str(path), tag,
                                           {"user": user.username})
    finally:
        ScratchSpace.remove(folder)
    return {"image": image, "label": label_id, "tag": tag}


# ---------------------------------------------------------------- logs
@app.get("/logs/", summary="Last lines of the server log (admin)", response_class=PlainTextResponse)
def logs(lines: int = Query(300, ge=1, le=10000), user=ADMIN):
    f = Path(settings.MONAI_LABEL_APP_DIR) / "logs" / "app.log"
    if not f.is_file():
        raise HTTPException(status_code=404, detail="no server log yet")
    with open(f, errors="replace") as fh:
        return "".join(deque(fh, lines))
