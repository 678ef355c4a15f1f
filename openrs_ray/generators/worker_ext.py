"""Methods added to vLLM's worker (`worker_extension_cls`), reached through `LLM.collective_rpc`.

vLLM's own in-place reload (`model_runner.reload_weights`) does the work: it loads checkpoint-format
tensors and re-runs the backend's post-processing (the CPU backend repacks linear weights, so a
plain `model.load_weights` into the repacked parameters fails).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def load_weight_buckets(self, bucket_refs: list, timeout_s: float) -> int:
        """Fetch buckets of (name, tensor) pairs from the Ray object store one at a time and load them.

        The iterator pulls a bucket only when vLLM asks for the next tensor, so at most one bucket
        is alive beside the model. Returns the number of tensors loaded.
        """
        import ray

        count = 0

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            for ref in bucket_refs:
                for name, tensor in ray.get(ref, timeout=timeout_s):
                    count += 1
                    yield name, tensor

        self.model_runner.reload_weights(weights_iterator=tensors(), is_checkpoint_format=True)
        return count
