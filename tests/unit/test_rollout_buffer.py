"""RolloutBuffer without Ray: futures of scored groups in, FIFO order, staleness, take stats and batches out,
with values computed by hand."""

from __future__ import annotations

import math
import time
from concurrent.futures import Future

import pytest

from openrs_ray.buffer.rollout_buffer import RolloutBuffer, TakeStats
from openrs_ray.config import BufferConfig
from openrs_ray.types import Prompt, Rollout, ScoredGroup


def group(uid: str, rewards: list[float], version: int = 0, lengths: list[int] | None = None, **kw) -> ScoredGroup:
    prompt = Prompt(uid=uid, text=uid, token_ids=[1, 2], answer="1")
    lengths = lengths or [2] * len(rewards)
    rollouts = [
        Rollout(uid, [1, 2], [7] * n, "x", [-0.5] * n, "length" if n >= 4 else "stop", 0, version) for n in lengths
    ]
    return ScoredGroup(prompt, rollouts, rewards, {"accuracy": list(rewards)}, version, **kw)


def done(g: ScoredGroup) -> Future:
    f: Future = Future()
    f.set_result(g)
    return f


def buffer(**cfg) -> RolloutBuffer:
    return RolloutBuffer(BufferConfig(**cfg), group_size=2, max_completion_length=4)


def test_take_is_first_in_first_out_and_leaves_the_rest() -> None:
    buf = buffer()
    buf.add([done(group("a", [1, 0])), done(group("b", [0, 1]))], 0)
    buf.add([done(group("c", [1, 1]))], 0)
    groups, stats = buf.take(2, learner_version=0, timeout_s=1)
    assert [g.prompt.uid for g in groups] == ["a", "b"]
    assert len(buf) == 1 and stats.groups == 2
    groups, stats = buf.take(5, learner_version=0, timeout_s=1)  # asks for more than is queued
    assert [g.prompt.uid for g in groups] == ["c"] and stats.groups == 1 and len(buf) == 0


def test_groups_past_max_staleness_are_dropped_and_counted() -> None:
    buf = buffer(max_staleness=1)
    for uid, version in (("v3", 3), ("v2", 2), ("v1", 1)):
        buf.add([done(group(uid, [1, 0], version))], version)  # tagged with the version that sampled them
    groups, stats = buf.take(3, learner_version=3, timeout_s=1)
    assert [g.prompt.uid for g in groups] == ["v3", "v2"]  # 3 - 1 = 2 versions behind > 1
    assert stats.stale == 1
    _, staleness = buf.batch(groups, learner_version=3)
    assert staleness.summary() == {"staleness_mean": 0.5, "staleness_max": 1.0, "staleness_hist": {"0": 2, "1": 2}}


def test_synchronous_buffer_drops_any_lag() -> None:
    buf = buffer(max_staleness=0)
    buf.add([done(group("old", [1, 0], 4))], 4)
    groups, stats = buf.take(1, learner_version=5, timeout_s=1)
    assert groups == [] and stats.stale == 1


def test_take_stats_count_every_reason() -> None:
    buf = buffer(dynamic_sampling=True)
    never: Future = Future()  # a group never scored
    buf.add(
        [
            done(group("ok", [1, 0], verify_errors=1, verify_timeouts=1)),
            done(group("flat", [1, 1], verify_timeouts=1)),
            done(group("bad-gold", [0, 0], dropped=True)),
            never,
        ],
        0,
    )
    t0 = time.monotonic()
    groups, stats = buf.take(4, learner_version=0, timeout_s=0.2)
    assert time.monotonic() - t0 < 2  # the timeout bounds the wait
    assert [g.prompt.uid for g in groups] == ["ok"]
    assert stats == TakeStats(
        groups=4, dropped_unparsable=1, group_timeouts=1, sample_timeouts=2, verify_errors=1, zero_variance=1
    )
    assert never.cancelled()
    stats.add(TakeStats(groups=1, stale=2, refill_rounds=1))
    assert (stats.groups, stats.stale, stats.refill_rounds, stats.zero_variance) == (5, 2, 1, 1)


def test_zero_variance_groups_are_kept_without_dynamic_sampling() -> None:
    buf = buffer(dynamic_sampling=False)
    buf.add([done(group("flat", [1, 1]))], 0)
    groups, stats = buf.take(1, 0, 1)
    assert len(groups) == 1 and stats.zero_variance == 0


def test_batch_rows_and_advantages() -> None:
    buf = buffer(advantage_scale="group")
    batch, _ = buf.batch([group("a", [1, 0], 2), group("b", [3, 3], 1)], learner_version=2)
    # group a: mean 0.5, unbiased std sqrt(0.5) -> +-0.5 / (sqrt(0.5) + 1e-4); group b: all equal -> 0
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert batch.advantages == pytest.approx([a, -a, 0.0, 0.0], abs=1e-6)
    assert batch.weight_versions == [2, 2, 1, 1]
    assert batch.prompt_ids == [[1, 2]] * 4 and batch.completion_ids == [[7, 7]] * 4
    assert batch.sampling_logprobs == [[-0.5, -0.5]] * 4 and batch.loss_weights == [1.0] * 4


def test_overlong_penalty_shapes_rewards_before_advantages() -> None:
    buf = buffer(advantage_scale="none", overlong="penalty", overlong_buffer_len=2, overlong_penalty=1.0)
    # max_completion_length 4, ramp from 2: length 3 -> -0.5, length 4 -> -1.0; rewards [1, 1] -> [0.5, 0.0]
    batch, _ = buf.batch([group("a", [1, 1], lengths=[3, 4])], learner_version=0)
    assert batch.advantages == pytest.approx([0.25, -0.25])


def test_overlong_mask_zeroes_truncated_rows() -> None:
    buf = buffer(advantage_scale="none", overlong="mask")
    batch, _ = buf.batch([group("a", [1, 0], lengths=[4, 2])], learner_version=0)
    assert batch.loss_weights == [0.0, 1.0] and batch.advantages == [0.5, -0.5]


def test_snapshot_and_restore_round_trip() -> None:
    buf = buffer(max_staleness=2)
    buf.add([done(group("a", [1, 0], 1)), done(group("b", [0, 1], 2))], 1)
    saved = buf.snapshot(timeout_s=1)
    assert [g.prompt.uid for g in saved] == ["a", "b"] and len(buf) == 2  # the queue is left as it is
    again = buffer(max_staleness=2)
    again.restore(saved)
    groups, stats = again.take(2, learner_version=3, timeout_s=1)
    assert [g.prompt.uid for g in groups] == ["a", "b"] and stats.stale == 0  # each keeps its own version
