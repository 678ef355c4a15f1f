"""The shipped configs: every YAML under configs/ validates (no actor starts); the recipes say what their papers say.

The Open-RS numbers below are the paper's (arXiv:2503.16219) and its recipe's (knoveleng/open-rs
recipes/grpo.yaml), written out here once more so that an edit of a recipe that drifts from them fails.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from openrs_ray.config import OPEN_RS_SYSTEM_PROMPT, RunConfig, check_paths, load_config
from openrs_ray.run.pipeline import final_model, load_pipeline
from tests.conftest import REPO

CONFIGS = REPO / "configs"
ALL_YAML = sorted(CONFIGS.glob("*.yaml"))
OPEN_RS = {n: CONFIGS / f"open-rs{n}.yaml" for n in (1, 2, 3)}
SRLM_RUNS = {arm: CONFIGS / f"srlm-0.5b-{arm}.yaml" for arm in ("sft", "kd", "kd-token", "rl")}
SRLM_PIPELINES = {arm: CONFIGS / f"srlm-0.5b-{arm}.yaml" for arm in ("sft-rl", "kd-rl")}
EVAL = CONFIGS / "eval-open-rs.yaml"
EVAL_SRLM = CONFIGS / "eval-srlm-gsm8k.yaml"
LORA_RECIPES = [CONFIGS / "srlm-0.5b-sft-lora.yaml", CONFIGS / "open-rs3-lora.yaml"]
# The recipes (every field commented with its source); smoke.yaml is a test fixture, not a recipe.
RECIPES = [*OPEN_RS.values(), CONFIGS / "open-rs3-tokens.yaml", *SRLM_RUNS.values(), *SRLM_PIPELINES.values(), EVAL,
           EVAL_SRLM, *LORA_RECIPES]  # fmt: skip
ENGLISH_ONLY = " Note that respond by English, NOT use other languages."
GSM8K_TRAIN_ROWS = 7473


def _tree(path: Path) -> dict[str, Any]:
    tree = yaml.safe_load(path.read_text())
    assert isinstance(tree, dict), path.name
    return tree


def _is_pipeline(path: Path) -> bool:
    return "stages" in _tree(path)


def _get(cfg: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


def _rewards(cfg: RunConfig) -> list[tuple[str, float]]:
    return [(f.name, f.weight) for f in cfg.rewards.functions]


# ------------------------------------------------------------------------------------------- every config


def test_the_recipes_are_shipped() -> None:
    missing = [p.name for p in RECIPES if not p.is_file()]
    assert not missing, missing
    assert set(RECIPES) <= set(ALL_YAML)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.name)
def test_every_config_validates(path: Path) -> None:
    """RunConfig or pipeline, fully validated by pydantic; nothing is started."""
    if _is_pipeline(path):
        pipe, stages = load_pipeline(path)
        assert [Path(s.output_dir).name for s in stages] == [s.name for s in pipe.stages]
        # Each stage starts from the previous stage's final checkpoint.
        for before, after in zip(stages, stages[1:], strict=False):
            assert after.model.path == str(final_model(Path(before.output_dir), before))
    else:
        load_config(path)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_pass_the_pre_launch_path_check(path: Path) -> None:
    """Hub model and dataset ids, not local paths: `train` would get past check_paths on any machine."""
    cfg = load_pipeline(path)[1][0] if _is_pipeline(path) else load_config(path)
    check_paths(cfg, need_data=cfg.data is not None)
    if path not in (EVAL, EVAL_SRLM):
        assert cfg.data is not None, "a training recipe names its data"


_FIELD = re.compile(r"^(?P<indent>\s*)(?P<item>- )?(?P<key>[\w.]+):(?P<value>.*)$")


def _uncommented_fields(text: str) -> list[str]:
    """Field lines with no source comment: neither on the line nor in the comment block right above it.

    A section header (`learner:`) needs none; a list item may share the comment above its list.
    """
    bad, prev, block_indent = [], "", None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and indent > block_indent:
            continue  # continuation of a block scalar (system_prompt: >-)
        block_indent = None
        stripped = line.strip()
        if stripped.startswith("#"):
            prev = "comment"
            continue
        match = _FIELD.match(line)
        value = match["value"].split(" #")[0].strip() if match else stripped
        is_header = match is not None and value == "" and not match["item"]
        inline = " #" in line
        if value in (">-", ">", "|", "|-"):
            block_indent = indent
        if not (is_header or inline or prev == "comment" or (stripped.startswith("- ") and prev == "item-ok")):
            bad.append(stripped)
        prev = "item-ok" if stripped.startswith("- ") else ("header" if is_header else "field")
    return bad


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_field_cites_its_source(path: Path) -> None:
    assert _uncommented_fields(path.read_text()) == []


def test_the_comment_check_finds_a_bare_field() -> None:
    assert _uncommented_fields("learner:\n  lr: 1.0e-6  # [recipe]\n  beta: 0.04\n") == ["beta: 0.04"]
    assert _uncommented_fields("# why\nrewards:\n  # both\n  - {name: a}\n  - {name: b}\n") == []


# ---------------------------------------------------------------------------------------------- Open-RS

# The settings all three experiments share: [paper] Sec. experimental setup, [recipe] recipes/grpo.yaml,
# [readme] the launch command (accelerate ZeRO-2, 3 training processes on 4 GPUs), [trl] the pinned TRL's
# defaults for what the recipe leaves unset.
OPEN_RS_COMMON: dict[str, Any] = {
    "stage": "rl",
    "model.path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "model.dtype": "bfloat16",
    "seed": 42,
    "max_steps": 500,
    "prompts_per_step": 12,
    "checkpoint.save_steps": 50,
    "data.split": "train",
    "data.prompt_key": "problem",
    "generation.num_engines": 1,
    "generation.num_generations": 6,
    "generation.max_prompt_length": 512,
    "generation.temperature": 0.7,
    "generation.top_p": 1.0,
    "generation.gpu_memory_utilization": 0.7,
    "learner.num_learners": 3,
    "learner.zero_stage": 2,
    "learner.lr": 1e-6,
    "learner.lr_scheduler_type": "cosine_with_min_lr",
    "learner.min_lr_rate": 0.1,
    "learner.warmup_ratio": 0.1,
    "learner.weight_decay": 0.0,
    "learner.max_grad_norm": 1.0,
    "learner.num_iterations": 1,
    "learner.beta": 0.04,
    "learner.epsilon": 0.2,
    "learner.epsilon_high": None,
    "learner.loss_type": "bnpo",
    "learner.micro_batch_size": 6,
    "learner.gradient_checkpointing": True,
    "buffer.max_staleness": 0,
    "buffer.advantage_scale": "group",
    "buffer.dynamic_sampling": False,
    "buffer.overlong": "none",
    "cluster.use_gpu": True,
}
OPEN_RS_EXPERIMENT: dict[int, dict[str, Any]] = {
    1: {"data.path": "knoveleng/open-s1", "generation.max_completion_length": 4096},
    2: {"data.path": "knoveleng/open-rs", "generation.max_completion_length": 3584},
    3: {"data.path": "knoveleng/open-rs", "generation.max_completion_length": 3584, "rewards.cosine_max_len": 3584},
}
OPEN_RS_REWARDS = {
    1: [("format", 1.0), ("accuracy", 2.0)],
    2: [("format", 1.0), ("accuracy", 2.0)],
    3: [("format", 1.0), ("cosine", 2.0)],
}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_open_rs_recipe_matches_the_paper_field_by_field(n: int) -> None:
    cfg = load_config(OPEN_RS[n])
    expected = {**OPEN_RS_COMMON, **OPEN_RS_EXPERIMENT[n]}
    wrong = {key: (_get(cfg, key), want) for key, want in expected.items() if _get(cfg, key) != want}
    assert not wrong, f"open-rs{n}.yaml (got, want): {wrong}"
    assert _rewards(cfg) == OPEN_RS_REWARDS[n]
    assert cfg.rewards.cosine_length_unit == "chars"  # Open-RS's cosine reward measured len(content)
    assert cfg.output_dir == f"runs/open-rs{n}"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_open_rs_batch_is_the_papers(n: int) -> None:
    """6 per device x 3 GPUs x 4 accumulation steps = 72 completions = 12 prompts x 6 per optimizer step."""
    cfg = load_config(OPEN_RS[n])
    assert cfg.rows_per_step == 72
    rows_per_learner = cfg.rows_per_step // cfg.learner.num_learners
    assert rows_per_learner == 24 and rows_per_learner // cfg.learner.micro_batch_size == 4
    # 3 learner GPUs + 1 generator GPU: the paper's 4 A40s.
    assert cfg.learner.num_learners + cfg.generation.num_engines == 4


def test_open_rs_system_prompts() -> None:
    """Exp. 3 adds the English-only sentence; Exp. 1-2 ran without it."""
    assert load_config(OPEN_RS[3]).data.system_prompt == OPEN_RS_SYSTEM_PROMPT
    for n in (1, 2):
        assert OPEN_RS_SYSTEM_PROMPT.endswith(ENGLISH_ONLY)
        assert load_config(OPEN_RS[n]).data.system_prompt == OPEN_RS_SYSTEM_PROMPT.removesuffix(ENGLISH_ONLY)


def test_open_rs_recipes_differ_only_where_the_experiments_do() -> None:
    one, two, three = (load_config(OPEN_RS[n]).model_dump() for n in (1, 2, 3))
    for cfg in (one, two, three):
        cfg.pop("output_dir")

    def diff(a: dict, b: dict, prefix: str = "") -> set[str]:
        keys = set(a) | set(b)
        out: set[str] = set()
        for k in keys:
            if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                out |= diff(a[k], b[k], f"{prefix}{k}.")
            elif a.get(k) != b.get(k):
                out.add(f"{prefix}{k}")
        return out

    assert diff(one, two) == {"data.path", "generation.max_completion_length"}
    assert diff(two, three) == {"rewards.functions", "rewards.cosine_max_len", "data.system_prompt"}


# ------------------------------------------------------------------------------- the RayJob's overrides


def _rayjob() -> tuple[str, list[str], dict[str, dict[str, Any]]]:
    job = yaml.safe_load((REPO / "deploy/kuberay/rayjob.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    i = argv.index("train")
    groups = {g["groupName"]: g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    return argv[i + 1], argv[i + 2 :], groups


def test_rayjob_overrides_validate_on_open_rs1() -> None:
    config, overrides, _ = _rayjob()
    assert config == "configs/open-rs1.yaml"
    cfg = load_config(REPO / config, overrides)
    assert cfg.cluster.use_gpu and cfg.cluster.generator_cpus == 0 and cfg.cluster.learner_cpus == 0
    assert cfg.output_dir.startswith("/mnt/runs/") and cfg.metrics.prometheus_port == 9400
    _, _, groups = _rayjob()  # one learner rank per learner pod, one engine per generator pod
    assert cfg.learner.num_learners == int(groups["learners"]["replicas"])
    assert cfg.generation.num_engines == int(groups["generators"]["replicas"])
    # The paper's numbers survive the overrides.
    assert (cfg.learner.lr, cfg.max_steps, cfg.prompts_per_step, cfg.generation.num_generations) == (1e-6, 500, 12, 6)


def test_open_rs1_fits_the_rayjob_cluster() -> None:
    """The cluster's 2 learner pods and 1-4 generator pods: 12 prompts split over 2 learners at any engine count."""
    config, overrides, groups = _rayjob()
    learners = int(groups["learners"]["replicas"])
    engines = range(int(groups["generators"]["minReplicas"]), int(groups["generators"]["maxReplicas"]) + 1)
    for n in engines:
        shape = [f"learner.num_learners={learners}", f"generation.num_engines={n}"]
        cfg = load_config(REPO / config, [*overrides, *shape])
        assert cfg.prompts_per_step % cfg.learner.num_learners == 0
        assert cfg.rows_per_step // cfg.learner.num_learners == 36  # 6 micro-batches of 6 per learner


# ---------------------------------------------------------------------------------------- the 0.5B study


def test_srlm_runs() -> None:
    sft, kd, kd_token, rl = (load_config(SRLM_RUNS[arm]) for arm in ("sft", "kd", "kd-token", "rl"))
    assert (sft.stage, kd.stage, kd_token.stage, rl.stage) == ("sft", "sft", "kd_token", "rl")
    for cfg in (sft, kd, kd_token, rl):
        assert cfg.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
        assert cfg.data is not None and cfg.data.split == "train"
        assert cfg.data.system_prompt is not None and "\\boxed{}" in cfg.data.system_prompt
        assert cfg.cluster.use_gpu
    for cfg in (sft, kd_token, rl):
        assert cfg.data is not None and (cfg.data.path, cfg.data.subset) == ("openai/gsm8k", "main")
        assert cfg.data.prompt_key == "question" and cfg.data.answer_key == "answer"
    # [srlm] KD = SFT on CAMEL-generated teacher traces for GSM8K (the hub set, or a local file with its columns).
    assert kd.data is not None and kd.data.path == "camel-ai/gsm8k_distilled"
    assert (kd.data.prompt_key, kd.data.response_key) == ("problem", "reasoning_solution")
    # [srlm] full SFT: lr 4e-5, 4 epochs over GSM8K train, max sequence length 8192.
    for cfg in (sft, kd, kd_token):
        assert cfg.data is not None and cfg.data.response_key in ("answer", "reasoning_solution")
        assert cfg.learner.lr == 4e-5
        pairs = cfg.max_steps * cfg.prompts_per_step
        assert 4 * GSM8K_TRAIN_ROWS <= pairs < 4 * GSM8K_TRAIN_ROWS + cfg.prompts_per_step
        assert cfg.generation.max_prompt_length + cfg.generation.max_completion_length == 8192
    # Token-level KD: a Qwen2.5 teacher (same tokenizer and vocabulary as the student), larger than it.
    assert kd_token.kd.teacher is not None and kd_token.kd.teacher.path == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (kd_token.kd.loss, kd_token.kd.teacher_source) == ("forward_kl", "vllm")
    assert SRLM_RUNS["kd-token"].read_text().startswith("# [ours]")
    # RL: correctness reward only, one pass over GSM8K train.
    assert _rewards(rl) == [("accuracy", 1.0)]
    assert GSM8K_TRAIN_ROWS - rl.prompts_per_step < rl.max_steps * rl.prompts_per_step <= GSM8K_TRAIN_ROWS


@pytest.mark.parametrize(("arm", "first"), [("sft-rl", "sft"), ("kd-rl", "sft")])
def test_srlm_pipelines(arm: str, first: str) -> None:
    pipe, (one, two) = load_pipeline(SRLM_PIPELINES[arm])
    assert pipe.output_dir == f"runs/srlm-0.5b-{arm}"
    assert [s.name for s in pipe.stages] == [arm.split("-")[0], "rl"]
    assert (one.stage, two.stage) == (first, "rl")
    assert one.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert two.model.path == str(final_model(Path(one.output_dir), one))
    # Apart from where it starts and writes, the RL stage is srlm-0.5b-rl.yaml.
    alone = load_config(SRLM_RUNS["rl"]).model_dump(exclude={"output_dir", "model"})
    assert two.model_dump(exclude={"output_dir", "model"}) == alone


# ------------------------------------------------------------------------------------------- evaluation


def test_eval_config_is_open_rs_evaluation() -> None:
    cfg = load_config(EVAL)
    ev = cfg.eval
    assert ev.preset == "open_rs"
    assert ev.benchmarks == ["aime24", "math500", "amc23", "minerva", "olympiadbench"]
    assert (ev.temperature, ev.top_p, ev.num_samples, ev.system_prompt) == (0.6, 0.95, 1, None)
    assert "{problem}" in ev.prompt_template and "\\boxed{ANSWER}" in ev.prompt_template
    # Open-RS's 32,768-token context, and every answer fits the engine's.
    gen = cfg.generation
    assert gen.max_prompt_length + gen.max_completion_length == 32768
    assert ev.max_new_tokens <= gen.max_completion_length
    assert cfg.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


@pytest.mark.parametrize("arm", ["sft-rl", "kd-rl"])
def test_srlm_base_model_arm_is_one_override(arm: str) -> None:
    """The study's second base: only the first stage's model changes; RL starts from that stage's checkpoint."""
    name = arm.split("-")[0]
    _, (one, two) = load_pipeline(SRLM_PIPELINES[arm], [f"{name}.model.path=Qwen/Qwen2.5-0.5B"])
    assert one.model.path == "Qwen/Qwen2.5-0.5B"
    assert two.model.path == str(final_model(Path(one.output_dir), one))
    assert f"{name}.model.path=Qwen/Qwen2.5-0.5B" in SRLM_PIPELINES[arm].read_text()  # documented in the file


def test_eval_srlm_gsm8k_uses_the_training_prompt_and_sampling() -> None:
    ev, rl = load_config(EVAL_SRLM), load_config(SRLM_RUNS["rl"])
    assert ev.eval.benchmarks == ["gsm8k"] and ev.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert rl.data is not None and ev.eval.system_prompt == rl.data.system_prompt
    assert ev.eval.prompt_template == "{problem}"
    assert (ev.eval.temperature, ev.eval.top_p) == (rl.generation.temperature, rl.generation.top_p)
    assert ev.eval.num_samples > 1 and ev.eval.ks == [ev.eval.num_samples]  # avg@k next to pass@1
    assert ev.eval.max_new_tokens <= ev.generation.max_completion_length
