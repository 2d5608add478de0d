"""A tiny random Llama (real architecture and tokenizer, random weights) saved like any Hugging Face checkpoint: what
the version-range and offline tests load instead of the bundled 135M model."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.models.conftest import CACHE

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def bundled_tokenizer_dir() -> Path:
    """The bundled model's converted directory (made by `make setup`); only its tokenizer is used."""
    return CACHE / "smollm2-135m-instruct" / "hf"


def build_tiny_llama(out: Path, *, hidden: int = 64, layers: int = 3, seed: int = 0) -> Path:
    """Save a random Llama with the bundled tokenizer to `out` (a local path: loading it needs no network)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.loading import portable_tokenizer_config

    src = bundled_tokenizer_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    portable_tokenizer_config(out)
    return out
