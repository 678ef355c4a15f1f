"""A DeepSpeed learner rank (ZeRO-2/3; NCCL on GPU, gloo on CPU), run as a Ray actor by LearnerGroup."""

from __future__ import annotations

import contextlib
import glob
import math
import os
import socket
import time

import torch

from openrs_ray.config import RunConfig
from openrs_ray.learners.base import Learner
from openrs_ray.learners.logprobs import completion_logprobs, pack_rows
from openrs_ray.learners.loss import policy_loss
from openrs_ray.types import TrainBatch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def deepspeed_config(cfg: RunConfig) -> dict:
    """The DeepSpeed config of one learner rank, derived from the run config."""
    rows_per_rank = cfg.rows_per_step // cfg.learner.num_learners
    lc = cfg.learner
    return {
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": math.ceil(rows_per_rank / lc.micro_batch_size),
        "gradient_clipping": lc.max_grad_norm,
        "zero_optimization": {"stage": lc.zero_stage},
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "fp16": {"enabled": cfg.model.dtype == "float16"},
        # We hand DeepSpeed a torch AdamW: it avoids compiling FusedAdam/cpu_adam (minutes on CPU).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedLearner(Learner):
    """Owns one model replica/shard, its optimizer, and (rank 0) the publishing of weights."""

    def __init__(self, rank: int, cfg: RunConfig) -> None:
        self.rank, self.cfg = rank, cfg
        self.world_size = cfg.learner.num_learners
        self.engine = None

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the process group."""
        import ray

        return ray.util.get_node_ip_address(), _free_port()

    def init(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the process group, load the model, build the DeepSpeed engine. Collective: all ranks."""
        import deepspeed
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        os.environ.update(
            RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0",
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
        )  # fmt: skip
        backend = "nccl" if self.cfg.cluster.use_gpu else "gloo"
        deepspeed.init_distributed(dist_backend=backend)
        torch.manual_seed(self.cfg.seed)
        mc = self.cfg.model
        model = AutoModelForCausalLM.from_pretrained(
            mc.path, dtype=_DTYPES[mc.dtype], trust_remote_code=mc.trust_remote_code
        )
        if self.cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        lc = self.cfg.learner
        optimizer = torch.optim.AdamW(model.parameters(), lr=lc.lr, betas=lc.adam_betas, weight_decay=lc.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(self.cfg))
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        return {"init_s": time.perf_counter() - t0}

    def _micro_batches(self, batch: TrainBatch) -> list[TrainBatch]:
        gas = self.engine.gradient_accumulation_steps()
        size = math.ceil(len(batch) / gas)
        return [batch.select(slice(i * size, (i + 1) * size)) for i in range(gas)]

    def update(self, batch: TrainBatch, num_items_in_batch: int) -> dict[str, float]:
        """One optimizer step over this rank's shard, accumulating over micro-batches.

        Every rank runs exactly gradient_accumulation_steps backward passes (LearnerGroup pads shards
        to equal length) because ZeRO reduces gradients inside each backward.
        """
        t0 = time.perf_counter()
        lc, gen = self.cfg.learner, self.cfg.generation
        self.engine.train()
        sums: dict[str, float] = {}
        tokens = 0
        for mb in self._micro_batches(batch):
            input_ids, attn, pos, cmask = pack_rows(mb.prompt_ids, mb.completion_ids, self.pad_id)
            cmask = cmask * torch.tensor(mb.loss_weights, dtype=cmask.dtype).unsqueeze(1)  # [b, C]
            logprobs = completion_logprobs(
                self.engine.module, input_ids, attn, pos, cmask.size(1), temperature=gen.temperature
            )  # [b, C]
            # One update per batch (num_iterations=1): old = current, detached, exactly as TRL does.
            loss, metrics = policy_loss(
                logprobs, logprobs.detach(), torch.tensor(mb.advantages, dtype=logprobs.dtype), cmask,
                loss_type=lc.loss_type, epsilon=lc.epsilon, epsilon_high=lc.epsilon_high, beta=0.0,
                max_completion_length=gen.max_completion_length,
                # DeepSpeed averages gradients over ranks; dividing by tokens/world_size gives the
                # global token mean, exactly as TRL normalises dapo under DDP.
                num_items_in_batch=num_items_in_batch / self.world_size,
            )  # fmt: skip
            self.engine.backward(loss)
            self.engine.step()
            tokens += int(cmask.sum().item())
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v
        n = self.engine.gradient_accumulation_steps()
        out = {k: v / n for k, v in sums.items()}
        grad_norm = self.engine.get_global_grad_norm()
        out.update(
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            learner_tokens=float(tokens),
            learn_s=time.perf_counter() - t0,
        )
        return out

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprobs of a completion under the current weights (temperature 1), for checks and evals."""
        self.engine.eval()
        input_ids, attn, pos, _ = pack_rows([prompt_ids], [completion_ids], self.pad_id)
        out = completion_logprobs(self.engine.module, input_ids, attn, pos, len(completion_ids))
        return out[0].tolist()

    def export_weights(self, bucket_bytes: int) -> tuple[list, int, int] | None:
        """Put the full weights in the object store, in buckets. Collective under ZeRO-3; rank 0 returns.

        Returns (bucket refs, bytes, tensors) on rank 0, None elsewhere. Under ZeRO-3 each parameter is
        gathered on its own while being packed, so no rank ever holds a second full copy.
        """
        import deepspeed
        import ray

        refs, bucket, size, total, count = [], [], 0, 0, 0
        for name, param in self.engine.module.named_parameters():
            with deepspeed.zero.GatheredParameters([param], enabled=self.cfg.learner.zero_stage == 3):
                if self.rank == 0:
                    tensor = param.detach().to("cpu", copy=True)
                    bucket.append((name, tensor))
                    size += tensor.numel() * tensor.element_size()
            if self.rank == 0 and size >= bucket_bytes:
                refs.append(ray.put(bucket))
                total, count, bucket, size = total + size, count + len(bucket), [], 0
        if self.rank != 0:
            return None
        if bucket:
            refs.append(ray.put(bucket))
            total, count = total + size, count + len(bucket)
        return refs, total, count

    def shutdown(self) -> None:
        """Leave the process group and remove any shared-memory all-reduce buffer of this group."""
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        # DeepSpeed's CPU shm all-reduce (used when LOCAL_SIZE == world size) names its buffers after
        # uid, master address and port; it never unlinks them. Remove exactly ours.
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if addr and port:
            for path in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_*"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
