"""Library notices silenced once, for every command that launches or runs trials."""

from __future__ import annotations

import warnings

import optuna


def quiet_libraries() -> None:
    """Keep a command's output to its own progress: library notices about APIs we chose
    deliberately (heartbeats with ask/tell, experimental sampler options) are noise to a user."""
    import transformers

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
