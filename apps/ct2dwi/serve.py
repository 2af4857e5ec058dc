#!/usr/bin/env python
"""Starts the CT-to-DWI MONAI Label server with the hardened ASGI app.

    python apps/ct2dwi/serve.py --studies <folder or DICOMweb URL> [--host 0.0.0.0] [--port 8000]
        [--ssl_certfile cert.pem --ssl_keyfile key.pem] [--conf device cuda] [any monailabel start_server option]

CORS: set CT2DWI_CORS_ORIGINS="https://a.example,https://b.example" (not MONAI_LABEL_CORS_ORIGINS,
which crashes MONAI Label 0.8.5's start_server).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("MONAI_LABEL_CORS_ORIGINS"):
        os.environ["CT2DWI_CORS_ORIGINS"] = ",".join(
            filter(None, [os.environ.get("CT2DWI_CORS_ORIGINS", ""), os.environ.pop("MONAI_LABEL_CORS_ORIGINS").strip("[]").replace('"', "")])
        )
    sys.path.insert(0, HERE)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH", "")]))
    if "--app" not in argv:
        argv = ["--app", HERE] + argv
    if "--uvicorn_app" not in argv:
        argv += ["--uvicorn_app", "ct2dwi_server:app"]
    from monailabel.main import Main

    sys.argv = ["monailabel", "start_server"] + argv
    Main().run()


if __name__ == "__main__":
    main()
