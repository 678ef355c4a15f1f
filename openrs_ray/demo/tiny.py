"""A tiny, randomly initialised Qwen2-style checkpoint for CPU tests and smoke runs.

Real checkpoints are gigabytes and cannot be fetched on offline CI machines, so tests build this one in
code instead. It keeps every interface a real Qwen2 model has (byte-level BPE tokenizer, ChatML chat
template, Qwen2 special tokens, safetensors weights, generation config) so that the generator (vLLM), the
learners (DeepSpeed) and the reward code exercise exactly the same paths as in production.

Note: transformers 5 loads any `model_type: qwen2` tokenizer as `Qwen2Tokenizer`, which imposes an NFC
normaliser; so, as with real Qwen2, text round-trips exactly only if it is NFC (virtually all text is).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

# Same rendering as Qwen2's template (minus tool calls): prompts built by the data layer must look like
# those a real Qwen2 checkpoint sees, and the generation prompt must end with "assistant\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2's split: single digits (so "128" is 3 tokens, as for the real model), words with one leading
# non-letter, punctuation runs with trailing newlines, whitespace runs.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# vLLM's CPU attention kernels only support some head sizes; below 32 nothing works at all.
MIN_HEAD_DIM = 32

_WORDS = (
    "the a an of to and in is was are has had have each more than less total how many much what "
    "if then so she he they her his their it its all left after before every per day week month year "
    "sold bought gave spent earned paid cost costs price dollars cents apples oranges pencils books "
    "clips cookies students friends hours minutes miles times half twice double third quarter number "
    "sum difference product quotient remainder answer find compute solve let prove therefore thus "
    "Natalia James Mary John Weng Betty Julie"
).split()

_LATEX = (r"\boxed{{{a}}}", r"\frac{{{a}}}{{{b}}}", r"\sqrt{{{a}}}", r"x^{{{a}}} + {b}x", r"$\pi r^2$")


def _corpus(seed: int, n_lines: int = 2000) -> Iterator[str]:
    """Yield a deterministic synthetic corpus resembling math word problems and reasoning traces.

    The merges learned from it make typical prompts/completions compress to realistic token counts;
    exact coverage does not matter because the byte-level alphabet already makes any text encodable.
    """
    rng = random.Random(seed)
    for i in range(n_lines):
        a, b = rng.randint(0, 99), rng.randint(1, 99)
        op, val = rng.choice([("+", a + b), ("-", a - b), ("*", a * b), ("/", a / b)])
        val_s = str(int(val)) if float(val).is_integer() else f"{val:.2f}"
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        latex = rng.choice(_LATEX).format(a=a, b=b)
        kind = i % 4
        if kind == 0:
            yield f"{words} {a}{op}{b}={val_s}."
        elif kind == 1:
            yield f"<think>\n{words}: {a} {op} {b} = {val_s}\n</think>\nThe answer is \\boxed{{{val_s}}}."
        elif kind == 2:
            yield f"{words.capitalize()}? Then {latex}, so #### {val_s}"
        else:
            yield f"{i} {i * 7} {rng.randint(0, 10**6)} {words} {a}/{b} = \\frac{{{a}}}{{{b}}}"


def build_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer in code and wrap it as a Qwen2-like fast tokenizer.

    `vocab_size` is the BPE target (including the 256 byte symbols and the specials); the trainer may
    stop below it if the corpus runs out of merges, so callers must use `len(tokenizer)`.
    """
    # Imported lazily: importing transformers is slow and most users of this package never build one.
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Exactly Qwen2's pipeline: transformers 5 rebuilds it this way on load whatever tokenizer.json says (for
    # model_type "qwen2"), so merges must be learned under the same pre-tokenisation to ever apply.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            # add_prefix_space=False so decode(encode(s)) == s exactly (no injected leading space).
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,  # ids 0, 1, 2, like the order of Qwen2's added tokens
        # The full 256-byte alphabet guarantees every string (any unicode) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        bos_token=None,  # Qwen2 has no BOS token; prompts start with <|im_start|> instead
        unk_token=None,  # byte-level BPE never needs an unknown token
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,  # would alter text like "a ." and break round-tripping
    )


def make_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Qwen2 causal LM plus its tokenizer into `out_dir`.

    Args:
        out_dir: directory to create (or overwrite files in); loadable with `from_pretrained`.
        hidden_size: model width; `hidden_size // num_heads` is the head dim and must be >= 32
            (vLLM's CPU backend runs 32 and 64; the demo uses 4 heads of 32, the defaults 2 of 64).
        num_layers: number of decoder layers.
        num_heads: attention heads; must divide `hidden_size`.
        num_kv_heads: key/value heads (GQA); must divide `num_heads`.
        vocab_size: BPE training target; the model's vocab is the tokenizer's actual size.
        seed: seeds both the tokenizer corpus and the weight init, so builds are reproducible.

    Returns:
        `Path(out_dir)`.
    Raises:
        ValueError: on an unusable head configuration (head_dim < 32, non-dividing head counts).
    """
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be a positive multiple of num_heads {num_heads}")
    head_dim = hidden_size // num_heads
    if head_dim < MIN_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} < {MIN_HEAD_DIM}: vLLM's attention kernels reject it")
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} must be a multiple of num_kv_heads {num_kv_heads}")

    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(vocab_size=vocab_size, seed=seed)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)

    config = Qwen2Config(
        vocab_size=len(tokenizer),  # the real size incl. specials, so every token id has an embedding
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        # As in Qwen2 checkpoints: there is no BOS token, so bos_token_id is <|endoftext|>.
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    # float32 explicitly: save_pretrained records the parameters' dtype in config.json, and the learners
    # cast themselves; a float32 master copy is what they expect to start from.
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)

    model.save_pretrained(out)  # safetensors is the default format
    tokenizer.save_pretrained(out)
    return out
