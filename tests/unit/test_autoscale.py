"""The generator autoscaler's controller, with hand-computed sequences; the hook with an in-process group."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from openrs_ray.autoscale import Autoscaler, Controller, Decision, Observation, observation, probe_grace
from openrs_ray.config.autoscale import AutoscaleConfig
from openrs_ray.ops.control import RunControl

# min 1, max 3, one step of cool-down, decisions on the last step alone; grow at wait >= 0.4 and busy >= 0.5,
# shrink at busy < 0.3 (and wait < 0.4); a grow must then cut the step time by 10% (min_gain) or is undone.
CFG = AutoscaleConfig(enabled=True, min_engines=1, max_engines=3, cooldown_steps=1, window_steps=1)
WAITING = Observation(step_s=10.0, wait_s=6.0, busy_fraction=0.8)  # wait 0.6, busy 0.8: generation-bound
IDLE = Observation(step_s=10.0, wait_s=1.0, busy_fraction=0.1)  # wait 0.1, busy 0.1: engines idle
MIDDLE = Observation(step_s=10.0, wait_s=2.0, busy_fraction=0.4)  # wait 0.2, busy 0.4: in the dead band
STARVED = Observation(step_s=10.0, wait_s=6.0, busy_fraction=0.2)  # learners wait, engines idle: more won't help
IDLE_FAST = Observation(step_s=5.0, wait_s=0.5, busy_fraction=0.1)  # wait 0.1, busy 0.1, and a faster step


def run(ctl: Controller, engines: int, steps: list[Observation]) -> list[Decision]:
    """Apply each decision as the orchestrator does: the target becomes the next count."""
    out = []
    for obs in steps:
        d = ctl.decide(engines, obs)
        out.append(d)
        engines = d.target
    return out


def test_grows_to_max_with_cooldown_between_steps() -> None:
    faster = Observation(8.0, 6.0, 0.8)  # wait 0.75, and 8 <= 10 x 0.9: the first grow paid
    fastest = Observation(7.0, 5.0, 0.8)  # 7 <= 8 x 0.9 = 7.2: so did the second
    got = run(Controller(CFG), 1, [WAITING, WAITING, faster, faster, fastest])
    assert got == [
        Decision(2, "grow_learners_waiting"),
        Decision(2, "cooldown"),
        Decision(3, "grow_learners_waiting"),
        Decision(3, "cooldown"),
        Decision(3, "hold_at_max"),
    ]


def test_shrinks_to_min() -> None:
    got = run(Controller(CFG), 3, [IDLE] * 5)
    assert [d.target for d in got] == [2, 2, 1, 1, 1]
    assert [d.reason for d in got] == ["shrink_engines_idle", "cooldown", "shrink_engines_idle", "cooldown",
                                       "hold_at_min"]  # fmt: skip


def test_dead_band_and_starved_engines_hold() -> None:
    assert run(Controller(CFG), 2, [MIDDLE, STARVED]) == [Decision(2, "hold_balanced")] * 2


def test_cooldown_discards_the_step_after_a_change_and_stops_flapping() -> None:
    """A grow, then idle steps: the first idle step falls in the cool-down, only the second shrinks."""
    ctl = Controller(CFG.model_copy(update={"cooldown_steps": 2}))
    got = run(ctl, 1, [WAITING, IDLE, IDLE, IDLE_FAST, WAITING])
    assert [d.target for d in got] == [2, 2, 2, 1, 1]
    assert [d.reason for d in got][1:3] == ["cooldown", "cooldown"]


def test_window_averages_steps() -> None:
    ctl = Controller(CFG.model_copy(update={"window_steps": 2, "cooldown_steps": 0}))
    high = Observation(10.0, 7.0, 0.9)  # wait 0.7
    low = Observation(10.0, 3.0, 0.3)  # wait 0.3; means: wait 0.5, busy 0.6 -> grow
    assert run(ctl, 1, [high, low]) == [Decision(1, "hold_measuring"), Decision(2, "grow_learners_waiting")]
    # after a change the window starts over: one new step is not enough
    assert ctl.decide(2, IDLE_FAST) == Decision(2, "hold_measuring")
    assert ctl.decide(2, IDLE_FAST) == Decision(1, "shrink_engines_idle")  # step 5 s <= 10 x 0.9: grow kept


def test_a_grow_that_does_not_pay_is_undone_and_caps_the_count() -> None:
    """Engines sharing saturated CPUs stay busy without making steps faster: back to 1, and 1 is the ceiling
    until the engines go idle (the workload changed)."""
    slower = Observation(10.5, 6.0, 0.8)  # 10.5 > 10 x 0.9
    got = run(Controller(CFG), 1, [WAITING, WAITING, slower, WAITING, WAITING, IDLE, WAITING])
    assert [(d.target, d.reason) for d in got] == [
        (2, "grow_learners_waiting"),
        (2, "cooldown"),
        (1, "shrink_no_gain"),
        (1, "cooldown"),
        (1, "hold_no_gain_above"),
        (1, "hold_at_min"),
        (2, "grow_learners_waiting"),  # the idle spell lifted the ceiling
    ]


def test_clamps_to_bounds_and_waits_for_a_measurement() -> None:
    ctl = Controller(CFG)
    assert ctl.decide(5, None) == Decision(3, "max_engines")
    assert ctl.decide(3, None) == Decision(3, "cooldown")
    assert ctl.decide(3, Observation(10.0, 6.0, None)) == Decision(3, "hold_measuring")
    low = Controller(CFG.model_copy(update={"min_engines": 2}))
    assert low.decide(1, WAITING) == Decision(2, "min_engines")


def test_manual_wins_while_set() -> None:
    ctl = Controller(CFG)
    assert ctl.decide(2, WAITING, manual=5) == Decision(5, "manual")  # even past max_engines
    assert ctl.decide(5, IDLE, manual=5) == Decision(5, "manual")
    assert ctl.decide(5, IDLE) == Decision(3, "max_engines")  # released: back within bounds


def test_observation_excludes_the_scale_phase() -> None:
    m = {"time_step_s": 12.0, "time_scale_s": 2.0, "time_generate_s": 4.0, "time_refill_s": 1.0}
    obs = observation(m, 0.5)
    assert obs == Observation(10.0, 5.0, 0.5) and obs.wait_fraction == 0.5


def test_a_synchronous_step_grows_when_generation_is_under_half_the_step() -> None:
    # The scaling benchmark's 1-engine reading: learners waited 45% of the step, the engine was busy 44% of its
    # time (about as long as they waited). 0.44 >= 0.5 x 0.45, so grow; a bar of 0.5 on busy alone held forever.
    ctl = Controller(AutoscaleConfig(min_engines=1, max_engines=3, cooldown_steps=0, window_steps=1))
    assert ctl.decide(1, Observation(10.0, 4.5, 0.44)) == Decision(2, "grow_learners_waiting")
    # At 2 engines the learners waited 37%: under grow_wait_fraction, and busy 35% is above the shrink bar.
    assert ctl.decide(2, Observation(8.6, 3.2, 0.35)) == Decision(2, "hold_balanced")


def test_config_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="min_engines 3 > max_engines 2"):
        AutoscaleConfig(min_engines=3, max_engines=2)


def test_run_control_operator_count_until_released() -> None:
    control = RunControl(2)
    assert control.generators_request() == (2, False)
    assert control.set_generators(4) == 4 and control.generators_request() == (4, True)
    control.release_generators()
    assert control.generators_request() == (4, False)


class Group:
    """An in-process stand-in for GeneratorGroup's scaling surface (engines start instantly when admitted)."""

    def __init__(self, n: int) -> None:
        self.engines = [SimpleNamespace(engine_id=i) for i in range(n)]
        self.pending: list = []
        self.log: list[str] = []

    def admit_ready(self) -> list[int]:
        up, self.pending = self.pending, []
        self.engines += [e for e, _ in up]
        return [e.engine_id for e, _ in up]

    def start(self, n: int) -> None:
        self.pending += [(SimpleNamespace(engine_id=len(self.engines) + len(self.pending) + i), None) for i in range(n)]
        self.log.append(f"start {n}")

    def cancel(self, n: int) -> int:
        k = min(n, len(self.pending))
        self.pending = self.pending[: len(self.pending) - k]
        self.log.append(f"cancel {k}")
        return k

    def remove(self, n: int) -> list[int]:
        self.engines = self.engines[: len(self.engines) - n]
        self.log.append(f"remove {n}")
        return []


class NoProbe:
    """The busy probe asks real actors; this hook test has none."""

    def reset(self) -> None:
        pass

    def read(self, engines: list, grace_s: float = 1.0) -> None:
        return None


def test_apply_counts_pending_engines_and_cancels_them_first() -> None:
    g = Group(1)
    scaler = Autoscaler(CFG, g, {}, 600.0)  # {}: nothing reserved, so no request to a cluster autoscaler
    scaler.probe = NoProbe()  # type: ignore[assignment]
    scaler.apply(3)
    assert len(g.engines) == 1 and len(g.pending) == 2  # the run goes on with the one engine it has
    scaler.apply(3)  # pending engines count toward the target: nothing more started
    scaler.apply(2)
    assert g.log == ["start 2", "cancel 1"] and len(g.pending) == 1
    g.admit_ready()
    scaler.apply(1)
    assert g.log[-2:] == ["cancel 0", "remove 1"] and len(g.engines) == 1


def test_hook_holds_while_engines_start_and_gives_up_on_unplaced_ones() -> None:
    g = Group(1)
    scaler = Autoscaler(CFG, g, {}, 600.0)
    scaler.probe = NoProbe()  # type: ignore[assignment]
    g.admit_ready = lambda: []  # type: ignore[method-assign]  # never comes up: no node can hold it
    scaler.apply(2)
    assert scaler.step({"time_step_s": 10.0}, None) == Decision(2, "hold_starting")
    assert scaler.step({"time_step_s": 10.0}, 3) == Decision(3, "manual")  # an operator is not held back
    scaler.start_timeout_s = 0.0
    assert scaler.step({"time_step_s": 10.0}, None) == Decision(1, "cancel_unplaced")
    assert g.pending == [] and len(g.engines) == 1 and scaler.controller.ceiling == 1


def test_probe_waits_only_when_no_generation_is_in_flight() -> None:
    idle = [SimpleNamespace(in_flight=0), SimpleNamespace(in_flight=0)]
    busy = [SimpleNamespace(in_flight=0), SimpleNamespace(in_flight=3)]  # asynchronous: a batch queued
    assert probe_grace(idle) == 1.0 and probe_grace(idle, 2.5) == 2.5
    assert probe_grace(busy) == 0.0 and probe_grace([]) == 1.0


class BusyProbe:
    """A probe that reports the engines busy 80% of the time."""

    def reset(self) -> None:
        pass

    def read(self, engines: list, grace_s: float = 1.0) -> float:
        return 0.8


def test_hook_skips_the_warm_up_step() -> None:
    g = Group(1)
    scaler = Autoscaler(CFG, g, {}, 600.0)
    scaler.probe = BusyProbe()  # type: ignore[assignment]
    waiting = {"time_step_s": 10.0, "time_generate_s": 6.0}  # wait 0.6, busy 0.8: generation-bound
    assert scaler.step(None, None) == Decision(1, "hold_measuring")  # before the first step
    assert scaler.step(waiting, None) == Decision(1, "hold_measuring") and scaler.observed is None  # its warm-up
    assert scaler.step(waiting, None) == Decision(2, "grow_learners_waiting")
    assert scaler.observed == Observation(10.0, 6.0, 0.8) and g.log == ["start 1"]


def test_hook_skips_a_new_engines_warm_up_step() -> None:
    g = Group(1)
    scaler = Autoscaler(AutoscaleConfig(max_engines=3, cooldown_steps=0, window_steps=1), g, {}, 600.0)
    scaler.probe = BusyProbe()  # type: ignore[assignment]
    waiting = {"time_step_s": 10.0, "time_generate_s": 6.0}
    scaler.warming = 0  # past the run's first step
    assert scaler.step(waiting, None) == Decision(2, "grow_learners_waiting") and g.log == ["start 1"]
    assert scaler.step(waiting, None) == Decision(2, "hold_measuring")  # admitted now; measured before it served
    assert len(g.engines) == 2 and g.pending == []
    slow = {"time_step_s": 30.0, "time_generate_s": 6.0}  # the new engine's first step: its warm-up
    assert scaler.step(slow, None) == Decision(2, "hold_measuring") and scaler.observed is None
    faster = {"time_step_s": 8.0, "time_generate_s": 4.8}  # wait 0.6 at 8 s: the grow paid, grow again
    assert scaler.step(faster, None) == Decision(3, "grow_learners_waiting")
