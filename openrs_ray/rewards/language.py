"""Language consistency: how much of a completion is written in a script other than the prompt's.

Qwen models drift into Chinese during RL. Python's unicodedata has no script property, so the script
of a letter is read from the first word of its Unicode name (LATIN, CJK, CYRILLIC, HIRAGANA, ...).
Greek letters are neutral: math writes π and θ in any language.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

__all__ = ["language_drift", "script_of"]

_NEUTRAL = {"GREEK", "MATHEMATICAL", "DIGIT"}
# Scripts that belong together: Japanese mixes kana with CJK ideographs, Korean is Hangul.
_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "CJK": "CJK", "HANGUL": "HANGUL"}


def script_of(ch: str) -> str | None:
    """The script family of a letter, or None for non-letters and script-neutral letters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    word = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
    if word in _NEUTRAL:
        return None
    return _FAMILY.get(word, word)


def _scripts(text: str) -> Counter[str]:
    return Counter(s for s in map(script_of, text) if s is not None)


def language_drift(prompt: str, completion: str) -> float:
    """Share of the completion's letters outside the prompt's dominant script (0.0 to 1.0).

    A prompt without letters (pure arithmetic) is taken as Latin, the language the system prompt asks for.
    """
    found = _scripts(completion)
    total = sum(found.values())
    if total == 0:
        return 0.0
    prompt_scripts = _scripts(prompt)
    home = prompt_scripts.most_common(1)[0][0] if prompt_scripts else "LATIN"
    return (total - found[home]) / total
