"""The tiny Qwen2 checkpoint loads with stock transformers and behaves like a real Qwen2 one."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from openrs_ray.demo.tiny import make_tiny_model  # noqa: E402

ROUND_TRIP = [
    "Natalia sold 48/2 = 24 clips. <think>\nok\n</think>\n\\boxed{72}",
    "数学 café",
    "  leading and trailing spaces  \n\n\ttab",
    "12+7=19, \\frac{1}{2} of 3.5 is 1.75; x^{2} - 4 = 0 😀",
    "",
    "<|im_start|>user\nQ<|im_end|>\n",  # specials must decode back to their text too
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    return transformers.AutoTokenizer.from_pretrained(model_dir)


def test_files_written(model_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    assert (model_dir / "generation_config.json").is_file()


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tokenizer, text: str) -> None:
    assert unicodedata.is_normalized("NFC", text)  # Qwen2's tokenizer NFC-normalises (see tiny.py)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_special_tokens(tokenizer) -> None:
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    # Specials are single tokens, not spelled out byte by byte.
    ids = tokenizer.encode("<|im_start|>x<|im_end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == tokenizer.eos_token_id
    # No BOS is prepended (like Qwen2), so prompt token ids equal the chat-rendered text's ids.
    assert tokenizer.encode("hi") == tokenizer.encode("hi", add_special_tokens=False)


def test_chat_template(tokenizer) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    no_gen = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert no_gen == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"


def test_model_loads_and_runs(model_dir: Path, tokenizer) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert getattr(cfg, "head_dim", 64) == 64
    assert cfg.vocab_size == len(tokenizer)
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert cfg.pad_token_id == tokenizer.pad_token_id
    assert cfg.tie_word_embeddings
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert next(model.parameters()).dtype == torch.float32

    ids = tokenizer(ROUND_TRIP[0], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_deterministic(model_dir: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "again", seed=0)
    assert again == tmp_path / "again"
    assert (again / "tokenizer.json").read_text() == (model_dir / "tokenizer.json").read_text()
    a = transformers.AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_size": 64, "num_heads": 4},  # head_dim 16
        {"hidden_size": 130, "num_heads": 4},  # not divisible
        {"num_heads": 2, "num_kv_heads": 3},  # GQA groups do not divide
    ],
)
def test_bad_heads_raise(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_tiny_model(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()  # validated before anything is written
