"""Hard per-sample timeouts without signals: samples are scored in a child process killed when late.

SIGALRM only works in a process's main thread, and Ray runs actor tasks on other threads (verl's
math-verify timeouts silently returned 0 there). A thread cannot be killed either. So each verifier
keeps one child process (multiprocessing.Pool of 1, from a forkserver that preloaded the reward code)
and waits for each sample with a deadline; a sample past it is scored 0, counted, and the child is
terminated and replaced, which also kills whatever SymPy was stuck on.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from typing import Literal

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


def _ready() -> bool:
    """Runs in the child: proves it is up."""
    return True


class SampleScorer:
    """Scores samples one by one in a killable child process, each within `timeout_s`."""

    def __init__(self, weights: dict[str, float], timeout_s: float, custom: dict[str, str] | None = None) -> None:
        self.weights, self.timeout_s = weights, timeout_s
        self.custom = dict(custom or {})  # name -> "file.py:fn" of user rewards, loaded in the child
        self._ctx = mp.get_context("forkserver")
        # Children fork from a server that already imported math-verify/SymPy: a replacement is cheap.
        self._ctx.set_forkserver_preload(["openrs_ray.rewards.registry"])
        self._pool: Pool | None = None
        self.restarts = 0

    def _fresh_pool(self) -> Pool:
        if self._pool is None:
            # The child runs samples in its main thread, where math-verify would arm SIGALRM timeouts; the
            # pool's own deadline is the bound here, so the child takes the signal-free path.
            self._pool = self._ctx.Pool(processes=1, initializer=use_signal_free_path)
            # Wait until the child answers before any sample's clock starts: starting the forkserver (it
            # imports SymPy) or forking a replacement can take seconds on a loaded machine, and that time
            # must not turn the next sample into a false timeout.
            self._pool.apply_async(_ready).get(timeout=max(60.0, 10 * self.timeout_s))
        return self._pool

    def _kill(self) -> None:
        if self._pool is not None:
            self._pool.terminate()  # SIGTERM to the child, whatever it is doing
            self._pool.join()
            self._pool = None
            self.restarts += 1

    def score(self, contexts: list[RewardContext]) -> list[Outcome]:
        """One Outcome per context, in order; no sample waits more than `timeout_s` once it starts."""
        outcomes: list[Outcome] = []
        while len(outcomes) < len(contexts):
            pool = self._fresh_pool()
            todo = contexts[len(outcomes) :]
            pending = [pool.apply_async(_score_one, (ctx, self.weights, self.custom)) for ctx in todo]
            for result in pending:
                # The child scores in order, so a sample starts when the one before it returns.
                started = time.monotonic()
                try:
                    outcomes.append(result.get(timeout=self.timeout_s))
                    continue
                except mp.TimeoutError:
                    outcomes.append(Outcome("timeout", detail=f"over {self.timeout_s:.1f}s"))
                except Exception as err:  # noqa: BLE001 - the child died (e.g. out of memory)
                    outcomes.append(
                        Outcome("error", detail=f"worker failed after {time.monotonic() - started:.1f}s: {err}")
                    )
                self._kill()  # a fresh child takes the rest of the queue
                break
        return outcomes

    def close(self) -> None:
        """Stop the child process."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
