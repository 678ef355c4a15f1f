"""CPU seconds used by this process and all its descendants (Ray daemons and actors included), for vs_trl.py.

On a shared machine wall seconds per step depend on what else runs; the CPU seconds a step consumed do much less.
"""

from __future__ import annotations

import psutil


def tree_cpu_s() -> float:
    """User + system CPU seconds of this process and its live descendants so far."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total
