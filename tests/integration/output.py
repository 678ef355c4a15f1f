"""What a run prints: the WARNING lines a newcomer would read as trouble (issue: a clean terminal)."""

from __future__ import annotations

import re

# Logging records at WARNING (Ray, vLLM, DeepSpeed, Python's logging) and Python / C++ warnings
# ("FutureWarning: ...", "[W... utils.cpp:68] Warning: ...").
_WARNING = re.compile(r"\bWARNING\b|\w*Warning:")
MAX_WARNINGS = 5  # a handful: what cannot be filtered without hiding real problems (e.g. Ray's auth notice)


def warning_lines(text: str) -> list[str]:
    """The lines of `text` that carry a warning."""
    return [line for line in text.splitlines() if _WARNING.search(line)]
