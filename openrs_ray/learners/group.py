"""LearnerGroup: the data-parallel DeepSpeed learner actors, driven as one."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from openrs_ray.cluster import actor_env, actor_request, role_resources
from openrs_ray.config import ConfigError, RunConfig
from openrs_ray.errors import LearnerLost
from openrs_ray.learners.base import ChannelSender, Learner, Learners
from openrs_ray.plugins import load_backend
from openrs_ray.types import TrainBatch, WeightVersion


def learner_env(cfg: RunConfig) -> dict[str, str]:
    """Environment of a learner actor."""
    env = {
        # DeepSpeed compiles its CPU shared-memory all-reduce op on first use (1-2 min); keeping the build
        # cache inside the venv makes that a one-time cost per install instead of per run.
        "TORCH_EXTENSIONS_DIR": os.path.join(sys.prefix, "torch_extensions"),
        # Keep the venv's ninja first: Debian's older ninja cannot read its build log and rebuilds.
        "PATH": os.path.join(sys.prefix, "bin") + os.pathsep + os.environ.get("PATH", ""),
    }
    if not cfg.cluster.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    cc = cfg.cluster
    return {**env, **actor_env(cc, cc.learner_cpus, 1 if cc.use_gpu else 0)}


class LearnerGroup(Learners, ChannelSender):
    """Starts `num_learners` actors of `learner.backend` forming one process group; rank 0 publishes.

    The ranks are one placement group (PACK): on a node with enough GPUs they all land there, so their
    all-reduces stay inside the node; otherwise Ray spreads them over as few nodes as it can.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        lc, cc = cfg.learner, cfg.cluster
        gpus = 1 if cc.use_gpu else 0
        bundle = actor_request(cc, "learner")  # CPU, GPU and (cluster.role_resources) the `learner` resource
        self.pg = placement_group([bundle] * lc.num_learners, strategy="PACK") if bundle else None
        actor_cls = ray.remote(load_backend("learner", lc.backend, Learner))  # imported now, not with this module
        options = {"num_cpus": cc.learner_cpus, "num_gpus": gpus, "resources": role_resources(cc, "learner"),
                   "runtime_env": {"env_vars": learner_env(cfg)}}  # fmt: skip
        self.actors = [
            actor_cls.options(**options, scheduling_strategy=self._in_group(rank)).remote(rank, cfg)
            for rank in range(lc.num_learners)
        ]
        addr, port = ray.get(self.actors[0].rendezvous.remote(), timeout=lc.timeout_s)
        self._starting = [a.init.remote(addr, port) for a in self.actors]  # collective: all ranks at once

    def _in_group(self, rank: int) -> PlacementGroupSchedulingStrategy | None:
        return None if self.pg is None else PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=rank)

    def placement(self) -> list[dict]:
        """Node and GPU of each rank, in rank order."""
        return self._all(lambda a: a.placement.remote(), "placement()")

    def wait_ready(self) -> list[dict[str, float]]:
        """Block until every rank has joined the group and built its engine; returns their init stats."""
        try:
            return self.wait(self._starting, "init()")
        except ConfigError as err:  # a key only checkable against the model (learner.lora.target_modules)
            raise ConfigError(str(getattr(err, "cause", err))) from None

    def wait(self, refs: list, what: str) -> list:
        """ray.get of learner calls, bounded by learner.timeout_s (a timeout names the call)."""
        timeout = self.cfg.learner.timeout_s
        deadline, late = time.monotonic() + timeout, list(refs)
        while late:  # one at a time: a dead rank is seen at once, not after its peers time out in a collective
            done, late = ray.wait(late, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                ranks = [i for i, r in enumerate(refs) if r in late]
                raise TimeoutError(f"learner rank(s) {ranks} did not finish {what} within learner.timeout_s={timeout}s")
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as err:
                rank = next(i for i, r in enumerate(refs) if r == done[0])
                raise LearnerLost(
                    f"learner rank {rank} was lost during {what} ({type(err).__name__}): a ZeRO group cannot "
                    "shrink; resume from the last checkpoint (train --resume, or checkpoint.auto_resume=true)"
                ) from None
        return ray.get(refs)

    def _all(self, call: Callable[[ray.actor.ActorHandle], ray.ObjectRef], what: str) -> list:
        """`call` on every rank's handle (e.g. `lambda a: a.save.remote(path)`), waited for together."""
        return self.wait([call(a) for a in self.actors], what)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """Shard the batch over ranks, run one step on each, and average their metrics."""
        n = self.cfg.learner.num_learners
        rows = self.cfg.rows_per_step // n
        num_items = sum(len(c) for c, w in zip(batch.completion_ids, batch.loss_weights, strict=True) if w)
        g = self.cfg.rows_per_step // self.cfg.prompts_per_step  # rows per group (1 when supervised)
        refs = [a.update.remote(batch.shard(r, n, rows, g), num_items) for r, a in enumerate(self.actors)]
        results = self.wait(refs, "update()")
        merged = {k: sum(r[k] for r in results) / n for k in results[0]}
        merged["learner_tokens"] = sum(r["learner_tokens"] for r in results)
        merged["nonfinite_updates"] = max(r["nonfinite_updates"] for r in results)  # same on every rank
        return merged

    def full_states(self) -> list[dict]:
        """Every rank's full parameters (for consistency checks; gathers under ZeRO-3)."""
        return self._all(lambda a: a.full_state.remote(), "full_state()")

    def load(self, path: str) -> str:
        """Restore every rank from the DeepSpeed state in `path` (written by save)."""
        return self._all(lambda a: a.load.remote(path), "load()")[0]

    def save(self, path: str) -> str:
        """HF-format checkpoint + DeepSpeed state in `path` (all ranks take part)."""
        return self._all(lambda a: a.save.remote(path), "save()")[0]

    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        """Rank 0's weights in object-store buckets (all ranks take part, for ZeRO-3 gathers)."""
        bucket_bytes = self.cfg.broadcast.bucket_size_mb * 2**20
        refs, nbytes, count = self._all(lambda a: a.export_weights.remote(bucket_bytes), "export_weights()")[0]
        return WeightVersion(version=version, num_bytes=nbytes, num_tensors=count), refs

    def weight_specs(self) -> list:
        """(name, shape, dtype) of every parameter, in send order (rank 0)."""
        return self.wait([self.actors[0].weight_specs.remote()], "weight_specs()")[0]

    def channel_address(self) -> tuple[str, int]:
        """Start the weight channel's store on rank 0's host."""
        return self.wait([self.actors[0].channel_address.remote()], "channel_address()")[0]

    def open_channel(self, host: str, port: int, world_size: int, epoch: int) -> list:
        """Refs of rank 0 joining the channel (wait together with the engines joining)."""
        return [a.open_channel.remote(host, port, world_size, epoch) for a in self.actors]

    def send_weights(self, bucket_bytes: int) -> list:
        """Refs of the ranks sending the current weights on the channel (wait with the receivers)."""
        return [a.send_weights.remote(bucket_bytes) for a in self.actors]

    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Rank 0's logprobs of a completion (temperature 1); all ranks take part."""
        # Every rank runs the forward: under ZeRO-3 each layer's parameters are gathered collectively.
        return self._all(lambda a: a.logprobs.remote(prompt_ids, completion_ids), "logprobs()")[0]

    def shutdown(self) -> None:
        """Leave the process group and end the actors."""
        try:
            ray.get([a.shutdown.remote() for a in self.actors], timeout=30)
        except Exception:  # noqa: BLE001 - an actor already dead must not stop the others' cleanup
            pass
        for a in self.actors:
            ray.kill(a)
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
