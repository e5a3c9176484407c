"""``tunefleet sweep --engine ray`` on a real two-node Ray cluster on this machine (Ray's
``cluster_utils.Cluster``, each node declaring one logical GPU, token authentication on): the
sweep completes with one actor per node, each seeing its own ``CUDA_VISIBLE_DEVICES``; the trial
of a node removed mid-trial is re-queued with its params and resumed from its last evaluation,
and the restarted actor takes part again, with the budget exact; a cluster that cannot run the
sweep is refused before any trial."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from ray import cluster_utils
from ray._raylet import Config as RayConfig

from support.cli import TUNEFLEET, cli_env, run_cli
from support.configs import write_config
from support.postgres import fresh_database
from support.trials import trial_request
from support.waiting import wait_for
from tunefleet.config import apply_params, load_config
from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store
from tunefleet.trainers.resume import has_resumable, resumable_step
from tunefleet.trainers.run import TrialOutcome, run_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_token() -> Iterator[str]:
    """Token authentication (Ray 2.59+ turns it on for new local clusters) with a token of this
    module's own, in the environment the launcher inherits: nothing is written to ~/.ray. One
    token for every cluster of the module: Ray's token loader keeps the first token it read in
    this process (the one that starts the clusters' nodes), so a second token would not match."""
    token = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", token)
        patch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        patch.delenv("RAY_ADDRESS", raising=False)
        # Ray reads RAY_* once into a cached config.
        RayConfig.initialize("")
        yield token
    RayConfig.initialize("")


@pytest.fixture
def cluster(ray_token: str) -> Iterator[Any]:
    """Two nodes on this machine, one logical GPU and two CPUs each. A driver rewrites a
    127.0.0.1 cluster address to the machine's own address (Ray's resolve_ip_for_localhost), so
    the nodes advertise that address; the dashboard listens on 127.0.0.1 only."""
    node = {"num_cpus": 2, "num_gpus": 1}
    made = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={**node, "dashboard_host": "127.0.0.1", "include_dashboard": True},
    )
    try:
        made.add_node(**node)
        yield made
    finally:
        made.shutdown()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, "tf_ray") as url:
        yield url


def sweep_file(tmp_path: Path, model: Path, data: Path, *, epochs: int = 1) -> Path:
    config = {
        "name": "onray",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3, "seed": 0},
        "search": {
            "trials": 4,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-3, "high": 5e-3}},
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    return write_config(tmp_path, config, name="onray")


def ray_sweep_args(config: Path, out: Path, db: str, address: str) -> list[str]:
    return [
        "sweep",
        str(config),
        "--out",
        str(out),
        "--db",
        db,
        "--engine",
        "ray",
        "--address",
        address,
        "--workers",
        "2",
        "--gpus-per-trial",
        "1",
        "--cpus-per-trial",
        "1",
    ]


def incarnations(db: str) -> dict[int, list[dict[str, Any]]]:
    """Each worker actor's incarnations as the actors recorded them on the study."""
    attrs = optuna.load_study(study_name="onray", storage=db).user_attrs
    return {i: attrs.get(f"ray_worker_{i}", []) for i in range(2)}


def assert_budget_exact(db: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name="onray", storage=db).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    store = Store(db)
    try:
        assert store.get_sweep("onray").claimed == 4
        assert not [r for r in store.trials("onray") if r.state == "RUNNING"]
    finally:
        store.dispose()
    return trials


def test_a_sweep_runs_one_actor_per_node_each_with_its_own_gpu(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, cluster: Any, pg_url: str
) -> None:
    config = sweep_file(tmp_path, tiny_model, sentiment_csv)
    result = run_cli(*ray_sweep_args(config, tmp_path / "runs", pg_url, cluster.address))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    trials = assert_budget_exact(pg_url)
    seen = incarnations(pg_url)
    # One GPU per node and one actor per GPU: the two actors are on the two nodes, and Ray gave
    # each the one device of its node.
    assert len({who[0]["node_id"] for who in seen.values()}) == 2, seen
    assert all(who[0]["cuda_visible_devices"] == "0" for who in seen.values()), seen
    pids = {who[0]["pid"] for who in seen.values()}
    assert {t.user_attrs["pid"] for t in trials} <= pids
    # Output comes back prefixed with the worker and its host, and the dashboard is named.
    assert "worker 0 @ " in output and "worker 1 @ " in output, output
    assert "Ray dashboard" in output, output


def test_a_node_lost_mid_trial_is_retried_resumed_and_the_actor_restarts(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, cluster: Any, pg_url: str
) -> None:
    # Trials long enough that the node goes while the trial seen running (state written at its
    # first epoch) is still training.
    config = sweep_file(tmp_path, tiny_model, sentiment_csv, epochs=12)
    log = tmp_path / "sweep.log"
    with log.open("w") as handle:
        sweep = subprocess.Popen(
            [*TUNEFLEET, *ray_sweep_args(config, tmp_path / "runs", pg_url, cluster.address)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    try:
        [worker_node] = list(cluster.worker_nodes)
        seen = running_trial_on(pg_url, tmp_path / "runs", worker_node.node_id)
        cluster.remove_node(worker_node, allow_graceful=False)
        sweep.wait(timeout=600)
    finally:
        sweep.kill()
    output = log.read_text()
    assert sweep.returncode == 0, output
    trials = assert_budget_exact(pg_url)
    # The trial seen running on the node is the one failed attempt.
    [lost] = [t for t in trials if t.state == TrialState.FAIL]
    assert lost.number == seen, (lost.number, seen)
    node_pids = {
        w["pid"]
        for who in incarnations(pg_url).values()
        for w in who
        if w["node_id"] == worker_node.node_id
    }
    assert lost.user_attrs["pid"] in node_pids, (lost.user_attrs, node_pids)
    assert f"trial(s) ['{lost.number} re-queued']" in output, output
    # The lost attempt is retried with the same params, resumed from its last evaluation (its
    # node's files are on the shared --out), and completes.
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == lost.number]
    assert (retry.state, retry.user_attrs["attempt"]) == (TrialState.COMPLETE, 2)
    assert retry.params == lost.params
    assert retry.user_attrs["resumed_from_step"] > 0
    # The lost actor came back on the node that is left (once the other actor freed its GPU).
    restarted = [who for who in incarnations(pg_url).values() if len(who) == 2]
    assert restarted and restarted[0][1]["node_id"] != worker_node.node_id, restarted
    # And the resumed trial ended as the same trial run uninterrupted would have.
    reference = uninterrupted(config, retry.params, tmp_path / "reference")
    store = Store(pg_url)
    try:
        record = store.trial("onray", retry.number)
    finally:
        store.dispose()
    assert record is not None and retry.value == reference.value
    assert record.metrics["eval_accuracy"] == reference.metrics["eval_accuracy"]
    assert record.metrics["eval_loss"] == pytest.approx(reference.metrics["eval_loss"], abs=1e-5)


def test_ctrl_c_gives_each_actor_its_sigterm_grace(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, cluster: Any, pg_url: str
) -> None:
    """Ctrl-C on a Ray sweep: each actor's worker is sent SIGTERM on its node, saves its trial
    after the current step (not only at its last evaluation) and re-queues it; exit 130."""
    config = sweep_file(
        tmp_path, tiny_model, sentiment_csv, epochs=150
    )  # long trials: the Ctrl-C lands while they train
    out = tmp_path / "runs"
    sweep = subprocess.Popen(
        [*TUNEFLEET, *ray_sweep_args(config, out, pg_url, cluster.address)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        start_new_session=True,  # the SIGINT goes to the launcher alone, as Ctrl-C's would
    )
    try:
        [worker_node] = list(cluster.worker_nodes)
        number = running_trial_on(pg_url, out, worker_node.node_id)
        os.kill(sweep.pid, signal.SIGINT)
        output, _ = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, output
    store = Store(pg_url)
    try:
        record = store.trial("onray", number)
    finally:
        store.dispose()
    assert record is not None and (record.state, record.reason, record.requeued) == (
        "FAIL",
        "interrupted",
        True,
    ), record
    # Stopped by its own worker at a step, the state written there: not killed.
    stopped = re.search(r"interrupted after optimizer step (\d+)", record.reason_detail or "")
    assert stopped, record.reason_detail
    resume = Layout.at(out).resume_dir("onray", number)
    assert resumable_step(resume) == int(stopped.group(1))
    assert "SIGTERM, stopping within" in output, output


def uninterrupted(config: Path, params: dict[str, Any], folder: Path) -> TrialOutcome:
    """The trial with these params and the sweep's seed, never interrupted, on one thread as
    each actor trains (``--cpus-per-trial 1``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = apply_params(load_config(config), params)
        return run_trial(cfg, trial_request(folder, params=params))
    finally:
        torch.set_num_threads(threads)


def running_trial_on(db: str, out: Path, node_id: str) -> int:
    """Waits until the actor on ``node_id`` has a trial past its first evaluation (its resumable
    state written); its number. One Optuna storage and one store for the whole wait: a fresh
    engine (and the store's migration check) per look made each look slow enough under a loaded
    machine for a whole trial to pass unseen."""
    resume = Layout.at(out)
    found: list[int] = []
    opened: dict[str, Any] = {}

    def check() -> bool:
        if not opened:
            try:
                storage = optuna.storages.RDBStorage(db)
                study_id = storage.get_study_id_from_name("onray")
            except Exception:  # the study is not created yet
                return False
            opened.update(storage=storage, study_id=study_id, store=Store(db))
        attrs = opened["storage"].get_study_user_attrs(opened["study_id"])
        pids = {
            w["pid"]
            for i in range(2)
            for w in attrs.get(f"ray_worker_{i}", [])
            if w["node_id"] == node_id
        }
        for record in opened["store"].trials("onray"):
            saved = has_resumable(resume.resume_dir("onray", record.number))
            if record.state == "RUNNING" and record.pid in pids and saved:
                found.append(record.number)
                return True
        return False

    try:
        wait_for(check, timeout_s=300, every_s=0.2, what="a trial running on the worker node")
    finally:
        if opened:
            opened["store"].dispose()
            opened["storage"].engine.dispose()
    return found[0]


def test_a_multi_node_cluster_with_sqlite_is_refused_before_any_trial(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, cluster: Any
) -> None:
    config = sweep_file(tmp_path, tiny_model, sentiment_csv)
    out = tmp_path / "runs"
    result = run_cli(*ray_sweep_args(config, out, f"sqlite:///{out / 'x.db'}", cluster.address))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "2 nodes" in result.stderr and "--db postgresql://" in result.stderr, result.stderr
    assert not (out / "x.db").exists()  # refused before the study was created


def test_an_out_the_nodes_do_not_see_is_refused_naming_them(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, cluster: Any, pg_url: str
) -> None:
    """The launcher runs in a mount namespace of its own with a private tmpfs at --out: a real
    filesystem that the Ray nodes (started in this test's namespace) do not share."""
    config = sweep_file(tmp_path, tiny_model, sentiment_csv)
    out = tmp_path / "private-runs"
    out.mkdir()
    # Root may make a mount namespace; anyone else makes it inside a user namespace.
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    in_private = f'mount -t tmpfs tunefleet-private "{out}" && exec "$@"'
    sweep = ray_sweep_args(config, out, pg_url, cluster.address)
    result = subprocess.run(
        [*unshare, "sh", "-c", in_private, "sh", *TUNEFLEET, *sweep],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not shared with the Ray node(s)" in result.stderr, result.stderr
    named = result.stderr.split("node(s)", 1)[1].split(":", 1)[0]
    assert named.count("(") == 2, result.stderr  # both nodes, each with its address
    assert optuna.get_all_study_names(storage=pg_url) == []  # refused before the study


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunefleet.errors import TunefleetError
    from tunefleet.platform.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # how Python sees a package not installed
    with pytest.raises(TunefleetError, match=r"pip install 'tunefleet\[ray\]'"):
        import_ray()
