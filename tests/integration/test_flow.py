"""The whole flow in-process on real actors: 2 engines, 2 verifiers, 2 DeepSpeed ranks (ZeRO-2, gloo).

Checks that the broadcast carried the real weights: after training, each vLLM engine's logprobs for a
fixed prompt+completion equal the learner's own (fp32, max abs diff < 1e-3), and differ from before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from safetensors.torch import load_file

from openrs_ray.config import load_config
from openrs_ray.stages.orchestrator import Orchestrator
from tests.conftest import REPO

PROMPT = [1, 40, 41, 42, 43, 44, 2, 1, 45]  # token ids: any fixed sequence will do
COMPLETION = [50, 60, 70, 80, 90, 100, 110, 120]


@pytest.fixture(scope="module")
def flow(ray_local: None, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"model.path={tiny_model}",
            f"output_dir={tmp_path_factory.mktemp('flow')}",
            f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}",
            "generation.num_engines=2",
            "learner.num_learners=2",
        ],
    )
    orch = Orchestrator(cfg)
    try:
        orch.setup()
        yield orch
    finally:
        orch.shutdown()


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_two_steps_move_weights_and_sync_engines(flow: Orchestrator, tiny_model: Path) -> None:
    seq = PROMPT + COMPLETION
    before_learner = flow.learners.logprobs(PROMPT, COMPLETION)
    before_vllm = [flow.generators.prompt_logprobs(i, seq)[-len(COMPLETION) :] for i in range(2)]
    for engine_lp in before_vllm:  # same checkpoint on both sides before any update
        assert _max_diff(engine_lp, before_learner) < 1e-3

    metrics = [flow.step() for _ in range(2)]
    assert [m["weight_version"] for m in metrics] == [1, 2]
    assert all(m["groups_trained"] == 2 and m["completion_tokens"] > 0 for m in metrics)

    # Every engine reports the new version (asked over RPC, not remembered by the driver).
    assert flow.generators.reported_versions() == [2, 2]

    # The learner's weights changed: the published tensors differ from the checkpoint on disk.
    _, refs = flow.learners.export_weights(version=99)
    published = dict(kv for bucket in ray.get(refs, timeout=60) for kv in bucket)
    initial = load_file(str(tiny_model / "model.safetensors"))
    changed = [n for n, t in published.items() if not t.equal(initial[n])]
    assert len(changed) >= len(published) // 2, f"only {len(changed)}/{len(published)} tensors changed"

    # The broadcast carried those weights: vLLM now computes the learner's logprobs.
    after_learner = flow.learners.logprobs(PROMPT, COMPLETION)
    assert _max_diff(after_learner, before_learner) > 1e-3
    for i in range(2):
        after_vllm = flow.generators.prompt_logprobs(i, seq)[-len(COMPLETION) :]
        assert _max_diff(after_vllm, after_learner) < 1e-3, f"engine {i} disagrees with the learner"


def test_scaled_up_engine_serves_current_version(flow: Orchestrator) -> None:
    from openrs_ray.ops.control import scale_generators

    version = flow.broadcast.version
    run = Path(flow.cfg.output_dir).name
    assert scale_generators(run, 3) == 3  # what `openrs-ray scale --generators 3 --run RUN` does
    flow._rescale()
    assert len(flow.generators.engines) == 3
    assert flow.generators.reported_versions() == [version] * 3  # synced before serving
    prompts = flow.prompts.next_batch(3)
    rollouts = [r for group in flow.generators.generate(prompts) for r in group]
    assert {r.engine_id for r in rollouts} == {0, 1, 2}  # least-loaded dispatch reached the new engine
    assert {r.weight_version for r in rollouts} == {version}
    scale_generators(run, 2)
    metrics = flow.step()
    assert metrics["num_engines"] == 2 and metrics["weight_version"] == version + 1


def test_killed_engine_and_verifier_are_replaced_and_no_prompt_lost(flow: Orchestrator) -> None:
    restarts, verifier_restarts = flow.generators.restarts, flow.verifiers.count_restarts()
    ray.kill(flow.generators.engines[0].actor)  # the engine is gone when the step dispatches to it
    ray.kill(flow.verifiers.actors[0], no_restart=False)  # Ray restarts it, and retries its calls
    metrics = flow.step()
    assert flow.generators.restarts == restarts + 1 and metrics["generator_restarts"] == restarts + 1
    assert metrics["verifier_restarts"] == verifier_restarts + 1
    n = flow.cfg.prompts_per_step
    assert metrics["groups_trained"] == n and len(metrics["prompt_uids"]) == n
    assert metrics["completion_tokens"] > 0
    assert flow.generators.reported_versions() == [metrics["weight_version"]] * 2


def test_broadcast_to_stalled_engine_fails_naming_it(flow: Orchestrator) -> None:
    import os
    import signal

    engine = flow.generators.engines[1]
    pid = ray.get(engine.actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    meta, refs = flow.learners.export_weights(version=flow.broadcast.version + 1)
    flow.cfg.broadcast.timeout_s = 5.0
    os.kill(pid, signal.SIGSTOP)  # the engine stops answering
    try:
        with pytest.raises(TimeoutError, match=rf"engine\(s\) \[{engine.engine_id}\].*within 5.0s"):
            flow.generators.load_weights(refs, meta.version)
    finally:
        os.kill(pid, signal.SIGCONT)
