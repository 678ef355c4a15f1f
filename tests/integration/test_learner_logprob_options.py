"""Two Open-RS switches through a real DeepSpeed learner: logprobs at temperature 1 or at the sampling temperature
(learner.scale_logits_by_temperature), and a long prompt left-truncated to max_prompt_length (data.long_prompts).

The learner's own logprobs are observed through truncated importance sampling: each token's weight is
exp(learner logprob - sampling logprob), so `is_weight_mean` is 1 exactly when the sampling logprobs we pass
equal the learner's. We compute them with plain transformers on the prompt we expect the learner to see.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openrs_ray.config import load_config
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.types import TrainBatch
from tests.conftest import REPO

KEEP, TEMPERATURE = 4, 0.5
PROMPT = [11, 12, 13, 14, 15, 16, 17, 18]  # 8 tokens: over max_prompt_length=KEEP
COMPLETIONS = [[21, 22, 23, 24, 25], [31, 32, 33, 34, 35]]


def _reference(tiny_model: Path, prompt: list[int], temperature: float) -> list[list[float]]:
    """Logprobs of each completion token given `prompt`, at `temperature`, by transformers alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for completion in COMPLETIONS:
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / temperature  # [C, V]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            out.append(logprobs.gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1).tolist())
    return out


def _is_weight_means(tiny_model: Path, scale: bool, samplings: list[list[list[float]]]) -> list[float]:
    """One learner, one update per candidate set of sampling logprobs (lr 1e-9: the weights stay put)."""
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"model.path={tiny_model}", "prompts_per_step=1", "generation.num_generations=2",
            f"generation.max_prompt_length={KEEP}", f"generation.temperature={TEMPERATURE}",
            "learner.micro_batch_size=2", "learner.lr=1e-9", "learner.importance_sampling_correction=true",
            "learner.importance_sampling_cap=1000", f"learner.scale_logits_by_temperature={str(scale).lower()}",
        ],
    )  # fmt: skip
    group = LearnerGroup(cfg)
    try:
        group.wait_ready()
        means = []
        for sampling in samplings:
            batch = TrainBatch(
                prompt_ids=[PROMPT, PROMPT], completion_ids=COMPLETIONS, advantages=[1.0, -1.0],
                sampling_logprobs=sampling, weight_versions=[0, 0], loss_weights=[1.0, 1.0],
            )  # fmt: skip
            means.append(group.update(batch)["is_weight_mean"])
        return means
    finally:
        group.shutdown()


@pytest.mark.parametrize(("scale", "temperature"), [(False, 1.0), (True, TEMPERATURE)])
def test_learner_logprobs_temperature_and_left_truncation(
    ray_local: None, tiny_model: Path, scale: bool, temperature: float
) -> None:
    truncated = _reference(tiny_model, PROMPT[-KEEP:], temperature)
    # The other temperature, or the whole prompt, is not what the learner computed.
    other = _reference(tiny_model, PROMPT[-KEEP:], TEMPERATURE if temperature == 1.0 else 1.0)
    whole = _reference(tiny_model, PROMPT, temperature)
    right, wrong_temperature, wrong_prompt = _is_weight_means(tiny_model, scale, [truncated, other, whole])
    assert right == pytest.approx(1.0, abs=1e-4)
    assert abs(wrong_temperature - 1.0) > 1e-2 and abs(wrong_prompt - 1.0) > 1e-2
