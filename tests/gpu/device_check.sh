#!/usr/bin/env bash
# One-shot device check on one CUDA GPU machine that has PyTorch (CUDA) and transformers but no Ray, vLLM,
# DeepSpeed or package registry (see tests/gpu/device_check.py for what it exercises). Under 8 minutes.
#
#   tests/gpu/build_wheels.sh              here, with a registry: small wheels into tests/gpu/wheels (< 64 MiB)
#   tests/gpu/device_check.sh [OUT_DIR]    there: writes OUT_DIR/device_check.json (default $OUT or runs/device_check)
#
# The wheels go into a throw-away venv that sees the machine's own packages (torch, transformers), so only
# what is missing there is installed. Without a GPU it stops at once with one line.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-tests/gpu/wheels}
OUT_DIR=${1:-${OUT:-runs/device_check}}

fail() {
    echo "device_check: $*" >&2
    exit 2
}

command -v "$PYTHON" >/dev/null 2>&1 || fail "no $PYTHON on PATH (set PYTHON=...)"
probe=$("$PYTHON" -c 'import torch; print("ok" if torch.cuda.is_available() else
    f"no CUDA GPU visible (torch {torch.__version__}: torch.cuda.is_available() is False); run it on a GPU machine")' 2>&1)
[ $? -eq 0 ] || fail "$PYTHON cannot import torch: $(printf '%s\n' "$probe" | tail -n 1)"
[ "$probe" = ok ] || fail "$probe"

VENV=$(mktemp -d /tmp/device-check-venv.XXXXXX)
"$PYTHON" -m venv --system-site-packages "$VENV" >/dev/null 2>&1 || fail "cannot create a venv with $PYTHON -m venv"
if ! "$VENV/bin/python" -c 'import deepspeed, math_verify, pydantic, yaml' >/dev/null 2>&1; then
    [ -d "$WHEELS" ] || fail "DeepSpeed/math-verify missing and no wheels in $WHEELS (run tests/gpu/build_wheels.sh where a registry is)"
    log=$("$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" deepspeed math-verify pydantic pyyaml 2>&1) \
        || fail "installing the carried wheels failed: $(printf '%s\n' "$log" | grep -v '^\s*$' | tail -n 1)"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DS_ACCELERATOR=cuda DS_BUILD_OPS=0 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" tests/gpu/device_check.py "$OUT_DIR"
