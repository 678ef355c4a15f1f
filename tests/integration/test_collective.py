"""The collective weight broadcast (a gloo group of learner rank 0 and the engines) on real actors,
with ZeRO-3 learners (parameters gathered one by one while sending), an engine added mid-run, and an
engine whose process is killed mid-run (its replacement rejoins the group)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import ray

from openrs_ray.config import load_config
from openrs_ray.ops.control import scale_generators
from openrs_ray.stages.orchestrator import Orchestrator
from tests.conftest import REPO
from tests.integration.test_flow import COMPLETION, PROMPT, _max_diff


@pytest.fixture(scope="module")
def flow(ray_local: None, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    overrides = [
        f"model.path={tiny_model}", f"output_dir={tmp_path_factory.mktemp('collective')}",
        f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}", "generation.num_engines=2",
        "learner.num_learners=2", "learner.zero_stage=3", "broadcast.backend=collective",
        "broadcast.bucket_size_mb=1",  # several buckets even for the tiny model (1.4 MB)
    ]  # fmt: skip
    orch = Orchestrator(load_config(REPO / "configs/smoke.yaml", overrides))
    try:
        orch.setup()
        yield orch
    finally:
        orch.shutdown()


def _engines_match_learner(flow: Orchestrator) -> None:
    learner = flow.learners.logprobs(PROMPT, COMPLETION)
    for i in range(len(flow.generators.engines)):
        engine = flow.generators.prompt_logprobs(i, PROMPT + COMPLETION)[-len(COMPLETION) :]
        assert _max_diff(engine, learner) < 1e-3, f"engine {i} disagrees with the learner"


def test_placement_of_every_role(flow: Orchestrator) -> None:
    where = flow.placement()  # what the first metrics.jsonl line records
    assert [len(where["learners"]), len(where["generators"])] == [2, 2]
    node = ray.get_runtime_context().get_node_id()
    for actor in where["learners"] + where["generators"]:
        assert actor["node_id"] == node and actor["gpu_ids"] == []
        assert actor["cuda_visible_devices"] == ""  # actors given no GPU see none, even on a GPU machine
    assert [w["device"] for w in where["learners"]] == ["cpu", "cpu"]
    assert [w["engine_id"] for w in where["generators"]] == [0, 1]


def test_collective_broadcast_carries_the_weights(flow: Orchestrator) -> None:
    before = flow.learners.logprobs(PROMPT, COMPLETION)
    metrics = [flow.step() for _ in range(2)]
    assert [m["weight_version"] for m in metrics] == [1, 2]
    assert metrics[0]["sync_bytes"] > 1e6 and metrics[0]["sync_gbps"] > 0
    assert flow.generators.reported_versions() == [2, 2]
    assert _max_diff(flow.learners.logprobs(PROMPT, COMPLETION), before) > 1e-3
    _engines_match_learner(flow)


def test_engine_added_mid_run_joins_the_group(flow: Orchestrator) -> None:
    version, epoch = flow.broadcast.version, flow.broadcast.epoch
    scale_generators(Path(flow.cfg.output_dir).name, 3)
    flow._rescale()  # the new engine catches up through the object store before serving
    assert flow.generators.reported_versions() == [version] * 3
    _engines_match_learner(flow)
    metrics = flow.step()  # the next publish forms a 3-engine group
    assert flow.broadcast.epoch == epoch + 1 and metrics["weight_version"] == version + 1
    assert flow.generators.reported_versions() == [version + 1] * 3
    _engines_match_learner(flow)


def test_killed_engine_is_replaced_and_rejoins_the_channel(flow: Orchestrator) -> None:
    flow.step()  # the channel is formed with the current engines before one of them dies
    restarts, epoch, version = flow.generators.restarts, flow.broadcast.epoch, flow.broadcast.version
    victim = flow.generators.engines[0]  # least-loaded dispatch gives it a prompt of the next step
    pid = ray.get(victim.actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    os.kill(pid, signal.SIGKILL)
    trained: list[str] = []
    for _ in range(3):
        metrics = flow.step()
        assert metrics["groups_trained"] == flow.cfg.prompts_per_step
        trained += metrics["prompt_uids"]
    assert len(trained) == len(set(trained)) == 3 * flow.cfg.prompts_per_step  # every prompt trained once
    assert flow.generators.restarts == restarts + 1
    # The replacement holds the dead engine's id but is a new member: the group was re-formed once.
    assert flow.broadcast.epoch == epoch + 1 and flow.broadcast.version == version + 3
    assert flow.generators.reported_versions() == [version + 3] * len(flow.generators.engines)
    _engines_match_learner(flow)


def test_engine_lost_before_the_broadcast_is_replaced_before_the_group_forms(flow: Orchestrator) -> None:
    flow.step()  # the group holds every current engine
    restarts, epoch, version = flow.generators.restarts, flow.broadcast.epoch, flow.broadcast.version
    victim = flow.generators.engines[-1]  # dies after its generation (e.g. during the update)
    pid = ray.get(victim.actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    meta, sync = flow.broadcast.publish()  # as the orchestrator does after the update
    took = time.monotonic() - t0
    assert took < 120, took  # not a send stalled on the dead member until the channel's timeout (360 s)
    assert meta.version == version + 1 and sync["sync_fallback"] == 0.0
    assert flow.generators.restarts == restarts + 1  # replaced (this node has room), then a new group
    assert flow.broadcast.epoch == epoch + 1
    assert flow.generators.reported_versions() == [version + 1] * len(flow.generators.engines)
    _engines_match_learner(flow)
    metrics = flow.step()
    assert metrics["weight_version"] == version + 2 and flow.broadcast.epoch == epoch + 1
    _engines_match_learner(flow)
