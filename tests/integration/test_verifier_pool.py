"""The verifier pool on real Ray actors and real math-verify: adversarial outputs, timeouts, restarts."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import ray

from openrs_ray.config import load_config
from openrs_ray.rewards.pool import VerifierPool
from openrs_ray.rewards.registry import RewardContext
from openrs_ray.rewards.sandbox import SampleScorer
from openrs_ray.types import Prompt, Rollout
from tests.conftest import REPO

ADVERSARIAL = {
    "1MB": "x" * (1 << 20),
    "tower": r"\boxed{10^{10^{10^{10^{10}}}}}",
    "nested_frac": r"\boxed{" + r"\frac{1}{" * 500 + "2" + "}" * 501,
    "surrogates": b"\xff\xfe bad \xed\xa0\x80 bytes".decode("utf-8", errors="replace") + "\udcff",
    "empty": "",
    "empty_box": r"\boxed{}",
    "unclosed": r"\boxed{",
}
TIMEOUT = 2.0


def test_scorer_adversarial_outcomes_within_limit() -> None:
    scorer = SampleScorer({"accuracy": 1.0, "format": 1.0}, TIMEOUT)
    try:
        for name, text in ADVERSARIAL.items():
            t0 = time.monotonic()
            (out,) = scorer.score([RewardContext(text, "72", len(text), 100)])
            assert time.monotonic() - t0 < TIMEOUT + 3.0, name  # the limit plus a child's restart
            assert out.status in ("ok", "timeout", "error") and out.total == 0.0, (name, out)
        # After all that, the scorer still serves, and right answers still score.
        (good,) = scorer.score([RewardContext("so \\boxed{72}", "72", 3, 100)])
        assert (good.status, good.total) == ("ok", 1.0)
        (bad_gold,) = scorer.score([RewardContext("\\boxed{72}", "", 3, 100)])
        assert bad_gold.status == "unparsable"
    finally:
        scorer.close()


def _rollout(text: str, i: int) -> Rollout:
    return Rollout("p:0", [1], [7] * max(1, len(text) // 1000), text, [], "stop", 0, 3)


@pytest.fixture(scope="module")
def pool(ray_local: None):
    cfg = load_config(REPO / "configs/smoke.yaml", [f"rewards.sample_timeout_s={TIMEOUT}", "rewards.num_workers=2"])
    pool = VerifierPool(cfg)
    yield pool
    pool.shutdown()


def test_pool_scores_adversarial_group_and_keeps_serving(pool: VerifierPool) -> None:
    prompt = Prompt("p:0", "What is 8*9?", [1, 2], "72")
    texts = [*ADVERSARIAL.values(), "<think>\nok\n</think>\n\\boxed{72}"]
    t0 = time.monotonic()
    (ref,) = pool.score([(prompt, [_rollout(t, i) for i, t in enumerate(texts)])])
    group = ray.get(ref, timeout=60)
    assert time.monotonic() - t0 < len(texts) * (TIMEOUT + 3.0)
    assert len(group.rewards) == len(texts) and not group.dropped
    # accuracy 1 + format 1 + cosine of a correct 30-character answer with max_len 200 (smoke.yaml):
    assert group.rewards[-1] == pytest.approx(1 + 1 + 0.5 + 0.25 * (1 + math.cos(math.pi * 30 / 200)))
    assert group.rewards[:-1] == [group.components["cosine"][i] for i in range(len(texts) - 1)]
    assert group.verify_timeouts >= 1  # the power tower cannot finish in 2 s
    assert group.verify_timeouts + group.verify_errors <= len(ADVERSARIAL)
    # Still serving: a plain group scores normally on both actors.
    refs = pool.score([(prompt, [_rollout("\\boxed{72}", 0)])] * 2)
    assert [g.components["accuracy"] for g in ray.get(refs, timeout=60)] == [[1.0], [1.0]]


def test_killed_verifier_is_restarted_and_its_group_still_scored(pool: VerifierPool) -> None:
    prompt = Prompt("p:0", "What is 8*9?", [1, 2], "72")
    pool.count_restarts()
    before = pool.restarts
    slow = [_rollout(ADVERSARIAL["tower"], 0), _rollout("\\boxed{72}", 1)]
    shm = set(Path("/dev/shm").glob("*"))
    refs = pool.score([(prompt, slow)] * 2)
    time.sleep(0.5)
    ray.kill(pool.actors[0], no_restart=False)  # dies mid-group
    groups = ray.get(refs, timeout=120)
    assert [g.components["accuracy"][1] for g in groups] == [1.0, 1.0]
    assert pool.count_restarts() == before + 1
    # The killed verifier's scoring child held no named semaphore (a multiprocessing.Pool left 6 per kill).
    assert sorted(set(Path("/dev/shm").glob("*")) - shm) == []
