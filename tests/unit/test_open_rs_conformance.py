"""Conformance: our `open_rs` reward mode gives, row by row, the reward Open-RS's own reward code gave.

Every expected value below was derived by hand from knoveleng/open-rs src/open_r1/rewards.py and math-verify's
semantics (not by running our code):
- accuracy_reward: gold = parse(solution, extraction_mode="first_match", [LatexExtractionConfig()]); an empty
  gold scores 1.0. Answer = parse(completion, [LatexExtractionConfig(NormalizationConfig(nits=False,
  malformed_operators=False, basic_latex=True, equations=True, boxed="all", units=True), boxed_match_priority=0,
  try_extract_without_anchor=False)], extraction_mode="first_match"); reward = float(verify(answer, gold)).
  So only anchored LaTeX is read: priority 0 "\\boxed{...}" (also inside $...$) and "final answer is $X$. I
  hope"; 50 "final answer ... is $X$"; 100 "answer: ... $X$"; 200 "answer ... $X$" (X: a $/\\(/\\[ environment or
  a plain \\frac{a}{b}). Within the first priority that matches, the match ending rightmost is tried, and with
  first_match only that one. A bare \\boxed{...} match runs greedily to the last "}" and is cut to its last box
  (boxed="last": an earlier box is kept only after a ",", "and" or "or" separator, which makes a set). A failed
  LaTeX parse leaves math-verify's string fallback, compared as a string.
- format_reward: 1.0 iff "\\n</think>\\n" occurs exactly once. tag_count_reward: 0.5 for exactly one
  "<think>\\n" plus 0.5 for exactly one "\\n</think>\\n".
- cosine (get_cosine_scaled_reward with grpo.py's defaults 0.0 / -0.5 wrong, 0.5 / 1.0 correct, max_len 3584 from
  the README): L = len(content) in characters, unclamped; r = lo + 0.5 (hi - lo)(1 + cos(pi L / 3584)) with
  (lo, hi) = (0.5, 1.0) if correct else (-0.5, 0.0); an unparsable gold scores 1.0. Its correctness uses the
  same extraction with boxed=True (see math_answer._open_rs_completion_targets).
Version note: Open-RS pinned math-verify 0.5.2 (latex2sympy2_extended 1.0.6); the installed one is newer. The rows
avoid the corners where the two differ (0.9 also refuses to take a repeated identical box as a second answer, and
handles "x = 40 + 2 = 42" in the parser instead of the normaliser); each row's reasoning holds for both.
"""

from __future__ import annotations

import gzip
import json
import logging
import math

import pytest

from openrs_ray.config import load_config
from openrs_ray.rewards import accuracy_reward, parse_gold
from openrs_ray.rewards.registry import RewardContext, score_sample
from tests.conftest import REPO

MAX_LEN = 3584
G42 = "Adding the two parts gives $40 + 2 = \\boxed{42}$."  # gold: the boxed env match at priority 50 -> 42
GHALF = "Hence the probability is $\\boxed{\\frac{1}{2}}$."  # -> 1/2
GSQRT2 = "So the side is $\\boxed{\\sqrt{2}}$."  # -> sqrt(2)
GUNIT = "The rope is $\\boxed{12}$ meters long."  # -> 12
G_PROSE = "The answer is shown in the figure."  # no LaTeX anywhere: gold_parsed == [] -> Open-RS scores 1.0
THINK = "<think>\nLet me compute.\n</think>\n"
SLIP = "First guess \\boxed{41}. That was a slip in the second step. Redoing the sum properly gives \\boxed{42}"
SECOND_THOUGHT = "\\boxed{42} was my first thought. Checking the carry again shows it must be one less: \\boxed{41}"

# (id, completion, gold, accuracy, format, tag_count)
ROWS: list[tuple[str, str, str, float, float, float]] = [
    # --- boxed answers (priority 0)
    ("boxed", "so the answer is \\boxed{42}.", G42, 1.0, 0.0, 0.0),
    ("boxed-wrong", "\\boxed{41}", G42, 0.0, 0.0, 0.0),
    ("boxed-negative", "\\boxed{-42}", G42, 0.0, 0.0, 0.0),
    ("boxed-float", "\\boxed{42.0}", G42, 1.0, 0.0, 0.0),  # numeric equality
    ("boxed-in-dollars", "Thus $\\boxed{42}$.", G42, 1.0, 0.0, 0.0),  # env match, boxed="all" unwraps
    ("boxed-in-display", "\\[\\boxed{42}\\]", G42, 1.0, 0.0, 0.0),
    ("boxed-assignment", "\\boxed{x = 42}", G42, 1.0, 0.0, 0.0),  # an equation's rhs is compared
    ("fbox", "\\fbox{42}", G42, 0.0, 0.0, 0.0),  # only \\boxed is a completion anchor
    # --- unanchored answers: not read at all (try_extract_without_anchor=False)
    ("unboxed-number", "so the answer is 42.", G42, 0.0, 0.0, 0.0),
    ("bare-number", "42", G42, 0.0, 0.0, 0.0),
    ("bare-latex", "$42$", G42, 0.0, 0.0, 0.0),
    ("unanchored-equation", "We get $x = 42$ in the end.", G42, 0.0, 0.0, 0.0),
    ("final-answer-no-latex", "The final answer is 42", G42, 0.0, 0.0, 0.0),
    ("bare-frac", "\\frac{1}{2}", GHALF, 0.0, 0.0, 0.0),
    # --- anchored by words (priorities 0, 50, 100, 200)
    ("final-answer-hope", "The final answer is $42$. I hope it is correct.", G42, 1.0, 0.0, 0.0),
    ("final-answer-is", "My final answer is $42$", G42, 1.0, 0.0, 0.0),
    ("answer-colon", "Answer: $42$", G42, 1.0, 0.0, 0.0),
    ("answer-word", "The answer is $\\frac{1}{2}$", GHALF, 1.0, 0.0, 0.0),
    ("answer-word-plain-frac", "The answer is \\frac{1}{2}", GHALF, 1.0, 0.0, 0.0),  # \\frac{a}{b} needs no $
    ("answer-word-wrong", "The answer is $43$", G42, 0.0, 0.0, 0.0),
    # --- truncated mid-answer
    ("truncated-open-box", "We find $x=42$. Therefore \\boxed{", G42, 0.0, 0.0, 0.0),  # no closing brace
    ("truncated-in-box", "so the answer is \\boxed{4", G42, 0.0, 0.0, 0.0),
    ("truncated-think", "<think>\nFirst, 40 + 2 = 42, so", G42, 0.0, 0.0, 0.5),
    # --- \\frac12 shorthand and other malformed operators (malformed_operators=False: not repaired)
    ("frac12-shorthand", "\\boxed{\\frac12}", GHALF, 0.0, 0.0, 0.0),  # parse fails; "\\frac12" != "\\frac{1}{2}"
    ("frac-braced", "\\boxed{\\frac{1}{2}}", GHALF, 1.0, 0.0, 0.0),
    ("dfrac", "\\boxed{\\dfrac{1}{2}}", GHALF, 1.0, 0.0, 0.0),  # basic_latex: \\dfrac -> \\frac
    ("frac-unreduced", "\\boxed{\\frac{2}{4}}", GHALF, 1.0, 0.0, 0.0),
    ("decimal-half", "\\boxed{0.5}", GHALF, 1.0, 0.0, 0.0),
    ("sqrt2-shorthand", "\\boxed{\\sqrt2}", GSQRT2, 0.0, 0.0, 0.0),
    ("sqrt-braced", "\\boxed{\\sqrt{2}}", GSQRT2, 1.0, 0.0, 0.0),
    # --- units (units=True strips \\text{ unit})
    ("units-text", "\\boxed{12 \\text{ meters}}", GUNIT, 1.0, 0.0, 0.0),
    ("units-wrong", "\\boxed{13 \\text{ meters}}", GUNIT, 0.0, 0.0, 0.0),
    # --- several boxes
    # (long prose without a separator between the boxes: math-verify 0.5.2 and 0.9 both keep only the last)
    ("boxes-last-right", SLIP, G42, 1.0, 0.0, 0.0),
    ("boxes-last-wrong", SECOND_THOUGHT, G42, 0.0, 0.0, 0.0),
    ("boxes-comma-set", "\\boxed{42}, \\boxed{43}", G42, 0.0, 0.0, 0.0),  # {42, 43} != 42
    ("boxes-and-set", "\\boxed{42} and \\boxed{43}", G42, 0.0, 0.0, 0.0),
    # --- empty and over-long
    ("empty", "", G42, 0.0, 0.0, 0.0),
    ("empty-box", "\\boxed{}", G42, 0.0, 0.0, 0.0),
    ("over-long-right", "a" * 20000 + " \\boxed{42}", G42, 1.0, 0.0, 0.0),  # no length limit on accuracy
    # --- unparsable gold: 1.0 whatever the completion ("we reward 1 to skip this example")
    ("gold-prose", "\\boxed{41}", G_PROSE, 1.0, 0.0, 0.0),
    ("gold-empty", "no answer", "", 1.0, 0.0, 0.0),
    # --- format and tag counts
    ("think-full", THINK + "The answer is \\boxed{42}", G42, 1.0, 1.0, 1.0),
    ("think-close-only", "Let me compute.\n</think>\n\\boxed{42}", G42, 1.0, 1.0, 0.5),
    ("think-no-newline", "<think>\nLet me compute.</think> \\boxed{42}", G42, 1.0, 0.0, 0.5),
    ("think-twice", THINK + THINK + "\\boxed{42}", G42, 1.0, 0.0, 0.0),
    ("think-close-twice", "<think>\na\n</think>\nb\n</think>\n\\boxed{41}", G42, 0.0, 0.0, 0.5),
    ("answer-tags", THINK + "<answer>\n\\boxed{42}\n</answer>", G42, 1.0, 1.0, 1.0),
]


def _ctx(completion: str, gold: str) -> RewardContext:
    return RewardContext(
        completion, gold, len(completion), MAX_LEN, mode="open_rs", unparsable_gold="reward_one", clamp=False
    )


def test_at_least_forty_rows_with_unique_ids() -> None:
    ids = [row[0] for row in ROWS]
    assert len(ROWS) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(("name", "completion", "gold", "acc", "fmt", "tags"), ROWS, ids=[r[0] for r in ROWS])
def test_open_rs_rewards(name: str, completion: str, gold: str, acc: float, fmt: float, tags: float) -> None:
    _, parts = score_sample(_ctx(completion, gold), {"accuracy": 1.0, "format": 1.0, "tag_count": 1.0})
    assert parts == {"accuracy": acc, "format": fmt, "tag_count": tags}, name


def test_known_version_difference_boxes_near_a_separator() -> None:
    """Not reproducible with today's math-verify: two boxes with a "," in the prose between them.

    Open-RS's latex2sympy2_extended 1.0.6 kept an earlier box only when the text between was nothing but a
    separator (^\\s*(and|or|,)\\s*$), so this scored 1.0 there. 1.11 (installed) also keeps it when the text
    between is under 10 characters, or under 70 with a separator anywhere in it: {41, 42} != 42 -> 0.0.
    Pinning math-verify 0.5.2 would be needed to match; the conformance rows above avoid the corner.
    """
    completion = "First guess \\boxed{41}, but correcting it: \\boxed{42}"
    assert score_sample(_ctx(completion, G42), {"accuracy": 1.0})[1]["accuracy"] == 0.0  # Open-RS: 1.0


# Cosine at lengths below, at and beyond max_len, up to 3 x max_len: (length, correct reward, wrong reward).
# cos(pi L / 3584) at L/3584 = 0, 1/4, 1/2, 1, 3/2, 2, 5/2, 3 is 1, sqrt(2)/2, 0, -1, 0, 1, 0, -1.
_Q = math.sqrt(2) / 2
COSINE: list[tuple[int, float, float]] = [
    (12, 0.5 + 0.25 * (1 + math.cos(math.pi * 12 / MAX_LEN)), -0.5 + 0.25 * (1 + math.cos(math.pi * 12 / MAX_LEN))),
    (896, 0.75 + 0.25 * _Q, -0.25 + 0.25 * _Q),
    (1792, 0.75, -0.25),
    (3584, 0.5, -0.5),
    (5376, 0.75, -0.25),  # past max_len the unclamped cosine climbs back
    (7168, 1.0, 0.0),
    (8960, 0.75, -0.25),
    (10752, 0.5, -0.5),
]


def _padded(length: int, box: str) -> str:
    return "a" * (length - len(box)) + box


@pytest.mark.parametrize(("length", "right", "wrong"), COSINE, ids=[f"L={c[0]}" for c in COSINE])
def test_open_rs_cosine_in_characters_unclamped(length: int, right: float, wrong: float) -> None:
    for box, want in (("\\boxed{42}", right), ("\\boxed{41}", wrong)):
        completion = _padded(length, box)
        assert len(completion) == length
        _, parts = score_sample(_ctx(completion, G42), {"cosine": 1.0})
        assert parts["cosine"] == pytest.approx(want, abs=1e-12), (length, box)
    # An unparsable gold scores 1.0 at any length; an unanchored right answer is wrong.
    assert score_sample(_ctx(_padded(length, "\\boxed{41}"), G_PROSE), {"cosine": 1.0})[1]["cosine"] == 1.0
    assert score_sample(_ctx(_padded(length, " is 42."), G42), {"cosine": 1.0})[1]["cosine"] == pytest.approx(wrong)


# ----------------------------------------------------------------- the Open-RS recipes set the paper's switches

OPEN_RS_SWITCHES = {
    "rewards.accuracy_mode": "open_rs",  # [code] anchored-only extraction, Open-RS's normalisation
    "rewards.unparsable_gold": "reward_one",  # [code] an unparsable gold scores 1.0
    "rewards.cosine_clamp": False,  # [code] cos(pi * L / max_len), no clamp
    "rewards.cosine_length_unit": "chars",  # [code] gen_len = len(content)
    "data.answer_key": "solution",  # [code] accuracy_reward(completions, solution)
    "data.long_prompts": "truncate_left",  # [trl] prompt_ids[:, -max_prompt_length:] for the learner
    "learner.scale_logits_by_temperature": False,  # [trl] logprobs at temperature 1
    "generation.enforce_eager": False,  # [trl] vllm_enforce_eager never reached vLLM: CUDA graphs
    "learner.loss_type": "bnpo",  # [trl] per-micro-batch token normalisation
}


def _get(cfg: object, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


@pytest.mark.parametrize("name", ["open-rs1", "open-rs2", "open-rs3"])
def test_open_rs_recipes_set_the_papers_switches(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    wrong = {k: (_get(cfg, k), v) for k, v in OPEN_RS_SWITCHES.items() if _get(cfg, k) != v}
    assert not wrong, f"{name}.yaml (got, want): {wrong}"
    # bnpo normalises per micro-batch; Open-RS's micro-batch was exactly one group of 6.
    assert cfg.learner.micro_batch_size == cfg.generation.num_generations == 6


def test_open_rs3_tokens_is_ours_and_differs_only_in_the_cosine() -> None:
    paper = load_config(REPO / "configs/open-rs3.yaml").model_dump(exclude={"output_dir"})
    ours = load_config(REPO / "configs/open-rs3-tokens.yaml")
    assert (ours.rewards.cosine_length_unit, ours.rewards.cosine_clamp) == ("tokens", True)
    assert ours.output_dir == "runs/open-rs3-tokens"
    changed = ours.model_dump(exclude={"output_dir"})
    changed["rewards"].update(cosine_length_unit="chars", cosine_clamp=False)
    assert changed == paper
    assert (REPO / "configs/open-rs3-tokens.yaml").read_text().startswith("# [ours]")


def test_one_line_warning_when_an_override_breaks_the_bnpo_unit(caplog: pytest.LogCaptureFixture) -> None:
    recipe = REPO / "configs/open-rs3.yaml"
    with caplog.at_level(logging.WARNING):
        load_config(recipe)
        load_config(REPO / "configs/srlm-0.5b-rl.yaml")  # lenient mode: not an Open-RS run, no warning
        assert caplog.records == []
        load_config(recipe, ["learner.micro_batch_size=12"])
    (record,) = caplog.records
    assert "\n" not in record.getMessage()
    assert "learner.micro_batch_size=12 != generation.num_generations=6" in record.getMessage()


def test_solution_and_answer_columns_give_the_same_gold_on_real_data() -> None:
    """AIME24 (the benchmark copy here with both columns): Open-RS's parse of `solution` equals our parse of
    `answer` wherever the solution boxes its answer (25 of 30). The other 5 AoPS solutions box nothing (one
    uses \\framebox), so Open-RS's parse reads their last LaTeX or nothing: only boxed solutions make good gold.
    """
    from math_verify import verify

    from openrs_ray.eval.benchmarks import SHIPPED_DATA  # the benchmark copies shipped in the package

    rows = json.loads(gzip.decompress((SHIPPED_DATA / "aime24.json.gz").read_bytes()))
    boxed = [r for r in rows if "\\boxed" in r["solution"]]
    assert (len(rows), len(boxed)) == (30, 25)
    for r in boxed:
        ours, theirs = parse_gold(r["answer"]), parse_gold(r["solution"], "open_rs")
        assert theirs is not None and verify(list(ours), list(theirs)), r["answer"]
        # and a completion boxing the answer scores 1.0 against either column, in open_rs mode
        assert accuracy_reward(f"\\boxed{{{r['answer']}}}", r["solution"], mode="open_rs") == 1.0
        assert accuracy_reward(f"\\boxed{{{r['answer']}}}", r["answer"], mode="open_rs") == 1.0
