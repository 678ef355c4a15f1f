#!/usr/bin/env bash
# Submit an openrs_ray training run to a Ray cluster with `ray job submit`.
#
#   deploy/submit.sh CONFIG [key=value ...]
#
# Environment:
#   RAY_ADDRESS        the cluster's dashboard address (default http://127.0.0.1:8265)
#   OPENRS_PIP         space-separated pip requirements for the job's runtime_env (empty: the cluster
#                      image/venv already has openrs_ray's dependencies, the usual case)
#   OPENRS_ENV_VARS    extra env vars for every actor, as KEY=VALUE pairs separated by spaces
#   OPENRS_JOB_ID      submission id (default: openrs-<config name>-<time>)
#   OPENRS_NO_WAIT=1   return after submitting instead of following the logs
# The repository is the job's working_dir (uploaded without .venv, runs/, .git); the driver runs
# `python -m openrs_ray.cli train CONFIG ...` on the head node and joins the cluster via RAY_ADDRESS.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
config=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
job_id=${OPENRS_JOB_ID:-openrs-$(basename "$config" .yaml)-$(date +%Y%m%d-%H%M%S)}
python=${PYTHON:-python3}

runtime_env=$(OPENRS_REPO="$repo" "$python" - <<'PY'
import json, os
env = dict(kv.split("=", 1) for kv in os.environ.get("OPENRS_ENV_VARS", "").split())
spec = {
    "working_dir": os.environ["OPENRS_REPO"],
    "excludes": [".venv/", "runs/", ".git/", "benchmarks/results/", "**/__pycache__/"],
    "env_vars": env,
}
pip = os.environ.get("OPENRS_PIP", "").split()
if pip:
    spec["pip"] = pip
print(json.dumps(spec))
PY
)

wait_flag=()
[ "${OPENRS_NO_WAIT:-0}" = 1 ] && wait_flag=(--no-wait)
exec ray job submit --address "$address" --submission-id "$job_id" --runtime-env-json "$runtime_env" \
    "${wait_flag[@]}" -- python -m openrs_ray.cli train "$config" "$@"
