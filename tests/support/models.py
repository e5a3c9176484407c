"""Tiny models built from config (seeded, no download), each saved as a local HF folder with a
committed tokenizer: the BERT-style encoder of most tests, and decoder-only models in the shapes
users fine-tune most (GPT-2, Llama, Qwen2), whose tokenizer has no padding token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: The byte-level BPE tokenizer without a padding token, shared with examples/tiny_decoder.py.
BPE_TOKENIZER = Path(__file__).resolve().parents[2] / "examples" / "tokenizers" / "bpe"
DECODERS = ("gpt2", "llama", "qwen2")
"""The decoder shapes every decoder test runs over."""


def _decoder_config(kind: str, vocab_size: int, eos: int) -> Any:
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": eos, "eos_token_id": eos}
    if kind == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=128, **common)
    shape: dict[str, Any] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        **common,
    }
    if kind == "llama":
        return LlamaConfig(**shape)
    if kind == "qwen2":
        return Qwen2Config(**shape)
    raise ValueError(f"unknown decoder kind {kind!r}; known: {', '.join(DECODERS)}")


def build_decoder(kind: str, folder: Path) -> Path:
    """A 2-block, 32-wide decoder of ``kind`` with the byte-level BPE tokenizer (no pad token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(BPE_TOKENIZER)
    assert tokenizer.pad_token is None  # the case under test
    config = _decoder_config(kind, len(tokenizer), tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT body with the committed WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
