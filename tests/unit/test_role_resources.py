"""cluster.role_resources: what each role's actors request, and the pre-flight against role resources and
per-node fit, with hand-computed cluster totals (no Ray)."""

from __future__ import annotations

import pytest

from openrs_ray.cluster import _missing, actor_request, role_resources
from openrs_ray.config import ConfigError, load_config
from tests.conftest import REPO


def _cfg(*overrides: str):
    # smoke: 1 engine (1 CPU), 1 learner (1 CPU), 2 verifiers (0.5 CPU each)
    return load_config(REPO / "configs/smoke.yaml", list(overrides))


ON = "cluster.role_resources=true"
# The multi-node test's layout: head holds the verifiers, one node each for the generator and the learner.
NODES = [{"CPU": 2.0, "verifier": 2.0}, {"CPU": 4.0, "generator": 1.0}, {"CPU": 4.0, "learner": 1.0}]
TOTAL = {"CPU": 10.0, "verifier": 2.0, "generator": 1.0, "learner": 1.0}


def test_roles_request_nothing_extra_by_default() -> None:
    cc = _cfg().cluster
    assert role_resources(cc, "generator") == {}
    assert actor_request(cc, "learner") == {"CPU": 1.0}
    assert actor_request(cc, "verifier") == {"CPU": 0.5}


def test_roles_request_their_resource_with_configured_amounts() -> None:
    cc = _cfg(ON, "cluster.role_resource_amounts={generator: 0.5, verifier: 2}").cluster
    assert role_resources(cc, "generator") == {"generator": 0.5}
    assert role_resources(cc, "learner") == {"learner": 1.0}  # left out: 1
    assert role_resources(cc, "verifier") == {"verifier": 2.0}
    gpu = _cfg(ON, "cluster.use_gpu=true", "cluster.learner_cpus=0").cluster
    assert actor_request(gpu, "learner") == {"GPU": 1.0, "learner": 1.0}  # the placement-group bundle
    assert actor_request(gpu, "verifier") == {"CPU": 0.5, "verifier": 1.0}


@pytest.mark.parametrize("amount", ["0", "1.5", "-1"])
def test_amounts_ray_cannot_take_are_rejected(amount: str) -> None:
    with pytest.raises(ConfigError, match="role_resource_amounts"):
        _cfg(ON, f"cluster.role_resource_amounts={{learner: {amount}}}")


def test_layout_that_fits_passes() -> None:
    assert _missing(_cfg(ON), TOTAL, NODES) is None
    assert _missing(_cfg(), {"CPU": 10.0}, [{"CPU": 10.0}]) is None  # off: no role resource needed


def test_missing_role_resource_is_named_with_amounts() -> None:
    # 2 verifiers x 1 'verifier', but the cluster offers 1 in total.
    assert _missing(_cfg(ON), {**TOTAL, "verifier": 1.0}, NODES) == (
        "cluster.role_resources: needs 2 'verifier' for 2 verifiers x 1 (cluster.role_resource_amounts); "
        "the cluster has 1"
    )
    # An embedded local Ray advertises no role resource at all.
    assert _missing(_cfg(ON), {"CPU": 10.0}, [{"CPU": 10.0}]) == (
        "cluster.role_resources: needs 1 'generator' for 1 engine x 1 (cluster.role_resource_amounts); "
        "the cluster has 0"
    )
    two = _cfg(ON, "generation.num_engines=2", "cluster.role_resource_amounts={generator: 0.5}")
    assert _missing(two, TOTAL, NODES) is None  # 2 x 0.5 on one `generator: 1` node


def test_learner_bundle_must_fit_one_node() -> None:
    # Enough CPUs and 'learner' in total, but the learner node has 0.5 CPU and the CPUs are elsewhere.
    nodes = [{"CPU": 6.0, "verifier": 2.0}, {"CPU": 4.0, "generator": 1.0}, {"CPU": 0.5, "learner": 1.0}]
    assert _missing(_cfg(ON), TOTAL, nodes) == (
        "cluster: one learner bundle needs CPU 1, learner 1 on a single node; the best node offers CPU 0.5, learner 1"
    )
    # Without role resources the same cluster holds a 1-CPU learner anywhere; an 8-CPU one nowhere.
    assert _missing(_cfg(), TOTAL, nodes) is None
    big = _cfg("cluster.learner_cpus=8")
    assert _missing(big, {"CPU": 12.0}, [{"CPU": 6.0}, {"CPU": 6.0}]) == (
        "cluster: one learner bundle needs CPU 8 on a single node; the best node offers CPU 6"
    )


def test_engine_and_verifier_must_fit_one_node() -> None:
    nodes = [{"CPU": 0.25, "verifier": 2.0}, {"CPU": 4.0, "generator": 1.0}, {"CPU": 4.0, "learner": 1.0}]
    assert _missing(_cfg(ON), TOTAL, nodes) == (
        "cluster: one verifier actor needs CPU 0.5, verifier 1 on a single node; the best node offers CPU 0.25, "
        "verifier 2"
    )
