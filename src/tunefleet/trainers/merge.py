"""A checkpoint as one plain transformers model, where its method allows: what ``tunefleet export
--format hf`` writes and what a registry can serve without tunefleet.

Which methods give one, and why:

- ``full`` and ``unfreeze`` checkpoints are the whole model already.
- ``dann`` saves the classifier whole beside its domain classifier; predicting never reads the
  domain head (``DomainAdversarial`` returns the classifier's own logits), so dropping it loses
  nothing.
- ``lora`` and ``ia3`` are linear changes to weights the model already has: peft's
  ``merge_and_unload`` folds them in (and keeps the trained head, peft's ``modules_to_save``).
- ``adapter`` inserts residual MLPs (``x + up(act(down(x)))``) that no plain transformers class
  has a place for, and ``prefix``/``prompt`` add virtual tokens the model attends to: none can be
  folded into the pretrained weights, so they are refused, naming the formats that do hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel

from tunefleet.errors import TunefleetError
from tunefleet.trainers.checkpoint import Manifest, load_checkpoint

Standalone = Literal["plain", "merged", "no"]

#: How each method's checkpoint becomes a plain model; the test holds it to the registry, so a new
#: method must say.
STANDALONE: dict[str, Standalone] = {
    "full": "plain",
    "unfreeze": "plain",
    "dann": "plain",
    "lora": "merged",
    "ia3": "merged",
    "adapter": "no",
    "prefix": "no",
    "prompt": "no",
}

#: Where a method that cannot stand alone can still go (``tunefleet export --format``).
ELSEWHERE: dict[str, tuple[str, ...]] = {
    "adapter": ("onnx",),
    "prefix": ("peft", "onnx"),
    "prompt": ("peft", "onnx"),
}


class NotStandaloneError(TunefleetError):
    """The checkpoint's method leaves no plain transformers model to write."""


def can_stand_alone(method: str) -> bool:
    return STANDALONE.get(method, "no") != "no"


def refuse(manifest: Manifest) -> NotStandaloneError:
    """The error for a checkpoint that cannot become a plain model, naming what it can become."""
    why = {
        "adapter": "its bottleneck adapters are extra layers no plain transformers model has",
        "prefix": "its prefix is extra keys and values the model attends to, not weights",
        "prompt": "its soft prompt is extra input tokens, not weights",
    }.get(manifest.method, "tunefleet does not know how to merge it")
    other = ELSEWHERE.get(manifest.method, ())
    hint = f"; use --format {' or --format '.join(other)}" if other else ""
    return NotStandaloneError(
        f"method {manifest.method!r} cannot be exported as a standalone Hugging Face model: "
        f"{why}{hint}"
    )


def standalone_model(folder: Path) -> PreTrainedModel:
    """The checkpoint as a plain transformers model (eval mode): merged where the method is a
    weight change (lora, ia3), as saved where it is the whole model already (full, unfreeze,
    dann without its domain head); NotStandaloneError naming the method otherwise."""
    manifest = Manifest.read(folder)
    if not can_stand_alone(manifest.method):
        raise refuse(manifest)
    if manifest.config.get("model", {}).get("quantization") is not None:
        raise NotStandaloneError(
            f"{folder} was trained quantized (model.quantization): merging into 4/8-bit weights "
            "would change its logits; export --format peft instead"
        )
    model, _, _ = load_checkpoint(folder)
    return plain(model, method=manifest.method)


def plain(model: nn.Module, *, method: str) -> PreTrainedModel:
    """``model`` (as ``load_checkpoint`` built it) with any peft weight change merged in."""
    if isinstance(model, PeftModel):
        if (
            STANDALONE.get(method) != "merged"
            or model.peft_config[model.active_adapter].is_prompt_learning
        ):
            raise TypeError(f"a {method} checkpoint cannot be merged")
        merged = model.merge_and_unload()
        if not isinstance(merged, PreTrainedModel):
            raise TypeError(f"peft merged {method} into a {type(merged).__name__}")
        nn.Module.eval(merged)  # PreTrainedModel.eval is untyped
        return merged
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"a {method} checkpoint loaded as a {type(model).__name__}")
    nn.Module.eval(model)
    return model
