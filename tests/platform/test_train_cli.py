"""``tunefleet train``: one run with the config's values, no sweep, through the same telemetry;
W&B's offline history and MLflow both hold every spooled step."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support.cli import run_cli
from support.configs import write_config
from support.trials import tiny_config
from support.wandb_offline import history, offline_runs, run_info
from tunefleet.platform.layout import Layout
from tunefleet.tracking.events import Point
from tunefleet.tracking.spool import read_header, read_items

pytestmark = pytest.mark.slow


def test_train_runs_one_tracked_run_without_a_sweep(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = tiny_config(
        tiny_model, sentiment_csv, epochs=2, logging_steps=1, learning_rate=3e-3
    ).model_dump(mode="json")
    config["name"] = "single"
    config["search"]["space"] = {"train.learning_rate": {"low": 1e-4, "high": 1e-2}}
    config["tracking"]["system_every_s"] = 0.2
    path = write_config(tmp_path, config, name="single")
    out = tmp_path / "runs"
    result = run_cli("train", str(path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "search.space is ignored" in result.stdout
    assert "eval_accuracy" in result.stdout and "checkpoint:" in result.stdout  # console sink
    assert not (out / "tunefleet.db").exists()  # no sweep was made

    (spool,) = Layout.at(out).spool_dir("single").glob("train-*.spool")
    header = read_header(spool)
    points = [i.event for i in read_items(spool) if isinstance(i.event, Point)]
    spooled: dict[str, list[int]] = defaultdict(list)
    for point in points:
        spooled[point.key].append(point.step)
    assert {"loss", "grad_norm", "grad_norm/head", "eval_accuracy", "system/rss_mb"} <= set(spooled)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("single")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == header["run"]["run_name"]
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.info.status == "FINISHED"
    for key, steps in spooled.items():
        mlflow_steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(mlflow_steps) == sorted(steps), key

    (wandb_run,) = offline_runs(out / "wandb")
    assert run_info(wandb_run)["id"] == header["sinks"]["wandb"]["run_id"]
    report = wandb_run.parent / "files" / "evaluation" / "classification_report.json"
    assert report.is_file(), sorted(p.name for p in wandb_run.parent.rglob("*"))
    series = history(wandb_run)
    for key, steps in spooled.items():
        if key.startswith("system/"):
            # W&B keeps one value per key and step (samples taken while the step stands still,
            # as in an evaluation, share it), and a sample spooled just after a later training
            # step goes in at that step: each sampled step is there or just after.
            logged = sorted(step for step, _ in series[key])
            assert 0 < len(logged) <= len(set(steps)), key
            assert all(any(w >= s for w in logged) for s in steps), key
            continue
        assert sorted(step for step, _ in series[key]) == sorted(steps), key
