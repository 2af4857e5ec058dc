#!/usr/bin/env bash
# One entry point; each command first makes sure the environment is installed (idempotent).
#   ./run.sh serve [serve.py / start_server options]   MONAI Label server on 127.0.0.1:8000, demo model, sample data;
#                                                      state in $CT2DWI_STATE_DIR (default ~/.local/state/ct2dwi)
#   ./run.sh test  [pytest options]                    the test suite on 2 pytest-xdist workers (-n 0: in one
#                                                      process); installs Orthanc, chromium, dicom3tools as root
#   ./run.sh setup                                     install only
#   ./run.sh jmmda COMMAND ...                         the jmmda CLI: train | evaluate | infer | make-sample-data |
#                                                      import | export-dicom | export-torchscript |
#                                                      export-bundle | publish  (./run.sh jmmda COMMAND --help)
#   ./run.sh bench [options]                           benchmarks/compare_models.py (--help lists its options;
#                                                      --curves first: the learning-curve benchmark)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${JMMDA_VENV:-$ROOT/.venv}

pick_python() {
  for p in python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
  done
  echo "python3.11 (or python3) not found" >&2; exit 1
}

setup() {
  local stamp_src stamp
  stamp_src=$(cat requirements/runtime.txt requirements/test.txt setup.py | sha256sum | cut -c1-16)
  stamp="$VENV/.jmmda-setup-$stamp_src"
  [ -f "$stamp" ] && return 0
  echo "== setting up $VENV (first run takes a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$(pick_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first: torch==2.13.0 resolves to the local CPU wheel where one is provided
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -r requirements/runtime.txt -r requirements/test.txt
  # MONAI Label without its dependency set (which pulls sam2, mlflow and a CUDA torch)
  "$VENV/bin/python" -m pip install -q --no-deps "monailabel==0.8.5"
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  rm -f "$VENV"/.jmmda-setup-*
  touch "$stamp"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  serve)
    setup
    # state (model versions, runs, logs, scratch, the datastore) outside the code tree: apps/ct2dwi/serve.py --help
    STATE=${CT2DWI_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/ct2dwi}
    export CT2DWI_STATE_DIR=$STATE
    STUDIES=${STUDIES:-$STATE/studies}
    if [ ! -d "$STUDIES" ]; then
      mkdir -p "$(dirname "$STUDIES")"
      cp -r sample_data/studies "$STUDIES"
      echo "== sample studies copied to $STUDIES" >&2
    fi
    # one source of truth for the bind address: a --host on the command line wins over $HOST (never both)
    hostarg=(--host "${HOST:-127.0.0.1}")
    for a in "$@"; do case "$a" in --host|--host=*|-i|-i=*) hostarg=() ;; esac; done
    exec "$VENV/bin/python" apps/ct2dwi/serve.py --studies "$STUDIES" "${hostarg[@]}" --port "${PORT:-8000}" "$@"
    ;;
  test)
    setup
    # Debian's Orthanc + DICOMweb plugin (a real PACS on loopback for the DICOMweb tests) and chromium +
    # chromium-driver (the real-browser test of the training page)
    need=()
    command -v Orthanc >/dev/null 2>&1 || need+=(orthanc orthanc-dicomweb)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
    command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
    if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing ${need[*]} (Debian)" >&2
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
        || echo "== could not install ${need[*]}; the tests that need them will be skipped with the reason" >&2
    fi
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  jmmda)
    setup
    exec "$VENV/bin/jmmda" "$@"
    ;;
  bench)
    setup
    exec "$VENV/bin/python" benchmarks/compare_models.py "$@"
    ;;
  help|-h|--help)
    sed -n '2,12p' "$0" ;;
  *)
    echo "unknown command: $cmd" >&2; sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
