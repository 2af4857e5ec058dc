"""Hardened ASGI app for MONAI Label 0.8.5 (``--uvicorn_app ct2dwi_server:app``).

Fixes/guards, each covered by tests/test_server.py:
* blocking inference: 0.8.5's ``POST /infer/{model}`` is ``async`` but runs the model inline, so one
  inference blocks the whole server. A plain ``def`` route registered first takes over the path;
  FastAPI runs it in its thread pool, so /info, /train status etc. stay responsive.
* bad input -> clear 4xx: InputError -> 422, unknown model -> 404, no trained checkpoint -> 503.
* Keycloak: 0.8.5 calls ``jwt.decode`` without ``algorithms`` so every token is rejected (401).
  ``from_token`` is replaced by one that pins the algorithms (CT2DWI_AUTH_ALGORITHMS, default RS256)
  and checks the audience when CT2DWI_AUTH_AUDIENCE is set.
* CORS: setting MONAI_LABEL_CORS_ORIGINS crashes start_server (AnyHttpUrl is not JSON
  serialisable). Origins come from CT2DWI_CORS_ORIGINS (comma separated) instead.
* label-tag path traversal: ids/tags of /datastore requests are validated (400) before any work.
* uploads larger than CT2DWI_MAX_UPLOAD_MB (default 2048) are refused with 413 before being stored.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

import jwt
from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

import monailabel.endpoints.user.auth as ml_auth
from monailabel.config import RBAC_USER, settings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- Keycloak fix
def from_token(token: str):
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return ml_auth.DEFAULT_USER
    algorithms = [a.strip() for a in os.environ.get("CT2DWI_AUTH_ALGORITHMS", "RS256").split(",") if a.strip()]
    audience = os.environ.get("CT2DWI_AUTH_AUDIENCE") or None
    key = ml_auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI)
    payload = jwt.decode(
        token, key, algorithms=algorithms, audience=audience,
        options={"verify_signature": True, "verify_aud": audience is not None, "verify_exp": True},
    )
    roles = payload
    for part in settings.MONAI_LABEL_AUTH_TOKEN_ROLES.split("#"):
        roles = roles.get(part) if isinstance(roles, dict) else None
    return ml_auth.User(
        username=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME) or "unknown",
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=list(roles or []),
    )


ml_auth.from_token = from_token

from monailabel.app import app  # noqa: E402  (after the auth patch)
from monailabel.endpoints import infer as ml_infer  # noqa: E402
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException  # noqa: E402

from ct2dwi_app.datastore import is_safe_name  # noqa: E402
from ct2dwi_app.infer import NoModelError  # noqa: E402
from jmmda_model.checkpoint import CheckpointError  # noqa: E402
from jmmda_model.imageio import InputError  # noqa: E402
from jmmda_model.inference import DeviceError  # noqa: E402


# ---------------------------------------------------------------- CORS fix
def _cors_origins() -> list[str]:
    raw = os.environ.get("CT2DWI_CORS_ORIGINS", "").strip()
    return [o.strip().rstrip("/") for o in raw.split(",") if o.strip()] if raw else []


_origins = _cors_origins()
if _origins:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.user_middleware.insert(
        0, Middleware(CORSMiddleware, allow_origins=_origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"])
    )
    app.middleware_stack = None  # rebuilt on first request


# ---------------------------------------------------------------- upload size limit
MAX_UPLOAD_BYTES = int(float(os.environ.get("CT2DWI_MAX_UPLOAD_MB", "2048")) * 2**20)


@app.middleware("http")
async def limit_upload_size(request: Request, call_next):
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        return JSONResponse(
            status_code=413,
            content={"detail": f"upload of {int(length) / 2**20:.0f} MiB exceeds the limit of {MAX_UPLOAD_BYTES / 2**20:.0f} MiB (CT2DWI_MAX_UPLOAD_MB)"},
        )
    return await call_next(request)


# ---------------------------------------------------------------- path traversal guard
_CHECKED_PARAMS = ("tag", "image", "label", "id", "label_tag")


@app.middleware("http")
async def reject_unsafe_names(request: Request, call_next):
    if request.url.path.startswith(("/datastore", "/infer", "/session")):
        for key in _CHECKED_PARAMS:
            for value in request.query_params.getlist(key):
                if not is_safe_name(value):
                    return JSONResponse(
                        status_code=400,
                        content={"detail": f"invalid {key} {value!r}: use letters, digits, '.', '_' and '-' only"},
                    )
    return await call_next(request)


# ---------------------------------------------------------------- non-blocking infer with 4xx errors
def infer_route(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ml_infer.ResultType] = None,
    user: ml_auth.User = Depends(ml_auth.RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    try:
        json.loads(params or "{}")
    except json.JSONDecodeError:
        raise HTTPException(status_code=422, detail="params must be a JSON object")
    try:
        return ml_infer.run_inference(background_tasks, model, image, session_id, params, file, label, output)
    except HTTPException:
        raise
    except InputError as exc:
        raise HTTPException(status_code=422, detail=str(exc))
    except NoModelError as exc:
        raise HTTPException(status_code=503, detail=str(exc))
    except CheckpointError as exc:
        raise HTTPException(status_code=503, detail=f"model checkpoint unusable: {exc}")
    except DeviceError as exc:
        raise HTTPException(status_code=503, detail=f"compute device unusable: {exc}")
    except MONAILabelException as exc:
        code = 404 if "no model" in exc.msg.lower() or "not initialized" in exc.msg.lower() else 400
        if exc.error != MONAILabelError.INVALID_INPUT:
            code = 500
        raise HTTPException(status_code=code, detail=exc.msg)
    except FileNotFoundError as exc:
        raise HTTPException(status_code=404, detail=f"image not found: {exc}")


app.add_api_route(
    "/infer/{model}", infer_route, methods=["POST"], summary=f"{RBAC_USER}Run Inference (thread pool; 4xx on bad input)"
)
# FastAPI matches in order: move our route in front of MONAI Label's async one.
app.router.routes.insert(0, app.router.routes.pop())
