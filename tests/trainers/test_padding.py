"""Padding never changes a prediction: a text's probabilities are the same whether it is
predicted alone or in one batch with much longer texts, through tunefleet's predict path
(checkpoint reload, tokenizer, collator), for trained checkpoints of each tiny decoder and the
encoder. A decoder whose head read a padding position (pad_token_id out of step with the
tokenizer, or left padding) would fail this by far more than the tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support.models import DECODERS, build_decoder, build_encoder
from support.trials import tiny_config, trial_request
from tunefleet.trainers.predict import Predictor
from tunefleet.trainers.run import run_trial

SHORT = ["great", "awful food"]
LONG = [
    "The waiter took forty minutes to bring us water, the soup was cold, the bread was stale "
    "and when we complained the manager shrugged and walked away without a word.",
    "Absolutely wonderful evening: friendly staff, a patient sommelier, generous portions of "
    "the best risotto I have had in years, and a dessert worth the trip on its own.",
]
METHODS = ("full", "lora")


@pytest.fixture(scope="module", params=[*DECODERS, "bert"])
def model_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kind: str = request.param
    folder = tmp_path_factory.mktemp(f"padding-{kind}")
    return build_encoder(folder) if kind == "bert" else build_decoder(kind, folder)


@pytest.mark.parametrize("method", METHODS)
def test_probabilities_do_not_depend_on_the_batch(
    method: str, model_folder: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    # Trained (a high learning rate, so the head is far from its initialisation): an untrained
    # head's probabilities sit near 0.5 for every position and would hide a misread one.
    config = tiny_config(
        model_folder, sentiment_csv, method=method, learning_rate=5e-3, batch_size=8
    )
    outcome = run_trial(config, trial_request(tmp_path))
    assert outcome.checkpoint is not None
    predictor = Predictor.from_checkpoint(outcome.checkpoint)
    tokens = predictor.tokenizer(SHORT + LONG, truncation=True, max_length=32)["input_ids"]
    assert max(map(len, tokens[2:])) >= 3 * max(map(len, tokens[:2]))  # really padded

    def probabilities(texts: list[str]) -> np.ndarray:
        rows = [p.probabilities for p in predictor.predict(texts)]
        return np.array([[row[name] for name in predictor.label_names] for row in rows])

    alone = np.concatenate([probabilities([text]) for text in SHORT])
    batched = probabilities(LONG[:1] + SHORT + LONG[1:])[1:3]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    if predictor.model.config.model_type in DECODERS:
        # Texts a decoder tells apart by more than the tolerance, so reading a padding position
        # (the same token everywhere) would show. (The tiny BERT's pooled output barely varies
        # after one epoch; its padding is masked in attention, not chosen by position.)
        assert np.abs(alone[0] - alone[1]).max() > 1e-4
