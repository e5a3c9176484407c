"""What tunefleet measures of a trained trial besides its eval metrics, for multi-objective
sweeps and constraints (``search.objectives``, ``search.constraints``): parameter counts, the
checkpoint's size, inference latency and training time (the names are ``config.MEASURED``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from tunefleet.config import LatencyConfig

WARMUP_RUNS = 2
"""Untimed passes first: the first calls allocate and pick kernels."""


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def folder_mb(folder: Path) -> float:
    """Bytes of every file under ``folder``, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def latency_ms(
    module: nn.Module, batch: Mapping[str, torch.Tensor], settings: LatencyConfig
) -> float:
    """p50 wall time in ms of one forward pass on ``batch`` (a fixed batch of eval texts, so
    trials compare on the same input), after ``WARMUP_RUNS`` untimed passes."""
    device = next(module.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    was_training = module.training
    module.eval()
    timings = []
    try:
        with torch.inference_mode():
            for run in range(WARMUP_RUNS + settings.runs):
                _sync(device)
                start = time.perf_counter()
                module(**inputs)
                _sync(device)
                if run >= WARMUP_RUNS:
                    timings.append((time.perf_counter() - start) * 1000)
    finally:
        module.train(was_training)
    return statistics.median(timings)


class Examples(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


def fixed_batch(examples: Examples, collate: Any, size: int) -> Any:
    """The first ``size`` examples, collated (padded) as evaluation would."""
    return collate([dict(examples[i]) for i in range(min(size, len(examples)))])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
