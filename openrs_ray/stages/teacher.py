"""Sequence-level KD, first half: the teacher writes solutions and the verifier pool keeps the correct ones.

    problems → generators (serving the teacher) → verifier pool → solutions.jsonl → (SFT of the student)

The file is written once per run folder and marked complete by kd_seq.json (written last, atomically), so
a resumed stage never asks the teacher again and never trains on half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from openrs_ray.config import DataConfig, RewardSpec, RunConfig
from openrs_ray.data.sources import PromptSource
from openrs_ray.flow import GenerateScore
from openrs_ray.generators.group import GeneratorGroup
from openrs_ray.rewards.pool import VerifierPool
from openrs_ray.types import Prompt, ScoredGroup

SOLUTIONS, STATS = "solutions.jsonl", "kd_seq.json"


def teacher_config(cfg: RunConfig, num_generations: int | None = None) -> RunConfig:
    """The run's config with the teacher as the model (engines serving it), scored on accuracy alone."""
    tcfg = cfg.model_copy(deep=True)
    tcfg.model = cfg.kd.teacher.model_copy()
    if num_generations is not None:
        tcfg.generation.num_generations = max(2, num_generations)
    tcfg.rewards.functions = [RewardSpec(name="accuracy")]
    return tcfg


def student_data(cfg: RunConfig) -> DataConfig:
    """The SFT data of the student: the kept solutions, as chat messages (system prompt included)."""
    assert cfg.data is not None
    return DataConfig(
        path=str(Path(cfg.output_dir) / "kd_seq" / SOLUTIONS), messages_key="messages", answer_key="answer",
        system_prompt=None, shuffle=cfg.data.shuffle, seed=cfg.data.seed,
    )  # fmt: skip


def _kept(group: ScoredGroup, keep: int) -> list[str]:
    """Distinct verifier-correct, finished solutions, in sampling order, at most `keep`."""
    out: list[str] = []
    for r, acc in zip(group.rollouts, group.components.get("accuracy", []), strict=False):
        if acc >= 1.0 and r.finish_reason == "stop" and r.completion_text not in out and not group.dropped:
            out.append(r.completion_text)
    return out[:keep]


def write_teacher_solutions(cfg: RunConfig, tokenizer: Any) -> dict[str, Any]:
    """Ask the teacher for kd.num_solutions solutions per problem; keep the correct ones. Idempotent."""
    folder = Path(cfg.output_dir) / "kd_seq"
    if (folder / STATS).is_file():
        return json.loads((folder / STATS).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    assert cfg.data is not None
    tcfg = teacher_config(cfg, cfg.kd.num_solutions)
    source = PromptSource(cfg.data, tokenizer, cfg.generation.max_prompt_length)
    target = min(cfg.kd.max_problems or len(source.rows), len(source.rows))
    generators, verifiers = GeneratorGroup(tcfg), VerifierPool(tcfg)
    stats = {"problems": 0, "sampled": 0, "correct": 0, "kept": 0, "problems_kept": 0}
    flow = GenerateScore(generators, verifiers)
    try:
        generators.wait_ready()
        chunk = 8 * len(generators.engines)
        with (folder / f"{SOLUTIONS}.tmp").open("w") as f:
            while stats["problems"] < target and source.epoch == 0:
                batch = source.next_batch(min(chunk, target - stats["problems"]))
                groups = flow.scored(batch, cfg.rewards.timeout_s)
                for prompt, group in zip(batch, groups, strict=True):
                    kept = _kept(group, cfg.kd.keep_per_problem)
                    for text in kept:
                        f.write(json.dumps(_row(cfg, source, prompt, text)) + "\n")
                    stats["sampled"] += len(group.rollouts)
                    stats["correct"] += int(sum(group.components.get("accuracy", [])))
                    stats["kept"] += len(kept)
                    stats["problems_kept"] += int(bool(kept))
                stats["problems"] += len(batch)
    finally:
        generators.shutdown()
        verifiers.shutdown()
    if not stats["kept"]:
        raise RuntimeError(f"kd_seq: the teacher solved none of {stats['problems']} problems; nothing to train on")
    os.replace(folder / f"{SOLUTIONS}.tmp", folder / SOLUTIONS)
    tmp = folder / f"{STATS}.tmp"
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, folder / STATS)  # last: marks the solutions complete
    return stats


def _row(cfg: RunConfig, source: PromptSource, prompt: Prompt, solution: str) -> dict[str, Any]:
    row = source.rows[int(prompt.uid.rsplit(":", 1)[1])]
    messages = [{"role": "user", "content": str(row[source.prompt_key])}, {"role": "assistant", "content": solution}]
    if cfg.data is not None and cfg.data.system_prompt:
        messages.insert(0, {"role": "system", "content": cfg.data.system_prompt})
    return {"messages": messages, "answer": prompt.answer, "uid": prompt.uid}
