"""``tunefleet export``: a checkpoint as a folder other tools load without tunefleet.

Formats: ``hf`` (a plain transformers model, merged where the method allows), ``peft`` (the
adapter for ``AutoPeftModelForSequenceClassification``), ``onnx`` (a graph for onnxruntime).
Each is written to ``DEST.tmp``, reloaded by its own loader and compared with the checkpoint's
logits on fixed texts (``check``), and only then renamed to ``DEST``: a failed check leaves
nothing behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunefleet.errors import TunefleetError
from tunefleet.platform.export import check, hf, onnx_format, peft_format
from tunefleet.platform.export.card import write_card
from tunefleet.trainers.checkpoint import Manifest, verify
from tunefleet.trainers.merge import can_stand_alone, refuse

FORMATS = ("hf", "peft", "onnx")


@dataclass(frozen=True)
class ExportOutcome:
    dest: Path
    format: str
    method: str
    max_diff: float
    """The largest |logit difference| from the checkpoint on the probe texts."""


def export_checkpoint(
    checkpoint: Path,
    dest: Path,
    *,
    fmt: str,
    metrics: Mapping[str, float] | None = None,
) -> ExportOutcome:
    """Write ``checkpoint`` as ``fmt`` to ``dest`` (which must not exist) and check it reloads
    to the checkpoint's logits; ``metrics``: the trial's figures, whose ``test_*`` go in the
    model card."""
    from tunefleet.trainers.predict import Predictor

    manifest = Manifest.read(checkpoint)
    staging = dest.with_name(dest.name + ".tmp")
    _refuse_early(manifest, fmt, dest, staging)
    staging.mkdir(parents=True)
    try:
        expected = Predictor.from_checkpoint(checkpoint).logits(list(check.PROBE_TEXTS))
        load, usage = _write(fmt, checkpoint, staging, manifest, dest)
        diff = check.compare(fmt=fmt, expected=expected, load=load, where=dest)
        write_card(staging, manifest=manifest, fmt=fmt, usage=usage, metrics=metrics, max_diff=diff)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportOutcome(dest=dest, format=fmt, method=manifest.method, max_diff=diff)


def _refuse_early(manifest: Manifest, fmt: str, dest: Path, staging: Path) -> None:
    """What can be refused before loading anything."""
    if fmt not in FORMATS:
        raise TunefleetError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dest.exists():
        raise TunefleetError(f"{dest} already exists; remove it or choose another destination")
    if staging.exists():  # never deleted unasked: it may be someone's folder, not our leftover
        raise TunefleetError(
            f"{staging}, where the export is written before it is checked, exists (an export "
            "that was killed midway?); remove it"
        )
    if fmt == "hf" and not can_stand_alone(manifest.method):
        raise refuse(manifest)
    if fmt == "peft" and manifest.method not in peft_format.PEFT_METHODS:
        other = " or --format ".join(peft_format.peft_alternatives(manifest.method))
        raise TunefleetError(
            f"method {manifest.method!r} is not a peft method "
            f"({', '.join(peft_format.PEFT_METHODS)}); use --format {other}"
        )


def _write(
    fmt: str, checkpoint: Path, staging: Path, manifest: Manifest, dest: Path
) -> tuple[Callable[[Sequence[str]], check.Logits], str]:
    """Write ``fmt`` into ``staging``; (what the check loads it with, the card's loading code)."""
    length = manifest.max_length
    if fmt == "hf":
        hf.write(checkpoint, staging, manifest)
        return (lambda t: hf.logits(staging, t, max_length=length)), hf.USAGE.format(dest=dest)
    if fmt == "peft":
        options = peft_format.write(checkpoint, staging, manifest)
        usage = peft_format.USAGE.format(dest=dest, options=peft_format.keywords(options))
        return (lambda t: peft_format.logits(staging, t, max_length=length, options=options)), usage
    onnx_format.write(checkpoint, staging, manifest, check.PROBE_TEXTS)
    usage = onnx_format.USAGE.format(dest=dest)
    return (lambda t: onnx_format.logits(staging, t, max_length=length)), usage


def trial_metrics(store: Any, checkpoint: Path) -> dict[str, float] | None:
    """The store's figures for the trial that wrote ``checkpoint`` (its test scores among them),
    after checking the folder still holds what that trial wrote (CheckpointError naming each
    changed file otherwise); None when the store does not know the trial or holds another folder
    for it."""
    manifest = Manifest.read(checkpoint)
    if manifest.sweep not in store.sweep_names():
        return None
    record = store.trial(manifest.sweep, manifest.trial)
    if record is None or not record.checkpoint:
        return None
    if Path(record.checkpoint).resolve() != checkpoint.resolve():
        return None
    if record.checkpoint_sha256:
        verify(checkpoint, record.checkpoint_sha256)
    return dict(record.metrics)
