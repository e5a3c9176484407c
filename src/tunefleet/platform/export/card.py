"""The README.md model card written into every export: what the model is, how it was chosen and
scored, and how to load it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tunefleet.redaction import redact_params
from tunefleet.trainers.checkpoint import Manifest

CARD = "README.md"


def write_card(
    folder: Path,
    *,
    manifest: Manifest,
    fmt: str,
    usage: str,
    metrics: Mapping[str, float] | None,
    max_diff: float | None = None,
) -> None:
    test = {k: v for k, v in (metrics or {}).items() if k.startswith("test_")}
    header = ["---", "pipeline_tag: text-classification", "tags:", "- tunefleet", f"- {fmt}"]
    if fmt in ("hf", "peft"):
        header.insert(1, f"library_name: {'transformers' if fmt == 'hf' else 'peft'}")
    header.append("---")
    lines = [
        *header,
        "",
        f"# {manifest.sweep} trial {manifest.trial}",
        "",
        f"A text classifier fine-tuned from `{manifest.base_model}` with `{manifest.method}` by "
        f"tunefleet, exported as `{fmt}`.",
        "",
        f"- labels (id: name): {json.dumps(dict(enumerate(manifest.label_names)))}",
        f"- max_length: {manifest.max_length} tokens",
        f"- chosen at epoch {manifest.epoch:g} by {manifest.metric} = {manifest.value:.6g} "
        "(evaluation split)",
        f"- training data sha256: `{manifest.data_sha256}`",
        "",
        "## Sweep parameters",
        "",
        *_table(redact_params(manifest.params), empty="(defaults only: no searched parameters)"),
        "",
        "## Test figures",
        "",
        *_table(test, empty="not known (no test split, or exported from a bare folder)"),
        "",
        "## Loading",
        "",
        "```python",
        usage.strip(),
        "```",
    ]
    if max_diff is not None:
        lines += [
            "",
            f"Checked when exported: max |logit difference| from the tunefleet checkpoint "
            f"{max_diff:.3g} on fixed probe texts.",
        ]
    (folder / CARD).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _table(values: Mapping[str, object], *, empty: str) -> list[str]:
    if not values:
        return [empty]
    rows = ["| name | value |", "| --- | --- |"]
    rows += [f"| {key} | {_show(value)} |" for key, value in sorted(values.items())]
    return rows


def _show(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value).replace("|", "\\|")
