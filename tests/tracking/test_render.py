"""The evaluation report as artifacts: two JSON files that round-trip and a PNG heatmap whose bytes
depend on the report and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tunefleet.tracking.render import (
    CONFUSION_JSON,
    CONFUSION_PNG,
    REPORT_JSON,
    classification_document,
    write_evaluation_artifacts,
)
from tunefleet.trainers.metrics import evaluation_report


def report(predicted: list[int], labels: list[int], names: list[str]) -> dict[str, Any]:
    return evaluation_report(np.eye(len(names))[predicted], np.array(labels), names)


SMALL = report([0, 0, 1, 1, 0], [0, 1, 1, 1, 0], ["negative", "positive"])


def test_writes_the_three_files(tmp_path: Path) -> None:
    paths = write_evaluation_artifacts(SMALL, tmp_path / "artifacts")
    assert [p.name for p in paths] == [CONFUSION_JSON, REPORT_JSON, CONFUSION_PNG]
    assert all(p.is_file() and p.parent == tmp_path / "artifacts" for p in paths)
    confusion = json.loads(paths[0].read_text())
    assert confusion["labels"] == ["negative", "positive"]
    assert confusion["confusion_matrix"] == [[2, 0], [1, 2]]
    assert (confusion["rows"], confusion["columns"]) == ("true", "predicted")
    classes = json.loads(paths[1].read_text())
    assert classes == classification_document(SMALL)
    assert classes["classes"]["positive"] == {
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
    }
    assert (classes["accuracy"], classes["count"]) == (0.8, 5)
    with Image.open(paths[2]) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        width, height = image.size
        assert 100 <= width <= 600 and 100 <= height <= 600
        # Cells are shaded by share of their row: the grid is not all background.
        assert len(image.getcolors(maxcolors=1 << 16) or []) > 2


def test_same_report_same_bytes_and_different_counts_differ(tmp_path: Path) -> None:
    first = write_evaluation_artifacts(SMALL, tmp_path / "a")
    again = write_evaluation_artifacts(SMALL, tmp_path / "a")
    elsewhere = write_evaluation_artifacts(SMALL, tmp_path / "b")
    for one, two, three in zip(first, again, elsewhere, strict=True):
        assert one == two
        assert one.read_bytes() == three.read_bytes()
    changed = report([0, 1, 1, 1, 0], [0, 1, 1, 1, 0], ["negative", "positive"])
    other = write_evaluation_artifacts(changed, tmp_path / "c")
    assert other[2].read_bytes() != first[2].read_bytes()


def test_many_long_labels_stay_legible_in_size(tmp_path: Path) -> None:
    names = [f"a rather long label name number {i}" for i in range(12)]
    rng = np.random.default_rng(0)
    predicted, labels = rng.integers(0, 12, 500).tolist(), rng.integers(0, 12, 500).tolist()
    paths = write_evaluation_artifacts(report(predicted, labels, names), tmp_path)
    with Image.open(paths[2]) as image:
        width, height = image.size
    # Long names are shortened rather than stretching every cell.
    assert width < 1200 and height < 1200
    assert json.loads(paths[0].read_text())["labels"] == names
