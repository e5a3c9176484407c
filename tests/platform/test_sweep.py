"""End to end through the real CLI: a sweep with two workers on SQLite, MLflow (sqlite) and W&B
(offline), then status, compare, promote and predict; and resuming a killed sweep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from support.cli import cli_env, run_cli, start_cli
from support.configs import write_config
from support.waiting import wait_for
from support.wandb_offline import history, offline_runs, run_info
from tunefleet.platform.store import Store
from tunefleet.trainers.checkpoint import hash_folder

pytestmark = pytest.mark.slow


def sweep_config(tmp_path: Path, model: Path, data: Path, name: str, **search: Any) -> Path:
    config = {
        "name": name,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "test_fraction": 0.2, "max_length": 32},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "logging_steps": 2},
        "search": {
            "trials": 3,
            "sampler": "random",
            "pruner": "none",
            "metric": "eval_accuracy",
            "space": {
                "train.method": {"choices": ["full", "lora"]},
                "train.learning_rate": {"low": 1e-3, "high": 5e-3, "log": True},
                "train.lora.r": {"choices": [2, 4]},
            },
            **search,
        },
        "tracking": {"mlflow": {"enabled": True}, "wandb": {"enabled": True, "mode": "offline"}},
    }
    return write_config(tmp_path, config, name=name)


@pytest.fixture(scope="module")
def swept(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path
) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "runs"
    result = run_cli(
        "sweep",
        str(sweep_config(tmp, tiny_model, sentiment_csv, "e2e")),
        "--out",
        str(out),
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"out": out, "tmp": tmp, "stdout": result.stdout}


def test_optuna_has_exactly_the_budget_of_finished_trials(swept: dict[str, Any]) -> None:
    study = optuna.load_study(
        study_name="e2e", storage=f"sqlite:///{swept['out'] / 'tunefleet.db'}"
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    workers = {t.user_attrs["pid"] for t in study.trials}
    assert len(workers) == 2, "both workers should have taken trials"
    for trial in study.trials:
        assert ("train.lora.r" in trial.params) == (trial.params["train.method"] == "lora")


def test_mlflow_has_a_parent_and_a_child_per_trial_with_step_metrics(swept: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{swept['out'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tunefleet.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("tunefleet.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.params["train.method"] in ("full", "lora")
        tags = child.data.tags
        assert tags["tunefleet.sweep"] == "e2e"
        assert tags["tunefleet.method"] == child.data.params["train.method"]
        assert tags["tunefleet.worker"] and tags["tunefleet.host"]
        assert child.info.run_name == f"trial-{tags['tunefleet.trial']}"
        artifacts = client.list_artifacts(child.info.run_id, "evaluation")
        assert any(a.path.endswith("confusion_matrix.png") for a in artifacts)
        for key in ("loss", "learning_rate", "grad_norm"):
            points = client.get_metric_history(child.info.run_id, key)
            assert len(points) >= 5 and len({p.step for p in points}) == len(points), key
        evaluations = client.get_metric_history(child.info.run_id, "eval_accuracy")
        assert len(evaluations) == 2
    # The parent carries the best so far: a best_value per new best, the best's params as tags.
    parent = parents[0]
    best = Store(f"sqlite:///{swept['out'] / 'tunefleet.db'}").best("e2e")
    assert best is not None
    assert parent.data.tags["tunefleet.best_trial"] == str(best.number)
    assert parent.data.metrics["best_value"] == best.value
    assert parent.data.tags["best.train.method"] == best.params["train.method"]


def test_wandb_wrote_one_offline_run_per_trial_with_every_point(swept: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    runs = offline_runs(swept["out"] / "wandb")
    assert len(runs) == 3
    store = Store(f"sqlite:///{swept['out'] / 'tunefleet.db'}")
    by_wandb_id = {t.wandb_run_id: t for t in store.trials("e2e")}
    client = MlflowClient(tracking_uri=f"sqlite:///{swept['out'] / 'mlflow.db'}")
    for path in runs:
        info = run_info(path)
        trial = by_wandb_id[info["id"]]
        assert (info["group"], info["name"]) == ("e2e", f"trial-{trial.number}")
        assert info["job_type"] == trial.params["train.method"]
        series = history(path)
        for key in ("loss", "eval_accuracy"):
            mlflow_steps = [p.step for p in client.get_metric_history(trial.mlflow_run_id, key)]
            assert sorted(step for step, _ in series[key]) == sorted(mlflow_steps), key


def test_store_holds_best_params_and_checkpoint_hashes(swept: dict[str, Any]) -> None:
    study = optuna.load_study(
        study_name="e2e", storage=f"sqlite:///{swept['out'] / 'tunefleet.db'}"
    )
    store = Store(f"sqlite:///{swept['out'] / 'tunefleet.db'}")
    best = store.best("e2e")
    assert best is not None and best.number == study.best_trial.number
    assert best.value == study.best_value and best.params == study.best_trial.params
    for trial in store.trials("e2e"):
        assert trial.state == "COMPLETE" and trial.checkpoint
        assert trial.checkpoint_sha256 == hash_folder(Path(trial.checkpoint))
        assert trial.metrics["eval_accuracy"] == trial.value
        assert {"test_accuracy", "test_f1"} <= set(trial.metrics)
    assert f"best trial {best.number}" in swept["stdout"] and "held-out test" in swept["stdout"]
    assert (
        "mlflow ui --backend-store-uri" in swept["stdout"] and "optuna-dashboard" in swept["stdout"]
    )


def test_status_json(swept: dict[str, Any]) -> None:
    result = run_cli("status", "e2e", "--out", str(swept["out"]), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["name"] == "e2e" and len(status["trials"]) == 3
    keys = {
        "number",
        "state",
        "params",
        "value",
        "mlflow_run_id",
        "wandb_run_id",
        "checkpoint",
        "seconds",
        "live",
        "attempt",
        "retry_of",
        "reason",
        "reason_detail",
        "requeued",
        "progress",
        "compute",
        "checkpoint_bytes",
        "checkpoint_retention",
    }
    assert all(set(t) == keys for t in status["trials"])
    assert all((t["attempt"], t["reason"]) == (1, None) for t in status["trials"])
    # Only running trials have a live summary and progress; a finished sweep has no ETA.
    assert all(t["live"] is None and t["progress"] is None for t in status["trials"])
    assert (status["budget"], status["eta_s"]) == (3, None)
    best = max(status["trials"], key=lambda t: t["value"])
    assert status["best"]["value"] == best["value"]
    assert set(status["best"]) == {"number", "value", "params", "checkpoint"}


def test_compare_prints_sorted_table_and_writes_report(swept: dict[str, Any]) -> None:
    report = swept["tmp"] / "report.html"
    result = run_cli("compare", "e2e", "--out", str(swept["out"]), "--html", str(report))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:4]]
    values = [float(row[2]) for row in rows]
    assert values == sorted(values, reverse=True)
    html = report.read_text()
    for marker in ("tf-history", "tf-parallel", "tf-importances", "tf-loss", "trial-0", "trial-2"):
        assert marker in html, marker


def test_promote_then_predict_and_load_with_mlflow(swept: dict[str, Any]) -> None:
    out = str(swept["out"])
    result = run_cli("promote", "e2e", "--out", out)
    assert result.returncode == 0, result.stderr
    store = Store(f"sqlite:///{swept['out'] / 'tunefleet.db'}")
    promotion = store.promotion("e2e", alias="champion")
    best = store.best("e2e")
    assert promotion is not None and best is not None and promotion.number == best.number
    assert "mlflow.pyfunc.load_model('models:/e2e@champion')" in result.stdout
    texts = ["wonderful place, great food", "cold food and rude staff"]
    by_alias = run_cli("predict", "e2e@champion", *texts, "--out", out, "--json")
    by_folder = run_cli("predict", promotion.checkpoint, *texts, "--json")
    assert by_alias.returncode == 0, by_alias.stderr
    assert by_alias.stdout == by_folder.stdout
    predicted = [json.loads(line) for line in by_alias.stdout.splitlines()]
    code = (
        "import json, mlflow; m = mlflow.pyfunc.load_model('models:/e2e@champion'); "
        f"frame = m.predict({texts!r}); print(json.dumps(frame.to_dict(orient='records')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{swept['out'] / 'mlflow.db'}"),
    )
    assert loaded.returncode == 0, loaded.stderr
    rows = json.loads(loaded.stdout.splitlines()[-1])
    assert [r["label"] for r in rows] == [p["label"] for p in predicted]
    for row, expected in zip(rows, predicted, strict=True):
        assert row["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def test_promote_refuses_a_tampered_checkpoint(swept: dict[str, Any]) -> None:
    store = Store(f"sqlite:///{swept['out'] / 'tunefleet.db'}")
    worst = min(store.trials("e2e"), key=lambda t: t.value or 0.0)
    manifest = Path(worst.checkpoint or "") / "tunefleet.json"
    original = manifest.read_text()
    manifest.write_text(original.replace('"method"', '"method" ', 1))
    try:
        result = run_cli(
            "promote",
            "e2e",
            "--out",
            str(swept["out"]),
            "--trial",
            str(worst.number),
            "--alias",
            "tampered",
        )
    finally:
        manifest.write_text(original)
    assert result.returncode == 2
    assert "changed tunefleet.json" in result.stderr
    assert store.promotion("e2e", alias="tampered") is None


def test_resume_after_a_killed_sweep(tmp_path: Path, tiny_model: Path, sentiment_csv: Path) -> None:
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "resume", trials=3)
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'runs' / 'tunefleet.db'}"
    proc = start_cli("sweep", str(config), "--out", str(out))

    def second_trial_running() -> bool:
        if not (tmp_path / "runs" / "tunefleet.db").exists():
            return False
        try:
            states = [t.state for t in Store(db).trials("resume")]
        except Exception:  # the sweep record may not exist yet
            return False
        return states[:2] == ["COMPLETE", "RUNNING"]

    try:
        wait_for(second_trial_running, timeout_s=240, every_s=0.5, what="trial 1 to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = Store(db).trial("resume", 0)
    assert first is not None and first.checkpoint_sha256

    result = run_cli("sweep", str(config), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    trials = optuna.load_study(study_name="resume", storage=db).trials
    assert [t.state for t in trials][:2] == [TrialState.COMPLETE, TrialState.FAIL]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert Store(db).trial("resume", 0) == first  # finished work is kept, not redone
    dead = Store(db).trial("resume", 1)
    assert dead is not None and (dead.state, dead.reason, dead.requeued) == (
        "FAIL",
        "interrupted",
        True,
    )
    # The dead worker's trial was retried with its params, as one of the three.
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[1].params

    changed = yaml.safe_load(config.read_text())
    changed["train"]["epochs"] = 5
    write_config(tmp_path, changed, name="resume")
    refused = run_cli("sweep", str(config), "--out", str(out))
    assert refused.returncode == 2
    assert (
        "already exists with a different config" in refused.stderr
        and "train.epochs" in refused.stderr
    )


def parent_status(out: Path, name: str) -> str:
    """The status of the sweep's MLflow parent run."""
    from mlflow.tracking import MlflowClient

    parent = Store(f"sqlite:///{out / 'tunefleet.db'}").get_sweep(name).mlflow_parent_run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return str(client.get_run(parent).info.status)


def test_the_parent_run_ends_finished_with_the_sweep(swept: dict[str, Any]) -> None:
    assert parent_status(swept["out"], "e2e") == "FINISHED"


def test_a_stopped_sweep_ends_its_parent_killed_and_resuming_reopens_it(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "stopped", trials=2)
    out = tmp_path / "runs"
    command = ("sweep", str(config), "--out", str(out))
    sweep = start_cli(*command)
    try:
        wait_for(
            lambda: _running_trial(out, "stopped") or sweep.poll() is not None,
            timeout_s=240,
            what="a running trial",
        )
        assert sweep.poll() is None, "the sweep ended before a trial started"
        sweep.send_signal(signal.SIGTERM)  # the launcher only, as `kill PID` would
        assert sweep.wait(120) == 130
    finally:
        _kill_group(sweep)
    assert parent_status(out, "stopped") == "KILLED"

    resumed = start_cli(*command)
    seen = set()
    try:
        while resumed.poll() is None:
            with contextlib.suppress(Exception):  # a read racing the sweep's writes: again
                seen.add(parent_status(out, "stopped"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                resumed.wait(0.2)
    finally:
        _kill_group(resumed)
    assert resumed.returncode == 0
    assert "RUNNING" in seen  # reopened while the resumed sweep ran its trials
    assert parent_status(out, "stopped") == "FINISHED"


def test_a_sweep_whose_trials_all_fail_ends_its_parent_failed(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    # A folder that passes the pre-flight check (it has a config.json) but holds no weights
    # and no tokenizer: every trial fails as it loads the model.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model / "config.json").read_text())
    config = sweep_config(tmp_path, broken, sentiment_csv, "broken", trials=3)
    out = tmp_path / "runs"
    result = run_cli("sweep", str(config), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no trial completed" in result.stdout
    assert parent_status(out, "broken") == "FAILED"


def _running_trial(out: Path, name: str) -> bool:
    if not (out / "tunefleet.db").exists():
        return False
    try:
        return any(
            t.state == "RUNNING" for t in Store(f"sqlite:///{out / 'tunefleet.db'}").trials(name)
        )
    except Exception:  # the sweep record may not exist yet
        return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever is left of a sweep (its workers) when a test ends."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
