#!/usr/bin/env bash
# Container entry point: the server's state (model versions, training runs, logs, scratch, the datastore) lives in
# $CT2DWI_STATE_DIR (a volume), never in the code tree: serve.py --state-dir links the app's code there and
# copies its model folder once (see apps/ct2dwi/serve.py).
set -euo pipefail
state=${CT2DWI_STATE_DIR:-/var/lib/ct2dwi}
exec "${JMMDA_VENV:-/opt/ct2dwi/.venv}/bin/python" /opt/ct2dwi/apps/ct2dwi/serve.py --state-dir "$state" \
  --studies "${STUDIES:-$state/studies}" --host 0.0.0.0 --port "${PORT:-8000}" "$@"
