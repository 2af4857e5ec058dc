#!/usr/bin/env bash
# Container entry point: the server's state (model versions, training runs, logs, scratch) lives in
# $CT2DWI_STATE_DIR (a volume), never in the code tree: the app folder is copied there once, code is linked.
set -euo pipefail
state=${CT2DWI_STATE_DIR:-/var/lib/ct2dwi}
code=/opt/ct2dwi/apps/ct2dwi
mkdir -p "$state/app" "$state/studies" "$state/tmp"
for f in serve.py main.py ct2dwi_server.py ct2dwi_app ui; do ln -sfn "$code/$f" "$state/app/$f"; done
if [ ! -d "$state/app/model" ]; then cp -r "$code/model" "$state/app/model"; fi
export TMPDIR="$state/tmp"
exec "${JMMDA_VENV:-/opt/ct2dwi/.venv}/bin/python" "$state/app/serve.py" --app "$state/app" \
  --studies "${STUDIES:-$state/studies}" --host 0.0.0.0 --port "${PORT:-8000}" "$@"
