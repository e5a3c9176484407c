"""The best evaluation's report as files a tracker stores with the run: the confusion matrix (JSON
and a PNG heatmap) and the per-class classification report (JSON).

The PNG is drawn with Pillow, not matplotlib: importing matplotlib costs about half a second per
trial, and a grid of labelled cells needs nothing it offers. Same report, same bytes: nothing
time- or machine-dependent goes into the files, so re-logging a report changes no artifact.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

CONFUSION_JSON = "confusion_matrix.json"
REPORT_JSON = "classification_report.json"
CONFUSION_PNG = "confusion_matrix.png"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

FONT_SIZE = 14
PAD = 8
CELL_MIN = 56
NAME_MAX = 140
"""Pixels; longer label names are shortened so one long name cannot stretch the whole image."""
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
GRID: RGB = (200, 200, 200)
FULL: RGB = (33, 102, 172)
"""The colour of a cell holding all of its row: shading is by share of the true label's rows,
so a rare class's row is as readable as a common one's."""


def write_evaluation_artifacts(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write an ``evaluation_report`` into ``folder`` as ``confusion_matrix.json``,
    ``classification_report.json`` and ``confusion_matrix.png``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    confusion, classes = folder / CONFUSION_JSON, folder / REPORT_JSON
    picture = folder / CONFUSION_PNG
    _write_json(confusion, confusion_document(report))
    _write_json(classes, classification_document(report))
    picture.write_bytes(confusion_png(report))
    return [confusion, classes, picture]


def evaluation_artifacts(report: Mapping[str, Any], root: Path, *, step: int) -> list[Path]:
    """The evaluation at ``step`` rendered under ``root`` once: every sink of a run (and a
    replay) uploads the same files rather than rendering its own."""
    folder = root / f"evaluation-step-{step}"
    files = [folder / CONFUSION_JSON, folder / REPORT_JSON, folder / CONFUSION_PNG]
    if all(f.is_file() for f in files):
        return files
    return write_evaluation_artifacts(report, folder)


def confusion_document(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "labels": list(report["labels"]),
        "rows": "true",
        "columns": "predicted",
        "confusion_matrix": report["confusion_matrix"],
    }


def classification_document(report: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class scores keyed by label name, then the overall ones."""
    columns = ("precision", "recall", "f1", "support")
    classes = {
        str(name): {column: report[column][i] for column in columns}
        for i, name in enumerate(report["labels"])
    }
    overall = {key: report[key] for key in ("accuracy", "macro_f1", "count")}
    return {"classes": classes, **overall}


def confusion_png(report: Mapping[str, Any]) -> bytes:
    """The confusion matrix as a heatmap: counts in the cells, label names on both axes."""
    matrix = [[int(count) for count in row] for row in report["confusion_matrix"]]
    font = ImageFont.load_default(size=FONT_SIZE)
    names = [_shortened(font, str(name), NAME_MAX) for name in report["labels"]]
    layout = _Layout.of(font, names, matrix)
    image = Image.new("RGB", (layout.width, layout.height), WHITE)
    draw = ImageDraw.Draw(image)
    _draw_titles(image, draw, font, layout)
    _draw_names(image, draw, font, names, layout)
    _draw_cells(draw, font, matrix, layout)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _Layout:
    """Where everything goes: titles, then names, then the grid, ``PAD`` apart."""

    def __init__(self, line: int, name_width: int, cell: int, n: int, title: int) -> None:
        self.line, self.cell, self.n = line, cell, n
        self.vertical_columns = name_width > cell - 2 * PAD
        column_names = name_width if self.vertical_columns else line
        self.left = PAD + line + PAD + name_width + PAD
        self.top = PAD + line + PAD + column_names + PAD
        self.grid = n * cell
        self.width = max(self.left + self.grid, self.left + title) + PAD
        self.height = self.top + self.grid + PAD

    @classmethod
    def of(cls, font: Font, names: Sequence[str], matrix: Sequence[Sequence[int]]) -> _Layout:
        widest_count = max((_width(font, str(c)) for row in matrix for c in row), default=0)
        widest_name = max((_width(font, name) for name in names), default=0)
        cell = max(CELL_MIN, widest_count + 2 * PAD)
        return cls(_line(font), widest_name, cell, len(names), _width(font, "predicted"))


def _draw_titles(image: Image.Image, draw: ImageDraw.ImageDraw, font: Font, at: _Layout) -> None:
    x = at.left + max(0, (at.grid - _width(font, "predicted")) // 2)
    draw.text((x, PAD), "predicted", fill=BLACK, font=font)
    title = _vertical(font, "true")
    image.paste(title, (PAD, at.top + max(0, (at.grid - title.height) // 2)))


def _draw_names(
    image: Image.Image, draw: ImageDraw.ImageDraw, font: Font, names: Sequence[str], at: _Layout
) -> None:
    for i, name in enumerate(names):
        middle = at.top + i * at.cell + at.cell // 2
        x = at.left - PAD - _width(font, name)
        draw.text((x, middle - at.line // 2), name, fill=BLACK, font=font)
        start = at.left + i * at.cell
        if at.vertical_columns:
            label = _vertical(font, name)
            corner = (start + (at.cell - label.width) // 2, at.top - PAD - label.height)
            image.paste(label, corner)
        else:
            x = start + (at.cell - _width(font, name)) // 2
            draw.text((x, at.top - PAD - at.line), name, fill=BLACK, font=font)


def _draw_cells(
    draw: ImageDraw.ImageDraw, font: Font, matrix: Sequence[Sequence[int]], at: _Layout
) -> None:
    for i, row in enumerate(matrix):
        total = sum(row)
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            x, y = at.left + j * at.cell, at.top + i * at.cell
            box = (x, y, x + at.cell - 1, y + at.cell - 1)
            draw.rectangle(box, fill=_shade(share), outline=GRID)
            text = str(count)
            left = x + (at.cell - _width(font, text)) // 2
            colour = WHITE if share > 0.6 else BLACK
            draw.text((left, y + (at.cell - at.line) // 2), text, fill=colour, font=font)


def _shade(share: float) -> RGB:
    r, g, b = (round(w + (f - w) * share) for w, f in zip(WHITE, FULL, strict=True))
    return r, g, b


def _vertical(font: Font, text: str) -> Image.Image:
    """``text`` reading bottom to top (as a y-axis title does), on white."""
    strip = Image.new("RGB", (max(1, _width(font, text)), _line(font)), WHITE)
    ImageDraw.Draw(strip).text((0, 0), text, fill=BLACK, font=font)
    return strip.rotate(90, expand=True)


def _shortened(font: Font, name: str, limit: int) -> str:
    if _width(font, name) <= limit:
        return name
    while name and _width(font, name + "..") > limit:
        name = name[:-1]
    return name + ".."


def _line(font: Font) -> int:
    """Height of a line of text drawn at y = 0 (its top is the ascender line, not the glyphs)."""
    return round(font.getbbox("Ag|")[3])


def _width(font: Font, text: str) -> int:
    return round(font.getlength(text))


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
