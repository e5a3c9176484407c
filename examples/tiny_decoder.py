"""Build a tiny Llama-style decoder from config into a local model folder, for llm-tiny.yaml.

    python examples/tiny_decoder.py runs/tiny-llama
    tunefleet sweep examples/llm-tiny.yaml --out runs

The model has Llama's modules (q/k/v/o_proj with grouped-query attention, gate/up/down_proj,
RMSNorm, rotary positions) at toy size (2 blocks, width 64) with random weights, and the committed
byte-level BPE tokenizer of examples/tokenizers/bpe, which, like Llama 3's, has no padding token.
Nothing is downloaded. It is saved as a causal language model, as hub checkpoints are;
tunefleet adds a fresh classification head when it loads it. Random weights carry no language,
so what a sweep on it shows is the path, not an accuracy: llm-lora.yaml is the real recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TOKENIZER = Path(__file__).resolve().parent / "tokenizers" / "bpe"


def build(folder: Path, *, seed: int = 0) -> Path:
    """Write the tiny decoder and its tokenizer to ``folder``; returns ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the model (e.g. runs/tiny-llama)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    folder = build(args.folder, seed=args.seed)
    print(f"wrote a tiny Llama-style decoder to {folder}")
    print("next: tunefleet sweep examples/llm-tiny.yaml --out runs")


if __name__ == "__main__":
    main()
