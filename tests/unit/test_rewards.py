"""Unit tests for openrs_ray.rewards: exact, hand-computed values (math-verify 0.9 behaviour)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from openrs_ray.rewards import (
    REWARD_FUNCTIONS,
    RewardContext,
    UnparsableGold,
    accuracy_reward,
    cosine_reward,
    format_reward,
    math_answer,
    parse_gold,
    score_sample,
    tag_count_reward,
    validate_reward_names,
)
from openrs_ray.rewards.sandbox import SampleScorer

GSM8K_GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 72 clips.\n#### 72"


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("\\boxed{72}", "72", 1.0),
        ("The total is \\boxed{72}.", GSM8K_GOLD, 1.0),
        ("\\boxed{73}", GSM8K_GOLD, 0.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{1/2}", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac12}", "\\frac{1}{2}", 1.0),  # needs default normalisation (nits=True)
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", 1.0),
        ("\\boxed{0.333333}", "\\frac{1}{3}", 1.0),  # math-verify rounds floats to 6 places
        ("\\boxed{0.333}", "\\frac{1}{3}", 0.0),
        ("\\boxed{50}", "50\\%", 1.0),  # percent signs are ignored both ways
        ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
        ("\\boxed{(\\pi/2, 3)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 0.0),  # tuples are ordered
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1.0),
        ("\\boxed{18.9}", "\\$18.90", 1.0),
        ("\\boxed{x = 72}", "72", 1.0),
        ("\\boxed{1000}", "1,000", 1.0),
        ("\\boxed{1,000}", "1000", 1.0),
        ("\\boxed{1000}", "1,\\!000", 1.0),  # MATH's thousands separator
        ("\\boxed{-1000}", "-1,000", 1.0),
        ("\\boxed{71}", "72", 0.0),
        ("\\boxed{3} then I rechecked ... \\boxed{72}", "72", 1.0),  # last \boxed wins
        ("\\boxed{72} then I rechecked ... \\boxed{3}", "72", 0.0),
        ("<think>\nadding up\n</think>\nThe answer is 72.", "72", 1.0),  # unboxed fallback
        ("asdf qwerty", "72", 0.0),
        ("", "72", 0.0),
        ("}}}\\boxed{\\frac{", "72", 0.0),
    ],
)
def test_accuracy_reward(completion: str, gold: str, expected: float) -> None:
    """Equivalences math-verify really supports, and the ones it really rejects."""
    assert accuracy_reward(completion, gold) == expected


@pytest.mark.parametrize("gold", ["", "   ", "#### ", "\\text{}", "\\boxed{}"])
def test_unparsable_gold_raises(gold: str) -> None:
    """An unparsable gold must never score (Open-RS returned 1.0); the caller drops the sample."""
    assert parse_gold(gold) is None
    with pytest.raises(UnparsableGold, match="cannot parse gold"):
        accuracy_reward("\\boxed{72}", gold)
    assert issubclass(UnparsableGold, ValueError)  # callers that only know ValueError still catch it


def test_malformed_gold_falls_back_to_string_match() -> None:
    """math-verify keeps the raw string when SymPy conversion fails: only an identical answer scores."""
    assert parse_gold("\\frac{") == ("\\frac{",)
    assert accuracy_reward("\\boxed{72}", "\\frac{") == 0.0


def test_parse_gold_is_cached_and_immutable() -> None:
    """The same gold string is parsed once; the cached value is a tuple so callers cannot mutate it."""
    parse_gold.cache_clear()
    first = parse_gold("\\frac{3}{4}")
    second = parse_gold("\\frac{3}{4}")
    assert first is second
    assert isinstance(first, tuple)
    assert parse_gold.cache_info().hits == 1


def test_parse_gold_gsm8k_takes_last_marker() -> None:
    """Only what follows the last "####" is the answer; commas are thousands separators."""
    assert str(parse_gold("a #### 5\n#### 1,234")[0]) == "1234"


def test_accuracy_reward_off_main_thread() -> None:
    """math-verify's default SIGALRM timeouts raise off the main thread (verl's bug); ours must not."""
    parse_gold.cache_clear()  # make the gold parse run inside the thread too
    results: list[float] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(accuracy_reward("so \\boxed{\\frac{2}{4}}", "\\frac{1}{2}"))
            results.append(accuracy_reward("\\boxed{5}", "72"))
        except BaseException as exc:  # noqa: B036 - surface anything to the main thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []
    assert results == [1.0, 0.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("reasoning\n</think>\n\\boxed{1}", 1.0),
        ("<think>\nreasoning\n</think>\nanswer", 1.0),
        ("reasoning</think>\nanswer", 0.0),  # no newline before the tag
        ("reasoning\n</think>answer", 0.0),  # no newline after the tag
        ("a\n</think>\nb\n</think>\nc", 0.0),  # twice
        ("no tags at all", 0.0),
    ],
)
def test_format_reward(completion: str, expected: float) -> None:
    """Exactly one "\\n</think>\\n" is required."""
    assert format_reward(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>\nreasoning\n</think>\nanswer", 1.0),
        ("reasoning\n</think>\nanswer", 0.5),
        ("<think>\nreasoning only", 0.5),
        ("<think>\n<think>\nx\n</think>\n", 0.5),
        ("<think>\nx\n</think>\n\n</think>\n", 0.5),
        ("nothing", 0.0),
    ],
)
def test_tag_count_reward(completion: str, expected: float) -> None:
    """0.5 per tag that appears exactly once."""
    assert tag_count_reward(completion) == expected


@pytest.mark.parametrize(
    ("correct", "length", "expected"),
    [
        (True, 0, 1.0),
        (True, 100, 0.5),
        (True, 50, 0.75),
        (True, 1000, 0.5),  # clamped to max_len
        (True, -5, 1.0),  # clamped to 0
        (False, 0, 0.0),
        (False, 100, -0.5),
        (False, 50, -0.25),
        (False, 1000, -0.5),
    ],
)
def test_cosine_reward(correct: bool, length: int, expected: float) -> None:
    """Open-RS cosine schedule with its default bounds, max_len=100."""
    assert cosine_reward(correct, length, 100) == expected


def test_cosine_reward_custom_bounds_and_bad_max_len() -> None:
    """Bounds are keyword-only and honoured; a non-positive budget is a config error."""
    assert cosine_reward(True, 0, 10, max_value_correct=2.0) == 2.0
    assert cosine_reward(False, 10, 10, max_value_wrong=-1.0) == -1.0
    with pytest.raises(ValueError):
        cosine_reward(True, 5, 0)


def _ctx(completion: str, gold: str = "72", tokens: int = 50, max_len: int = 100) -> RewardContext:
    """Build a context with a 100-token budget by default."""
    return RewardContext(completion=completion, gold=gold, length=tokens, max_len=max_len)


def test_registry_names() -> None:
    """The Open-RS rewards and language consistency are registered under their config names."""
    assert set(REWARD_FUNCTIONS) == {"accuracy", "format", "tag_count", "cosine", "language"}


def test_score_sample_weighted_sum_and_components() -> None:
    """Total = sum(weight * component); components are reported unweighted."""
    ctx = _ctx("reasoning\n</think>\n\\boxed{72}", tokens=50)
    total, components = score_sample(ctx, {"accuracy": 2.0, "format": 1.0, "tag_count": 0.5, "cosine": 1.0})
    assert components == {"accuracy": 1.0, "format": 1.0, "tag_count": 0.5, "cosine": 0.75}
    assert total == 2.0 * 1.0 + 1.0 * 1.0 + 0.5 * 0.5 + 1.0 * 0.75

    wrong = _ctx("<think>\nreasoning\n</think>\n\\boxed{7}", tokens=100)
    total, components = score_sample(wrong, {"accuracy": 1.0, "cosine": 1.0, "tag_count": 1.0})
    assert components == {"accuracy": 0.0, "cosine": -0.5, "tag_count": 1.0}
    assert total == 0.5


def test_score_sample_calls_accuracy_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accuracy (SymPy, the expensive one) is evaluated once even when cosine also needs it."""
    calls: list[tuple[str, str]] = []
    real = math_answer.accuracy_reward

    def counting(completion: str, gold: str, *, mode: str = "lenient") -> float:
        calls.append((completion, gold))
        return real(completion, gold, mode=mode)

    monkeypatch.setattr(math_answer, "accuracy_reward", counting)
    total, components = score_sample(_ctx("\\boxed{72}", tokens=0), {"accuracy": 1.0, "cosine": 1.0})
    assert len(calls) == 1
    assert components == {"accuracy": 1.0, "cosine": 1.0}
    assert total == 2.0

    calls.clear()
    score_sample(_ctx("\\boxed{72}"), {"format": 1.0, "tag_count": 1.0})
    assert calls == []  # not evaluated when nothing needs it


def test_score_sample_propagates_unparsable_gold() -> None:
    """The caller, not the registry, decides what to do with a bad gold answer."""
    with pytest.raises(UnparsableGold):
        score_sample(_ctx("\\boxed{72}", gold=""), {"accuracy": 1.0})
    with pytest.raises(UnparsableGold):
        score_sample(_ctx("\\boxed{72}", gold=""), {"cosine": 1.0})


def test_unknown_reward_names() -> None:
    """score_sample raises KeyError, validate_reward_names raises ValueError; both list known names."""
    with pytest.raises(KeyError, match="known: .*accuracy"):
        score_sample(_ctx("\\boxed{72}"), {"acuracy": 1.0})
    with pytest.raises(ValueError, match="known: .*tag_count"):
        validate_reward_names(["format", "lenght"])
    validate_reward_names(["accuracy", "format", "tag_count", "cosine"])
    validate_reward_names([])


def test_reward_context_stays_frozen_and_comparable() -> None:
    """Memoising accuracy must not break immutability or field-based equality."""
    ctx = _ctx("\\boxed{72}")
    assert ctx.accuracy == 1.0
    assert ctx == _ctx("\\boxed{72}")
    with pytest.raises(AttributeError):
        ctx.completion = "x"  # type: ignore[misc]


# ------------------------------------------------------------------ Open-RS switches (rewards.* and direct calls)


def test_cosine_unclamped_keeps_turning_past_max_len() -> None:
    """Open-RS: cos(pi * L / max_len) with no clamp, period 2 * max_len (characters, max_len 3584)."""
    assert cosine_reward(True, 7168, 3584, clamp=False) == 1.0  # cos(2 pi) = 1
    # cos(pi * 5000 / 3584) = cos(4.38284) = -cos(1.24125) = -0.32365: 0.5 + 0.25 * 0.67635 = 0.66909
    assert cosine_reward(True, 5000, 3584, clamp=False) == pytest.approx(0.66909, abs=1e-5)
    assert cosine_reward(True, 5000, 3584) == 0.5  # clamped: the end value
    assert cosine_reward(False, 5376, 3584, clamp=False) == pytest.approx(-0.25)  # cos(3 pi / 2) = 0


def test_open_rs_accuracy_mode_reads_only_anchored_answers() -> None:
    assert accuracy_reward("so the answer is 42.", "42", mode="open_rs") == 0.0
    assert accuracy_reward("so the answer is 42. \\boxed{42}", "42", mode="open_rs") == 1.0
    assert accuracy_reward("so the answer is 42.", "42") == 1.0  # lenient reads the unanchored number
    # The `solution` column: its last \boxed{} is the gold, in both modes.
    solution = "Since $6 \\cdot 7 = 42$, we get $\\boxed{42}$."
    assert accuracy_reward("\\boxed{42}", solution, mode="open_rs") == accuracy_reward("\\boxed{42}", solution) == 1.0
    with pytest.raises(UnparsableGold):  # prose with no math: Open-RS's gold_parsed == []
        accuracy_reward("\\boxed{42}", "See the figure.", mode="open_rs")


def test_unparsable_gold_policies() -> None:
    """drop (default): the caller drops the group; reward_one: accuracy and cosine 1.0, format still scored."""
    weights = {"accuracy": 1.0, "cosine": 2.0, "format": 1.0}
    with pytest.raises(UnparsableGold):
        score_sample(RewardContext("\\boxed{1}", "", 5, 100), weights)
    ctx = RewardContext("x\n</think>\n\\boxed{1}", "", 5000, 100, mode="open_rs", unparsable_gold="reward_one")
    assert score_sample(ctx, weights) == (4.0, {"accuracy": 1.0, "cosine": 1.0, "format": 1.0})


TOWER = r"\boxed{10^{10^{10^{10^{10}}}}}"


@pytest.mark.parametrize("mode", ["lenient", "open_rs"])
def test_direct_call_in_main_thread_is_bounded(mode: str) -> None:
    """Outside the verifier pool, math-verify's own 5 s timeouts bound a main-thread call: 0.0 within seconds."""
    assert threading.current_thread() is threading.main_thread()
    assert math_answer._timeout() == math_answer.MATH_VERIFY_TIMEOUT_S
    t0 = time.monotonic()
    assert accuracy_reward(TOWER, "1", mode=mode) == 0.0
    assert time.monotonic() - t0 < 4 * math_answer.MATH_VERIFY_TIMEOUT_S  # parse + verify, each at most 5 s


def test_signal_free_off_the_main_thread_and_in_the_verifier_child(tmp_path: Path) -> None:
    """Threads and the scorer's child process never arm SIGALRM (the parent's deadline bounds the child)."""
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(math_answer._timeout()))
    thread.start()
    thread.join(timeout=10)
    probe = tmp_path / "probe.py"  # a reward run in the child: 1.0 where math-verify's timeout is off there
    probe.write_text(
        "from openrs_ray.rewards import math_answer\n\n\n"
        "def signal_free(prompts, completions, **kwargs):\n"
        "    return [float(math_answer._timeout() is None)] * len(completions)\n"
    )
    scorer = SampleScorer({"signal_free": 1.0}, 10.0, {"signal_free": f"{probe}:signal_free"})
    try:
        (child,) = scorer.score([RewardContext("x", "1", 1, 10)])
    finally:
        scorer.close()
    assert seen == [None] and (child.status, child.components) == ("ok", {"signal_free": 1.0})


def test_a_child_that_cannot_start_is_one_error_in_seconds(tmp_path: Path) -> None:
    """A script that scores without a __main__ guard: the forkserver child re-runs it and exits at start. The
    scorer says so at once (a multiprocessing.Pool restarted the child in a loop until its 60 s wait ran out)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from openrs_ray.rewards.registry import RewardContext\n"
        "from openrs_ray.rewards.sandbox import SampleScorer\n"
        "SampleScorer({'accuracy': 1.0}, 5.0).score([RewardContext('x', '1', 1, 10)])\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - t0 < 30
    assert "RuntimeError: the reward scoring child process failed to start (exit code 1)" in proc.stderr
