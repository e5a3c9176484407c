"""Decoder language models end to end: one sweep trains every method on each tiny decoder
(GPT-2, Llama and Qwen2 shapes, tokenizers without a padding token), then each checkpoint
predicts through ``tunefleet predict``, reloads to the logits training evaluated, is promoted,
and loads as an MLflow pyfunc model in a fresh process; a fully fine-tuned one also loads in
``transformers.pipeline`` where tunefleet cannot be imported.

One sweep over ``model.name_or_path`` x ``train.method`` (grid sampler) rather than one per
decoder: a sweep's start-up is most of a tiny trial's cost. Data with domains, so dann trains
in the same sweep as the others (they train on the source rows alone).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from support.cli import cli_env, run_cli
from support.configs import write_config
from support.models import DECODERS, build_decoder
from tunefleet.config import METHODS, load_config
from tunefleet.platform.cli import main
from tunefleet.platform.store import Store
from tunefleet.trainers.data import load_splits
from tunefleet.trainers.predict import Predictor

pytestmark = pytest.mark.slow

SWEEP = "decoders"
DOMAINS = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"
TEXTS = ["great food, friendly staff", "cold fries and a rude waiter, never again", "ok"]
COMBINATIONS = [(kind, method) for kind in DECODERS for method in METHODS]

# A fresh interpreter that knows only MLFLOW_TRACKING_URI loads each promoted model.
_PYFUNC_LOADER = r"""
import json, sys
import mlflow.pyfunc

uris, texts, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
results = {}
for uri in uris:
    frame = mlflow.pyfunc.load_model(uri).predict(texts)
    results[uri] = frame.to_dict(orient="records")
with open(out, "w") as handle:
    json.dump(results, handle)
"""

# Plain transformers with tunefleet hidden: any import of it fails, so the pipeline can only
# work from what the checkpoint folder itself says (config, tokenizer, padding token).
_PIPELINE_LOADER = r"""
import importlib.abc, json, sys

class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tunefleet" or name.startswith("tunefleet."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden)")
        return None

sys.meta_path.insert(0, Hidden())
try:
    import tunefleet
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("tunefleet is importable")
from transformers import pipeline

folders, texts, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
results = {}
for folder in folders:
    classify = pipeline("text-classification", model=folder, device="cpu")
    # One padded batch: the pipeline pads with the checkpoint's own padding token.
    rows = classify(texts, top_k=None, truncation=True, batch_size=len(texts))
    results[folder] = [{row["label"]: row["score"] for row in scores} for scores in rows]
assert not any(name.split(".")[0] == "tunefleet" for name in sys.modules)
with open(out, "w") as handle:
    json.dump(results, handle)
"""


@dataclass(frozen=True)
class Swept:
    out: Path
    config: Path
    models: dict[str, Path]
    trials: dict[tuple[str, str], Any]
    """(decoder kind, method) -> the store's record of that trial."""


def domain_data(folder: Path) -> Path:
    """20 labelled yelp rows (the source) and 20 amazon rows (dann's target), balanced."""
    with DOMAINS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain in ("yelp", "amazon")
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:10]
    ]
    path = folder / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    root = tmp_path_factory.mktemp("decoders-e2e")
    models = {kind: build_decoder(kind, root / kind) for kind in DECODERS}
    config = {
        "name": SWEEP,
        "model": {"name_or_path": str(models[DECODERS[0]])},
        "data": {
            "train": str(domain_data(root)),
            "eval_fraction": 0.25,
            "max_length": 32,
            "domain_column": "domain",
            "source_domains": ["yelp"],
            "target_domains": ["amazon"],
        },
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1},
        "search": {
            "trials": len(COMBINATIONS),
            "sampler": "grid",
            "pruner": "none",
            "space": {
                "model.name_or_path": {"choices": [str(models[kind]) for kind in DECODERS]},
                "train.method": {"choices": list(METHODS)},
            },
        },
        "tracking": {
            "mlflow": {"enabled": True},
            "wandb": {"enabled": False},
            "system_every_s": 0,
        },
    }
    path = write_config(root, config, name=SWEEP)
    out = root / "runs"
    result = run_cli("sweep", str(path), "--out", str(out), timeout=900)
    kinds = {str(folder): kind for kind, folder in models.items()}
    trials = {
        (kinds[t.params["model.name_or_path"]], t.params["train.method"]): t
        for t in Store(f"sqlite:///{out / 'tunefleet.db'}").trials(SWEEP)
        if t.state == "COMPLETE"
    }
    assert trials, result.stdout + result.stderr
    return Swept(out=out, config=path, models=models, trials=trials)


def trial_of(swept: Swept, kind: str, method: str) -> Any:
    trial = swept.trials.get((kind, method))
    assert trial is not None and trial.checkpoint, f"{method} on {kind} did not train"
    return trial


def cli(*args: str) -> str:
    """``tunefleet ARGS`` in this process (a CLI start per checkpoint would cost minutes);
    its stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(list(args))
    assert code == 0, f"tunefleet {' '.join(args)} exited {code}"
    return stdout.getvalue()


def predicted(folder_or_alias: str, out: Path) -> list[dict[str, float]]:
    lines = cli("predict", folder_or_alias, *TEXTS, "--out", str(out), "--json").splitlines()
    return [json.loads(line)["probabilities"] for line in lines]


def alias(kind: str, method: str) -> str:
    return f"{kind}-{method}"


def run_elsewhere(
    code: str, argv: list[str], tmp: Path, *, isolated: bool = False, **env: str
) -> dict[str, Any]:
    """``code`` in a fresh interpreter (``isolated``: ``-I``, no PYTHONPATH, user site or
    current folder) with ``argv`` and a JSON file to write; what it wrote."""
    out = tmp / "loaded.json"
    done = subprocess.run(
        [sys.executable, *(["-I"] if isolated else []), "-c", code, *argv, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
        env=cli_env(**env),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.fixture(scope="module")
def promoted(swept: Swept, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every trained checkpoint promoted under its own alias, then loaded in a fresh process."""
    for (kind, method), trial in swept.trials.items():
        cli(
            "promote",
            SWEEP,
            "--trial",
            str(trial.number),
            "--alias",
            alias(kind, method),
            "--out",
            str(swept.out),
        )
    uris = [f"models:/{SWEEP}@{alias(*combination)}" for combination in swept.trials]
    return run_elsewhere(
        _PYFUNC_LOADER,
        [json.dumps(uris), json.dumps(TEXTS)],
        tmp_path_factory.mktemp("pyfunc"),
        MLFLOW_TRACKING_URI=f"sqlite:///{swept.out / 'mlflow.db'}",
    )


@pytest.mark.parametrize(("kind", "method"), COMBINATIONS)
def test_reload_gives_the_logits_training_evaluated(swept: Swept, kind: str, method: str) -> None:
    """The checkpoint, reloaded, scores the eval split to the eval_loss its trial recorded when
    it chose it: the same logits, row by row, or the mean would move."""
    trial = trial_of(swept, kind, method)
    predictor = Predictor.from_checkpoint(trial.checkpoint)
    splits = load_splits(load_config(swept.config).data)
    logits = torch.from_numpy(predictor.logits(splits.eval.texts))
    labels = torch.tensor([splits.label_names.index(label) for label in splits.eval.labels])
    loss = F.cross_entropy(logits, labels).item()
    assert loss == pytest.approx(trial.metrics["eval_loss"], abs=1e-5)


@pytest.mark.parametrize(("kind", "method"), COMBINATIONS)
def test_predict_and_the_promoted_model_agree(
    swept: Swept, promoted: dict[str, Any], kind: str, method: str
) -> None:
    trial = trial_of(swept, kind, method)
    by_folder = predicted(trial.checkpoint, swept.out)
    assert len(by_folder) == len(TEXTS)
    for probabilities in by_folder:
        assert set(probabilities) == {"0", "1"} and sum(probabilities.values()) == pytest.approx(1)
    rows = promoted[f"models:/{SWEEP}@{alias(kind, method)}"]
    for row, expected in zip(rows, by_folder, strict=True):
        assert row["probabilities"] == pytest.approx(expected, abs=1e-6)
        assert row["label"] == max(expected, key=expected.__getitem__)


@pytest.fixture(scope="module")
def piped(swept: Swept, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each decoder's fully fine-tuned checkpoint run by transformers.pipeline, tunefleet
    hidden; checkpoint folder -> probabilities per text."""
    folders = [str(t.checkpoint) for (_, method), t in swept.trials.items() if method == "full"]
    return run_elsewhere(
        _PIPELINE_LOADER,
        [json.dumps(folders), json.dumps(TEXTS)],
        tmp_path_factory.mktemp("pipeline"),
        isolated=True,
    )


@pytest.mark.parametrize("kind", DECODERS)
def test_pipeline_loads_a_full_checkpoint_without_tunefleet(
    swept: Swept, piped: dict[str, Any], kind: str
) -> None:
    folder = str(trial_of(swept, kind, "full").checkpoint)
    expected = predicted(folder, swept.out)
    assert len(piped[folder]) == len(expected)
    for got, want in zip(piped[folder], expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
