"""Pure parts of the GPU path, checked on CPU: device placement check, ZeRO config, channel backend and
timeouts, role counts and resource arithmetic of the pre-flight, actor environments, object store sizing,
and the device check's one-line refusal without a GPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openrs_ray.broadcast.channel import WeightChannel, channel_backend, channel_timeout_s, driver_wait_s
from openrs_ray.cluster import _check_object_store, _missing, actor_env, object_store_gb, role_counts, weights_bytes
from openrs_ray.config import ConfigError, load_config
from openrs_ray.learners.engine import deepspeed_config, off_device
from tests.conftest import REPO


def _cfg(*overrides: str):
    return load_config(REPO / "configs/smoke.yaml", list(overrides))


def test_off_device_names_every_parameter_elsewhere() -> None:
    policy, ref = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3, device="meta")  # meta: "not on the CPU"
    assert off_device({"policy": policy, "reference": None}, torch.device("cpu")) == []
    assert off_device({"policy": policy, "reference": ref}, torch.device("cpu")) == [
        "reference.weight on meta",
        "reference.bias on meta",
    ]
    # A GPU rank's device has an index: a module on another index is off it too.
    assert off_device({"policy": policy}, torch.device("cuda", 0)) == ["policy.weight on cpu", "policy.bias on cpu"]


def test_zero2_overlaps_gradient_reduction_on_gpu_only() -> None:
    gpu2 = deepspeed_config(_cfg("cluster.use_gpu=true", "learner.zero_stage=2"))["zero_optimization"]
    assert gpu2 == {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000,
    }  # fmt: skip
    # ZeRO-1 reduces once per optimizer step: no per-micro-step overlap; CPU (gloo) keeps DeepSpeed's defaults.
    assert deepspeed_config(_cfg("cluster.use_gpu=true", "learner.zero_stage=1"))["zero_optimization"] == {"stage": 1}
    assert deepspeed_config(_cfg("learner.zero_stage=2"))["zero_optimization"] == {"stage": 2}


def test_channel_backend_and_timeouts_come_from_the_config() -> None:
    assert channel_backend(_cfg()) == "gloo" and channel_backend(_cfg("cluster.use_gpu=true")) == "nccl"
    sync = _cfg("broadcast.timeout_s=300", "generation.timeout_s=900")
    assert driver_wait_s(sync) == 300 and channel_timeout_s(sync) == 360
    # Async: an engine receives after the generation it is busy with (up to generation.timeout_s).
    async_ = _cfg("broadcast.timeout_s=300", "generation.timeout_s=900", "buffer.max_staleness=1")
    assert driver_wait_s(async_) == 1200 and channel_timeout_s(async_) == 1260


def test_channel_refuses_a_backend_that_cannot_carry_its_device() -> None:
    with pytest.raises(ValueError, match="backend nccl cannot carry tensors on cpu"):
        WeightChannel("127.0.0.1", 1, 0, 1, 1, 1.0, "cpu", "nccl")


def test_role_counts_per_stage() -> None:
    assert role_counts(_cfg("prompts_per_step=3", "learner.num_learners=3")) == {
        "engine": 1, "learner": 3, "verifier": 2,
    }  # fmt: skip
    assert role_counts(_cfg("stage=sft", "learner.num_learners=2")) == {"engine": 0, "learner": 2, "verifier": 0}


def test_shortage_is_one_line_naming_what_is_missing() -> None:
    open_rs = _cfg("prompts_per_step=3", "learner.num_learners=3", "cluster.use_gpu=true")  # 1 engine + 3 learners
    assert _missing(open_rs, {"GPU": 1.0, "CPU": 64.0}) == (
        "cluster.use_gpu: needs 4 GPUs for 1 engine + 3 learners; the cluster has 1"
    )
    assert _missing(open_rs, {"GPU": 4.0, "CPU": 64.0}) is None
    # KubeRay: GPU actors reserve no CPUs; only the verifiers (2 x 0.5) need logical CPUs.
    kuberay = open_rs.model_copy(deep=True)
    kuberay.cluster.generator_cpus = kuberay.cluster.learner_cpus = 0
    assert _missing(kuberay, {"GPU": 4.0, "CPU": 1.0}) is None
    assert _missing(kuberay, {"GPU": 4.0}) == (
        "cluster: needs 1 CPUs for 2 verifiers x 0.5 (cluster.*_cpus); the cluster has 0"
    )


def test_actor_env_hides_gpus_from_cpu_actors_and_sets_gpu_threads() -> None:
    cc = _cfg().cluster
    assert actor_env(cc, 1.0, 0) == {"CUDA_VISIBLE_DEVICES": ""}
    assert actor_env(cc, 0.0, 1) == {"OMP_NUM_THREADS": "8"}  # KubeRay: num_cpus=0 would mean 1 thread
    assert actor_env(cc, 2.5, 1) == {"OMP_NUM_THREADS": "3"}
    user = _cfg("cluster.env_vars={OMP_NUM_THREADS: '2'}").cluster
    assert actor_env(user, 0.0, 1) == {"OMP_NUM_THREADS": "2"}  # the user's env_vars win


def test_object_store_is_sized_from_the_model_on_gpu(tiny_model: Path) -> None:
    numel = sum(t.numel() for t in load_file(str(tiny_model / "model.safetensors")).values())
    cfg = _cfg(f"model.path={tiny_model}", "cluster.use_gpu=true")
    assert weights_bytes(cfg.model) == numel * 4  # smoke runs in float32
    cfg.model.dtype = "bfloat16"
    assert weights_bytes(cfg.model) == numel * 2
    cfg.cluster.object_store_memory_gb = None
    assert object_store_gb(cfg.cluster, cfg.model) == 2.0  # a tiny model: the 2 GiB floor
    cfg.cluster.object_store_memory_gb = 0.5
    assert object_store_gb(cfg.cluster, cfg.model) == 0.5  # as configured
    with pytest.raises(ConfigError, match=r"cluster.object_store_memory_gb: the object store \(0.0 GiB\) cannot"):
        _check_object_store(cfg, store=float(numel))  # one bf16 version is 2 x numel bytes
    _check_object_store(cfg, store=float(math.ceil(1.1 * 2 * numel)))


def test_device_check_without_a_gpu_says_so_in_one_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "tests/gpu/device_check.sh", "/nonexistent/out"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines == [lines[0]] and lines[0].startswith("device_check: no CUDA GPU visible"), lines
