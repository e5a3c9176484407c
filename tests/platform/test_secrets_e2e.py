"""A real sweep whose config holds a Hugging Face token and a database password (in the MLflow
tracking URI, a real PostgreSQL backend): neither string reaches MLflow, W&B, the store, the
checkpoint, any other file the sweep writes, or its output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.cli import run_cli
from support.configs import write_config
from support.postgres import fresh_database

pytestmark = pytest.mark.slow

TOKEN = "hf_FAKE_token_123"
PASSWORD = "S3cretPw"
SECRETS = (TOKEN, PASSWORD)
# Trust auth: the server accepts any password, so one in the URL is a real, working secret.


@pytest.fixture
def mlflow_uri(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, "tf_secrets", password=PASSWORD) as url:
        yield url


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _tables(url: str) -> str:
    """Every row of every table, as text."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return "\n".join(
                f"{name}: {row}"
                for name in names
                for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))
            )
    finally:
        engine.dispose()


def _files(folder: Path, *, skip: Path) -> dict[Path, bytes]:
    return {
        path: path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and path != skip
    }


def test_no_secret_leaves_a_sweep(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "runs"
    config = write_config(
        tmp_path,
        {
            "name": "secrets",
            "model": {"name_or_path": str(tiny_model), "token": TOKEN},
            "data": {"train": str(sentiment_csv), "test_fraction": 0.2, "max_length": 32},
            "train": {"epochs": 1, "batch_size": 32, "learning_rate": 3e-3},
            "search": {
                "trials": 1,
                "sampler": "random",
                "pruner": "none",
                "space": {"train.lora.r": {"choices": [2, 4]}},
            },
            "tracking": {
                "mlflow": {"enabled": True, "tracking_uri": mlflow_uri},
                "wandb": {"enabled": True, "mode": "offline"},
            },
        },
        name="secret",
    )
    # MLflow puts a database backend's artifacts under the working directory.
    result = run_cli("sweep", str(config), "--out", str(out), cwd=tmp_path, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not _leaks(output), output

    # MLflow: params and tags of every run, then every row of its database.
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
    ]
    assert len(runs) == 2  # the sweep's parent run and its one trial
    for run in runs:
        assert not _leaks(repr(run.data.params) + repr(run.data.tags)), run.info.run_id
        assert run.data.params.get("model.token") == "***"
    assert not _leaks(_tables(mlflow_uri))

    # The store (and the Optuna study beside it in the same database).
    store = _tables(f"sqlite:///{out / 'tunefleet.db'}")
    assert "secrets" in store and not _leaks(store)

    # Every file the sweep wrote: W&B's run folders, the checkpoint, spools, MLflow artifacts.
    files = _files(tmp_path, skip=config)
    assert any("wandb" in path.parts for path in files)
    assert any("checkpoints" in path.parts for path in files)
    leaked = [
        str(path.relative_to(tmp_path))
        for path, content in files.items()
        if any(secret.encode() in content for secret in SECRETS)
    ]
    assert not leaked
