"""Node-failure bookkeeping (openrs_ray.recovery): the placement-feasibility check and the retry budget."""

from __future__ import annotations

from openrs_ray.config import load_config
from openrs_ray.recovery import RetryBudget, fits, placeable

ENGINE = {"CPU": 1.0, "generator": 1.0}
HEAD = {"CPU": 2.0, "verifier": 2.0, "learner": 1.0}
GEN = {"CPU": 2.0, "generator": 1.0}


def test_fits_needs_every_amount_on_the_node() -> None:
    assert fits(ENGINE, GEN)
    assert not fits(ENGINE, HEAD)  # no generator resource at all
    assert not fits({"CPU": 2.5}, GEN)
    assert fits({"CPU": 0.5, "generator": 0.5}, {"CPU": 0.5, "generator": 0.5})  # exactly enough
    assert fits({"CPU": 0.1 + 0.2}, {"CPU": 0.3})  # float sums Ray reports: within 1e-9 counts as enough


def test_placeable_after_the_only_free_generator_node_died() -> None:
    # Two generator nodes, one engine each: the survivor's generator is taken, the lost node's is gone.
    survivors = [HEAD, GEN]
    free = {"CPU": 2.0 + 1.0, "verifier": 0.0, "learner": 0.0, "generator": 0.0}
    assert not placeable(ENGINE, survivors, free)  # no room now: drop the engine at once
    assert placeable(ENGINE, survivors, None)  # a node could hold it: the placement probe decides
    assert not placeable(ENGINE, [HEAD], None)  # no node offers `generator` any more: never placeable
    free_back = {**free, "CPU": 5.0, "generator": 1.0}  # the lost node is back
    assert placeable(ENGINE, [HEAD, GEN, GEN], free_back)


def test_placeable_empty_request_and_empty_cluster() -> None:
    assert placeable({}, [], {})  # an actor needing nothing fits anywhere
    assert not placeable({"CPU": 1.0}, [], None)


def test_retry_budget_counts_and_stops() -> None:
    budget = RetryBudget(2)
    assert budget.take("learner rank 0 was lost") == "auto_resume 1/2: learner rank 0 was lost"
    assert budget.take("again") == "auto_resume 2/2: again"
    assert budget.take("third") is None
    assert (budget.used, budget.reasons) == (2, ["learner rank 0 was lost", "again"])
    assert RetryBudget(0).take("off") is None  # checkpoint.auto_resume=false: no retry at all


def test_auto_resume_config_keys() -> None:
    cfg = load_config(
        "configs/smoke.yaml",
        ["checkpoint.auto_resume=true", "checkpoint.auto_resume_retries=3", "cluster.placement_timeout_s=5"],
    )
    assert (cfg.checkpoint.auto_resume, cfg.checkpoint.auto_resume_retries) == (True, 3)
    assert cfg.checkpoint.auto_resume_wait_s == 300.0 and cfg.cluster.placement_timeout_s == 5.0
    assert load_config("configs/smoke.yaml", []).checkpoint.auto_resume is False


def test_nodes_lost_prometheus_counter_follows_metrics_jsonl() -> None:
    from openrs_ray.ops.metrics import RunMetrics
    from tests.unit.test_step_record import _rl_record

    metrics = RunMetrics(None)
    for lost, restarts in ((0, 0), (1, 1), (1, 1), (2, 3)):  # cumulative values, one step each
        record = _rl_record()
        record.flow.nodes_lost, record.flow.generator_restarts = lost, restarts
        metrics.observe(record, [], 0)
    value = metrics.registry.get_sample_value
    assert value("openrs_nodes_lost_total") == 2.0
    assert value("openrs_actor_restarts_total", {"role": "generator"}) == 3.0
