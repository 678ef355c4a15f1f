"""The run's control surface: a named Ray actor that holds what operators asked for (engine count).

`openrs-ray scale --generators N --run NAME` sets it from any machine that can reach the cluster; the
orchestrator reads it at the start of every step and adds or removes engines to match; with
generation.autoscale on, an operator's count wins until `--generators auto` hands it back.
"""

from __future__ import annotations

import time
from pathlib import Path

import ray

NAMESPACE = "openrs"


def control_name(output_dir: str) -> str:
    """The control actor's name for a run: its output folder's name."""
    return f"control:{Path(output_dir).name}"


class RunControl:
    """Desired settings of a running job, changed from outside and polled by the orchestrator."""

    def __init__(self, num_engines: int) -> None:
        self.num_engines = num_engines
        self.by_operator = False  # set by `openrs-ray scale`: then it wins over generation.autoscale

    def set_generators(self, n: int) -> int:
        """Ask for `n` generator engines (n >= 1); returns the value now in force."""
        if n < 1:
            raise ValueError("at least one generator engine is needed")
        self.num_engines = n
        self.by_operator = True
        return n

    def release_generators(self) -> None:
        """Hand the engine count back to generation.autoscale (`openrs-ray scale --generators auto`)."""
        self.by_operator = False

    def generators_request(self) -> tuple[int, bool]:
        """The engine count asked for, and whether an operator asked for it."""
        return self.num_engines, self.by_operator

    def desired_generators(self) -> int:
        """The engine count operators asked for."""
        return self.num_engines


def start_control(output_dir: str, num_engines: int) -> ray.actor.ActorHandle:
    """Create the run's named control actor (lives as long as the driver)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: anywhere else, losing that node would end the run (it is read every step).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(RunControl).options(
        name=control_name(output_dir), namespace=NAMESPACE, num_cpus=0, scheduling_strategy=here
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            return actor.remote(num_engines)
        except ValueError:  # the name is still held by the previous attempt's actor (checkpoint.auto_resume)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def scale_generators(run: str, n: int | None, timeout_s: float = 30.0) -> int | None:
    """Set the desired engine count of the running job `run`, or with None hand it back to the autoscaler
    (Ray must be initialised)."""
    try:
        actor = ray.get_actor(f"control:{run}", namespace=NAMESPACE)
    except ValueError:
        raise ValueError(f"no running openrs_ray job named {run!r} on this cluster") from None
    if n is None:
        return ray.get(actor.release_generators.remote(), timeout=timeout_s)
    return ray.get(actor.set_generators.remote(n), timeout=timeout_s)
