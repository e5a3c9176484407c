"""A tunefleet checkpoint as an MLflow ``pyfunc`` model.

``register_checkpoint`` (``tunefleet.platform.model_registry``) saves a
:class:`CheckpointModel` with the checkpoint folder as the artifact ``checkpoint`` (and, for
methods whose checkpoint is not self-contained, the pretrained body as ``base_model``). Anyone
can then run it with ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(texts)``.

Importing this module is cheap (pandas + mlflow.pyfunc): torch, transformers and peft are imported
only when MLflow loads the model, so registry code and CLIs that merely reference the class stay
fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models.signature import _TypeHints
from mlflow.pyfunc.model import PythonModel

if TYPE_CHECKING:
    from tunefleet.trainers.predict import Predictor

CHECKPOINT_ARTIFACT = "checkpoint"
BASE_MODEL_ARTIFACT = "base_model"
MERGED_ARTIFACT = "merged"
"""A LoRA or IA3 checkpoint's weights merged into its body (``trainers.merge``): a plain
transformers folder, so loading needs no peft and no separate body."""
TEXT_COLUMN = "text"


class CheckpointModel(PythonModel):
    """Classifies texts with a tunefleet checkpoint.

    Input: a list of str, a 1-D array or pandas Series of str, or a DataFrame with a ``text``
    column (other columns are ignored). Output: a DataFrame with one row per text, in input
    order, and the columns ``label`` (str, the most probable class) and ``probabilities``
    (dict label -> float, summing to 1) — exactly what ``Predictor.predict`` gives for the
    same checkpoint.
    """

    # MLflow 3 reads ``predict``'s type hints: at class definition to wrap it with input
    # validation, when saving to infer a signature, and when loading to reshape DataFrames. Our
    # input is deliberately one of three shapes, which no MLflow hint (``list[...]``) expresses,
    # and a signature would make MLflow reshape list/Series input before ``predict`` sees it. So
    # we opt out of all three through MLflow's internal hooks and validate in ``_texts``; should
    # the hooks go away, MLflow would only warn (an Any hint is not validated or used to reshape).
    _skip_type_hint_validation = True

    @property
    def predict_type_hints(self) -> _TypeHints:
        return _TypeHints()  # type: ignore[no-untyped-call]

    def __init__(self) -> None:
        self._predictor: Predictor | None = None

    def load_context(self, context: Any) -> None:
        """Load the checkpoint that ``context.artifacts`` names; MLflow calls this once, at load."""
        self._predictor = load_predictor(
            context.artifacts[CHECKPOINT_ARTIFACT],
            context.artifacts.get(BASE_MODEL_ARTIFACT),
            merged=context.artifacts.get(MERGED_ARTIFACT),
        )

    def predict(
        self, context: Any, model_input: Any, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Labels and class probabilities of each input text (see the class docstring).

        Raises ValueError for a DataFrame without a ``text`` column (naming the columns it has)
        and TypeError for any other kind of input or a non-string text, before any model work.
        """
        texts = _texts(model_input)
        if self._predictor is None:
            if context is None:
                raise RuntimeError(
                    "CheckpointModel is not loaded: load it with "
                    "mlflow.pyfunc.load_model, which calls load_context"
                )
            self.load_context(context)
        assert self._predictor is not None
        predictions = self._predictor.predict(texts)
        return pd.DataFrame(
            {
                "label": [p.label for p in predictions],
                "probabilities": [p.probabilities for p in predictions],
            },
            columns=["label", "probabilities"],
        )


def load_predictor(
    checkpoint: str, base_model: str | None = None, *, merged: str | None = None
) -> Predictor:
    """A Predictor for ``checkpoint``; ``base_model`` (a local HF folder) replaces the body the
    manifest names, so a registered adapter does not depend on the path it was trained from;
    ``merged`` (a plain transformers folder of the same model, merged) is loaded instead of the
    checkpoint's method, with transformers alone (peft is never imported)."""
    from pathlib import Path

    from tunefleet.trainers.checkpoint import Manifest, load_checkpoint
    from tunefleet.trainers.predict import Predictor

    if merged is not None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
        tokenizer = AutoTokenizer.from_pretrained(merged)
        return Predictor(model, tokenizer, Manifest.read(Path(checkpoint)))
    return Predictor(*load_checkpoint(Path(checkpoint), base_model=base_model))


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN not in model_input.columns:
            got = ", ".join(repr(str(c)) for c in model_input.columns) or "none"
            raise ValueError(
                f"CheckpointModel expects a DataFrame with a {TEXT_COLUMN!r} column; "
                f"got columns: {got}"
            )
        values: Sequence[Any] = model_input[TEXT_COLUMN].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, list | tuple):
        values = model_input
    elif isinstance(model_input, np.ndarray) and model_input.ndim == 1:
        # What MLflow's scoring server makes of `{"inputs": [...]}` (mlflow models serve).
        values = [v.item() if isinstance(v, np.generic) else v for v in model_input.tolist()]
    elif isinstance(model_input, str):
        # A bare string is one text, not a sequence of one-character texts.
        values = [model_input]
    else:
        raise TypeError(
            "CheckpointModel expects a list of str, a 1-D array, a pandas Series or a DataFrame "
            f"with a {TEXT_COLUMN!r} column; got {type(model_input).__name__}"
        )
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise TypeError(
            f"CheckpointModel texts must be str; item {bad[0]} is {type(values[bad[0]]).__name__}"
        )
    return list(values)
