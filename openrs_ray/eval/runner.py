"""Evaluation on the run's own actors: the GeneratorGroup samples, the VerifierPool judges (accuracy only).

Evaluator   one evaluation of whatever weights the engines serve: every benchmark, num_samples per problem,
            metrics per benchmark and averaged, written to OUTPUT_DIR/eval/{step-N,final}.{json,md}.
BestTracker the best evaluation by eval.metric_for_best, with its step and checkpoint, in eval/best.json.
EvalHook    what a training loop calls: due(step) and run(step, generators, verifiers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from openrs_ray.config import ConfigError, RunConfig
from openrs_ray.eval.benchmarks import Benchmark, load_benchmarks
from openrs_ray.eval.metrics import average_metrics, benchmark_metrics
from openrs_ray.eval.report import write_report
from openrs_ray.flow import GenerateScore
from openrs_ray.types import Prompt, ScoredGroup


def engine_context(cfg: RunConfig) -> int:
    """Tokens (prompt + completion) one engine holds: its vLLM max_model_len."""
    return cfg.generation.max_prompt_length + cfg.generation.max_completion_length


@dataclass
class _Outcome:
    """One problem's samples, as judged."""

    correct: list[float]
    tokens: list[int] = field(default_factory=list)
    truncated: int = 0
    too_long: bool = False
    unscored: bool = False  # gold unparsable: left out of the metrics
    verify_errors: int = 0
    verify_timeouts: int = 0
    completions: list[str] = field(default_factory=list)


class Evaluator:
    """Evaluates the weights the generator engines serve on eval.benchmarks (loaded once, at construction)."""

    def __init__(
        self,
        cfg: RunConfig,
        tokenizer: Any,
        out_dir: str | Path | None = None,
        benchmarks: list[Benchmark] | None = None,
    ) -> None:
        self.cfg, self.ec, self.tokenizer = cfg, cfg.eval, tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else Path(cfg.output_dir) / "eval"
        self.benchmarks = benchmarks if benchmarks is not None else load_benchmarks(cfg.eval)
        self.prompts = {b.name: [self._prompt(p.uid, p.problem, p.answer) for p in b.problems] for b in self.benchmarks}

    def render(self, problem: str) -> str:
        """The chat-templated prompt of a problem: eval.prompt_template as the user message."""
        messages = [{"role": "user", "content": self.ec.prompt_template.replace("{problem}", problem)}]
        if self.ec.system_prompt:
            messages.insert(0, {"role": "system", "content": self.ec.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _prompt(self, uid: str, problem: str, answer: str) -> Prompt:
        text = self.render(problem)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Prompt(uid=f"eval/{uid}", text=text, token_ids=ids, answer=answer)

    @property
    def longest_prompt(self) -> int:
        """Tokens of the longest rendered prompt (standalone evaluation sizes the engines by it)."""
        return max(len(p.token_ids) for prompts in self.prompts.values() for p in prompts)

    def sampling(self) -> dict[str, Any]:
        """The per-call sampling overrides of evaluation (GeneratorGroup.submit(..., sampling))."""
        ec = self.ec
        out = {"n": ec.num_samples, "temperature": ec.temperature, "top_p": ec.top_p, "max_tokens": ec.max_new_tokens}
        return out if ec.seed is None else {**out, "seed": ec.seed}

    def run(self, generators: Any, verifiers: Any, step: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Evaluate, write eval/step-N (or eval/final) .json and .md, and return the results.

        `generators` is a GeneratorGroup, `verifiers` a VerifierPool. `progress`: a rich Progress already on screen
        (the training bar) to add the evaluation's task to; None shows one of its own (metrics.progress_bar).
        """
        t0 = time.perf_counter()
        context = engine_context(generators.cfg)
        prompts = [p for ps in self.prompts.values() for p in ps]
        k = self.ec.num_samples
        todo = [p for p in prompts if len(p.token_ids) < context]  # vLLM refuses a prompt that fills the context
        # Until its scores arrive a problem counts as wrong: too long for the engines, or late from the verifiers.
        outcomes = {p.uid: _Outcome([0.0] * k, too_long=True) for p in prompts}
        outcomes.update({p.uid: _Outcome([0.0] * k, verify_timeouts=k) for p in todo})
        versions: set[int] = set()
        with self._bar(progress, len(prompts), step) as advance:
            advance(len(prompts) - len(todo))
            for group in self._generate_and_score(todo, generators, verifiers, advance):
                outcomes[group.prompt.uid] = self._judge(group)
                versions.update(r.weight_version for r in group.rollouts)
        results = self._results(outcomes, step, sorted(versions), time.perf_counter() - t0)
        samples = self._samples(outcomes) if self.ec.save_samples else None
        json_path = write_report(results, self.out_dir, "final" if step is None else f"step-{step}", samples)
        results["path"] = str(json_path)
        return results

    @contextmanager
    def _bar(self, progress: Any, total: int, step: int | None) -> Iterator[Callable[[int], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        label = "eval" if step is None else f"eval step {step}"
        if progress is not None:
            task = progress.add_task(label, total=total, info=label)
            try:
                yield lambda n: progress.update(task, advance=n)
            finally:
                progress.remove_task(task)
            return
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not self.cfg.metrics.progress_bar) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.update(task, advance=n)

    def _generate_and_score(
        self, todo: list[Prompt], generators: Any, verifiers: Any, advance: Callable[[int], None]
    ) -> Iterator[ScoredGroup]:
        """Scored groups as they finish. Two chunks per engine stay in flight, so no engine idles before the end;
        each chunk goes to the verifier pool as soon as it is generated."""
        size = self.ec.chunk_size
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        scoring: list[ray.ObjectRef] = []
        for refs in GenerateScore(generators, verifiers).stream(chunks, per_engine=2, sampling=self.sampling()):
            scoring += refs
            done, scoring = ray.wait(scoring, num_returns=len(scoring), timeout=0)
            yield from self._fetch(done, advance)
        deadline = time.monotonic() + self.ec.timeout_s
        while scoring and time.monotonic() < deadline:
            done, scoring = ray.wait(scoring, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            yield from self._fetch(done, advance)
        # Groups still unscored past the deadline keep their placeholder: wrong, and counted as timeouts.

    def _fetch(self, refs: list[ray.ObjectRef], advance: Callable[[int], None]) -> Iterator[ScoredGroup]:
        for group in ray.get(refs):
            advance(1)
            yield group

    def _judge(self, group: ScoredGroup) -> _Outcome:
        """Correctness per sample (the verifier's accuracy component), with what else the report counts."""
        rollouts = group.rollouts
        correct = [0.0] * len(rollouts) if group.dropped else [float(a == 1.0) for a in group.components["accuracy"]]
        return _Outcome(
            correct,
            tokens=[len(r.completion_ids) for r in rollouts],
            truncated=sum(r.finish_reason == "length" for r in rollouts),
            unscored=group.dropped,
            verify_errors=group.verify_errors,
            verify_timeouts=group.verify_timeouts,
            completions=[r.completion_text for r in rollouts] if self.ec.save_samples else [],
        )

    def _results(self, outcomes: dict[str, _Outcome], step: int | None, versions: list[int], seconds: float) -> dict:
        ec = self.ec
        results: dict[str, Any] = {
            "step": step,
            "model": self.cfg.model.path,
            "weight_versions": versions,
            "time_s": round(seconds, 3),
            "settings": {
                "benchmarks": ec.benchmarks, "num_samples": ec.num_samples, "pass_k": ec.ks,
                "temperature": ec.temperature, "top_p": ec.top_p, "max_new_tokens": ec.max_new_tokens,
                "seed": ec.seed, "prompt_template": ec.prompt_template, "system_prompt": ec.system_prompt,
            },
            "benchmarks": {},
            "average": {},
            "problems": {},  # per problem: gold answer and the correctness of each sample, in sampling order
        }  # fmt: skip
        for b in self.benchmarks:
            rows = [(p, outcomes[f"eval/{p.uid}"]) for p in b.problems]
            results["benchmarks"][b.name] = self._table(b, [o for _, o in rows])
            results["problems"][b.name] = [
                {"uid": p.uid, "answer": p.answer, "correct": o.correct, "tokens": o.tokens}
                | ({"too_long": True} if o.too_long else {})
                | ({"unscored": True} if o.unscored else {})
                for p, o in rows
            ]
        k = ec.num_samples
        keys = ["pass@1", f"avg@{k}", f"avg@{k}_stderr", *(f"pass@{j}" for j in ec.ks)]
        tables = {name: {key: t[key] for key in keys} for name, t in results["benchmarks"].items() if "pass@1" in t}
        if tables:
            results["average"] = average_metrics(tables)
        if step is None:  # `openrs-ray eval`: where the model came from, and this evaluation's own record
            from openrs_ray.records.provenance import checkpoint_provenance, record

            results["provenance"] = {
                "checkpoint": checkpoint_provenance(self.cfg.model.path),
                "evaluation": record(self.cfg) | {"benchmark_sources": {b.name: b.source for b in self.benchmarks}},
            }
        return results

    def _table(self, benchmark: Benchmark, outcomes: list[_Outcome]) -> dict[str, Any]:
        """One benchmark's metrics (over the problems with a parsable gold) and counters."""
        scored = [o.correct for o in outcomes if not o.unscored]
        tokens = [t for o in outcomes for t in o.tokens]
        return {
            "source": benchmark.source,
            "problems": len(outcomes),
            **(benchmark_metrics(scored, self.ec.num_samples, self.ec.ks) if scored else {}),
            "truncated_ratio": sum(o.truncated for o in outcomes) / max(1, len(tokens)),
            "completion_tokens_mean": sum(tokens) / max(1, len(tokens)),
            **{key: sum(int(getattr(o, key)) for o in outcomes) for key in _COUNTERS},
        }

    def _samples(self, outcomes: dict[str, _Outcome]) -> list[dict]:
        """Every completion with its correctness, one line per problem (eval.save_samples)."""
        return [
            {"uid": p.uid, "answer": p.answer, "prompt": p.text, "completions": o.completions, "correct": o.correct}
            for prompts in self.prompts.values()
            for p in prompts
            for o in [outcomes[p.uid]]
        ]


_COUNTERS = ("too_long", "unscored", "verify_errors", "verify_timeouts")


class BestTracker:
    """The best evaluation so far by eval.metric_for_best (higher is better; a tie keeps the earlier step).

    Kept in EVAL_DIR/best.json with the history of scores, and read back from there, so a resumed run keeps it.
    """

    def __init__(self, cfg: RunConfig, eval_dir: str | Path) -> None:
        self.path = Path(eval_dir) / "best.json"
        self.benchmark, self.key = cfg.eval.best_key
        self.state: dict[str, Any] = {"metric": cfg.eval.metric_for_best, "key": self.key, "best": None, "history": []}
        if self.path.is_file():
            self.state = json.loads(self.path.read_text())

    @property
    def best(self) -> dict[str, Any] | None:
        """{"step", "score", "checkpoint"} of the best evaluation, or None before the first."""
        return self.state["best"]

    def score(self, results: dict[str, Any]) -> float:
        """The tracked metric in one evaluation's results."""
        table = results["average"] if self.benchmark is None else results["benchmarks"].get(self.benchmark)
        if table is None or table.get(self.key) is None:
            where = "the average" if self.benchmark is None else f"benchmark {self.benchmark!r}"
            raise ConfigError(f"eval.metric_for_best: no {self.key} for {where} in the evaluation results")
        return float(table[self.key])

    def update(self, step: int, results: dict[str, Any], checkpoint: str | None) -> bool:
        """Record one evaluation; True when it is the new best."""
        entry = {"step": step, "score": self.score(results), "checkpoint": checkpoint}
        # A resumed run evaluates a step again: the new entry replaces the old one.
        history = [h for h in self.state["history"] if h["step"] != step] + [entry]
        self.state["history"] = sorted(history, key=lambda h: h["step"])
        best = max(self.state["history"], key=lambda h: (h["score"], -h["step"]))
        self.state["best"] = best
        tmp = self.path.with_name("best.json.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.path)
        return best is entry


class EvalHook:
    """Evaluation inside a training run: before step 1 (step 0), every eval.eval_steps, and after the last step."""

    def __init__(self, cfg: RunConfig, run_path: str | Path, tokenizer: Any) -> None:
        self.cfg, self.run_path = cfg, Path(run_path)
        self.enabled = cfg.eval.eval_steps > 0 and bool(cfg.eval.benchmarks)
        self.evaluator = Evaluator(cfg, tokenizer, self.run_path / "eval") if self.enabled else None
        self.best = BestTracker(cfg, self.run_path / "eval")
        bench = self.best.benchmark
        if self.evaluator is not None and bench is not None and bench not in self.evaluator.prompts:
            raise ConfigError(f"eval.metric_for_best: no benchmark {bench!r} among {list(self.evaluator.prompts)}")

    def due(self, step: int) -> bool:
        """Whether to evaluate after `step` optimizer steps (0: the starting weights)."""
        every = self.cfg.eval.eval_steps
        return self.enabled and (step == 0 or step % every == 0 or step == self.cfg.max_steps)

    def run(
        self, step: int, generators: Any, verifiers: Any, checkpoint: str | Path | None = None, progress: Any = None
    ) -> dict[str, Any]:
        """Evaluate the weights the engines serve after `step`, write eval/step-N.*, update eval/best.json.

        `checkpoint`: where these weights are saved (default: checkpoints/step-N when it exists, the starting
        model at step 0). The results carry "is_best" and "best" ({step, score, checkpoint}).
        """
        assert self.evaluator is not None, "evaluation is off (eval.eval_steps = 0 or no eval.benchmarks)"
        results = self.evaluator.run(generators, verifiers, step=step, progress=progress)
        results["is_best"] = self.best.update(step, results, self._checkpoint(step, checkpoint))
        results["best"] = self.best.best
        return results

    def _checkpoint(self, step: int, given: str | Path | None) -> str | None:
        if given is not None:
            return str(given)
        if step == 0:
            return self.cfg.model.path
        path = self.run_path / "checkpoints" / f"step-{step}"  # openrs_ray.records.checkpoint.checkpoint_dir
        return str(path) if path.is_dir() else None
