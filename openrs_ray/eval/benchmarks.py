"""Evaluation benchmarks by name: their hub dataset, their local copies, and how to read problem and gold answer.

The hub datasets are the ones Open-RS evaluated on (their lighteval tasks in src/open_r1/evaluate.py), plus
GSM8K. A local copy is used before the hub: first in `eval.data_dir` when set, then the copies shipped in
this package (openrs_ray/eval/data: aime24, math500, gsm8k, MIT-licensed), so evaluation runs offline. Any
other .json/.jsonl/.parquet path (.gz too) is a benchmark of its own, named after the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openrs_ray.config import ConfigError, DataConfig
from openrs_ray.config.paths import COMPRESSIONS, LOCAL_FORMATS, hub_problem, local_format
from openrs_ray.data.sources import ANSWER_KEYS, PROMPT_KEYS, DataError, gold_answer, load_rows

if TYPE_CHECKING:
    from openrs_ray.config import EvalConfig

LOCAL_SUFFIXES = tuple(LOCAL_FORMATS)
SHIPPED_DATA = Path(__file__).parent / "data"  # package data: the benchmark copies a clone evaluates offline


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a named benchmark lives on the hub and which columns hold problem and gold answer."""

    hub_id: str
    split: str
    problem_key: str
    answer_key: str  # a worked solution is fine: the gold is its last \boxed{} (Minerva)
    config: str | None = None
    local_files: tuple[str, ...] = ()  # file names looked for in data_dir, besides NAME.json/.jsonl/.parquet


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "aime24": BenchmarkSpec("HuggingFaceH4/aime_2024", "train", "problem", "answer", local_files=("aime24.json",)),
    "math500": BenchmarkSpec("HuggingFaceH4/MATH-500", "test", "problem", "answer", local_files=("math500.json",)),
    "amc23": BenchmarkSpec("knoveleng/AMC-23", "train", "problem", "answer"),
    "minerva": BenchmarkSpec("knoveleng/Minerva-Math", "train", "problem", "solution"),
    "olympiadbench": BenchmarkSpec("knoveleng/OlympiadBench", "train", "question", "answer"),
    "gsm8k": BenchmarkSpec(
        "openai/gsm8k", "test", "question", "answer", config="main", local_files=("gsm8k_test.jsonl",)
    ),
}


@dataclass(frozen=True)
class Problem:
    """One benchmark problem with its gold answer (already extracted: no '####', no \\boxed{})."""

    uid: str  # "<benchmark>:<row>"
    problem: str
    answer: str


@dataclass
class Benchmark:
    """A loaded benchmark: its report name, where it came from, and its problems in file order."""

    name: str
    source: str  # the local file read, or the hub id
    problems: list[Problem]


def is_file_ref(ref: str) -> bool:
    """Whether a benchmark entry names a local file rather than a known benchmark."""
    return local_format(ref) is not None


def benchmark_name(ref: str) -> str:
    """The name a benchmark entry reports under: the canonical name (aime24, math500, ...) or the file's stem."""
    if is_file_ref(ref):
        name = Path(ref).name
        for comp in COMPRESSIONS:
            name = name.removesuffix(comp)
        return Path(name).stem
    return re.sub(r"[-_\s]", "", ref.lower())


def check_benchmark_names(refs: list[str]) -> None:
    """ConfigError for an eval.benchmarks entry that is neither a known benchmark nor a local file (pre-flight)."""
    for ref in refs:
        if not is_file_ref(ref) and benchmark_name(ref) not in BENCHMARKS:
            known = f"{', '.join(BENCHMARKS)}, or a {'/'.join(LOCAL_SUFFIXES)} file"
            raise ConfigError(f"eval.benchmarks: unknown benchmark {ref!r}; known: {known}")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text` (nested braces matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: let the verifier judge the whole text


def gold_text(raw: Any) -> str:
    """The gold answer of a row: GSM8K's '#### N' and a solution's last \\boxed{} reduced to the answer."""
    if isinstance(raw, list | tuple):  # answer lists (several final answers) are compared as a tuple
        raw = ", ".join(str(x) for x in raw)
    text = gold_answer(raw)
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def search_dirs(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for local copies, in order: data_dir (when given), then the shipped copies."""
    return ([Path(data_dir).expanduser()] if data_dir is not None else []) + [SHIPPED_DATA]


def local_names(name: str) -> list[str]:
    """File names a local copy of a named benchmark may have (each also gzip-compressed)."""
    files = (*BENCHMARKS[name].local_files, *(name + suffix for suffix in LOCAL_SUFFIXES))
    return [f + comp for f in files for comp in ("", *COMPRESSIONS)]


def find_local(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The local copy of a named benchmark in data_dir or among the shipped copies, if there is one."""
    for folder in search_dirs(data_dir):
        for file in local_names(name):
            if (folder / file).is_file():
                return folder / file
    return None


def _hub_rows(name: str, spec: BenchmarkSpec, max_problems: int | None, data_dir: str | Path | None) -> list[dict]:
    from datasets import load_dataset

    looked = f"no local copy ({'/'.join(local_names(name)[:2])}, ...) in {', '.join(map(str, search_dirs(data_dir)))}"
    problem = hub_problem(spec.hub_id, "dataset")
    if problem is None:
        try:
            ds = load_dataset(spec.hub_id, spec.config, split=spec.split)
        except Exception as err:  # offline, renamed or gated: one line naming the way out
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    if problem is not None:
        raise DataError(
            f"eval.benchmarks: cannot load {name}: {looked} (set eval.data_dir to a folder with one), and the hub "
            f"({spec.hub_id}) cannot serve it: {problem}"
        ) from None
    if max_problems is not None:
        ds = ds.select(range(min(max_problems, len(ds))))
    return ds.to_list()


def _column(name: str, row: dict[str, Any], first: str | None, fallback: tuple[str, ...], what: str) -> str:
    keys = tuple(dict.fromkeys((first, *fallback) if first else fallback))
    for key in keys:
        if key in row:
            return key
    raise DataError(f"eval.benchmarks: {name} has no {what} column (none of {list(keys)} in {sorted(row)})")


def load_benchmark(ref: str, data_dir: str | Path | None = None, max_problems: int | None = None) -> Benchmark:
    """Problems of a benchmark entry: a local file, a named benchmark's local copy (data_dir, then the
    shipped copies), or the hub."""
    name = benchmark_name(ref)
    spec: BenchmarkSpec | None = None
    if is_file_ref(ref):
        path: Path | None = Path(ref).expanduser()
        if not path.is_file():
            raise ConfigError(f"eval.benchmarks: file not found: {path}")
    else:
        check_benchmark_names([ref])
        spec = BENCHMARKS[name]
        path = find_local(name, data_dir)
    if path is not None:
        rows, source = load_rows(DataConfig(path=str(path), max_samples=max_problems)), str(path)
    else:
        assert spec is not None
        rows, source = _hub_rows(name, spec, max_problems, data_dir), spec.hub_id
    if not rows:
        raise DataError(f"eval.benchmarks: {name} ({source}) has no problems")
    problem_key = _column(name, rows[0], spec and spec.problem_key, PROMPT_KEYS, "problem")
    answer_key = _column(name, rows[0], spec and spec.answer_key, ANSWER_KEYS, "answer")
    problems = [Problem(f"{name}:{i}", str(row[problem_key]), gold_text(row[answer_key])) for i, row in enumerate(rows)]
    return Benchmark(name, source, problems)


def load_benchmarks(ec: EvalConfig) -> list[Benchmark]:
    """Every benchmark of eval.benchmarks, in order (eval.max_problems each)."""
    if not ec.benchmarks:
        raise ConfigError("eval.benchmarks: nothing to evaluate (e.g. eval.benchmarks=[math500,aime24])")
    benchmarks = [load_benchmark(ref, ec.data_dir, ec.max_problems) for ref in ec.benchmarks]
    names = [b.name for b in benchmarks]
    if len(set(names)) < len(names):
        raise ConfigError(f"eval.benchmarks: two entries report under the same name ({names})")
    return benchmarks
