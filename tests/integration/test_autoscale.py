"""generation.autoscale on real actors (min 1, max 3 engines): a generation-bound workload grows the engine
count (to 2 at least: on 2 shared cores a third engine may rightly be undone as no gain), then a
verification-bound one (a user reward that sleeps once a flag file exists) leaves the engines idle and
shrinks it; every prompt is trained exactly once throughout.

One orchestrator serves both workloads so the engines, learner and verifiers start once.
"""

from __future__ import annotations

from pathlib import Path

from openrs_ray.config import load_config
from openrs_ray.config.sections import RewardSpec
from openrs_ray.data.sources import PromptSource
from openrs_ray.stages.orchestrator import Orchestrator
from tests.conftest import REPO

MAX_STEPS = 40  # per workload; steps go on while a new engine starts (20-60 s here)

SLOW_REWARD = '''
import time
from pathlib import Path

FLAG = Path({flag!r})


def slow(prompts, completions, **kwargs):
    """Zero reward; sleeps while the flag file exists (the verification-bound workload)."""
    if FLAG.exists():
        time.sleep(float(FLAG.read_text()))
    return [0.0 for _ in completions]
'''


def _prompt_order(orch: Orchestrator, steps: int) -> list[str]:
    """The uids a fresh prompt source hands out over `steps` steps (epochs wrap in the same order)."""
    cfg, gen = orch.cfg, orch.cfg.generation
    context = gen.max_prompt_length + gen.max_completion_length
    source = PromptSource(cfg.data, orch.tokenizer, gen.max_prompt_length, context, True)
    return [p.uid for _ in range(steps) for p in source.next_batch(cfg.prompts_per_step)]


def _until(orch: Orchestrator, seen: list[dict], done, limit: int) -> None:
    while len(seen) < limit and not done(seen[-1] if seen else None):
        seen.append(orch.step())


def test_autoscale_grows_then_shrinks(ray_local: None, tiny_model: Path, tmp_path: Path) -> None:
    flag = tmp_path / "slow"
    reward = tmp_path / "slow_reward.py"
    reward.write_text(SLOW_REWARD.format(flag=str(flag)))
    cfg = load_config(REPO / "configs/smoke.yaml", [
        f"model.path={tiny_model}", f"output_dir={tmp_path / 'run'}", "metrics.progress_bar=false",
        f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}", "generation.max_completion_length=128",
        "generation.num_generations=8", "generation.autoscale.enabled=true", "generation.autoscale.min_engines=1",
        "generation.autoscale.max_engines=3", "generation.autoscale.cooldown_steps=1",
        "generation.autoscale.window_steps=1",
    ])  # fmt: skip
    cfg.rewards.functions = [*cfg.rewards.functions, RewardSpec(name="slow", function=f"{reward}:slow")]
    orch = Orchestrator(cfg)
    seen: list[dict] = []
    try:
        orch.setup()
        # Generation-bound: 8 completions x 128 tokens per prompt, learners wait on the engines.
        _until(orch, seen, lambda m: m is not None and m["num_engines"] == 2, MAX_STEPS)
        grown = len(seen)
        assert seen[-1]["num_engines"] == 2, [(m["num_engines"], m["generator_scale_reason"]) for m in seen]
        # Verification-bound: 1.5 s per completion scored; the engines sit idle most of the step.
        flag.write_text("1.5")
        _until(orch, seen, lambda m: m["num_engines"] == 1 and len(seen) > grown, grown + MAX_STEPS)
        expected = _prompt_order(orch, len(seen))
    finally:
        orch.shutdown()
    trace = [(m["num_engines"], m["generator_target"], m["generator_scale_reason"]) for m in seen]
    assert seen[-1]["num_engines"] == 1, trace
    reasons = [m["generator_scale_reason"] for m in seen]
    assert "grow_learners_waiting" in reasons[:grown] and "shrink_engines_idle" in reasons[grown:], trace
    assert all(1 <= m["generator_target"] <= 3 for m in seen), trace
    # Neither workload lost or repeated a prompt: every step trained its 2 prompts, in the data's order.
    assert all(m["groups_trained"] == 2 for m in seen), trace
    assert [u for m in seen for u in m["prompt_uids"]] == expected
    print("autoscale trace (engines serving, target, reason):", trace)
