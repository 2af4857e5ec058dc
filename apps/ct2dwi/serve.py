#!/usr/bin/env python
"""Starts the CT-to-DWI MONAI Label server with the hardened ASGI app (ct2dwi_server.py).

    python apps/ct2dwi/serve.py --studies <folder or DICOMweb URL> [--host 127.0.0.1] [--port 8000]
        [--ssl_certfile cert.pem --ssl_keyfile key.pem] [--conf device cuda] [--conf model_format torchscript]
        [--conf flip_average true] [--conf demo_model false] [--insecure] [--state-dir DIR | --app APP_FOLDER]
        [any other monailabel start_server option]

State lives outside the code tree: in ``--state-dir`` (default ``$CT2DWI_STATE_DIR``, else
``$XDG_STATE_HOME/ct2dwi`` = ``~/.local/state/ct2dwi``) the app's code is linked, its model folder copied once
(model versions, served.json, training runs and their history are kept there), logs go to ``app/logs``, request
scratch to ``tmp`` and the datastore defaults to ``studies``. ``--app`` serves an app folder as it is instead.

Secure by default: the host defaults to 127.0.0.1, and a non-loopback host (e.g. 0.0.0.0) is refused while
authentication is off (MONAI_LABEL_AUTH_ENABLE) unless ``--insecure`` is given. With authentication off every
change needs the server's access token (``CT2DWI_TOKEN``, or a random one printed at start-up with the training
page's URL), as Jupyter does. Token settings that would
let anybody sign tokens (HMAC algorithms) are refused too. Exit code 2 and a message on stderr in both cases.

CORS is closed unless CT2DWI_CORS_ORIGINS="https://a.example,https://b.example" is set
(MONAI_LABEL_CORS_ORIGINS, which crashes MONAI Label 0.8.5's start_server, is moved there).
"""
import ipaddress
import os
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
# OpenMP threads that sleep while they wait for work (set before torch loads; an OMP_WAIT_POLICY already set is kept).
# The server runs an inference beside a training child on the same cores, and OpenMP's default spinning waits burn the
# time the working threads need: a 5 mm inference beside `jmmda train` took 8.8 s with the default and 3.3 s with
# PASSIVE; alone, the same within noise (2.03-2.15 s either way; 2-core CPU, benchmarks/records/omp_wait_2026-12-06/).
# Training children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _option(argv, *names):
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _all_options(argv, *names) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif a.startswith(n + "="):
                out.append(a.split("=", 1)[1])
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: what of the app folder is code (linked into a state directory) and what is state (kept there)
CODE_ITEMS = ("serve.py", "main.py", "ct2dwi_server.py", "ct2dwi_app", "ui", "bin", "lib")


def default_state_dir() -> Path:
    """$CT2DWI_STATE_DIR, else $XDG_STATE_HOME/ct2dwi (~/.local/state/ct2dwi): model versions, training runs,
    logs and request scratch live there, outside the code tree."""
    env = os.environ.get("CT2DWI_STATE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ct2dwi"


def prepare_state_dir(state: Path) -> Path:
    """``state/app``: the app's code linked from this checkout (an upgrade takes effect on restart), its model
    folder copied once (the shipped demo becomes version 0; versions, served.json and runs are then kept there),
    logs in ``state/app/logs``; ``state/tmp`` for request scratch, ``state/studies`` for the datastore. Private
    (0700). Returns the app folder to serve."""
    import shutil

    state = state.expanduser().resolve()
    app = state / "app"
    for sub in (app, state / "tmp", state / "studies"):
        sub.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    for item in CODE_ITEMS:
        src, dst = Path(HERE) / item, app / item
        if src.exists() and not (dst.is_symlink() and os.readlink(dst) == str(src)):
            if dst.is_symlink() or dst.is_file():
                dst.unlink()
            elif dst.is_dir():
                shutil.rmtree(dst)
            dst.symlink_to(src)
    if not (app / "model").exists():
        tmp = app / ".model.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(Path(HERE) / "model", tmp, ignore=shutil.ignore_patterns("versions", "served.json", "train_run",
                                                                                 "run_history", ".*"))
        os.replace(tmp, app / "model")
    return app


def write_log_config(app_dir: Path) -> Path:
    """MONAI Label's logging configuration for ``app_dir`` (log file ``app_dir/logs/app.log``), kept at
    ``app_dir/logs/logging.json``: without ``--log_config`` MONAI Label writes a new copy into TMPDIR at every
    start and never removes it."""
    import json

    import monailabel

    logs = app_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fill = {"${LOGDIR}": str(logs), "${LOGFILE}": str(logs / "app.log")}

    def subst(v):
        if isinstance(v, dict):
            return {k: subst(x) for k, x in v.items()}
        if isinstance(v, list):
            return [subst(x) for x in v]
        if isinstance(v, str):
            for key, value in fill.items():
                v = v.replace(key, value)
        return v

    config = subst(json.loads((Path(monailabel.__file__).parent / "logging.json").read_text()))
    out = logs / "logging.json"
    tmp = logs / f".logging.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, out)
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = _option(argv, "--state-dir")
    argv = [a for i, a in enumerate(argv) if not (a == "--state-dir" or a.startswith("--state-dir=")
                                                  or (i > 0 and argv[i - 1] == "--state-dir"))]
    insecure = "--insecure" in argv
    argv = [a for a in argv if a != "--insecure"]
    if os.environ.get("MONAI_LABEL_CORS_ORIGINS"):
        os.environ["CT2DWI_CORS_ORIGINS"] = ",".join(
            filter(None, [os.environ.get("CT2DWI_CORS_ORIGINS", ""), os.environ.pop("MONAI_LABEL_CORS_ORIGINS").strip("[]").replace('"', "")])
        )
    bad = [o for o in os.environ.get("CT2DWI_CORS_ORIGINS", "").split(",") if o.strip() in ("*", "null")]
    if bad:  # credentials are allowed to the listed origins: a wildcard would hand them to every site
        print(f"serve.py: refusing to start: {bad[0].strip()!r} is not accepted as a CORS origin (credentials are "
              "allowed); list the exact origins", file=sys.stderr)
        return 2
    os.umask(0o077)  # logs, uploads, versions: readable by the server's user only
    hosts = _all_options(argv, "--host", "-i")
    if len(hosts) > 1:  # the guard below and the server must see one and the same address
        print(f"serve.py: --host given {len(hosts)} times ({', '.join(hosts)}); give it once", file=sys.stderr)
        return 2
    host = hosts[0] if hosts else None
    if host is None:
        host = "127.0.0.1"
        argv += ["--host", host]
    os.environ["CT2DWI_BIND_HOST"] = host  # the Host-header allowlist follows the address actually bound
    sys.path.insert(0, HERE)
    from ct2dwi_app.auth import AuthConfigError, check_config
    from ct2dwi_app.conf import conf_flag
    from monailabel.config import settings

    try:
        check_config()
    except AuthConfigError as exc:
        print(f"serve.py: refusing to start: {exc}", file=sys.stderr)
        return 2
    confs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv[:-2]) if a == "--conf"}
    if confs.get("model_format", "checkpoint").lower() not in ("checkpoint", "torchscript"):
        print(f"serve.py: refusing to start: --conf model_format must be checkpoint or torchscript, got "
              f"{confs['model_format']!r}", file=sys.stderr)
        return 2
    try:
        conf_flag(confs, "flip_average", False)
    except ValueError as exc:
        print(f"serve.py: refusing to start: {exc}", file=sys.stderr)
        return 2
    if not settings.MONAI_LABEL_AUTH_ENABLE and not is_loopback(host) and not insecure:
        print(
            f"serve.py: refusing to listen on {host} with authentication disabled: anybody on the network could run "
            "inference and retrain the model. Enable auth (MONAI_LABEL_AUTH_ENABLE=true, MONAI_LABEL_AUTH_REALM_URI=...), "
            "bind to 127.0.0.1 behind an authenticating proxy, or pass --insecure to accept the risk.",
            file=sys.stderr,
        )
        return 2
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        # like Jupyter: without sign-in, changes need this server's own access token (printed once, here)
        import secrets

        tok = os.environ.get("CT2DWI_TOKEN") or secrets.token_urlsafe(24)
        if len(tok) < 16:
            print("serve.py: refusing to start: CT2DWI_TOKEN must be at least 16 characters", file=sys.stderr)
            return 2
        os.environ["CT2DWI_TOKEN"] = tok
        port = _option(argv, "--port", "-p") or "8000"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        scheme = "https" if _option(argv, "--ssl_certfile") else "http"
        print(f"serve.py: authentication is off; changes (inference, training, datastore, versions) need this "
              f"server's access token.\n    training page: {scheme}://{shown}:{port}/ui/?token={tok}\n"
              f"    API clients and 3D Slicer: Authorization: Bearer {tok}", file=sys.stderr, flush=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH", "")]))
    # the environment's own tools first: dcmqi's itkimage2segimage (PyPI dcmqi) lies beside this interpreter, so
    # MONAI Label finds it instead of downloading dcmqi from the internet when the datastore is DICOMweb
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    workers = _option(argv, "--workers", "-w")
    if workers not in (None, "1"):
        print("serve.py: refusing --workers other than 1: the inference slots, the training child and the access "
              "token live in one process; run several servers behind the proxy instead", file=sys.stderr)
        return 2
    if "--app" not in argv:  # state outside the code tree (the default), or where --state-dir says
        state = Path(explicit) if explicit else default_state_dir()
        try:
            app_dir = prepare_state_dir(state)
        except OSError as exc:
            print(f"serve.py: cannot use the state directory {state}: {exc}", file=sys.stderr)
            return 2
        argv = ["--app", str(app_dir)] + argv
        import tempfile

        os.environ.setdefault("TMPDIR", str(app_dir.parent / "tmp"))  # uploads and scratch in the state directory
        os.environ.setdefault("CT2DWI_SCRATCH", str(app_dir.parent / "tmp" / "ct2dwi-scratch"))
        tempfile.tempdir = None
        if not (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip():  # a DICOMweb datastore's series cache
            settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = str(app_dir.parent / "dicom-cache")  # (not ~/.cache)
        if _option(argv, "--studies", "-s") is None:
            argv += ["--studies", str(app_dir.parent / "studies")]
        print(f"serve.py: state directory {app_dir.parent} (model versions, runs, logs, scratch)", file=sys.stderr)
    elif explicit:
        print("serve.py: give either --app or --state-dir, not both", file=sys.stderr)
        return 2
    if _option(argv, "--log_config", "-l") is None:
        argv += ["--log_config", str(write_log_config(Path(_option(argv, "--app", "-a") or HERE)))]
    from ct2dwi_app import httpproto

    httpproto.install()  # request heads time out (CT2DWI_HEADER_TIMEOUT_S): half-open clients are closed
    if "--limit_concurrency" not in argv:  # connections + requests at once: half-open clients cannot pile up
        argv += ["--limit_concurrency", os.environ.get("CT2DWI_MAX_CONNECTIONS", "64")]
    if "--uvicorn_app" not in argv:
        argv += ["--uvicorn_app", "ct2dwi_server:app"]
    from monailabel.main import Main

    sys.argv = ["monailabel", "start_server"] + argv
    Main().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
