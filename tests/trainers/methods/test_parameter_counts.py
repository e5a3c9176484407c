"""Trainable-parameter counts of the methods without a peft or adapter test of their own, on a
BERT-base-sized model built from config on the meta device (no weights, no memory)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.run import count_parameters

HIDDEN, LAYERS, VOCAB, POSITIONS, FFN = 768, 12, 30522, 512, 3072
HEAD = HIDDEN * 2 + 2
POOLER = HIDDEN * HIDDEN + HIDDEN
EMBEDDINGS = (VOCAB + POSITIONS + 2) * HIDDEN + 2 * HIDDEN
BLOCK = (
    4 * (HIDDEN * HIDDEN + HIDDEN)
    + 2 * HIDDEN
    + (HIDDEN * FFN + FFN)
    + (FFN * HIDDEN + HIDDEN)
    + 2 * HIDDEN
)
BERT_BASE = EMBEDDINGS + LAYERS * BLOCK + POOLER + HEAD


def bert_base() -> BertForSequenceClassification:
    with torch.device("meta"):
        return BertForSequenceClassification(BertConfig(num_labels=2))


def test_the_analytic_bert_base_count_is_right() -> None:
    assert count_parameters(bert_base()) == (BERT_BASE, BERT_BASE) == (109_483_778, 109_483_778)


def test_full_trains_everything() -> None:
    model = get_method("full").prepare(bert_base(), TrainConfig(method="full"))
    assert count_parameters(model) == (BERT_BASE, BERT_BASE)


def test_unfreeze_starts_with_the_head_and_pooler() -> None:
    model = get_method("unfreeze").prepare(bert_base(), TrainConfig(method="unfreeze"))
    assert count_parameters(model) == (HEAD + POOLER, BERT_BASE)


def test_dann_adds_its_domain_classifier_to_full_training() -> None:
    settings = TrainConfig(method="dann", dann={"hidden": 128})
    model = get_method("dann").prepare(bert_base(), settings)
    domain = (HIDDEN * 128 + 128) + (128 * 2 + 2)
    assert count_parameters(model) == (BERT_BASE + domain, BERT_BASE + domain)
