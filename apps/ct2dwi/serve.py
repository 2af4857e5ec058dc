#!/usr/bin/env python
"""Starts the CT-to-DWI MONAI Label server with the hardened ASGI app (ct2dwi_server.py).

    python apps/ct2dwi/serve.py --studies <folder or DICOMweb URL> [--host 127.0.0.1] [--port 8000]
        [--ssl_certfile cert.pem --ssl_keyfile key.pem] [--conf device cuda] [--conf model_format torchscript]
        [--insecure]
        [any other monailabel start_server option]

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

HERE = os.path.dirname(os.path.abspath(__file__))


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


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
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
    from ct2dwi_app import httpproto

    httpproto.install()  # request heads time out (CT2DWI_HEADER_TIMEOUT_S): half-open clients are closed
    if "--limit_concurrency" not in argv:  # connections + requests at once: half-open clients cannot pile up
        argv += ["--limit_concurrency", os.environ.get("CT2DWI_MAX_CONNECTIONS", "64")]
    if "--app" not in argv:
        argv = ["--app", HERE] + argv
    if "--uvicorn_app" not in argv:
        argv += ["--uvicorn_app", "ct2dwi_server:app"]
    from monailabel.main import Main

    sys.argv = ["monailabel", "start_server"] + argv
    Main().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
