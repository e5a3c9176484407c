"""``tunefleet train``: one run with the config's own values, no search, through the same
training path and the same telemetry as a sweep's trials (plus progress lines on stdout)."""

from __future__ import annotations

import shutil
import time

from tunefleet.config import SweepConfig
from tunefleet.platform.checks import check_sweep
from tunefleet.platform.layout import Layout
from tunefleet.platform.run_tracking import start_single_tracking
from tunefleet.redaction import install_log_redaction, secret_values


def train(config: SweepConfig, layout: Layout) -> int:
    from tunefleet.platform.quiet import quiet_libraries
    from tunefleet.trainers.run import TrialRequest, run_trial

    check_sweep(config)
    install_log_redaction(secret_values(config))
    quiet_libraries()
    layout.ensure()
    if config.search.space:
        print("note: search.space is ignored; `tunefleet train` runs the config's own values")
    run_name = time.strftime("train-%Y%m%d-%H%M%S")
    tracking = start_single_tracking(config, layout, run_name=run_name)
    request = TrialRequest(
        sweep=config.name,
        number=0,
        params={},
        checkpoint_dir=layout.named_checkpoint(config.name, run_name),
        work_dir=layout.out / "work" / config.name / run_name,
        cache_dir=layout.token_cache,
        callbacks=[tracking.callback],
    )
    try:
        outcome = run_trial(config, request)
    except BaseException:
        tracking.close("FAILED")
        raise
    finally:
        shutil.rmtree(request.work_dir, ignore_errors=True)
    left = tracking.close("FINISHED")
    print(f"\n{run_name}: best {config.search.metric} = {outcome.value}")
    tests = {k: v for k, v in outcome.metrics.items() if k.startswith("test_")}
    if tests:
        print("held-out test: " + ", ".join(f"{k} = {v:.4f}" for k, v in sorted(tests.items())))
    print(f"checkpoint: {outcome.checkpoint}")
    mlflow_run_id = tracking.run_ids().get("mlflow")
    if mlflow_run_id:
        print(f"mlflow run: {mlflow_run_id}")
    if left:
        print(f"not yet delivered: {left}; run `tunefleet sync {config.name}`")
    return 0
