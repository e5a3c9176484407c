"""``tunefleet export``: every method's checkpoint in every format it allows, each reloaded by
the format's own loader in a fresh Python where tunefleet cannot be imported, giving the
checkpoint's own Predictor logits; refusals that name the formats that work; a check that
fails leaves no folder behind."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open

from support.cli import run_cli
from support.method_checkpoints import PROBE, train_checkpoint
from support.models import build_decoder
from tunefleet.config import METHODS
from tunefleet.errors import CheckpointError, TunefleetError
from tunefleet.platform.export import FORMATS, export_checkpoint, trial_metrics
from tunefleet.platform.export.check import ExportCheckError
from tunefleet.platform.export.onnx_format import load_onnxruntime
from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store
from tunefleet.trainers.checkpoint import hash_folder
from tunefleet.trainers.predict import Predictor

ALLOWED: dict[str, tuple[str, ...]] = {
    "full": ("hf", "onnx"),
    "unfreeze": ("hf", "onnx"),
    "dann": ("hf", "onnx"),
    "lora": ("hf", "peft", "onnx"),
    "ia3": ("hf", "peft", "onnx"),
    "prefix": ("peft", "onnx"),
    "prompt": ("peft", "onnx"),
    "adapter": ("onnx",),
}
assert set(ALLOWED) == set(METHODS)
CASES = [(method, fmt) for method, formats in ALLOWED.items() for fmt in formats]
REFUSED = [(m, f) for m in METHODS for f in FORMATS if f not in ALLOWED[m]]
TOLERANCE = {"hf": 1e-5, "peft": 1e-5, "onnx": 1e-4}
SRC = Path(__file__).resolve().parents[2] / "src"

# Run with ``python -I -S``: no PYTHONPATH, no user site, no .pth files (an editable install of
# tunefleet is one), only the installed packages' folders on sys.path.
FRESH = r"""
import json, sys
job = json.loads(open(sys.argv[1]).read())
sys.path.extend(job["site"])
try:
    import tunefleet
except ModuleNotFoundError:
    pass
else:
    sys.exit(f"tunefleet is importable from {tunefleet.__file__}")
texts = job["texts"]
out = {}
for item in job["exports"]:
    dest, fmt = item["dest"], item["format"]
    if fmt == "hf":
        from transformers import pipeline
        classify = pipeline("text-classification", model=dest, function_to_apply="none", top_k=None)
        labels = classify.model.config.id2label
        rows = classify(texts, truncation=True)
        logits = [[next(s["score"] for s in row if s["label"] == labels[i])
                   for i in range(len(labels))] for row in rows]
        out[dest] = {"logits": logits, "labels": [labels[i] for i in range(len(labels))]}
    elif fmt == "peft":
        import torch
        from peft import AutoPeftModelForSequenceClassification
        from transformers import AutoTokenizer
        options = item["options"]
        options["id2label"] = {int(k): v for k, v in options["id2label"].items()}
        model = AutoPeftModelForSequenceClassification.from_pretrained(dest, **options).eval()
        tokenizer = AutoTokenizer.from_pretrained(dest)
        batch = tokenizer(texts, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        out[dest] = {"logits": logits.tolist(), "class": type(model).__name__}
    else:
        import onnxruntime
        from transformers import AutoTokenizer
        session = onnxruntime.InferenceSession(dest + "/model.onnx")
        inputs = session.get_inputs()
        tokenizer = AutoTokenizer.from_pretrained(dest)
        logits = []
        for chunk in (texts[:1], texts):  # batch 1 and a padded batch of all
            batch = tokenizer(chunk, truncation=True, padding=True, return_tensors="np")
            logits.append(session.run(["logits"], {i.name: batch[i.name] for i in inputs})[0])
        out[dest] = {"logits": logits[1].tolist(), "first_alone": logits[0].tolist(),
                     "shapes": {i.name: i.shape for i in inputs}}
print(json.dumps(out))
"""


def fresh_load(exports: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The exports loaded and run on PROBE by their own loaders in a fresh, tunefleet-less
    Python (cwd outside the repository)."""
    job = folder / "job.json"
    site_dirs = [d for d in site.getsitepackages() if not Path(d).resolve().is_relative_to(SRC)]
    job.write_text(json.dumps({"site": site_dirs, "texts": PROBE, "exports": exports}))
    script = folder / "fresh.py"
    script.write_text(FRESH)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), str(job)],
        capture_output=True,
        text=True,
        cwd=folder,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def checkpoints(
    tiny_model: Path, sentiment_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods")
    return {
        method: train_checkpoint(method, model=tiny_model, data=sentiment_csv, folder=root / method)
        for method in METHODS
    }


@pytest.fixture(scope="module")
def exported(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], dict[str, Any]]]:
    """Every allowed (method, format), exported, then reloaded in one fresh process."""
    root = tmp_path_factory.mktemp("exports")
    items = []
    for method, fmt in CASES:
        dest = root / f"{method}-{fmt}"
        outcome = export_checkpoint(checkpoints[method], dest, fmt=fmt)
        assert outcome.max_diff <= TOLERANCE[fmt]
        assert not dest.with_name(dest.name + ".tmp").exists()
        item: dict[str, Any] = {"dest": str(dest), "format": fmt, "method": method}
        if fmt == "peft":
            item["options"] = peft_options(checkpoints[method])
        items.append(item)
    loaded = fresh_load(items, tmp_path_factory.mktemp("fresh"))
    yield {(i["method"], i["format"]): {**i, **loaded[i["dest"]]} for i in items}


def peft_options(checkpoint: Path) -> dict[str, Any]:
    predictor = Predictor.from_checkpoint(checkpoint)
    names = predictor.label_names
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {n: i for i, n in enumerate(names)},
        "pad_token_id": predictor.tokenizer.pad_token_id,
    }


@pytest.mark.slow
@pytest.mark.parametrize(("method", "fmt"), CASES)
def test_export_reloads_without_tunefleet_to_the_checkpoint_logits(
    method: str,
    fmt: str,
    exported: dict[tuple[str, str], dict[str, Any]],
    checkpoints: dict[str, Path],
) -> None:
    result = exported[(method, fmt)]
    predictor = Predictor.from_checkpoint(checkpoints[method])
    expected = predictor.logits(PROBE)
    np.testing.assert_allclose(np.array(result["logits"]), expected, rtol=0, atol=TOLERANCE[fmt])
    assert not np.allclose(expected[0], expected[1]), "probe texts too alike to tell heads apart"
    dest = Path(result["dest"])
    card = (dest / "README.md").read_text()
    assert f"with `{method}` by tunefleet" in card and "train.learning_rate | 0.01" in card
    if fmt == "hf":
        assert result["labels"] == list(predictor.label_names)
        assert (dest / "model.safetensors").is_file() and not (dest / "tunefleet.json").exists()
    if fmt == "peft":
        assert result["class"] == "PeftModelForSequenceClassification"
        with safe_open(str(dest / "adapter_model.safetensors"), "pt") as weights:
            # peft#322/#577: the head is saved (modules_to_save); the matching logits above
            # show it is also what loads, since the base model's own head is random.
            assert any(".classifier." in key for key in weights.keys())  # noqa: SIM118
    if fmt == "onnx":
        assert result["shapes"]["input_ids"] == ["batch", "sequence"]
        # Alone (no padding, batch 1) the first text gives what it gives in the padded batch.
        np.testing.assert_allclose(result["first_alone"][0], expected[0], rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "fmt"), REFUSED)
def test_formats_a_method_cannot_fill_are_refused_naming_those_it_can(
    method: str, fmt: str, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    allowed = " or ".join(f"--format {f}" for f in ALLOWED[method] if f != fmt)
    with pytest.raises(TunefleetError, match=rf"'{method}'.*use {allowed}$"):
        export_checkpoint(checkpoints[method], dest, fmt=fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_exports_a_promoted_model_with_its_test_figures_and_refuses_with_exit_2(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    store = Store(Layout.at(out).db_url)
    store.create_sweep("unit", config={}, budget=1)
    checkpoint = str(checkpoints["lora"])
    store.upsert_trial(
        "unit", 0, state="COMPLETE", checkpoint=checkpoint, metrics={"test_accuracy": 0.8125}
    )
    store.record_promotion(
        "unit",
        number=0,
        alias="champion",
        model_name="unit",
        model_version=None,
        checkpoint=checkpoint,
    )
    dest = tmp_path / "merged"
    done = run_cli("export", "unit@champion", str(dest), "--format", "hf", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"exported the lora checkpoint {checkpoint} as hf to {dest}" in done.stdout
    assert "| test_accuracy | 0.8125 |" in (dest / "README.md").read_text()

    refused = tmp_path / "refused"
    done = run_cli(
        "export", str(checkpoints["adapter"]), str(refused), "--format", "peft", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "method 'adapter' is not a peft method" in done.stderr and "--format onnx" in done.stderr
    assert not refused.exists() and not Path(f"{refused}.tmp").exists()

    done = run_cli("export", "unit@nope", str(refused), "--format", "hf", "--out", str(out))
    assert done.returncode == 2 and "nothing promoted as unit@nope" in done.stderr


@pytest.mark.slow
def test_an_export_that_does_not_reproduce_the_checkpoint_is_removed(
    sentiment_csv: Path, tmp_path: Path
) -> None:
    # A real mismatch: tunefleet makes a prompt-tuned decoder read each row's last real token
    # (trainers/methods/_head.py); plain peft does not, so padded rows score differently.
    decoder = build_decoder("gpt2", tmp_path / "gpt2")
    checkpoint = train_checkpoint("prompt", model=decoder, data=sentiment_csv, folder=tmp_path)
    dest = tmp_path / "prompt-peft"
    with pytest.raises(ExportCheckError, match=r"max \|logit diff\| .* > 1e-05.*nothing was"):
        export_checkpoint(checkpoint, dest, fmt="peft")
    assert not dest.exists() and not Path(f"{dest}.tmp").exists()
    # The same checkpoint as ONNX carries tunefleet's reading of the last token in its graph.
    assert export_checkpoint(checkpoint, dest, fmt="onnx").max_diff <= 1e-4


@pytest.mark.slow
def test_a_checkpoint_changed_since_its_trial_wrote_it_is_not_exported(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["full"], folder)
    store = Store(Layout.at(tmp_path / "runs").db_url)
    store.create_sweep("unit", config={}, budget=1)
    store.upsert_trial(
        "unit", 0, checkpoint=str(folder), checkpoint_sha256=hash_folder(folder), metrics={}
    )
    assert trial_metrics(store, folder) == {}
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    with pytest.raises(CheckpointError, match="does not match its recorded hashes: changed config"):
        trial_metrics(store, folder)


def test_an_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tunefleet.json").write_text(
        json.dumps(
            {
                "method": "full",
                "base_model": "unused",
                "label_names": ["0", "1"],
                "max_length": 32,
                "sweep": "unit",
                "trial": 0,
                "metric": "eval_accuracy",
                "value": 0.5,
                "epoch": 1.0,
                "params": {},
                "config": {},
                "data_sha256": "0",
            }
        )
    )
    with pytest.raises(TunefleetError, match="taken already exists; remove it or choose another"):
        export_checkpoint(folder, dest, fmt="hf")
    assert (dest / "keep.txt").read_text() == "mine"
    # Nor is DEST.tmp, where exports are staged: it may be a folder of the user's.
    staged = tmp_path / "new.tmp"
    dest.rename(staged)
    with pytest.raises(TunefleetError, match=r"new\.tmp, where the export is written .* remove it"):
        export_checkpoint(folder, tmp_path / "new", fmt="hf")
    assert (staged / "keep.txt").read_text() == "mine"


def test_onnx_without_onnxruntime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package looks like
    with pytest.raises(TunefleetError, match=r"needs onnxruntime: pip install 'tunefleet\[onnx\]'"):
        load_onnxruntime()
