"""Answer-correctness reward: is the completion's final answer equivalent to the gold answer?

Built on math-verify (LaTeX/expression extraction + SymPy equivalence), in two modes:
- "lenient" (default, ours): LaTeX and plain expressions, boxed answers first, then the last number or
  expression anywhere; gold in any of the common formats (LaTeX, plain number, GSM8K's "#### N").
- "open_rs": exactly Open-RS's `accuracy_reward` (knoveleng/open-rs src/open_r1/rewards.py): only an
  anchored LaTeX answer counts (\\boxed{}, "final answer is $...$", "answer: $...$"), with its
  NormalizationConfig, `first_match` extraction, and the gold parsed from the raw `solution` text.

Timeouts. math-verify bounds parsing and verifying with ``signal.SIGALRM``, which only works in a process's
main thread (Ray runs actor tasks on other threads, where it raises). So: called in a main thread (a user's
script, a notebook), math-verify's own timeouts bound each call (MATH_VERIFY_TIMEOUT_S) and a pathological
answer scores 0.0 within seconds; called anywhere else, or inside the verifier pool's child process (which
calls `use_signal_free_path()` at start-up and has its own hard per-sample timeout), the signal-free path is
taken (``parsing_timeout=None`` / ``timeout_seconds=None``).
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Literal

from latex2sympy2_extended import NormalizationConfig
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

__all__ = [
    "MATH_VERIFY_TIMEOUT_S",
    "AccuracyMode",
    "UnparsableGold",
    "accuracy_reward",
    "open_rs_cosine_correct",
    "parse_gold",
    "use_signal_free_path",
]

AccuracyMode = Literal["lenient", "open_rs"]

# [code] Open-RS called parse/verify with math-verify's defaults. In 0.5.2 (its pin) the code defaults were
# 3 s for both (the docstrings said 5 s); from 0.7 on they are 5 s. We use 5 s for direct calls.
MATH_VERIFY_TIMEOUT_S = 5

# Gold answers: LaTeX first (MATH), plain expressions as a fallback (plain numbers, GSM8K).
_GOLD_TARGETS = (LatexExtractionConfig(), ExprExtractionConfig())

# Completions: boxed_match_priority=0 puts \boxed{} matches ahead of every other pattern, and
# math-verify scans from the end, so the *last* \boxed{} is tried first. The default normalisation is
# kept on purpose: Open-RS's config (nits=False, malformed_operators=False) rejects common shorthand
# such as \frac12 and \sqrt2 under math-verify 0.9. ExprExtractionConfig catches unboxed "... is 72".
_COMPLETION_TARGETS = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _open_rs_completion_targets(boxed: Any) -> tuple[LatexExtractionConfig, ...]:
    """[code] Open-RS's completion extraction; `boxed` is "all" in accuracy_reward and True in its cosine reward.

    boxed=True is neither "all" nor "last", so latex2sympy2_extended does not unwrap a \\boxed{} found inside
    $...$ (the bare-\\boxed pattern is unwrapped anyway: math-verify forces boxed="last" for it); its grammar
    parses \\boxed{...} itself, so the two differ only in rare corner cases. Kept as Open-RS had it.
    """
    norm = NormalizationConfig(
        nits=False, malformed_operators=False, basic_latex=True, equations=True, boxed=boxed, units=True
    )
    return (LatexExtractionConfig(normalization_config=norm, boxed_match_priority=0, try_extract_without_anchor=False),)


_OPEN_RS_ACCURACY_TARGETS = _open_rs_completion_targets("all")
_OPEN_RS_COSINE_TARGETS = _open_rs_completion_targets(True)
# [code] gold_parsed = parse(sol, extraction_mode="first_match", extraction_config=[LatexExtractionConfig()])
_OPEN_RS_GOLD_TARGETS = (LatexExtractionConfig(),)

_GSM8K_MARKER = "####"
# "1,000" / "-12,345.5": thousands separators that would otherwise read as a tuple/set.
_THOUSANDS_NUMBER = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# An unescaped "$" means the author already delimited the math ("\$18.90" is a dollar sign, not one).
_MATH_DELIMITER = re.compile(r"(?<!\\)\$")
_LATEX_DELIMITER = re.compile(r"\\[(\[]")  # \( or \[
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")

# Bounded so a long run over many datasets cannot grow memory without limit; MATH + GSM8K fit easily.
_GOLD_CACHE_SIZE = 1 << 16

_signal_free = False  # set in the verifier pool's child process


class UnparsableGold(ValueError):
    """The gold answer yields no parseable expression: dropped (rewards.unparsable_gold=drop) or scored 1.0."""


def use_signal_free_path() -> None:
    """Never use math-verify's SIGALRM timeouts in this process (the verifier pool's child calls this)."""
    global _signal_free
    _signal_free = True


def _timeout() -> int | None:
    """math-verify's timeout for this call: bounded in a main thread, None (signal-free) elsewhere."""
    if _signal_free or threading.current_thread() is not threading.main_thread():
        return None
    return MATH_VERIFY_TIMEOUT_S


def _normalise_gold(gold: str) -> str:
    """Turn any supported gold format into a "$...$"-delimited string math-verify parses reliably."""
    text = gold.strip()
    if _GSM8K_MARKER in text:
        # GSM8K ships the whole worked solution; the answer is what follows the last "####".
        text = text.rsplit(_GSM8K_MARKER, 1)[1].strip().replace(",", "")
    elif _THOUSANDS_NUMBER.match(text):
        text = text.replace(",", "")
    if text and not _MATH_DELIMITER.search(text):
        # Bare LaTeX is mis-read without delimiters: "\left( 3, \frac{\pi}{2} \right)" parses as 3,
        # "1,\!000" as 1, and "\sqrt{2}" / "\text{Evelyn}" not at all. Wrapped, all parse correctly.
        text = f"${text}$"
    return text


@functools.lru_cache(maxsize=_GOLD_CACHE_SIZE)
def _parse_gold(gold: str, mode: AccuracyMode, timeout: int | None) -> tuple[Any, ...] | None:
    parsed: list[Any] = []
    if mode == "open_rs" or "\\boxed" in gold:
        # Open-RS's gold parsing, on the raw text: a worked solution (the `solution` column) yields its last
        # \boxed{} (math-verify scans from the end). The lenient mode reads a boxed solution the same way.
        parsed = parse(gold, extraction_config=_OPEN_RS_GOLD_TARGETS, extraction_mode="first_match",
                       parsing_timeout=timeout)  # fmt: skip
        if parsed or mode == "lenient" or not _is_bare_answer(gold):
            return tuple(parsed) if parsed else None
        # open_rs, nothing found in a bare answer ("42", "x = 5": an `answer` column, which Open-RS never graded
        # against; it used `solution`): read it as "$42$" would be. Prose without math stays unparsable, as there.
        parsed = parse(f"${gold.strip()}$", extraction_config=_OPEN_RS_GOLD_TARGETS, extraction_mode="first_match",
                       parsing_timeout=timeout) if gold.strip() else []  # fmt: skip
    else:
        text = _normalise_gold(gold)
        parsed = parse(text, extraction_config=_GOLD_TARGETS, parsing_timeout=timeout) if text else []
    return tuple(parsed) if parsed else None


def _is_bare_answer(gold: str) -> bool:
    """No math delimiter and no word outside LaTeX commands: "42", "x = 5", "\\frac{1}{2}", not "See the figure."."""
    if _MATH_DELIMITER.search(gold) or _LATEX_DELIMITER.search(gold):
        return False
    return _WORD.search(_LATEX_COMMAND.sub("", gold)) is None


def parse_gold(gold: str, mode: AccuracyMode = "lenient") -> tuple[Any, ...] | None:
    """Parse a gold answer once (cached per string and mode) into math-verify objects.

    lenient: LaTeX ("\\frac{1}{2}"), plain numbers ("72", "1,000"), GSM8K solutions ending in "#### 18", and
    worked solutions with a \\boxed{} answer. open_rs: Open-RS's parse of the raw text (LaTeX only, first
    match); a bare answer it finds nothing in ("42") is read as "$42$", prose without math stays None. Returns
    a tuple (immutable, so the cached value cannot be corrupted by a caller) of SymPy objects plus
    math-verify's string fallback, or None.
    """
    return _parse_gold(gold, mode, _timeout())


# The cache lives on the inner function (keyed by mode and timeout too); expose its controls here.
parse_gold.cache_info = _parse_gold.cache_info  # type: ignore[attr-defined]
parse_gold.cache_clear = _parse_gold.cache_clear  # type: ignore[attr-defined]


def _gold_or_raise(gold: str, mode: AccuracyMode) -> tuple[Any, ...]:
    gold_parsed = parse_gold(gold, mode)
    if gold_parsed is None:
        raise UnparsableGold(f"cannot parse gold answer {gold!r}")
    return gold_parsed


def accuracy_reward(completion: str, gold: str, *, mode: AccuracyMode = "lenient") -> float:
    """Return 1.0 if the completion's final answer is equivalent to ``gold``, else 0.0.

    Raises UnparsableGold when the gold cannot be parsed: the caller drops and counts the sample, or
    (rewards.unparsable_gold=reward_one, what Open-RS did) scores it 1.0.
    """
    if mode == "open_rs":
        return _open_rs_correct(completion, gold, _OPEN_RS_ACCURACY_TARGETS)
    gold_parsed = _gold_or_raise(gold, mode)
    timeout = _timeout()
    # An exception escaping math-verify (it catches most itself) propagates: the verifier scores the
    # sample 0 and counts it as an error, rather than hiding it as an ordinary wrong answer.
    answer_parsed = parse(completion, extraction_config=_COMPLETION_TARGETS, parsing_timeout=timeout)
    if not answer_parsed:
        return 0.0
    # verify() wraps a non-list argument as a single item, so a tuple must become a list here;
    # argument order matters (gold first) for assignment/equation handling.
    return 1.0 if verify(list(gold_parsed), answer_parsed, timeout_seconds=timeout) else 0.0


def open_rs_cosine_correct(completion: str, gold: str) -> bool:
    """Open-RS's correctness test inside its cosine reward (NormalizationConfig boxed=True, see above)."""
    return _open_rs_correct(completion, gold, _OPEN_RS_COSINE_TARGETS) == 1.0


def _open_rs_correct(completion: str, gold: str, targets: tuple[LatexExtractionConfig, ...]) -> float:
    gold_parsed = _gold_or_raise(gold, "open_rs")
    timeout = _timeout()
    answer_parsed = parse(completion, extraction_config=targets, extraction_mode="first_match", parsing_timeout=timeout)
    # [code] verify(answer_parsed, gold_parsed): Open-RS passed the answer as math-verify's `gold` argument
    # (reversed); kept, since the order matters for equations and intervals. An empty answer is never equal.
    try:
        return float(verify(answer_parsed, list(gold_parsed), timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - [code] Open-RS: "verify failed" -> 0.0
        return 0.0
