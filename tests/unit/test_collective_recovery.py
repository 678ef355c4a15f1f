"""The collective broadcast when a member is lost: CollectiveBroadcast against in-process stand-ins (which
engine died is what the group reports), and WeightChannel.send on a real gloo group whose receiver is gone."""

from __future__ import annotations

import multiprocessing as mp
import socket

import torch

from openrs_ray.broadcast.channel import WeightChannel, serve_store
from openrs_ray.broadcast.collective import CollectiveBroadcast
from openrs_ray.config import load_config
from openrs_ray.types import WeightVersion
from tests.conftest import REPO

SPECS = [("a", (4, 4), "float32"), ("b", (4,), "float32"), ("c", (8, 4), "float32")]  # 64 + 16 + 128 bytes


class Learners:
    """Rank 0 stand-in: the channel 'sends' and reports `error`; export_weights records the fallback."""

    def __init__(self, error: str | None) -> None:
        self.error, self.exported, self.opened = error, [], []

    def channel_address(self) -> tuple[str, int]:
        return "127.0.0.1", 1

    def weight_specs(self) -> list:
        return SPECS

    def open_channel(self, host: str, port: int, world: int, epoch: int) -> list:
        self.opened.append((world, epoch))
        return ["opened"]

    def send_weights(self, bucket_bytes: int) -> list:
        return [(208 if self.error is None else 64, self.error)]

    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        self.exported.append(version)
        return WeightVersion(version=version, num_bytes=208, num_tensors=3), [("bucket", version)]

    def wait(self, refs: list, what: str) -> list:
        return refs


class Engine:
    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation


class Generators:
    """Engines stand-in: `dies` engines are replaced by new incarnations when asked; `failures` is what the
    channel's receivers report."""

    def __init__(self, failures: list[str], dies: int = 0) -> None:
        self.cfg = load_config(REPO / "configs/smoke.yaml", [])
        self.engines, self.catch_up = [Engine(1), Engine(2)], None
        self.failures, self.dies, self.loaded = failures, dies, []

    def replace_lost(self) -> int:
        lost, self.dies = self.dies, 0
        self.engines = self.engines[: len(self.engines) - lost] + [Engine(10 + i) for i in range(lost)]
        return lost

    def open_channel(self, host: str, port: int, world: int, epoch: int, timeout_s: float, backend: str) -> list:
        return ["joined"] * len(self.engines)

    def wait_engines(self, refs: list, what: str, timeout_s: float) -> list:
        return refs

    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> list:
        return ["received"] * len(self.engines)

    def channel_failures(self, refs: list, what: str, timeout_s: float) -> list[str]:
        failed, self.failures = self.failures, []
        return failed

    def load_weights(self, refs: list, version: int) -> list:
        self.loaded.append((refs, version))
        return []


def _broadcast(learners: Learners, generators: Generators) -> CollectiveBroadcast:
    return CollectiveBroadcast(learners, generators, bucket_mb=1, timeout_s=30.0, version=3)  # type: ignore[arg-type]


def test_a_clean_broadcast_needs_no_object_store() -> None:
    learners, generators = Learners(None), Generators([])
    meta, sync = _broadcast(learners, generators).publish()
    assert (meta.version, meta.num_bytes, sync["sync_fallback"]) == (4, 208, 0.0)
    assert learners.exported == [] and generators.loaded == [] and learners.opened == [(3, 1)]


def test_a_member_lost_mid_transfer_reloads_every_engine_from_the_store_and_reforms_the_group() -> None:
    learners, generators = Learners("DistBackendError: timed out"), Generators(["engine 1: ActorDiedError"])
    bc = _broadcast(learners, generators)
    meta, sync = bc.publish()
    assert (meta.version, meta.num_bytes, sync["sync_fallback"]) == (4, 208, 1.0)
    assert learners.exported == [4] and generators.loaded == [([("bucket", 4)], 4)]
    learners.error = None
    _, sync = bc.publish()  # same engines, but the broken group is not reused: a new epoch
    assert sync["sync_fallback"] == 0.0 and learners.opened == [(3, 1), (3, 2)] and bc.version == 5


def test_an_engine_dead_before_the_broadcast_is_replaced_before_the_group_forms() -> None:
    learners, generators = Learners(None), Generators([])
    bc = _broadcast(learners, generators)
    bc.publish()
    generators.dies = 1
    _, sync = bc.publish()
    assert sync["sync_fallback"] == 0.0 and learners.opened == [(3, 1), (3, 2)]  # the replacement is a member
    assert [e.incarnation for e in generators.engines] == [1, 10]


def _leave(port: int, started) -> None:  # noqa: ANN001 - a multiprocessing Event
    """A receiver that joins the group, then dies before the broadcast (as an engine's process would)."""
    started.set()  # imported and about to join: the sender's short timeout covers only the rendezvous
    WeightChannel("127.0.0.1", port, 1, 2, 1, 5.0)


def test_send_drains_every_tensor_when_a_member_is_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = serve_store(port, 30)
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    receiver = ctx.Process(target=_leave, args=(port, started))
    receiver.start()
    assert started.wait(timeout=120), "the receiver process did not start"
    sender = WeightChannel("127.0.0.1", port, 0, 2, 1, 5.0)  # returns once both have joined
    receiver.join(timeout=60)
    drawn = []

    def tensors():
        for name, shape, _ in SPECS:
            drawn.append(name)  # under ZeRO-3 each is a gather the other learner ranks take part in
            yield torch.ones(shape)

    sent, error = sender.send(tensors(), SPECS, bucket_bytes=80)  # buckets [a, b], [c]
    assert drawn == ["a", "b", "c"] and sent == 0
    assert error is not None and error.startswith(("DistBackendError", "RuntimeError")), error
    sender.close()
    del store
