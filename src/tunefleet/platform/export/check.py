"""Every export is reloaded the way its users will load it and must give the checkpoint's own
logits on a fixed set of texts; a folder that does not is never left behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tunefleet.errors import TunefleetError

#: Uneven lengths (so batches pad), very short and past-max_length texts.
PROBE_TEXTS: tuple[str, ...] = (
    "the food was wonderful",
    "never again, awful service and cold soup",
    "fine",
    "meh.",
    "I waited an hour for a table and the staff ignored us the whole evening. " * 4,
    "Great value; works exactly as described, and it arrived a day early!",
)
#: Largest allowed |exported - checkpoint| logit difference: weights are the same floats, but a
#: merged matrix (W + BA) or another runtime's kernels round differently.
TOLERANCE = {"hf": 1e-5, "peft": 1e-5, "onnx": 1e-4}

Logits = NDArray[np.float32]


class ExportCheckError(TunefleetError):
    """The written export does not reproduce the checkpoint's logits."""


def compare(
    *,
    fmt: str,
    expected: Logits,
    load: Callable[[Sequence[str]], Logits],
    texts: Sequence[str] = PROBE_TEXTS,
    where: Path,
) -> float:
    """The largest absolute logit difference of ``load(texts)`` from ``expected``;
    ExportCheckError when it is past the format's tolerance (or the shapes differ)."""
    try:
        actual = load(texts)
    except Exception as exc:  # the export's own loader or runtime refused what was written
        raise ExportCheckError(
            f"the {fmt} export at {where} could not be reloaded and run "
            f"({type(exc).__name__}: {exc}); nothing was written"
        ) from exc
    if actual.shape != expected.shape:
        raise ExportCheckError(
            f"the {fmt} export at {where} gives logits of shape {actual.shape}, "
            f"the checkpoint {expected.shape}"
        )
    diff = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    if not diff <= TOLERANCE[fmt]:  # also catches NaN
        raise ExportCheckError(
            f"the {fmt} export at {where} does not reproduce the checkpoint: max |logit diff| "
            f"{diff:.3g} > {TOLERANCE[fmt]:g} on {len(texts)} probe texts; nothing was written"
        )
    return diff
