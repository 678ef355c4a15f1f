"""The orchestrator's step with in-process stand-ins for the roles (plain classes implementing the role ABCs):
no Ray, no vLLM, no DeepSpeed. The real orchestrator, prompt source, buffer and object-store broadcast run;
the integration tests drive the same step with the real actors."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import ray

from openrs_ray.config import RunConfig, load_config
from openrs_ray.errors import NonFiniteLoss
from openrs_ray.generators.base import Generators
from openrs_ray.learners.base import Learners
from openrs_ray.rewards.base import Verifiers
from openrs_ray.stages.orchestrator import Orchestrator, Roles
from openrs_ray.types import Prompt, Rollout, ScoredGroup, TrainBatch, WeightVersion

REPO = Path(__file__).resolve().parents[2]
G = 4  # configs/smoke.yaml: generation.num_generations


class FixedGenerators(Generators):
    """Per call, `right(call)` completions of each group end with the gold answer (3 tokens), the rest do not
    (2 tokens); rollouts carry the version served when the prompts were dispatched."""

    def __init__(self, cfg: RunConfig, right: Callable[[int], int], log: list[str]) -> None:
        self.cfg, self.right, self.log = cfg, right, log
        self.engines, self.restarts, self.version = [0], 0, 0
        self.calls: list[list[str]] = []  # prompt uids per dispatch

    def _rollout(self, prompt: Prompt, correct: bool) -> Rollout:
        text, ids = (f"so {prompt.answer}", [5, 6, 7]) if correct else ("no idea", [8, 9])
        return Rollout(prompt.uid, list(prompt.token_ids), ids, text, [-1.0] * len(ids), "stop", 0, self.version)

    def submit(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> list[list[Rollout]]:
        self.calls.append([p.uid for p in prompts])
        n = self.right(len(self.calls) - 1)
        return [[self._rollout(p, i < n) for i in range(G)] for p in prompts]

    def collect(self, pending: list[list[Rollout]]) -> list[list[Rollout]]:
        return pending

    def load_weights(self, bucket_refs: list, version: int) -> list[dict[str, float]]:
        assert bucket_refs == ["bucket"]  # what the learners exported
        self.version = version
        return [{"engine_id": 0, "tensors": 2, "seconds": 0.0}]

    def wait_ready(self) -> None:
        self.log.append("generators ready")

    def reported_versions(self) -> list[int]:
        return [self.version]

    def placement(self) -> list[dict]:
        return [{"node": "local"}]

    def add(self, n: int) -> list[int]:
        raise AssertionError("nobody asked to rescale")

    def remove(self, n: int) -> list[int]:
        raise AssertionError("nobody asked to rescale")

    def shutdown(self) -> None:
        self.log.append("generators down")


class RuleVerifiers(Verifiers):
    """Reward 1 when a completion ends with the gold answer, else 0; futures already resolved."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def score(self, groups: list[tuple[Prompt, list[Rollout]]]) -> list[Future]:
        out = []
        for prompt, rollouts in groups:
            rewards = [float(r.completion_text.endswith(prompt.answer)) for r in rollouts]
            version = min(r.weight_version for r in rollouts)
            future: Future = Future()
            future.set_result(ScoredGroup(prompt, rollouts, rewards, {"accuracy": list(rewards)}, version))
            out.append(future)
        return out

    def queue_depth(self) -> int:
        return 0

    def count_restarts(self) -> int:
        return 0

    def shutdown(self) -> None:
        self.log.append("verifiers down")


class RecordingLearners(Learners):
    """Records every batch; reports `nonfinite` skipped updates."""

    def __init__(self, log: list[str], nonfinite: int = 0) -> None:
        self.log, self.nonfinite = log, nonfinite
        self.batches: list[TrainBatch] = []
        self.saved: list[str] = []

    def update(self, batch: TrainBatch) -> dict[str, float]:
        self.batches.append(batch)
        tokens = float(sum(len(c) for c in batch.completion_ids))
        return {"loss": 0.5, "learner_tokens": tokens, "nonfinite_updates": float(self.nonfinite)}

    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        return WeightVersion(version=version, num_bytes=100, num_tensors=2), ["bucket"]

    def save(self, path: str) -> str:
        Path(path).mkdir(parents=True)  # where a real learner writes its checkpoint files
        self.saved.append(path)
        return path

    def load(self, path: str) -> str:
        raise AssertionError("not resuming")

    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        return [0.0] * len(completion_ids)

    def placement(self) -> list[dict]:
        return [{"node": "local"}]

    def wait_ready(self) -> list[dict[str, float]]:
        self.log.append("learners ready")
        return [{}]

    def shutdown(self) -> None:
        self.log.append("learners down")


def orchestrator(
    tiny_model: Path, tmp_path: Path, right: Callable[[int], int], *overrides: str, nonfinite: int = 0
) -> tuple[Orchestrator, FixedGenerators, RecordingLearners, list[str]]:
    data = REPO / "configs" / "data" / "gsm8k_mini.jsonl"
    cfg = load_config(
        REPO / "configs" / "smoke.yaml",
        [f"model.path={tiny_model}", f"output_dir={tmp_path / 'run'}", f"data.path={data}",
         "broadcast.backend=object_store", *overrides],
    )  # fmt: skip
    log: list[str] = []
    gens, learners = FixedGenerators(cfg, right, log), RecordingLearners(log, nonfinite)
    orch = Orchestrator(cfg, roles=Roles(gens, RuleVerifiers(log), learners))
    orch.setup()
    return orch, gens, learners, log


def test_synchronous_steps_flow_through_every_role(tiny_model: Path, tmp_path: Path) -> None:
    ray_before = ray.is_initialized()  # in a whole-suite run, the integration tests' Ray may already be up
    orch, gens, learners, log = orchestrator(tiny_model, tmp_path, lambda call: 1)
    first = orch.step()
    # Each group: rewards [1, 0, 0, 0]; mean 0.25, unbiased std 0.5 -> (r - 0.25) / (0.5 + 1e-4).
    hi, lo = 0.75 / 0.5001, -0.25 / 0.5001
    (batch,) = learners.batches
    assert batch.advantages == pytest.approx([hi, lo, lo, lo] * 2)
    assert batch.weight_versions == [0] * 8 and batch.completion_ids[:2] == [[5, 6, 7], [8, 9]]
    assert first["step"] == 1 and first["weight_version"] == 1 and gens.version == 1  # broadcast reached them
    assert first["prompt_uids"] == gens.calls[0] and len(set(gens.calls[0])) == 2
    assert (first["groups_trained"], first["reward_mean"], first["accuracy_mean"]) == (2, 0.25, 0.25)
    assert (first["completion_tokens"], first["learner_tokens"], first["sync_bytes"]) == (18, 18.0, 100.0)
    assert first["staleness_mean"] == 0.0 and first["num_engines"] == 1
    second = orch.step()
    assert learners.batches[1].weight_versions == [1] * 8  # sampled with the weights just broadcast
    assert second["weight_version"] == 2 and second["prompt_uids"] == gens.calls[1] != gens.calls[0]
    orch.shutdown()
    # No cluster started, no control actor: everything ran in this process.
    assert ray.is_initialized() == ray_before and orch.control is None
    assert log == ["generators ready", "learners ready", "learners down", "verifiers down", "generators down"]


def test_asynchronous_step_trains_one_version_behind(tiny_model: Path, tmp_path: Path) -> None:
    orch, gens, learners, _ = orchestrator(tiny_model, tmp_path, lambda call: 1, "buffer.max_staleness=1")
    first = orch.step()
    assert len(gens.calls) == 2 and first["prompt_uids"] == gens.calls[0]  # the next batch is already out
    assert first["staleness_mean"] == 0.0
    second = orch.step()
    assert len(gens.calls) == 3 and second["prompt_uids"] == gens.calls[1]
    assert learners.batches[1].weight_versions == [0] * 8  # dispatched before version 1 was published
    assert (second["staleness_mean"], second["staleness_hist"]) == (1.0, {"1": 8})
    orch.shutdown()


def test_dynamic_sampling_refills_zero_variance_groups(tiny_model: Path, tmp_path: Path) -> None:
    right = lambda call: 0 if call == 0 else 2  # noqa: E731 - first round all wrong: no advantage anywhere
    orch, gens, learners, _ = orchestrator(tiny_model, tmp_path, right, "buffer.dynamic_sampling=true")
    metrics = orch.step()
    assert (metrics["dropped_zero_variance"], metrics["refill_rounds"], metrics["groups_trained"]) == (2, 1, 2)
    assert metrics["prompt_uids"] == gens.calls[0] + gens.calls[1]
    # Rewards [1, 1, 0, 0]: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / (sqrt(1/3) + 1e-4).
    a = 0.5 / (3**-0.5 + 1e-4)
    assert learners.batches[0].advantages == pytest.approx([a, a, -a, -a] * 2)
    orch.shutdown()


def test_non_finite_updates_skip_the_broadcast_and_stop_with_a_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    orch, gens, learners, _ = orchestrator(
        tiny_model, tmp_path, lambda call: 1, "learner.max_consecutive_nonfinite=1", nonfinite=1
    )
    with pytest.raises(NonFiniteLoss, match="1 updates in a row had a NaN/inf loss"):
        orch.step()
    assert orch.broadcast.version == 0 and gens.version == 0  # nothing published after a skipped update
    assert len(learners.saved) == 1 and learners.saved[0].startswith(str(tmp_path / "run"))
    orch.shutdown()
