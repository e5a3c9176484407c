"""Gated promotion: ``tunefleet promote`` registers a challenger, scores it and the champion on
the sweep's frozen test split and moves ``@champion`` only through the gate; ``rollback`` moves
it back once the target is checked; ``history`` lists every move.

Real parts throughout: a real sweep of a tiny BERT on keyword data (one trial that learns, one
whose learning rate keeps it at chance), the real MLflow registry (a sqlite store, and a live
``mlflow server`` for every method), models loaded back in a fresh process.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

from support.cli import cli_env, run_cli
from support.configs import write_config
from support.mlflow_server import MlflowServer
from tunefleet.config.schema import PromotionConfig
from tunefleet.errors import CheckpointError, TunefleetError
from tunefleet.platform.cli import main
from tunefleet.platform.gate import run_gate
from tunefleet.platform.layout import Layout
from tunefleet.platform.promote import promote_gated
from tunefleet.platform.scoring import Scores, scores_of
from tunefleet.platform.status import open_view
from tunefleet.platform.store import Store, TrialRecord
from tunefleet.trainers.predict import Predictor

SWEEP = "gated"
POSITIVE = ("great", "good", "excellent", "wonderful", "lovely", "amazing", "friendly", "tasty")
NEGATIVE = ("bad", "awful", "terrible", "horrible", "poor", "rude", "cold", "dirty")
FILLER = ("the", "food", "was", "and", "staff", "place", "service", "really", "very", "our")
TEXTS = ["the food was great and lovely", "rude staff and cold food", "our place"]
STRONG_LR, WEAK_LR = 5e-3, 1e-9


# --- the gate itself: pure checks ------------------------------------------------------------


def _scores(accuracy: float, recall: dict[str, float], **rest: float) -> Scores:
    figures = {"f1_macro": accuracy, "p95_latency_ms": 10.0, "model_mb": 5.0} | rest
    return Scores(rows=100, accuracy=accuracy, recall=recall, **figures)  # type: ignore[arg-type]


def test_scores_count_accuracy_macro_f1_and_recall_per_class() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    scores = scores_of(truth, predicted, p95_latency_ms=1.0, model_mb=2.0)
    assert scores.accuracy == pytest.approx(4 / 6)
    assert scores.recall == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    # per class F1: a 2*1*(2/3)/(5/3) = 0.8; b p=1/2 r=1/2 -> 0.5; c p=1/2 r=1 -> 2/3
    assert scores.f1_macro == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a class only predicted (never true) counts in F1 (as 0), not in recall
    lopsided = scores_of(["a", "a"], ["a", "z"], p95_latency_ms=1.0, model_mb=1.0)
    assert lopsided.recall == {"a": 0.5}
    assert lopsided.f1_macro == pytest.approx((2 / 3 + 0.0) / 2)
    with pytest.raises(ValueError, match="empty test set"):
        scores_of([], [], p95_latency_ms=1.0, model_mb=1.0)


def test_gate_names_each_failed_check_and_by_how_much() -> None:
    config = PromotionConfig(
        metric="accuracy",
        min_value=0.8,
        min_gain=0.02,
        max_recall_drop=0.05,
        max_p95_latency_ms=50,
        max_model_mb=10,
    )
    champion = _scores(0.85, {"neg": 0.9, "pos": 0.8})
    better = _scores(0.90, {"neg": 0.88, "pos": 0.92})
    result = run_gate(config, challenger=better, champion=champion)
    assert result.passed
    assert [c.name for c in result.checks] == [
        "accuracy floor",
        "accuracy gain over champion",
        "recall drop",
        "p95 latency ms",
        "model MB",
    ]
    assert result.checks[1].figure == pytest.approx(0.05)
    assert result.checks[2].figure == pytest.approx(0.02) and "'neg'" in result.checks[2].detail

    # More accurate overall, but one class loses 20 points of recall: the gate says so.
    lopsided = _scores(0.90, {"neg": 0.70, "pos": 0.99}, p95_latency_ms=80.0, model_mb=12.5)
    result = run_gate(config, challenger=lopsided, champion=champion)
    assert not result.passed
    failed = {c.name: c for c in result.failed}
    assert set(failed) == {"recall drop", "p95 latency ms", "model MB"}
    assert failed["recall drop"].margin == pytest.approx(-0.15)
    assert "class 'neg': recall 0.9 -> 0.7" in failed["recall drop"].describe()
    assert "FAIL by 30" in failed["p95 latency ms"].describe()
    assert failed["model MB"].margin == pytest.approx(-2.5)
    assert result.to_json()["checks"][2]["passed"] is False

    # No champion yet: only the floor, latency and size apply.
    alone = run_gate(config, challenger=_scores(0.79, {"neg": 0.0, "pos": 1.0}), champion=None)
    assert [c.name for c in alone.checks] == ["accuracy floor", "p95 latency ms", "model MB"]
    assert [c.name for c in alone.failed] == ["accuracy floor"]
    assert alone.failed[0].margin == pytest.approx(-0.01)

    f1 = PromotionConfig(metric="f1_macro", min_gain=None)
    worse = run_gate(f1, challenger=_scores(0.1, {"neg": 0.0}), champion=champion)
    assert worse.passed and worse.checks == ()


def test_promotion_config_names_the_key() -> None:
    from tunefleet.config import parse_config
    from tunefleet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"promotion\.max_recall_drop"):
        parse_config({"name": "x", "data": {"train": "t.csv"}, "promotion": {"max_recall_drop": 2}})
    with pytest.raises(ConfigError, match=r"promotion\.metric"):
        parse_config({"name": "x", "data": {"train": "t.csv"}, "promotion": {"metric": "auc"}})
    with pytest.raises(ConfigError, match=r"promotion.*cannot be searched"):
        parse_config(
            {
                "name": "x",
                "data": {"train": "t.csv"},
                "search": {"space": {"promotion.min_gain": {"choices": [0.0, 0.1]}}},
            }
        )


# --- a real sweep: one trial that learns, one at chance -------------------------------------


def keyword_data(folder: Path, rows_per_class: int = 100) -> Path:
    """Sentences whose label shows in two keywords among filler words: a tiny BERT learns it
    in a few epochs, so the strong trial is far from chance."""
    rng = random.Random(0)
    rows = []
    for label, words in (("0", NEGATIVE), ("1", POSITIVE)):
        for _ in range(rows_per_class):
            text = rng.sample(FILLER, 4) + rng.sample(words, 2)
            rng.shuffle(text)
            rows.append({"text": " ".join(text), "label": label})
    rng.shuffle(rows)
    path = folder / "keywords.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class Swept:
    out: Path
    base: Path
    strong: TrialRecord
    weak: TrialRecord

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.out / 'mlflow.db'}"

    def store(self) -> Store:
        return Store(f"sqlite:///{self.out / 'tunefleet.db'}")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Swept:
    root = tmp_path_factory.mktemp("gated")
    config = {
        "name": SWEEP,
        "model": {"name_or_path": str(tiny_model)},
        "data": {
            "train": str(keyword_data(root)),
            "test_fraction": 0.25,
            "eval_fraction": 0.2,
            "max_length": 16,
        },
        "train": {"method": "full", "epochs": 4, "batch_size": 16, "logging_steps": 5},
        "search": {
            "trials": 2,
            "sampler": "grid",
            "pruner": "none",
            "space": {"train.learning_rate": {"choices": [STRONG_LR, WEAK_LR]}},
        },
        "tracking": {"mlflow": {"enabled": True}, "wandb": {"enabled": False}},
        "promotion": {
            "metric": "accuracy",
            "min_value": 0.25,
            "min_gain": 0.05,
            "max_recall_drop": 0.2,
            "max_model_mb": 500,
        },
    }
    out = root / "runs"
    result = run_cli("sweep", str(write_config(root, config)), "--out", str(out), timeout=900)
    store = Store(f"sqlite:///{out / 'tunefleet.db'}")
    try:
        trials = {t.params["train.learning_rate"]: t for t in store.trials(SWEEP)}
    finally:
        store.dispose()
    assert result.returncode == 0, result.stdout + result.stderr
    return Swept(out=out, base=tiny_model, strong=trials[STRONG_LR], weak=trials[WEAK_LR])


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _aliases(swept: Swept) -> dict[str, str]:
    client = MlflowClient(tracking_uri=swept.tracking_uri, registry_uri=swept.tracking_uri)
    model = client.get_registered_model(SWEEP)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _moves(store: Store) -> list[tuple[str, str, str | None, str | None]]:
    return [(m.alias, m.action, m.from_version, m.to_version) for m in store.alias_moves(SWEEP)]


@pytest.mark.slow
def test_only_a_challenger_that_passes_the_gate_becomes_champion(
    swept: Swept, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = ["--out", str(swept.out)]
    weak = str(swept.weak.number)

    # 1. No champion yet: the weak trial only has to clear the floor (0.25).
    code, text, err = _cli(capsys, "promote", SWEEP, "--trial", weak, *out)
    assert code == 0, err
    assert "no champion yet: only the absolute checks apply" in text
    assert "test set: data.test data.test_fraction 0.25" in text
    assert "@champion -> version 1 (was none)" in text
    assert _aliases(swept) == {"challenger": "1", "champion": "1"}

    # 2. The strong trial (the best, the default) beats it by far and loses no class's recall.
    code, text, err = _cli(capsys, "promote", SWEEP, *out)
    assert code == 0, err
    assert "gate passed" in text and "@champion -> version 2 (was version 1)" in text
    assert _aliases(swept) == {"challenger": "2", "champion": "2", "previous-champion": "1"}
    store = swept.store()
    gate = store.alias_moves(SWEEP)[-2].gate
    assert gate is not None and gate["passed"]
    strong_scores = gate["challenger"]
    # The setup the rest relies on: the strong trial learned, on every class.
    assert strong_scores["accuracy"] >= 0.9 and min(strong_scores["recall"].values()) >= 0.8
    assert gate["champion"]["accuracy"] < strong_scores["accuracy"] - 0.05

    # 3. The weak trial again: it loses accuracy and a class's recall; nothing moves, exit 1.
    code, text, err = _cli(capsys, "promote", SWEEP, "--trial", weak, *out)
    assert code == 1, err
    assert "gate FAILED" in text
    assert "@champion stays version 2: failed accuracy gain over champion, recall drop" in text
    assert "accuracy gain over champion: -0." in text and "FAIL by" in text
    assert _aliases(swept) == {"challenger": "3", "champion": "2", "previous-champion": "1"}
    failed = store.alias_moves(SWEEP)[-1]
    assert (failed.action, failed.from_version, failed.to_version) == ("gate-failed", "2", "3")
    assert failed.gate is not None and not failed.gate["passed"]

    # 4. Recall alone stops it: a gate with no gain check still refuses the weak trial.
    layout = Layout.at(swept.out)
    view = open_view(store, SWEEP, layout.db_url)
    recall_only = PromotionConfig(min_gain=None, max_recall_drop=0.2)
    view = dataclasses.replace(
        view, config=view.config.model_copy(update={"promotion": recall_only})
    )
    outcome = promote_gated(view, store, layout, trial=swept.weak.number)
    assert not outcome.moved and [c.name for c in outcome.gate.failed] == ["recall drop"]
    assert outcome.gate.failed[0].margin < 0

    # 5. --force moves it over the failed gate, with the reason recorded.
    code, text, err = _cli(capsys, "promote", SWEEP, "--trial", weak, "--force", *out)
    assert code == 2 and "--force needs --reason" in err
    code, text, err = _cli(
        capsys, "promote", SWEEP, "--trial", weak, "--force", "--reason", "demo rollback", *out
    )
    assert code == 0, err
    assert "FORCED over the failed gate (demo rollback): @champion -> version 5" in text
    assert _aliases(swept) == {"challenger": "5", "champion": "5", "previous-champion": "2"}

    # 6. Rollback: back to the previous champion, once it downloads, matches and predicts.
    code, text, err = _cli(capsys, "rollback", SWEEP, "--reason", "weak model", *out)
    assert code == 0, err
    assert "@champion version 5 -> 2" in text and "@previous-champion: version 1" in text
    assert _aliases(swept) == {"challenger": "5", "champion": "2", "previous-champion": "1"}
    assert store.promotion(SWEEP, alias="champion").number == swept.strong.number  # type: ignore[union-attr]

    # 7. A version whose registered files changed is not rolled back to.
    client = MlflowClient(tracking_uri=swept.tracking_uri, registry_uri=swept.tracking_uri)
    source = Path(urlparse(client.get_model_version(SWEEP, "1").source).path)
    manifest = next(source.rglob("tunefleet.json"))
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(CheckpointError, match="no longer matches the hashes"):
        from tunefleet.platform.rollback import rollback

        rollback(open_view(store, SWEEP, layout.db_url), store, layout, to="1")
    assert _aliases(swept)["champion"] == "2"
    code, _text, err = _cli(capsys, "rollback", SWEEP, "--to", "9", *out)
    assert code == 2 and "has no version '9'" in err

    # 8. The history holds every move, in order, with the gate's figures or the reason.
    assert _moves(store) == [
        ("challenger", "register", None, "1"),
        ("champion", "promote", None, "1"),
        ("challenger", "register", "1", "2"),
        ("champion", "promote", "1", "2"),
        ("previous-champion", "promote", None, "1"),
        ("challenger", "register", "2", "3"),
        ("champion", "gate-failed", "2", "3"),
        ("challenger", "register", "3", "4"),
        ("champion", "gate-failed", "2", "4"),
        ("challenger", "register", "4", "5"),
        ("champion", "force", "2", "5"),
        ("previous-champion", "force", "1", "2"),
        ("champion", "rollback", "5", "2"),
        ("previous-champion", "rollback", "2", "1"),
    ]
    code, text, err = _cli(capsys, "history", SWEEP, *out)
    assert code == 0, err
    lines = text.splitlines()
    assert len(lines) == 14
    assert "gate-failed @champion  2 -> 3" in lines[6] and "recall drop" in lines[6]
    assert "force" in lines[10] and 'reason: "demo rollback"' in lines[10]
    assert "rollback    @champion  5 -> 2" in lines[12] and 'reason: "weak model"' in lines[12]
    code, text, err = _cli(capsys, "history", SWEEP, "--json", *out)
    entries = json.loads(text)
    assert [e["action"] for e in entries][-2:] == ["rollback", "rollback"]
    assert all(e["who"] and e["when"] for e in entries)
    assert entries[3]["gate"]["checks"][0]["name"] == "accuracy floor"
    store.dispose()

    # 9. The champion (the strong trial again) loads and predicts in a fresh process.
    loaded = _load_elsewhere(swept.tracking_uri, [f"models:/{SWEEP}@champion"], tmp_path)
    expected = Predictor.from_checkpoint(swept.strong.checkpoint or "").predict(TEXTS)
    rows = loaded[f"models:/{SWEEP}@champion"]
    assert [r["label"] for r in rows] == [p.label for p in expected]
    for row, prediction in zip(rows, expected, strict=True):
        assert row["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
    version = client.get_model_version(SWEEP, "2")
    assert version.tags["tunefleet.gate"] == "passed"
    assert version.tags["tunefleet.base_model"] == str(swept.base)
    assert version.tags["tunefleet.base_model_revision"].startswith("sha256:")
    assert client.get_model_version(SWEEP, "3").tags["tunefleet.gate"] == "failed"
    assert client.get_model_version(SWEEP, "5").tags["tunefleet.gate"] == "forced"


@pytest.mark.slow
def test_the_gate_needs_a_held_out_test_set_and_keeps_its_aliases(
    swept: Swept, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = ["--out", str(swept.out)]
    code, _text, err = _cli(capsys, "promote", SWEEP, "--alias", "champion", *out)
    assert code == 2 and "move only through the gate" in err
    code, _text, err = _cli(capsys, "promote", SWEEP, "--alias", "x", "--force", *out)
    assert code == 2 and "leave out --alias" in err
    code, _text, err = _cli(capsys, "promote", SWEEP, "--reason", "why not", *out)
    assert code == 2 and "--reason goes with --force" in err
    # An explicit test file replaces the split; a file without the data's columns is refused.
    bad = tmp_path / "bad.csv"
    bad.write_text("review,stars\nnice,5\n")
    code, _text, err = _cli(capsys, "promote", SWEEP, "--test", str(bad), *out)
    assert code == 2 and "--test" in err and "no column 'text'" in err


def test_a_sweep_without_a_test_split_is_refused(tmp_path: Path, sentiment_csv: Path) -> None:
    from tunefleet.platform.promote import frozen_test_set
    from tunefleet.trainers.checkpoint import Manifest

    folder = tmp_path / "ckpt"
    folder.mkdir()
    manifest = Manifest(
        method="full",
        base_model="x",
        label_names=("0", "1"),
        max_length=16,
        sweep="s",
        trial=0,
        metric="eval_accuracy",
        value=0.5,
        epoch=1.0,
        params={},
        config={"data": {"train": str(sentiment_csv)}},
        data_sha256="0" * 64,
    )
    (folder / "tunefleet.json").write_text(json.dumps(manifest.to_json()))
    with pytest.raises(TunefleetError, match=r"no held-out test split.*--test FILE.*data\.test"):
        frozen_test_set(folder, None)
    table, source = frozen_test_set(folder, sentiment_csv)
    assert len(table) == 160 and source.startswith("--test ")
    # The split must be the one the trial held out: changed data is refused.
    manifest = dataclasses.replace(
        manifest, config={"data": {"train": str(sentiment_csv), "test_fraction": 0.2}}
    )
    (folder / "tunefleet.json").write_text(json.dumps(manifest.to_json()))
    with pytest.raises(TunefleetError, match="changed since it trained"):
        frozen_test_set(folder, None)
    # A checkpoint that does not say what it trained on cannot rebuild its split.
    manifest = dataclasses.replace(manifest, config={})
    (folder / "tunefleet.json").write_text(json.dumps(manifest.to_json()))
    with pytest.raises(TunefleetError, match="cannot be rebuilt: pass --test FILE"):
        frozen_test_set(folder, None)


# --- every method, through a live mlflow server ----------------------------------------------

# Reads one model URI per line on stdin, loads it and answers one JSON line: a fresh process
# that knows only MLFLOW_TRACKING_URI, kept for the whole test (a start per load costs more).
_LOADER = r"""
import json, sys
import mlflow.pyfunc

texts = json.loads(sys.argv[1])
for line in sys.stdin:
    frame = mlflow.pyfunc.load_model(line.strip()).predict(texts)
    print(json.dumps(frame.to_dict(orient="records")), flush=True)
"""

METHODS = ("adapter", "prefix", "prompt", "ia3", "unfreeze", "dann")
DOMAINS = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"


def _load_elsewhere(tracking_uri: str, uris: list[str], tmp_path: Path) -> dict[str, Any]:
    with _loader(tracking_uri, tmp_path) as load:
        return {uri: load(uri) for uri in uris}


@contextlib.contextmanager
def _loader(tracking_uri: str, tmp_path: Path) -> Iterator[Any]:
    process = subprocess.Popen(
        [sys.executable, "-c", _LOADER, json.dumps(TEXTS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "loader.err").open("w"),
        text=True,
        cwd=tmp_path,
        env=cli_env(MLFLOW_TRACKING_URI=tracking_uri),
    )
    assert process.stdin is not None and process.stdout is not None

    def load(uri: str) -> Any:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(uri + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        assert line, (tmp_path / "loader.err").read_text()[-4000:]
        return json.loads(line)

    try:
        yield load
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def domain_data(folder: Path) -> Path:
    """40 labelled yelp rows (the source) and 20 amazon rows (dann's target), balanced."""
    with DOMAINS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain, count in (("yelp", 20), ("amazon", 10))
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:count]
    ]
    path = folder / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


@pytest.fixture()
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server.wait()
    finally:
        server.stop()


@pytest.mark.slow
def test_every_method_promotes_and_loads_through_a_tracking_server(
    tmp_path: Path, tiny_model: Path, mlflow_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "methods"
    config = {
        "name": name,
        "model": {"name_or_path": str(tiny_model)},
        "data": {
            "train": str(domain_data(tmp_path)),
            "test_fraction": 0.2,
            "eval_fraction": 0.25,
            "max_length": 32,
            "domain_column": "domain",
            "source_domains": ["yelp"],
            "target_domains": ["amazon"],
        },
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1},
        "search": {
            "trials": len(METHODS),
            "sampler": "grid",
            "pruner": "none",
            "space": {"train.method": {"choices": list(METHODS)}},
        },
        "tracking": {
            "mlflow": {"enabled": True, "tracking_uri": mlflow_server},
            "wandb": {"enabled": False},
            "system_every_s": 0,
        },
        # Every method must reach @champion: only the absolute checks (none fail here).
        "promotion": {"min_gain": None},
    }
    out = tmp_path / "runs"
    result = run_cli("sweep", str(write_config(tmp_path, config)), "--out", str(out), timeout=900)
    store = Store(f"sqlite:///{out / 'tunefleet.db'}")
    trials = {t.params["train.method"]: t for t in store.trials(name) if t.state == "COMPLETE"}
    assert set(trials) == set(METHODS), result.stdout + result.stderr
    uri = f"models:/{name}@champion"
    with _loader(mlflow_server, tmp_path) as load:
        for number, method in enumerate(METHODS, start=1):
            trial = trials[method]
            code, text, err = _cli(
                capsys, "promote", name, "--trial", str(trial.number), "--out", str(out)
            )
            assert code == 0, err
            assert f"@champion -> version {number}" in text, text
            rows = load(uri)
            expected = Predictor.from_checkpoint(trial.checkpoint or "").predict(TEXTS)
            assert [r["label"] for r in rows] == [p.label for p in expected], method
            for row, prediction in zip(rows, expected, strict=True):
                assert row["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
        # Through the server too: rollback restores the previous version, history has it all.
        code, text, err = _cli(capsys, "rollback", name, "--out", str(out))
        assert code == 0, err
        assert f"@champion version {len(METHODS)} -> {len(METHODS) - 1}" in text
        rows = load(uri)
        expected = Predictor.from_checkpoint(trials[METHODS[-2]].checkpoint or "").predict(TEXTS)
        assert [r["label"] for r in rows] == [p.label for p in expected]
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(len(METHODS) - 1)
    actions = [(m.alias, m.action) for m in store.alias_moves(name)]
    assert actions.count(("champion", "promote")) == len(METHODS)
    assert actions[-2:] == [("champion", "rollback"), ("previous-champion", "rollback")]
    store.dispose()


def test_history_reads_the_store_alone_and_prints_no_warnings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    store = Store(f"sqlite:///{out / 'tunefleet.db'}")
    store.record_alias_move(
        model_name="m",
        alias="challenger",
        action="register",
        from_version=None,
        to_version="1",
        actor="ann@host",
        sweep="m",
        number=0,
    )
    store.record_alias_move(
        model_name="m",
        alias="champion",
        action="force",
        from_version="3",
        to_version="1",
        actor="bob@host",
        sweep="m",
        number=0,
        reason="hotfix",
        gate={"passed": False, "checks": [{"name": "model MB", "figure": 12.5, "passed": False}]},
    )
    store.dispose()
    result = run_cli("history", "m", "--out", str(out), timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    first, second = result.stdout.splitlines()
    assert "ann@host  register    @challenger  - -> 1 trial 0" in first
    assert "bob@host  force       @champion  3 -> 1 trial 0" in second
    assert 'gate failed: model MB 12.5 (FAIL)  reason: "hotfix"' in second
    entries = json.loads(run_cli("history", "m", "--out", str(out), "--json").stdout)
    assert [(e["who"], e["from_version"], e["to_version"]) for e in entries] == [
        ("ann@host", None, "1"),
        ("bob@host", "3", "1"),
    ]
    assert run_cli("history", "other", "--out", str(out)).stdout.strip() == (
        "no alias moves recorded for other"
    )
