"""LoRA on a learner rank (PEFT): adapters train, the base stays frozen, everything outside sees full weights.

- The policy is PEFT's `get_peft_model` of the causal LM; DeepSpeed wraps the same modules, so only the
  adapters (and `modules_to_save`) are trainable and only they get optimizer state.
- Generators receive merged weights, W + (alpha / r) * B @ A, under the base model's parameter names
  (PEFT's `base_layer` / `modules_to_save.<adapter>` wrappers stripped), computed per layer without mutating
  the trained weights (TRL merges, exports and unmerges instead: the same numbers, one more write). Engines and
  both broadcast backends are therefore unchanged.
- The KL reference (beta > 0) is the same modules with the adapters disabled: no second copy of the weights.
- A checkpoint holds the adapter in PEFT's format (policy/adapter) next to the merged HF model (policy/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from openrs_ray.config import ConfigError
from openrs_ray.config.sections import LearnerConfig, LoraConfig

ADAPTER = "default"  # PEFT's name for a model's single adapter
_DROPPED = re.compile(r"\.(lora_[A-Za-z_]+|original_module)\.")  # adapter factors and the frozen copy


def base_name(name: str) -> str | None:
    """The base model's name of a PEFT parameter, or None when the parameter is not part of the base model.

    `base_model.model.` (PeftModel's prefix) goes; `x.base_layer.weight` -> `x.weight`;
    `x.modules_to_save.default.weight` -> `x.weight`; lora_A/lora_B factors and `original_module` (the frozen
    copy a modules_to_save wrapper keeps) -> None.
    """
    name = name.removeprefix("base_model.model.")
    if _DROPPED.search(name):
        return None
    name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
    return name.replace(".base_layer.", ".")


def merged_weight(
    weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float, fan_in_fan_out: bool = False
) -> torch.Tensor:
    """W + scale * B @ A for W [out, in], A [r, in], B [out, r] (transposed for fan_in_fan_out layers such as
    GPT-2's Conv1D), computed in float32 and returned as a new tensor in W's dtype."""
    delta = lora_b.float() @ lora_a.float()  # [out, in]
    if fan_in_fan_out:
        delta = delta.T
    return (weight.float() + scale * delta).to(weight.dtype)


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 keeps the full size aside


def param_counts(module: torch.nn.Module, log: bool = False) -> dict[str, float]:
    """Trainable and total parameter counts (full sizes, also under ZeRO-3); printed to the log when `log`."""
    params = list(module.parameters())
    trainable, total = sum(_numel(p) for p in params if p.requires_grad), sum(_numel(p) for p in params)
    if log:
        print(f"learner: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)", flush=True)
    return {"trainable_params": float(trainable), "total_params": float(total)}


def check_target_modules(model: torch.nn.Module, cfg: LoraConfig) -> None:
    """Every target name matches some module, every match is a linear layer (what the merge handles), and no
    adapter or fully trained module sits on a tied embedding (the engines keep their head tied)."""
    modules = dict(model.named_modules())
    tied = _tied_embeddings(model, modules)
    for name in cfg.modules_to_save:
        if name in tied:
            raise _tied_error("modules_to_save", name)
    for target in cfg.target_modules:
        hits = [n for n in modules if n == target or n.endswith("." + target)]
        if not hits:
            linears = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Linear)})
            raise ConfigError(
                f"learner.lora.target_modules: {target!r} matches no module of the model (its linear layers: "
                f"{', '.join(linears)})"
            )
        if target in tied:
            raise _tied_error("target_modules", target)
        other = [n for n in hits if not isinstance(modules[n], torch.nn.Linear)]
        if other:
            raise ConfigError(
                f"learner.lora.target_modules: {target!r} matches {other[0]} ({type(modules[other[0]]).__name__}); "
                "LoRA is served on linear layers only (their adapters merge exactly into the exported weights)"
            )


def _tied_embeddings(model: torch.nn.Module, modules: dict[str, torch.nn.Module]) -> set[str]:
    """Short names of the input and output embeddings when they share one weight (tie_word_embeddings)."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None or inp.weight is not out.weight:
        return set()
    return {n.rsplit(".", 1)[-1] for n, m in modules.items() if m is inp or m is out}


def _tied_error(key: str, name: str) -> ConfigError:
    return ConfigError(
        f"learner.lora.{key}: {name!r} shares its weight with the other embedding (tie_word_embeddings); "
        "training it alone would untie them, which the engines' tied head cannot serve"
    )


class LoraPolicy:
    """The PEFT wrapper of one learner rank's policy, and what LoRA changes for export, reference and save."""

    def __init__(self, model: torch.nn.Module, learner: LearnerConfig) -> None:
        import peft

        cfg = learner.lora
        assert cfg is not None
        check_target_modules(model, cfg)
        config = peft.LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
            modules_to_save=list(cfg.modules_to_save) or None, bias="none", task_type="CAUSAL_LM",
        )  # fmt: skip
        if learner.gradient_checkpointing:  # a frozen embedding gives checkpointed blocks inputs without grad
            model.enable_input_require_grads()
        self.peft = peft.get_peft_model(model, config)
        self.zero3 = learner.zero_stage == 3  # parameters are partitioned: gather before reading

    @property
    def causal_lm(self) -> torch.nn.Module:
        """The causal LM with adapters injected (what CompletionLogprobs calls; PeftModel's own attribute
        forwarding would hide the decoder behind it)."""
        return self.peft.get_base_model()

    def _gathered(self, params: list[torch.Tensor]) -> Any:
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, enabled=self.zero3)

    def _entries(self) -> Iterator[tuple[str, torch.Tensor, Any]]:
        """(base name, parameter, LoRA layer whose adapter merges into it or None), in send order."""
        from peft.tuners.lora import Linear

        modules = dict(self.causal_lm.named_modules())
        for name, param in self.causal_lm.named_parameters():
            out = base_name(name)
            if out is None:
                continue
            owner = name.removesuffix(".base_layer.weight")
            layer = modules.get(owner) if owner != name else None
            yield out, param, layer if isinstance(layer, Linear) and ADAPTER in layer.lora_A else None

    def merged_parameters(self, device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
        """(base name, merged full tensor on `device`) per base parameter; collective under ZeRO-3."""
        for name, param, layer in self._entries():
            if layer is None:
                with self._gathered([param]):
                    yield name, param.detach().to(device, copy=True)
                continue
            a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            with self._gathered([param, a, b]), torch.no_grad():
                merged = merged_weight(param, a, b, layer.scaling[ADAPTER], layer.fan_in_fan_out)
            yield name, merged.to(device)

    def join_gathers(self) -> None:
        """Ranks other than 0: take part in merged_parameters' ZeRO-3 gathers (same groups, same order), copying
        nothing, while rank 0 reads the merged weights."""
        for _, param, layer in self._entries():
            group = [param] if layer is None else [param, layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight]
            with self._gathered(group):
                pass

    def weight_specs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(base name, full shape, dtype) of every exported tensor, in send order."""
        return [
            (name, tuple(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
            for name, p, _ in self._entries()
        ]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Full copies of the trainable tensors under PEFT's names (collective under ZeRO-3)."""
        state = {}
        for name, param in self.peft.named_parameters():
            if param.requires_grad:
                with self._gathered([param]):
                    state[name] = param.detach().to("cpu", copy=True)
        return state

    def save(self, out: Path, merged: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor]) -> None:
        """Rank 0: the merged HF model in `out` (loads without PEFT) and the adapter in `out/adapter`."""
        self.causal_lm.save_pretrained(out, state_dict=merged, safe_serialization=True)
        self.peft.save_pretrained(out / "adapter", state_dict=adapter, safe_serialization=True)

    def reference(self, engine: Any) -> Any:
        """The frozen initial policy for the KL term: the engine's forward with the adapters disabled."""
        return _AdaptersDisabled(engine, self.peft)


class _AdaptersDisabled:
    """Calls the policy engine with every adapter (and modules_to_save) off: the base model's logprobs."""

    def __init__(self, engine: Any, peft_model: Any) -> None:
        self.engine, self.peft = engine, peft_model

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.peft.disable_adapter():
            return self.engine(*args, **kwargs)
