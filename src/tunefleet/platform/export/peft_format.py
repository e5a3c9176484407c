"""``--format peft``: the adapter folder peft writes (``adapter_config.json``,
``adapter_model.safetensors`` with the trained head as ``modules_to_save``) naming the base model
it was trained on, plus the tokenizer; loaded by ``peft.AutoPeftModelForSequenceClassification``.

The base model is referenced, not copied: its own config says nothing of this task's labels (or,
for a decoder, its padding token), so the load call passes them; ``load_options`` is that call's
keyword arguments, written into the model card and used by the check.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from tunefleet.errors import TunefleetError
from tunefleet.platform.export.check import Logits
from tunefleet.trainers.checkpoint import Manifest
from tunefleet.trainers.predict import batched_logits

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PEFT_METHODS = ("lora", "ia3", "prefix", "prompt")
HEAD_MODULES = ("classifier", "score")

USAGE = """
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer

model = AutoPeftModelForSequenceClassification.from_pretrained(
    "{dest}", {options}
)
tokenizer = AutoTokenizer.from_pretrained("{dest}")
"""


def keywords(options: dict[str, Any]) -> str:
    """``options`` as the keyword arguments of a call."""
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def load_options(manifest: Manifest, pad_token_id: int | None) -> dict[str, Any]:
    """What ``from_pretrained`` needs beside the folder to rebuild the classifier it trained."""
    options: dict[str, Any] = {
        "num_labels": len(manifest.label_names),
        "id2label": dict(enumerate(manifest.label_names)),
        "label2id": {name: i for i, name in enumerate(manifest.label_names)},
    }
    if pad_token_id is not None:
        options["pad_token_id"] = pad_token_id
    dtype = manifest.config.get("model", {}).get("dtype", "float32")
    if dtype != "float32":
        options["dtype"] = dtype
    return options


def write(checkpoint: Path, staging: Path, manifest: Manifest) -> dict[str, Any]:
    """Copy the adapter and tokenizer; the returned load options."""
    from tunefleet.trainers.model import resolve_model

    if manifest.method not in PEFT_METHODS:
        raise TunefleetError(
            f"method {manifest.method!r} is not a peft method ({', '.join(PEFT_METHODS)}): "
            f"export it with --format {' or --format '.join(peft_alternatives(manifest.method))}"
        )
    staging.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint / name, staging / name)
    config_path = staging / ADAPTER_FILES[0]
    config = json.loads(config_path.read_text())
    _check_head_saved(config, checkpoint)
    # Where the checkpoint was restored from (a packaged short name becomes its folder).
    config["base_model_name_or_path"] = resolve_model(manifest.base_model)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.save_pretrained(staging)
    return load_options(manifest, tokenizer.pad_token_id)


def peft_alternatives(method: str) -> tuple[str, ...]:
    from tunefleet.trainers.merge import can_stand_alone

    return ("hf", "onnx") if can_stand_alone(method) else ("onnx",)


def _check_head_saved(config: dict[str, Any], checkpoint: Path) -> None:
    """peft keeps a task head only when it is in ``modules_to_save`` (peft#322, #577 lost it
    silently): refuse an adapter without one rather than export a random head."""
    if not set(config.get("modules_to_save") or ()) & set(HEAD_MODULES):
        raise TunefleetError(
            f"{checkpoint / ADAPTER_FILES[0]} saves no classification head (modules_to_save "
            f"{config.get('modules_to_save')}); a peft export would load a random head"
        )


def logits(
    folder: Path, texts: Sequence[str], *, max_length: int, options: dict[str, Any]
) -> Logits:
    from peft import AutoPeftModelForSequenceClassification

    model = AutoPeftModelForSequenceClassification.from_pretrained(str(folder), **options).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return batched_logits(model, tokenizer, texts, max_length=max_length)
