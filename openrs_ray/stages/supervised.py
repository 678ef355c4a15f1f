"""SupervisedTrainer: the SFT and knowledge-distillation stages, on the same learner actors as GRPO.

    sft       (prompt, reference response) pairs                      → learners (token NLL)
    kd_seq    problems → teacher engines → verifier pool → kept solutions → learners (token NLL)
    kd_token  pairs → teacher top-k logprobs (teacher engines, or a teacher on each learner) → learners (KL)

It has the Orchestrator's surface (setup / step / save / shutdown / step_idx), so `train`, checkpoints,
exact resume, metrics and the pipeline treat every stage alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from openrs_ray.config import RunConfig
from openrs_ray.data.pairs import PairSource
from openrs_ray.generators.group import GeneratorGroup
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.ops.cost import CostMeter
from openrs_ray.records.checkpoint import checkpoint_dir, prune, read_state, write_state
from openrs_ray.step_record import StepRecord, SupervisedCounters
from openrs_ray.types import Prompt, TrainBatch


class SupervisedTrainer:
    """Drives one supervised stage (cfg.stage in sft, kd_seq, kd_token) step by step."""

    def __init__(self, cfg: RunConfig) -> None:
        if cfg.stage == "rl":
            raise ValueError("SupervisedTrainer runs sft, kd_seq and kd_token; rl runs on the Orchestrator")
        self.cfg = cfg
        self.step_idx = 0
        self.started: list[Any] = []
        self.teacher: GeneratorGroup | None = None  # engines serving the teacher (kd_token from vLLM)
        self.kd_seq_stats: dict[str, Any] | None = None
        self.students: GeneratorGroup | None = None  # engines serving the student, for evaluations only

    def setup(self, resume: Path | None = None) -> None:
        """Start the learners (and teacher engines); for kd_seq first have the teacher write solutions."""
        from transformers import AutoTokenizer

        from openrs_ray.stages import teacher

        cfg = self.cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        data = cfg.data
        if cfg.stage == "kd_seq":  # the teacher's pass is resumable by itself (kd_seq.json marks it done)
            self.kd_seq_stats = teacher.write_teacher_solutions(cfg, self.tokenizer)
            data = teacher.student_data(cfg)
        gen = cfg.generation
        self.source = PairSource(data, self.tokenizer, gen.max_prompt_length, gen.max_completion_length)
        self.learners = self._start(LearnerGroup(cfg))
        if cfg.stage == "kd_token" and cfg.kd.teacher_source == "vllm":
            tcfg = teacher.teacher_config(cfg)
            # A teacher scores prompt + response in one pass and must still fit one sampled token after it.
            tcfg.generation.max_completion_length += 1
            self.teacher = self._start(GeneratorGroup(tcfg))
            self.teacher.wait_ready()
            self._check_vocab(tcfg)
        self.learners.wait_ready()
        if resume:
            state, _, _ = read_state(resume)
            self.learners.load(str(resume / "policy" / "deepspeed"))
            self.source.load_state(state["data"])
            self.step_idx = state["step"]
        self.cost = CostMeter(cfg)

    def _check_vocab(self, tcfg: RunConfig) -> None:
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(tcfg.model.path, trust_remote_code=tcfg.model.trust_remote_code)
        if t.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                f"kd.teacher: {tcfg.model.path} has a different tokenizer from the student {self.cfg.model.path}; "
                "token-level KD compares distributions token by token (use kd_seq across tokenizers)"
            )

    def placement(self) -> dict[str, list[dict]]:
        """Node and GPU of every learner rank (and teacher engine)."""
        out = {"learners": self.learners.placement()}
        return out if self.teacher is None else {**out, "teacher": self.teacher.placement()}

    def _start(self, component: Any) -> Any:
        self.started.append(component)
        return component

    def batch(self, prompts: list[Prompt]) -> TrainBatch:
        """Rows of (prompt, reference + EOS), with the teacher's top-k per token for kd_token from vLLM."""
        completions = [self.source.response_ids(p.reference) for p in prompts]
        n = len(prompts)
        batch = TrainBatch(
            [p.token_ids for p in prompts], completions, [0.0] * n, [[] for _ in range(n)], [0] * n, [1.0] * n
        )
        if self.teacher is not None:
            rows = [p.token_ids + c for p, c in zip(prompts, completions, strict=True)]
            topk = self.teacher.topk_logprobs(rows, [len(p.token_ids) for p in prompts], self.cfg.kd.top_k)
            batch.teacher_ids = [ids for ids, _ in topk]
            batch.teacher_logprobs = [lps for _, lps in topk]
        return batch

    def step(self) -> StepRecord:
        """One optimizer step over prompts_per_step pairs; returns the step's record."""
        t0 = time.perf_counter()
        prompts = self.source.next_batch(self.cfg.prompts_per_step)
        batch = self.batch(prompts)
        t_teacher = time.perf_counter() - t0
        learn = self.learners.update(batch)
        self.step_idx += 1
        self.cost.tick(len(self.teacher.engines) if self.teacher else 0)
        src = self.source
        return StepRecord(
            step=self.step_idx, prompt_uids=[p.uid for p in prompts], learner=learn, stage=self.cfg.stage,
            phases={"teacher": t_teacher, "step": time.perf_counter() - t0}, cost=self.cost.summary(),
            supervised=SupervisedCounters(src.epoch, src.dropped_too_long, src.dropped_malformed),
        )  # fmt: skip

    def eval_targets(self) -> tuple[GeneratorGroup, Any]:
        """Student engines with the current weights, and a verifier pool; started at the first evaluation."""
        from openrs_ray.broadcast.object_store import ObjectStoreBroadcast
        from openrs_ray.rewards.pool import VerifierPool

        if self.students is None:
            self.students = self._start(GeneratorGroup(self.cfg))
            self.verifiers = self._start(VerifierPool(self.cfg))
            self.students.wait_ready()
            self.broadcast = ObjectStoreBroadcast(self.learners, self.students, self.step_idx)
        if self.step_idx > 0:  # step 0 is the checkpoint the engines loaded
            self.broadcast.publish()
        return self.students, self.verifiers

    def save(self, line: dict[str, Any] | None = None) -> Path:
        """Checkpoint after the current step: HF + DeepSpeed state, the data cursor and the step's metrics line."""
        path = checkpoint_dir(self.cfg.output_dir, self.step_idx)
        self.learners.save(str(path / "policy"))
        state = self.source.state()
        write_state(path, step=self.step_idx, version=self.step_idx, data=state, in_flight=[], buffered=[], line=line)
        prune(self.cfg.output_dir, self.cfg.checkpoint.keep_last)
        return path

    def shutdown(self) -> None:
        """Stop the learners and teacher engines this trainer started."""
        for component in reversed(self.started):
            component.shutdown()
        self.started.clear()
