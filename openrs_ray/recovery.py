"""Surviving the loss of a node: can a lost actor be placed again, which nodes died, how often to retry.

Ray restarts an actor only where its resources are free; an actor whose node died and whose role no other
node offers waits for placement forever. These helpers answer quickly instead: a pure check against the
alive nodes' resources, then a placement-group probe with a short timeout (Ray's public way to ask "could
this bundle be placed now?").
"""

from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-9  # Ray's fractional resources come back as floats


def fits(need: dict[str, float], node: dict[str, float]) -> bool:
    """True when `node` (resource -> amount) holds every amount of `need`."""
    return all(node.get(k, 0.0) + EPS >= v for k, v in need.items())


def placeable(need: dict[str, float], totals: list[dict[str, float]], available: dict[str, float] | None) -> bool:
    """Could one actor needing `need` be placed? `totals`: each alive node's total resources; `available`:
    the cluster's free resources (None: do not look at what is free, only at what exists).

    A necessary condition, cheap to ask: some alive node must have the whole request, and the cluster must
    have it free somewhere. Whether one node has it all free is what the placement-group probe answers.
    """
    if not need:
        return True
    if not any(fits(need, node) for node in totals):
        return False
    return available is None or fits(need, available)


def _alive_totals() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def can_place(need: dict[str, float], timeout_s: float, require_free: bool = False) -> bool:
    """Can an actor needing `need` be placed within `timeout_s`? Without a node that could ever hold it the
    answer is an immediate no; otherwise a placement group of that one bundle must be placed in time (it is
    removed again at once, so the actor itself is then scheduled the ordinary way).

    require_free=True also says no at once when the cluster does not have the request free (for optional
    growth, asked every step; a replacement instead waits the timeout for the dead actor's resources).
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if not need:
        return True
    if not placeable(need, _alive_totals(), ray.available_resources() if require_free else None):
        return False
    pg = placement_group([need], strategy="STRICT_PACK")
    try:
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        return bool(ready)
    finally:
        remove_placement_group(pg)


def dead_nodes(node_ids: set[str]) -> set[str]:
    """Those of `node_ids` that Ray's control store no longer lists as alive."""
    import ray

    if not node_ids:
        return set()
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return {n for n in node_ids if n not in alive}


@dataclass
class RetryBudget:
    """Bounded retries (checkpoint.auto_resume_retries): each use is counted and described for the log."""

    retries: int
    used: int = 0
    reasons: list[str] = field(default_factory=list)

    def take(self, reason: str) -> str | None:
        """Spend one retry for `reason`; returns the log line, or None when the budget is spent."""
        if self.used >= self.retries:
            return None
        self.used += 1
        self.reasons.append(reason)
        return f"auto_resume {self.used}/{self.retries}: {reason}"
