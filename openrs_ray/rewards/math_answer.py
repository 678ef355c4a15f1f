"""Answer-correctness reward: is the completion's final answer equivalent to the gold answer?

Built on math-verify (LaTeX/expression extraction + SymPy equivalence). Everything here is pure and
signal-free: math-verify's default timeouts use ``signal.SIGALRM``, which raises outside the main
thread (Ray actors run tasks on worker threads), so every call passes ``parsing_timeout=None`` /
``timeout_seconds=None``. The hard per-sample timeout is the verifier pool's job, not this module's.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

__all__ = ["UnparsableGold", "accuracy_reward", "parse_gold"]

# Gold answers: LaTeX first (MATH), plain expressions as a fallback (plain numbers, GSM8K).
_GOLD_TARGETS = (LatexExtractionConfig(), ExprExtractionConfig())

# Completions: boxed_match_priority=0 puts \boxed{} matches ahead of every other pattern, and
# math-verify scans from the end, so the *last* \boxed{} is tried first. The default normalisation is
# kept on purpose: Open-RS's config (nits=False, malformed_operators=False) rejects common shorthand
# such as \frac12 and \sqrt2 under math-verify 0.9. ExprExtractionConfig catches unboxed "... is 72".
_COMPLETION_TARGETS = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())

_GSM8K_MARKER = "####"
# "1,000" / "-12,345.5": thousands separators that would otherwise read as a tuple/set.
_THOUSANDS_NUMBER = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# An unescaped "$" means the author already delimited the math ("\$18.90" is a dollar sign, not one).
_MATH_DELIMITER = re.compile(r"(?<!\\)\$")

# Bounded so a long run over many datasets cannot grow memory without limit; MATH + GSM8K fit easily.
_GOLD_CACHE_SIZE = 1 << 16


class UnparsableGold(ValueError):
    """The gold answer yields no parseable expression; the sample must be dropped, never scored."""


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
def parse_gold(gold: str) -> tuple[Any, ...] | None:
    """Parse a gold answer once (cached per string) into math-verify objects.

    Accepts LaTeX ("\\frac{1}{2}"), plain numbers ("72", "1,000") and GSM8K solutions ending in
    "#### 18". Returns a tuple (immutable, so the cached value cannot be corrupted by a caller) of
    SymPy objects plus math-verify's string fallback, or None when nothing can be parsed.
    """
    text = _normalise_gold(gold)
    if not text:
        return None
    parsed = parse(text, extraction_config=_GOLD_TARGETS, parsing_timeout=None)
    return tuple(parsed) if parsed else None


def accuracy_reward(completion: str, gold: str) -> float:
    """Return 1.0 if the completion's final answer is equivalent to ``gold``, else 0.0.

    Raises UnparsableGold when the gold cannot be parsed: the caller drops and counts the sample,
    because silently scoring it (Open-RS returned 1.0 here) would reward arbitrary completions.
    """
    gold_parsed = parse_gold(gold)
    if gold_parsed is None:
        raise UnparsableGold(f"cannot parse gold answer {gold!r}")
    # An exception escaping math-verify (it catches most itself) propagates: the verifier scores the
    # sample 0 and counts it as an error, rather than hiding it as an ordinary wrong answer.
    answer_parsed = parse(completion, extraction_config=_COMPLETION_TARGETS, parsing_timeout=None)
    if not answer_parsed:
        return 0.0
    # verify() wraps a non-list argument as a single item, so a tuple must become a list here;
    # argument order matters (gold first) for assignment/equation handling.
    return 1.0 if verify(list(gold_parsed), answer_parsed, timeout_seconds=None) else 0.0
