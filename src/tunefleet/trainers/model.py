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


def load_tokenizer(resolved: str, *, token: str | None = None) -> PreTrainedTokenizerBase:
    """``token``: a hub access token (``model.token``); None leaves it to HF_TOKEN or a login."""
    return AutoTokenizer.from_pretrained(resolved, token=token)


def load_classifier(
    resolved: str, label_names: Sequence[str], *, token: str | None = None
) -> PreTrainedModel:
    """The pretrained body with a fresh head sized for ``label_names``."""
    return AutoModelForSequenceClassification.from_pretrained(  # type: ignore[no-any-return]
        resolved,
        token=token,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
