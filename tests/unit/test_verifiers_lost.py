"""Verifiers lost for good in the middle of a step (their node died, no node can place them again): the step stops
with VerifiersLost and a checkpoint of the last completed step, recorded as that step left the driver (its data
cursor and batches in flight, not the ones this step had moved on to), and a resume trains the lost step's
prompts exactly once. In-process stand-ins for the roles, as in test_orchestrator_step."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from openrs_ray.errors import VerifiersLost
from openrs_ray.records.checkpoint import latest_checkpoint, read_state
from openrs_ray.stages.orchestrator import Orchestrator, Roles
from tests.unit.test_orchestrator_step import FixedGenerators, RecordingLearners, RuleVerifiers, orchestrator


class VanishingVerifiers(RuleVerifiers):
    """Scores as RuleVerifiers; the `lose_at`-th wait for scores (0-based) finds the verifiers' node dead."""

    def __init__(self, log: list[str], lose_at: int) -> None:
        super().__init__(log)
        self.lose_at, self.waits = lose_at, 0

    def wait(self, futures: list[Future], timeout_s: float) -> None:
        self.waits += 1
        if self.waits - 1 == self.lose_at:
            raise VerifiersLost("rewards: verifier(s) [0, 1] were lost and no node can place one ({'verifier': 1.0})")


class ResumingLearners(RecordingLearners):
    def load(self, path: str) -> str:
        self.loaded = path
        return path


def test_verifiers_lost_mid_step_checkpoint_the_last_completed_step(tiny_model: Path, tmp_path: Path) -> None:
    orch, gens, learners, log = orchestrator(tiny_model, tmp_path, lambda call: 1, "buffer.max_staleness=1")
    orch.verifiers = orch.flow.verifiers = VanishingVerifiers(log, lose_at=1)
    orch.step()
    after_step_1: dict[str, Any] = orch.prompts.state()
    with pytest.raises(VerifiersLost, match=r"verifier\(s\) \[0, 1\] were lost .*; checkpoint saved at .*step-1$"):
        orch.step()  # step 2 collected batch 2 and dispatched batch 3, then lost its verifiers
    assert len(gens.calls) == 3 and len(learners.batches) == 1  # nothing of step 2 was trained
    assert orch.prompts.state() != after_step_1  # the live cursor moved on (batch 3) ...
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step-1" and learners.saved == [str(ckpt / "policy")]
    state, in_flight, buffered = read_state(ckpt)
    assert (state["step"], state["weight_version"]) == (1, 1)
    assert state["data"] == after_step_1  # ... the checkpoint keeps where step 1 left it
    assert [[p.uid for p in batch] for batch in in_flight] == [gens.calls[1]] and buffered == []
    orch.shutdown()

    # Resume: the batch step 2 lost is trained once, by the resumed step 2, and the next one follows it.
    log2: list[str] = []
    gens2, learners2 = FixedGenerators(orch.cfg, lambda call: 1, log2), ResumingLearners(log2)
    again = Orchestrator(orch.cfg, roles=Roles(gens2, RuleVerifiers(log2), learners2))
    again.setup(resume=ckpt)
    assert learners2.loaded == str(ckpt / "policy" / "deepspeed") and again.step_idx == 1
    step2 = again.step()
    assert step2["step"] == 2 and step2["prompt_uids"] == gens.calls[1]
    assert gens2.calls == [gens.calls[1], gens.calls[2]]  # re-issued, then the cursor continues where it stood
    again.shutdown()
