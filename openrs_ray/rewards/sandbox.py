"""Hard per-sample timeouts without signals: samples are scored in a child process killed when late.

SIGALRM only works in a process's main thread, and Ray runs actor tasks on other threads (verl's
math-verify timeouts silently returned 0 there). A thread cannot be killed either. So each verifier
keeps one child process (from a forkserver that preloaded the reward code) and sends it one sample at a
time over a pipe, waiting with a deadline; a sample past it is scored 0, counted, and the child is killed
and replaced, which also kills whatever SymPy was stuck on.

Why a Process and a Pipe, not multiprocessing.Pool: a Pool's queues hold named POSIX semaphores
(/dev/shm/sem.mp-*) that only its owner's exit or garbage collection unlinks, so every verifier that Ray
kills (ray.kill, a lost node, a driver SIGKILLed) left 6 of them behind; a pipe is file descriptors, which
the kernel closes with the process. A child that dies mid-sample is also seen at once (end of file), not at
the deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from openrs_ray.rewards.custom import register_custom
from openrs_ray.rewards.math_answer import UnparsableGold, use_signal_free_path
from openrs_ray.rewards.registry import PartialScore, RewardContext, score_sample

Status = Literal["ok", "timeout", "error", "unparsable"]


@dataclass
class Outcome:
    """The result of scoring one sample."""

    status: Status
    total: float = 0.0
    components: dict[str, float | None] = field(default_factory=dict)
    detail: str = ""  # the exception, for errors


def _score_one(ctx: RewardContext, weights: dict[str, float], custom: dict[str, str]) -> Outcome:
    """Runs in the child process; user rewards are imported there on first use (a failure is an error)."""
    try:
        register_custom(custom)
        total, parts = score_sample(ctx, weights)
        return Outcome("ok", total, parts)
    except UnparsableGold as err:
        return Outcome("unparsable", detail=str(err))
    except PartialScore as err:  # a reward raised: zero reward, counted; the components before it are kept
        return Outcome("error", components=err.components, detail=str(err)[:500])
    except Exception as err:  # noqa: BLE001 - any failure on model output is a zero reward, counted
        return Outcome("error", detail=f"{type(err).__name__}: {err}"[:500])


def _serve(conn: Connection) -> None:
    """The child's loop: score each (context, weights, custom) sent until the pipe closes."""
    # The child scores in its main thread, where math-verify would arm SIGALRM timeouts; the parent's deadline
    # is the bound here, so the child takes the signal-free path.
    use_signal_free_path()
    conn.send(True)  # up: the first sample's clock may start
    while True:
        try:
            job: tuple[Any, ...] = conn.recv()
        except EOFError:  # the parent closed the pipe or died
            return
        conn.send(_score_one(*job))


class SampleScorer:
    """Scores samples one by one in a killable child process, each within `timeout_s`."""

    def __init__(self, weights: dict[str, float], timeout_s: float, custom: dict[str, str] | None = None) -> None:
        self.weights, self.timeout_s = weights, timeout_s
        self.custom = dict(custom or {})  # name -> "file.py:fn" of user rewards, loaded in the child
        self._ctx = mp.get_context("forkserver")
        # Children fork from a server that already imported math-verify/SymPy: a replacement is cheap.
        self._ctx.set_forkserver_preload(["openrs_ray.rewards.registry"])
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None
        self.restarts = 0

    def _fresh_child(self) -> Connection:
        if self._conn is None:
            ours, theirs = self._ctx.Pipe()
            child = self._ctx.Process(target=_serve, args=(theirs,), daemon=True)
            child.start()
            theirs.close()  # the child's end lives in the child only: its death reads as end of file here
            self._child, self._conn = child, ours
            # Wait until the child answers before any sample's clock starts: starting the forkserver (it
            # imports SymPy) or forking a replacement can take seconds on a loaded machine, and that time
            # must not turn the next sample into a false timeout.
            start_s = max(60.0, 10 * self.timeout_s)
            try:
                if not ours.poll(start_s):
                    raise TimeoutError(f"no answer within {start_s:.0f}s")
                ours.recv()
            except (EOFError, OSError) as err:
                child.join(timeout=5)
                code = child.exitcode
                self._stop()
                why = f"the reward scoring child process failed to start (exit code {code}): {err!r}"
                raise RuntimeError(why) from err
        return self._conn

    def _stop(self) -> None:
        if self._child is not None:
            self._child.kill()  # SIGKILL: whatever it is stuck in, it cannot delay or ignore it
            self._child.join(timeout=10)
            self._child.close()
        if self._conn is not None:
            self._conn.close()
        self._child, self._conn = None, None

    def score(self, contexts: list[RewardContext]) -> list[Outcome]:
        """One Outcome per context, in order; no sample waits more than `timeout_s` once it starts."""
        outcomes: list[Outcome] = []
        for ctx in contexts:
            conn = self._fresh_child()
            started = time.monotonic()
            try:
                conn.send((ctx, self.weights, self.custom))
                if conn.poll(self.timeout_s):
                    outcomes.append(conn.recv())
                    continue
                outcomes.append(Outcome("timeout", detail=f"over {self.timeout_s:.1f}s"))
            except Exception as err:  # noqa: BLE001 - the child died (e.g. out of memory): end of file
                outcomes.append(
                    Outcome("error", detail=f"worker failed after {time.monotonic() - started:.1f}s: {err!r}")
                )
            self._stop()  # a fresh child takes the next sample
            self.restarts += 1
        return outcomes

    def close(self) -> None:
        """Stop the child process."""
        self._stop()
