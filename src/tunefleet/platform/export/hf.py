"""``--format hf``: a standalone Hugging Face folder (safetensors, config with ``id2label``,
tokenizer) that ``transformers.pipeline("text-classification", model=DIR)`` loads without
tunefleet; adapters that are weight changes are merged in (``trainers.merge``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunefleet.platform.export.check import Logits
from tunefleet.trainers.checkpoint import Manifest
from tunefleet.trainers.merge import standalone_model
from tunefleet.trainers.predict import batched_logits

USAGE = """
from transformers import pipeline

classify = pipeline("text-classification", model="{dest}")
classify("the food was wonderful", truncation=True)
"""


def write(checkpoint: Path, staging: Path, manifest: Manifest) -> None:
    model = standalone_model(checkpoint)
    model.save_pretrained(staging, safe_serialization=True)
    # The checkpoint's tokenizer: its padding token, padding side and model_max_length as trained.
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(staging)


def logits(folder: Path, texts: Sequence[str], *, max_length: int) -> Logits:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return batched_logits(model, tokenizer, texts, max_length=max_length)
