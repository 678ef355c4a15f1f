"""ObjectStoreBroadcast against in-process stand-ins: broadcast/ depends on its protocols, not on the groups."""

from __future__ import annotations

from openrs_ray.broadcast.object_store import ObjectStoreBroadcast
from openrs_ray.broadcast.protocols import WeightSink, WeightSource
from openrs_ray.types import WeightVersion


class Learners:
    """Rank 0 stand-in: 'refs' are plain lists of (name, version) buckets."""

    def __init__(self) -> None:
        self.exported: list[int] = []

    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        self.exported.append(version)
        return WeightVersion(version=version, num_bytes=3000, num_tensors=2), [("b0", version), ("b1", version)]


class Generators:
    """Engines stand-in: records what each load received."""

    def __init__(self) -> None:
        self.loaded: list[tuple[list, int]] = []

    def load_weights(self, bucket_refs: list, version: int) -> list[dict[str, float]]:
        self.loaded.append((bucket_refs, version))
        return [{"load_s": 0.0}]


def test_publish_moves_the_next_version_from_source_to_sink() -> None:
    learners, generators = Learners(), Generators()
    source: WeightSource = learners  # type: ignore[assignment]  (a partial stand-in: only what this backend calls)
    sink: WeightSink = generators  # type: ignore[assignment]
    bc = ObjectStoreBroadcast(source, sink, version=4)
    meta, sync = bc.publish()
    assert (meta.version, bc.version, learners.exported) == (5, 5, [5])
    assert generators.loaded == [([("b0", 5), ("b1", 5)], 5)]
    assert sync["sync_bytes"] == 3000.0 and set(sync) == {"sync_s", "sync_export_s", "sync_bytes", "sync_gbps"}
    bc.publish()
    assert bc.version == 6 and [v for _, v in generators.loaded] == [5, 6]
