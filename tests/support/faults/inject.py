"""The faults ``sitecustomize`` installs: the ``full`` method, registered again with a callback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

FOLDER = Path(__file__).parent


def fault_env(fault: str) -> dict[str, str]:
    """The environment of a sweep whose workers suffer ``fault``: this folder first (its
    ``sitecustomize``), then ``tests/`` (which that imports ``support`` from: pytest puts it on
    its own ``sys.path`` only, not on a child's)."""
    path = os.pathsep.join([str(FOLDER), str(FOLDER.parents[1]), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "TUNEFLEET_TEST_FAULT": fault}


class _Fault(TrainerCallback):
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.fault.startswith("oom:") and args.per_device_train_batch_size > int(
            self.fault.split(":", 1)[1]
        ):
            raise MemoryError("test fault: the batch does not fit")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.fault == "nan" and state.global_step == 2:
            model = kwargs["model"]
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "classifier" in n).fill_(
                    float("nan")
                )


class _Faulty:
    """The ``full`` method, with the fault's callback added."""

    def __init__(self, method: Any, fault: str) -> None:
        self._method, self._fault = method, fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)

    def callbacks(self, config: Any) -> list[TrainerCallback]:
        return [*self._method.callbacks(config), _Fault(self._fault)]


def install(fault: str) -> None:
    from tunefleet.trainers.methods import registry

    registry._REGISTRY["full"] = _Faulty(registry._REGISTRY["full"], fault)  # type: ignore[assignment]
