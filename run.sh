#!/usr/bin/env bash
# One entry point that sets everything up (a virtualenv in .venv with essl installed) and runs a job:
#   ./run.sh demo    set up, then `essl demo` (SimCLR vs E-SimCLR on MNIST-5k, ~10 min on 2 CPU cores)
#   ./run.sh test    set up, then the test suite
#   ./run.sh check   set up, then ruff (lint and format check) and mypy (the settings are in pyproject.toml)
#   ./run.sh bench   set up, then the training-step benchmark
#   ./run.sh setup   set up only
# Extra arguments go to the job (e.g. `./run.sh demo --epochs 5`, `./run.sh test -k losses`).
# Setup is idempotent: it reinstalls only when pyproject.toml changed. torch is installed first, pinned to the
# CPU wheel 2.13.0, unless the environment already has a torch (bring your own CUDA build: install it into .venv
# first, or set PYTHON to an interpreter that has it and ESSL_VENV=0).
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"
shift || true

PYTHON="${PYTHON:-python3}"
if [ "${ESSL_VENV:-1}" = "1" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv" >&2
    "$PYTHON" -m venv .venv
  fi
  PY="$PWD/.venv/bin/python"
else
  PY="$(command -v "$PYTHON")"
fi

# The tests need the photonics and TensorBoard extras as well as the dev tools.
extras="dev,phc,tensorboard"
stamp=".venv/.essl-installed"
want="$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -d' ' -f1)"
if [ "${ESSL_VENV:-1}" != "1" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing torch 2.13.0 (CPU wheel)" >&2
    "$PY" -m pip install -q torch==2.13.0
  fi
  echo "[setup] installing essl and its dependencies" >&2
  "$PY" -m pip install -q -e ".[$extras]"
  [ "${ESSL_VENV:-1}" = "1" ] && echo "$want" > "$stamp"
fi

case "$job" in
  setup) echo "[setup] done: activate with 'source .venv/bin/activate'" >&2 ;;
  demo)  exec "$PY" -m essl demo "$@" ;;
  test)  exec "$PY" -m pytest -q -n 2 "$@" ;;
  check) "$PY" -m ruff check essl tests benchmarks examples hubconf.py \
           && "$PY" -m ruff format --check essl tests benchmarks examples hubconf.py \
           && exec "$PY" -m mypy ;;
  bench) exec "$PY" benchmarks/bench_train_step.py "$@" ;;
  *) echo "usage: ./run.sh {demo|test|check|bench|setup} [args...]" >&2; exit 2 ;;
esac
