"""A DeepSpeed learner rank (ZeRO-2/3; NCCL on GPU, gloo on CPU), run as a Ray actor by LearnerGroup."""

from __future__ import annotations

import contextlib
import glob
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from openrs_ray.config import RunConfig
from openrs_ray.learners.base import Learner
from openrs_ray.learners.distill import partition_logprobs
from openrs_ray.learners.engine import build_reference, build_scheduler, deepspeed_config, load_causal_lm, off_device
from openrs_ray.learners.logprobs import CompletionLogprobs, pack_rows
from openrs_ray.learners.lora import LoraPolicy, param_counts
from openrs_ray.learners.objectives import MicroBatch, Objective, UpdateScale, objective_for
from openrs_ray.types import TrainBatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class DeepSpeedLearner(Learner):
    """Owns one model replica/shard, its optimizer and schedule, and (rank 0) publishing weights."""

    def __init__(self, rank: int, cfg: RunConfig) -> None:
        self.rank, self.cfg = rank, cfg
        self.world_size = cfg.learner.num_learners
        self.engine: Any = None
        self.ref: Any = None  # CompletionLogprobs of the frozen initial policy, when beta > 0
        self.teacher: Any = None  # frozen KD teacher on this rank (kd.teacher_source = learner)
        self.lora: LoraPolicy | None = None  # the PEFT wrapper when learner.lora is set
        # The stage's objective (learners/objectives.py), chosen once: nothing below branches on the stage.
        self.objective: Objective = objective_for(cfg)

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's address and a free port for the process group."""
        import ray

        return ray.util.get_node_ip_address(), _free_port()

    def init(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the process group, load the model(s), build the DeepSpeed engine. Collective: all ranks."""
        import deepspeed

        t0 = time.perf_counter()
        os.environ.update(
            RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0",
            MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
        )  # fmt: skip
        deepspeed.init_distributed(dist_backend="nccl" if self.cfg.cluster.use_gpu else "gloo")
        torch.manual_seed(self.cfg.seed)
        lc = self.cfg.learner
        model = load_causal_lm(self.cfg)
        if lc.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.lora = LoraPolicy(model, lc) if lc.lora is not None else None  # adapters on a frozen base
        policy = CompletionLogprobs(self.lora.causal_lm if self.lora else model)  # forward: completion logprobs
        self.param_counts = param_counts(policy, log=self.rank == 0)
        trainable = [p for p in policy.parameters() if p.requires_grad]  # LoRA: only adapters get Adam state
        optimizer = torch.optim.AdamW(trainable, lr=lc.lr, betas=lc.adam_betas, weight_decay=lc.weight_decay)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=build_scheduler(optimizer, self.cfg),
            config=deepspeed_config(self.cfg),
        )  # fmt: skip
        if self.objective.uses_reference():
            self.ref = self.lora.reference(self.engine) if self.lora else build_reference(self.cfg, self.engine.device)
        if self.objective.teacher_on_learner():
            self.teacher = build_reference(self.cfg, self.engine.device, self.cfg.kd.teacher)
        # A LoRA reference is the policy itself with its adapters off: nothing more to check.
        ref = None if self.lora is not None else self.ref
        held = {"policy": self.engine.module, "reference": ref, "teacher": self.teacher}
        wrong = off_device(held, self.engine.device)
        assert not wrong, f"learner rank {self.rank}: parameters off {self.engine.device}: {wrong[:3]}"
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        return {"init_s": time.perf_counter() - t0}

    def _prepare(self, batch: TrainBatch) -> list[MicroBatch]:
        """Pack micro-batches; compute old logprobs (mu > 1) and reference logprobs (beta > 0) once."""
        gas = self.engine.gradient_accumulation_steps()
        size = -(-len(batch) // gas)
        out = []
        for i in range(gas):
            part = batch.select(slice(i * size, (i + 1) * size))
            # data.long_prompts=truncate_left: the learner sees a long prompt's last max_prompt_length tokens
            # ([trl] as TRL did); with drop, no prompt is longer and this changes nothing.
            keep = self.cfg.generation.max_prompt_length
            ids, attn, pos, cmask = pack_rows([p[-keep:] for p in part.prompt_ids], part.completion_ids, self.pad_id)
            weights = torch.tensor(part.loss_weights, dtype=cmask.dtype).unsqueeze(1)  # [b, 1]
            dev = self.engine.device  # pack on CPU, compute where the engine lives (cuda on GPU)
            mb = MicroBatch(
                ids.to(dev), attn.to(dev), pos.to(dev), (cmask * weights).to(dev),
                torch.tensor(part.advantages, dtype=torch.float32, device=dev),
            )  # fmt: skip
            mb.sampling = self._sampling(part, cmask.size(1), dev)
            if self.objective.uses_teacher_topk():
                self._attach_teacher(mb, part)
            with torch.no_grad():
                if self.cfg.learner.num_iterations > 1:
                    self.engine.eval()
                    mb.old_logprobs = self.objective.logprobs(self.engine, mb)
                if self.ref is not None:
                    mb.ref_logprobs = self.objective.logprobs(self.ref, mb)
            out.append(mb)
        return out

    def _attach_teacher(self, mb: MicroBatch, part: TrainBatch) -> None:
        """The teacher's top-k ids and partition logprobs per completion token, padded to [b, C, k]."""
        width, dev = mb.mask.size(1), self.engine.device
        if self.teacher is not None:  # on this rank: full logits, its own top-k
            mb.topk_ids, mb.teacher = self.teacher(
                mb.input_ids, mb.attention_mask, mb.position_ids, width, topk=self.cfg.kd.top_k
            )
            return
        k = max(len(pos) for row in part.teacher_ids for pos in row)
        ids = torch.zeros(len(part), width, k, dtype=torch.long)
        lps = torch.full((len(part), width, k), -1e4)  # padding: a vanishing mass, never under the mask
        for r, (row_ids, row_lps) in enumerate(zip(part.teacher_ids, part.teacher_logprobs, strict=True)):
            for c, (pos_ids, pos_lps) in enumerate(zip(row_ids, row_lps, strict=True)):
                ids[r, c, : len(pos_ids)] = torch.tensor(pos_ids)
                lps[r, c, : len(pos_lps)] = torch.tensor(pos_lps)
        mb.topk_ids, mb.teacher = ids.to(dev), partition_logprobs(lps).to(dev)

    def _sampling(self, part: TrainBatch, width: int, dev: torch.device) -> torch.Tensor | None:
        """[b, C] sampling logprobs, or None when IS correction is off or some row lacks them."""
        rows = part.sampling_logprobs
        if not self.cfg.learner.importance_sampling_correction or any(
            len(s) != len(c) for s, c in zip(rows, part.completion_ids, strict=True)
        ):
            return None
        return torch.tensor([list(s) + [0.0] * (width - len(s)) for s in rows], dtype=torch.float32, device=dev)

    def update(self, batch: TrainBatch, num_items_in_batch: int) -> dict[str, float]:
        """`num_iterations` optimizer steps over this rank's shard, each accumulating over micro-batches.

        Every rank runs exactly gradient_accumulation_steps backward passes per step (LearnerGroup pads
        shards to equal length) because ZeRO reduces gradients inside each backward.
        """
        t0 = time.perf_counter()
        lc = self.cfg.learner
        micro = self._prepare(batch)
        sums: dict[str, float] = {}
        grad_norms = []
        self.engine.train()
        scale = UpdateScale(num_items_in_batch / self.world_size, self.engine.gradient_accumulation_steps())
        for _ in range(lc.num_iterations):
            for mb in micro:
                loss, metrics = self.objective.compute_loss(self.engine, mb, scale)
                self.engine.backward(loss)
                self.engine.step()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            norm = self.engine.get_global_grad_norm()
            grad_norms.append(float(norm) if norm is not None else float("nan"))
        n = lc.num_iterations * len(micro)
        # DeepSpeed checks the global gradient norm (fp32 and bf16 alike) and skips a step whose
        # gradients hold NaN/inf: the weights stay as they were. We only count it.
        skipped = sum(not math.isfinite(g) for g in grad_norms)
        tokens = float(sum(mb.mask.sum().item() for mb in micro))
        for key in [k for k in sums if k.endswith("_sum")]:  # token means of this rank's share
            sums[key.removesuffix("_sum")] = sums.pop(key) * n / max(tokens * lc.num_iterations, 1.0)
        return {
            "nonfinite_updates": float(skipped),
            **{k: v / n for k, v in sums.items()},
            "grad_norm": sum(grad_norms) / len(grad_norms),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "learner_tokens": tokens,
            "learn_s": time.perf_counter() - t0,
            **self.param_counts,
        }

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprobs of a completion under the current weights (temperature 1), for checks and evals."""
        self.engine.eval()
        input_ids, attn, pos, _ = pack_rows([prompt_ids], [completion_ids], self.pad_id)
        dev = self.engine.device
        return self.engine(input_ids.to(dev), attn.to(dev), pos.to(dev), len(completion_ids))[0].tolist()

    def placement(self) -> dict:
        """Node and GPU this rank runs on (recorded once in metrics.jsonl)."""
        from openrs_ray.cluster import where

        return {**where(), "device": str(self.engine.device)}

    def _full_parameters(self, device: str = "cpu"):
        """(name, full tensor copy on `device`) per parameter; under ZeRO-3 gathered one at a time (collective).

        A copy, because ZeRO-3 frees the gathered data when its context ends.
        """
        import deepspeed

        if self.lora is not None:  # adapters merged into the base weights, under the base names
            yield from self.lora.merged_parameters(device)
            return
        for name, param in self.engine.module.causal_lm.named_parameters():
            with deepspeed.zero.GatheredParameters([param], enabled=self.cfg.learner.zero_stage == 3):
                yield name, param.detach().to(device, copy=True)

    def _join_gathers(self) -> None:
        """What a rank other than 0 does while rank 0 reads the full weights: under ZeRO-3 take part in each
        parameter's gather (collective) without copying it; under ZeRO 0-2 nothing at all."""
        import deepspeed

        if self.cfg.learner.zero_stage != 3:
            return
        if self.lora is not None:  # the same gathers, in the same order, as LoraPolicy.merged_parameters
            self.lora.join_gathers()
            return
        for param in self.engine.module.causal_lm.parameters():
            with deepspeed.zero.GatheredParameters([param]):
                pass

    def full_state(self) -> dict[str, torch.Tensor]:
        """This rank's view of every full parameter (collective under ZeRO-3): for checks across ranks."""
        return dict(self._full_parameters())

    def export_weights(self, bucket_bytes: int) -> tuple[list, int, int] | None:
        """Put the full weights in the object store, in buckets. Collective under ZeRO-3; rank 0 returns.

        Returns (bucket refs, bytes, tensors) on rank 0, None elsewhere. Under ZeRO-3 each parameter is
        gathered on its own while being packed, so no rank ever holds a second full copy at once.
        """
        import ray

        if self.rank != 0:
            self._join_gathers()
            return None
        refs, bucket, size, total, count = [], [], 0, 0, 0
        for name, tensor in self._full_parameters():
            bucket.append((name, tensor))
            size += tensor.numel() * tensor.element_size()
            if size >= bucket_bytes:
                refs.append(ray.put(bucket))
                total, count, bucket, size = total + size, count + len(bucket), [], 0
        if bucket:
            refs.append(ray.put(bucket))
            total, count = total + size, count + len(bucket)
        return refs, total, count

    def weight_specs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, full shape, dtype) of every parameter, in the order they are sent."""
        if self.lora is not None:
            return self.lora.weight_specs()
        out = []
        for name, p in self.engine.module.causal_lm.named_parameters():
            shape = tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 keeps the full shape aside
            out.append((name, shape, str(p.dtype).removeprefix("torch.")))
        return out

    def channel_address(self) -> tuple[str, int]:
        """Serve the weight channel's store from rank 0's host; returns its (host, port)."""
        import ray

        from openrs_ray.broadcast.channel import serve_store

        port = _free_port()
        self._store_server = serve_store(port, self.cfg.broadcast.timeout_s)
        return ray.util.get_node_ip_address(), port

    def open_channel(self, host: str, port: int, world_size: int, epoch: int) -> int:
        """Rank 0 joins the weight channel as its sender (blocks until every engine joins); the group of the
        previous membership is shut down first."""
        from openrs_ray.broadcast.channel import WeightChannel, channel_backend, channel_timeout_s

        if self.rank == 0:
            self.close_channel()
            backend = channel_backend(self.cfg)  # from the config, as on the engines: never gloo facing NCCL
            device = str(self.engine.device) if backend == "nccl" else "cpu"
            timeout = channel_timeout_s(self.cfg)
            self._channel = WeightChannel(host, port, 0, world_size, epoch, timeout, device, backend)
        return self.rank

    def close_channel(self) -> None:
        """Shut down rank 0's weight channel group, if any."""
        channel, self._channel = getattr(self, "_channel", None), None
        if channel is not None:
            channel.close()

    def send_weights(self, bucket_bytes: int) -> tuple[int, str | None]:
        """Broadcast full weights on the channel (rank 0); other ranks only take part in ZeRO-3 gathers.
        Returns (bytes sent, the channel's error if a member was lost mid-broadcast)."""
        if self.rank != 0:
            self._join_gathers()
            return 0, None
        tensors = (t for _, t in self._full_parameters(str(self._channel.device)))  # on the GPU for NCCL
        return self._channel.send(tensors, self.weight_specs(), bucket_bytes)

    def save(self, path: str) -> str:
        """HF-format checkpoint (weights + config + tokenizer) plus DeepSpeed state for resume. Collective.

        With LoRA the HF weights are the merged model and out/adapter holds the adapter (PEFT's format)."""
        out = Path(path)
        state = dict(self._full_parameters()) if self.rank == 0 else self._join_gathers()
        self.engine.save_checkpoint(str(out / "deepspeed"))  # optimizer, scheduler, ZeRO partitions
        if self.lora is not None:
            adapter = self.lora.adapter_state()  # collective under ZeRO-3
            if self.rank == 0:
                self.lora.save(out, state, adapter)
                self._save_tokenizer(out)
            return str(out)
        if self.rank == 0:
            self.engine.module.causal_lm.save_pretrained(out, state_dict=state, safe_serialization=True)
            self._save_tokenizer(out)
        return str(out)

    def _save_tokenizer(self, out: Path) -> None:
        from transformers import AutoTokenizer

        mc = self.cfg.model
        AutoTokenizer.from_pretrained(mc.path, trust_remote_code=mc.trust_remote_code).save_pretrained(out)

    def load(self, path: str) -> str:
        """Restore weights, optimizer and scheduler from a DeepSpeed checkpoint folder. Collective."""
        load_path, _ = self.engine.load_checkpoint(path)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {path}")
        return load_path

    def shutdown(self) -> None:
        """Leave the process groups and remove any shared-memory all-reduce buffer of this group."""
        self.close_channel()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        # DeepSpeed's CPU shm all-reduce (used when LOCAL_SIZE == world size) names its buffers after
        # uid, master address and port; it never unlinks them. Remove exactly ours.
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if addr and port:
            for path in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_*"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
