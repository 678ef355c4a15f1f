#!/usr/bin/env bash
# Build the small wheels tests/gpu/device_check.sh carries to a GPU machine that has no package registry
# (Python 3.12 there, torch and transformers installed): DeepSpeed without compiled ops (DS_BUILD_OPS=0),
# math-verify, pydantic, and what they need beyond torch/transformers. Versions are those of this venv.
#   tests/gpu/build_wheels.sh            -> tests/gpu/wheels/ (about 5 MiB; git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
W=tests/gpu/wheels
rm -rf "$W" && mkdir -p "$W"
pin() { for p in "$@"; do printf '%s==%s ' "$p" "$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))")"; done; }
# Pure-Python wheels. No build isolation: DeepSpeed's setup.py imports the venv's torch (and compiles nothing).
# shellcheck disable=SC2046
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$W" $(pin deepspeed hjson py-cpuinfo einops \
    pydantic annotated-types typing-inspection typing-extensions math-verify latex2sympy2_extended antlr4-python3-runtime)
# Compiled ones, for CPython 3.12 on x86_64 Linux.
# shellcheck disable=SC2046
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --abi none --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux_2_28_x86_64 -d "$W" $(pin pydantic-core msgpack ninja)
du -sh "$W"
