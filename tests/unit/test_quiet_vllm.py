"""The engine's filter of known vLLM notices drops exactly those records, on vLLM's own loggers."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from openrs_ray.generators.quiet import EXPECTED, RELOAD_FAILED, RELOAD_LOGGER, quiet_vllm


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@pytest.fixture()
def reload_log():
    """vLLM's layerwise-reload logger as vLLM itself creates it, with the filter installed (twice: idempotent)."""
    from vllm.logger import init_logger

    quiet_vllm()
    quiet_vllm()
    logger = init_logger(RELOAD_LOGGER)
    sink = _Collect()
    logger.addHandler(sink)
    yield logger, sink
    logger.removeHandler(sink)


def test_only_the_expected_unloaded_layers_are_dropped(reload_log) -> None:
    logger, sink = reload_log
    assert sum(type(f).__name__ == "ExpectedNotices" for f in logger.filters) == 1
    for layer in ("RotaryEmbedding", "ParallelLMHead", "QKVParallelLinear", "VocabParallelEmbedding"):
        logger.warning(RELOAD_FAILED, layer)
    logger.warning("RotaryEmbedding: something else")
    assert sink.seen == [
        "QKVParallelLinear: Failed to load weights",  # a layer that should have loaded: still warns
        "VocabParallelEmbedding: Failed to load weights",
        "RotaryEmbedding: something else",
    ]


def test_startup_notices_dropped_and_others_kept() -> None:
    quiet_vllm()
    logger = logging.getLogger("vllm.v1.worker.cpu_worker")
    sink = _Collect()
    logger.addHandler(sink)
    try:
        logger.warning("%s is not found in LD_PRELOAD. For best performance ...", "libtcmalloc")
        logger.warning("Out of KV cache blocks")  # not in the table: shown
    finally:
        logger.removeHandler(sink)
    assert sink.seen == ["Out of KV cache blocks"]


@pytest.mark.parametrize("name", sorted(EXPECTED) + [RELOAD_LOGGER])
def test_table_matches_installed_vllm(name: str) -> None:
    """Each filtered message still exists in that module of the installed vLLM (a renamed one would show)."""
    source = Path(importlib.util.find_spec(name).origin).read_text()
    for start in EXPECTED.get(name, (RELOAD_FAILED,)):
        assert f'"{start}' in source, (name, start)
