"""LoRA helpers: PEFT name mapping, merge math (hand-computed), config errors, and the merged export of a real
PEFT model against PEFT's own merge_and_unload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openrs_ray.config import ConfigError, load_config
from openrs_ray.learners.lora import LoraPolicy, base_name, check_target_modules, merged_weight, param_counts
from tests.conftest import REPO


def test_base_name_strips_peft_wrappers() -> None:
    assert base_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.layers.0.self_attn.q_proj.weight"
    )
    assert base_name("model.layers.0.mlp.up_proj.base_layer.bias") == "model.layers.0.mlp.up_proj.bias"
    assert base_name("model.layers.0.self_attn.q_proj.lora_A.default.weight") is None
    assert base_name("model.layers.0.self_attn.q_proj.lora_B.default.weight") is None
    assert base_name("lm_head.modules_to_save.default.weight") == "lm_head.weight"
    assert base_name("lm_head.original_module.weight") is None
    assert base_name("model.norm.weight") == "model.norm.weight"


def test_merged_weight_by_hand() -> None:
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # [out=2, in=3]
    a = torch.tensor([[1.0, 2.0, 3.0]])  # [r=1, in=3]
    b = torch.tensor([[1.0], [-1.0]])  # [out=2, r=1]
    # B @ A = [[1, 2, 3], [-1, -2, -3]]; scale 0.5
    assert torch.equal(merged_weight(w, a, b, 0.5), torch.tensor([[1.5, 1.0, 3.5], [-0.5, 0.0, -1.5]]))
    # fan_in_fan_out: W is stored [in, out], the delta is transposed
    transposed = merged_weight(w.T, a, b, 0.5, fan_in_fan_out=True)
    assert torch.equal(transposed, torch.tensor([[1.5, -0.5], [1.0, 0.0], [3.5, -1.5]]))
    assert merged_weight(w.bfloat16(), a, b, 0.5).dtype == torch.bfloat16
    assert torch.equal(w, torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))  # inputs untouched


def _cfg(tiny_model: Path, *extra: str):
    return load_config(REPO / "configs/smoke.yaml", [f"model.path={tiny_model}", *extra])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.lora={r: 0}", r"learner\.lora\.r: Input should be greater than 0"),
        ("learner.lora={target_modules: []}", r"learner\.lora\.target_modules: List should have at least 1 item"),
        ("learner.lora={dropout: 1.0}", r"learner\.lora\.dropout"),
        ("learner.lora={modules_to_save: [q_proj]}", r"learner\.lora\.modules_to_save: \['q_proj'\] also in"),
        ("learner.lora={rank: 8}", r"learner\.lora\.rank: unknown key"),
    ],
)
def test_bad_lora_config_names_the_key(tiny_model: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(tiny_model, override)


def _tiny(tiny_model: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def test_target_module_errors_name_the_key(tiny_model: Path) -> None:
    model = _tiny(tiny_model)
    cfg = _cfg(tiny_model, "learner.lora={target_modules: [q_proj, qkv]}").learner.lora
    with pytest.raises(ConfigError, match=r"learner\.lora\.target_modules: 'qkv' matches no module .*q_proj"):
        check_target_modules(model, cfg)
    cfg = _cfg(tiny_model, "learner.lora={target_modules: [norm]}").learner.lora
    with pytest.raises(ConfigError, match=r"learner\.lora\.target_modules: 'norm' .*RMSNorm.*linear"):
        check_target_modules(model, cfg)
    for key in ("target_modules", "modules_to_save"):  # the tiny model ties lm_head to embed_tokens
        cfg = _cfg(tiny_model, f"learner.lora={{{key}: [lm_head]}}").learner.lora
        with pytest.raises(ConfigError, match=rf"learner\.lora\.{key}: 'lm_head' shares its weight"):
            check_target_modules(model, cfg)


def test_merged_export_equals_peft_merge(tiny_model: Path) -> None:
    lc = _cfg(tiny_model, "learner.lora={r: 4, alpha: 8, modules_to_save: [norm]}").learner
    policy = LoraPolicy(_tiny(tiny_model), lc)
    counts = param_counts(policy.causal_lm)
    torch.manual_seed(0)
    with torch.no_grad():  # PEFT starts B at 0 (a no-op adapter): move every adapter weight
        for p in policy.peft.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    exported = dict(policy.merged_parameters())
    specs = policy.weight_specs()
    assert [n for n, _, _ in specs] == list(exported)
    reference = policy.peft.merge_and_unload().state_dict()  # PEFT's merge, into the base model in place
    base = {n: t for n, t in reference.items() if n in exported}
    assert exported.keys() == base.keys()
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, base[name], rtol=0, atol=1e-6, msg=name)
    assert 0 < counts["trainable_params"] < counts["total_params"]


def _dump_without(path: str, *keys: str) -> dict:
    tree = load_config(REPO / "configs" / path).model_dump()
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node.pop(leaf)
    return tree


def test_lora_recipes_change_only_what_lora_needs() -> None:
    sft = load_config(REPO / "configs/srlm-0.5b-sft-lora.yaml").learner
    assert sft.lr == 1e-4 and sft.lora is not None and sft.lora.r == 16
    keys = ("output_dir", "learner.lr", "learner.lora")
    assert _dump_without("srlm-0.5b-sft-lora.yaml", *keys) == _dump_without("srlm-0.5b-sft.yaml", *keys)
    rl = load_config(REPO / "configs/open-rs3-lora.yaml").learner
    assert (rl.num_learners, rl.lr, rl.beta, rl.lora is not None) == (1, 1e-5, 0.04, True)
    keys = (*keys, "learner.num_learners")
    assert _dump_without("open-rs3-lora.yaml", *keys) == _dump_without("open-rs3.yaml", *keys)


def test_summary_reports_parameter_counts() -> None:
    from openrs_ray.records.summary import summarize

    steps = [{"step": 1, "trainable_params": 10.0, "total_params": 100.0}, {"step": 2}]  # step 2: nothing trained
    assert summarize(steps)["trainable_params"] == 10 and summarize(steps)["total_params"] == 100
    assert "trainable_params" not in summarize([{"step": 1}])
