"""What the methods need to know about an architecture, in one table keyed by ``config.model_type``.

Torch-free on purpose: ``tunefleet validate`` reads it (``method_problem``) and answers in about a
second, without importing torch or transformers. Adding an architecture means adding one row
here; the tests build a tiny model of every row and hold each field to the real modules.

Columns of :class:`Architecture` (regexes are matched against module or parameter names at a
name component, so wrapper prefixes such as peft's ``base_model.model.`` or dann's
``classifier.`` do not matter):

``attention_output`` / ``feed_forward_output``
    The output projection of each block's attention and feed-forward sub-layer (the end of a
    module name). ``adapter`` wraps them: ``houlsby`` both, ``pfeiffer`` the feed-forward one.
    Llama-style: ``layers.N.self_attn.o_proj`` and ``layers.N.mlp.down_proj``.
``block``
    A block's module name, group 1 its index: ``encoder.layer.N`` (BERT), ``transformer.h.N``
    (GPT-2), ``model.layers.N`` (Llama-style). ``unfreeze`` unfreezes by it and the gradient
    norms are grouped by it (``block_NN``).
``embeddings``
    The embedding modules (unfrozen last; their own gradient group). Everything that is neither
    a block nor an embedding is the head: the classifier or ``score``, BERT's pooler,
    DistilBERT's ``pre_classifier``, and a decoder's final norm (GPT-2's ``ln_f``, Llama's
    ``model.norm``), which feeds the fresh head directly.
``lora_targets``
    LoRA's default ``target_modules``: the query and value projections, or the fused one
    (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``). They agree with peft's defaults where peft has
    them, and fill them in where it has none (DistilBERT, Phi-3).
``ia3_targets`` / ``ia3_feedforward``
    IA3's default targets and which of them are feed-forward (scaled on their input): keys,
    values and the feed-forward output, as in the IA3 paper (Liu et al. 2022). They agree with
    peft's where peft has them, except Qwen2/Qwen3/Gemma, where peft scales ``q_proj`` rather
    than ``k_proj`` (unlike its own Llama and Mistral rows); here those follow the paper as the
    other Llama-style rows do. Filled in where peft has none (XLM-R, ELECTRA, DistilBERT, Phi-3).
``prefix``
    Whether the model takes ``past_key_values``, which is how peft injects a prefix.
``pooling``
    Which token's state the classification head reads: ``first`` (``[CLS]``, through a pooler
    or not) or ``last`` (the last real token: decoders score every position and read one).
    Prompt tuning makes a ``last`` head find that token when peft feeds it embeddings.

Rows: BERT-family (bert, roberta, xlm-roberta, electra), distilbert, deberta, deberta-v2,
gpt2, Llama-style (llama, mistral, qwen2, qwen3, gemma) and phi3. ``method_problem`` says what
a row rules out (prefix where there is no ``past_key_values``) and which methods cannot run
without a row at all (adapter, unfreeze); ``tunefleet validate`` asks it before any trial.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from tunefleet.packaged import PACKAGED

Pooling = Literal["first", "last"]


@dataclass(frozen=True)
class Architecture:
    """One row of the table; the module docstring explains each column."""

    family: str
    attention_output: str
    feed_forward_output: str
    block: str
    embeddings: str
    lora_targets: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    prefix: bool
    pooling: Pooling

    def sites(self, placement: str) -> re.Pattern[str]:
        """Module names an adapter wraps for ``placement`` (houlsby | pfeiffer)."""
        wanted = [self.feed_forward_output]
        if placement != "pfeiffer":
            wanted.insert(0, self.attention_output)
        return re.compile(r"(?:^|\.)(?:" + "|".join(wanted) + r")$")

    def block_pattern(self) -> re.Pattern[str]:
        """Parameter names inside a block; group 1 is the block index."""
        return re.compile(r"(?:^|\.)" + self.block + r"\.")

    def embeddings_pattern(self) -> re.Pattern[str]:
        """Parameter names inside an embedding module."""
        return re.compile(r"(?:^|\.)(?:" + self.embeddings + r")\.")


_BERT = Architecture(
    family="BERT-family",
    attention_output=r"layer\.\d+\.attention\.output\.dense",
    feed_forward_output=r"layer\.\d+\.output\.dense",
    block=r"encoder\.layer\.(\d+)",
    # ELECTRA projects small embeddings up to the hidden width: part of the embeddings.
    embeddings=r"embeddings(?:_project)?",
    lora_targets=("query", "value"),
    ia3_targets=("key", "value", "output.dense"),
    ia3_feedforward=("output.dense",),
    prefix=True,
    pooling="first",
)
_DEBERTA = Architecture(
    family="DeBERTa",
    attention_output=_BERT.attention_output,
    feed_forward_output=_BERT.feed_forward_output,
    block=_BERT.block,
    # The relative-position table (and, in v2, its LayerNorm) sits in the encoder, outside
    # every block; it is an embedding.
    embeddings=r"embeddings|encoder\.rel_embeddings|encoder\.LayerNorm",
    lora_targets=("in_proj",),
    ia3_targets=("in_proj", "output.dense"),
    ia3_feedforward=("output.dense",),
    prefix=False,
    pooling="first",
)
_LLAMA = Architecture(
    family="Llama-style",
    attention_output=r"layers\.\d+\.self_attn\.o_proj",
    feed_forward_output=r"layers\.\d+\.mlp\.down_proj",
    block=r"model\.layers\.(\d+)",
    embeddings=r"model\.embed_tokens",
    lora_targets=("q_proj", "v_proj"),
    ia3_targets=("k_proj", "v_proj", "down_proj"),
    ia3_feedforward=("down_proj",),
    prefix=True,
    pooling="last",
)

_ROWS: dict[tuple[str, ...], Architecture] = {
    ("bert", "roberta", "xlm-roberta", "electra"): _BERT,
    ("distilbert",): Architecture(
        family="DistilBERT",
        attention_output=r"layer\.\d+\.attention\.out_lin",
        feed_forward_output=r"layer\.\d+\.ffn\.lin2",
        block=r"transformer\.layer\.(\d+)",
        embeddings=r"embeddings",
        lora_targets=("q_lin", "v_lin"),
        ia3_targets=("k_lin", "v_lin", "lin2"),
        ia3_feedforward=("lin2",),
        prefix=False,
        pooling="first",
    ),
    ("deberta",): _DEBERTA,
    ("deberta-v2",): replace(
        _DEBERTA,
        family="DeBERTa-v2",
        lora_targets=("query_proj", "value_proj"),
        ia3_targets=("key_proj", "value_proj", "output.dense"),
    ),
    ("gpt2",): Architecture(
        family="GPT-2",
        attention_output=r"h\.\d+\.attn\.c_proj",
        feed_forward_output=r"h\.\d+\.mlp\.c_proj",
        block=r"transformer\.h\.(\d+)",
        embeddings=r"transformer\.(?:wte|wpe)",
        lora_targets=("c_attn",),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        prefix=True,
        pooling="last",
    ),
    ("llama", "mistral", "qwen2", "qwen3", "gemma"): _LLAMA,
    ("phi3",): replace(
        _LLAMA,
        family="Phi-3",
        lora_targets=("qkv_proj",),
        ia3_targets=("qkv_proj", "down_proj"),
    ),
}

ARCHITECTURES: dict[str, Architecture] = {
    model_type: row for types, row in _ROWS.items() for model_type in types
}
"""``config.model_type`` -> its row."""

#: Methods that cannot serve a model type without a row, and what they read from it.
NEEDS_ROW: dict[str, str] = {
    "adapter": "where the attention and feed-forward output projections are",
    "unfreeze": "where the blocks and embeddings are",
}


def _prefix_problem(model_type: str, row: Architecture) -> str | None:
    if row.prefix:
        return None
    return (
        f"prefix hands its keys and values to the model as past_key_values, which "
        f"{row.family} models (model type {model_type!r}) do not take; use prompt or lora"
    )


#: Per method, what a row can rule out.
ROW_CHECKS: dict[str, Callable[[str, Architecture], str | None]] = {"prefix": _prefix_problem}


def method_problem(method: str, model_type: str) -> str | None:
    """Why ``method`` cannot serve models of ``model_type``; None if it can, or if the table
    does not know ``model_type`` and ``method`` does not need it (peft then decides)."""
    row = ARCHITECTURES.get(model_type)
    if row is None:
        if method not in NEEDS_ROW:
            return None
        return (
            f"{method} needs to know {NEEDS_ROW[method]}, and tunefleet's architecture table "
            f"has no model type {model_type!r} (it has {', '.join(sorted(ARCHITECTURES))}); "
            "use lora, ia3, prompt or full"
        )
    check = ROW_CHECKS.get(method)
    return None if check is None else check(model_type, row)


def model_type_at(name_or_path: str) -> str | None:
    """``model_type`` from the config.json of a local folder or a packaged model; None for
    anything else (a hub id is never fetched here)."""
    if name_or_path in PACKAGED:
        try:
            package = importlib.import_module(PACKAGED[name_or_path])
        except ImportError:
            return None
        folder = Path(package.get_model_path())
    else:
        folder = Path(name_or_path).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        return None
    model_type = json.loads(config.read_text()).get("model_type")
    return model_type if isinstance(model_type, str) else None
