"""Methods added to vLLM's worker (`worker_extension_cls`), reached through `LLM.collective_rpc`.

vLLM's own in-place reload (the worker's `reload_weights`) does the work: it loads checkpoint-format
tensors and re-runs the backend's post-processing (the CPU backend repacks linear weights, so a
plain `model.load_weights` into the repacked parameters fails).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from openrs_ray.generators.quiet import quiet_vllm


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

        return self._reload(tensors(), lambda: count)

    def open_weight_channel(
        self, host: str, port: int, rank: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> int:
        """Join the learner's weight channel (a process group) as `rank`, after shutting down the group of
        the previous membership; gloo blocks until all members join. The backend comes from the config."""
        from openrs_ray.broadcast.channel import WeightChannel

        old = getattr(self, "_weight_channel", None)
        if old is not None:
            old.close()
        device = str(self.device) if backend == "nccl" else "cpu"  # the worker's GPU (cuda:N) under NCCL
        self._weight_channel = WeightChannel(host, port, rank, world_size, epoch, timeout_s, device, backend)
        return rank

    def receive_weight_channel(self, specs: list, bucket_bytes: int) -> int:
        """Load the weights learner rank 0 is broadcasting on the channel, bucket by bucket."""
        return self._reload(self._weight_channel.receive(specs, bucket_bytes), lambda: len(specs))

    def _reload(self, tensors: Iterator[tuple[str, torch.Tensor]], count) -> int:
        quiet_vllm()  # here too: the worker's process, wherever vLLM runs it (its expected reload notices)
        # The worker's reload_weights sets vLLM's current config around the model runner's.
        self.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        _retie_lm_head(self.model_runner.get_model(), self.model_runner.model_config.hf_config)
        return count()


def _retie_lm_head(model: torch.nn.Module, hf_config: object) -> None:
    """Make a tied LM head compute with the reloaded input embedding.

    vLLM's layerwise reload re-processes `embed_tokens` but not the `lm_head` tied to it (its documented
    limitation: tied parameters only reflect one parent). On CPU the head's GEMM keeps its own packed
    copy of the weight, so logits would silently use the old embedding. Re-tie the parameter (reload
    may have replaced it) and redo the head's post-load processing.
    """
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if not getattr(hf_config, "tie_word_embeddings", False) or lm_head is None or embed is None:
        return
    if lm_head.weight is not embed.weight:
        lm_head.tie_weights(embed)
    lm_head.quant_method.process_weights_after_loading(lm_head)
