"""Whether this machine can hold and train the model's weights as configured: ``model.dtype``,
``model.quantization`` and how they meet ``train.precision`` and ``train.method``.

Checked twice: by ``tunefleet validate``/``sweep`` before any trial (``platform.checks``), and at
each trial's start (a worker may run on another machine than the one that validated). Light at
import: torch is imported only when the weights are not plain float32, so validating the usual
config stays fast.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tunefleet.config import METHODS, ModelConfig, TrainConfig
from tunefleet.errors import ConfigError

QUANTIZATION_EXTRA = "pip install 'tunefleet[quantization]'"

#: Methods that cannot train on quantized weights, and why; the others train only weights they
#: add (peft adapters, prompts) and a float head, which bitsandbytes leaves trainable.
NOT_ON_QUANTIZED: dict[str, str] = {
    "full": "trains every weight of the body",
    "unfreeze": "trains the body's blocks",
    "dann": "trains the body through its reversed domain gradient",
    "adapter": "builds its bottlenecks in the dtype of the layer they follow, an integer "
    "storage type under bitsandbytes",
}
ON_QUANTIZED = tuple(m for m in METHODS if m not in NOT_ON_QUANTIZED)


@dataclass(frozen=True)
class Device:
    """What the machine offers the weights. ``cuda``: the GPU's name, None on a CPU-only
    machine; ``bf16``: whether it computes in bfloat16 (CPUs do, through torch's kernels)."""

    cuda: str | None
    bf16: bool

    @classmethod
    def detect(cls) -> Device:
        import torch

        if torch.cuda.is_available():
            return cls(cuda=torch.cuda.get_device_name(), bf16=torch.cuda.is_bf16_supported())
        return cls(cuda=None, bf16=True)


def check_weights(model: ModelConfig, train: TrainConfig, *, device: Device | None = None) -> None:
    """ConfigError listing every way the weights' dtype or quantization cannot train here.

    ``device``: the machine to judge for; None detects this one, and only when the weights are
    not plain float32 (the config-only problems need no device).
    """
    problems = _config_problems(model, train)
    if model.dtype != "float32" or model.quantization is not None:
        problems += _device_problems(model, device or Device.detect())
    if problems:
        raise ConfigError(problems)


def _config_problems(model: ModelConfig, train: TrainConfig) -> list[tuple[str, str]]:
    """What no machine could train: checked from the config alone."""
    problems: list[tuple[str, str]] = []
    if model.quantization is not None:
        if train.method in NOT_ON_QUANTIZED:
            problems.append(
                (
                    "train.method",
                    f"{train.method} {NOT_ON_QUANTIZED[train.method]}, which "
                    f"model.quantization ({model.quantization.bits}-bit) freezes; quantized "
                    f"weights train with: {', '.join(ON_QUANTIZED)}",
                )
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append(
                (
                    "model.quantization",
                    f"needs the bitsandbytes package, which is not installed: {QUANTIZATION_EXTRA}",
                )
            )
        return problems  # prepare_model_for_kbit_training keeps what trains in float32
    if model.dtype == "float16" and train.precision == "fp16":
        problems.append(
            (
                "train.precision",
                "fp16 with model.dtype float16: the fp16 GradScaler cannot unscale float16 "
                "gradients ('Attempting to unscale FP16 gradients'); use train.precision bf16 "
                "or fp32, or model.dtype float32",
            )
        )
    return problems


def _device_problems(model: ModelConfig, device: Device) -> list[tuple[str, str]]:
    """What this machine cannot do: half weights and quantization it has no kernels for."""
    if model.quantization is not None and device.cuda is None:
        return [
            (
                "model.quantization",
                "bitsandbytes trains quantized weights on a CUDA GPU and this machine has none; "
                "set model.quantization: null (model.dtype bfloat16 halves memory on CPU)",
            )
        ]
    if model.dtype == "float16" and device.cuda is None:
        return [
            (
                "model.dtype",
                "float16 weights need a CUDA GPU: on CPU there is no fp16 loss scaling, so small "
                "gradients vanish; use bfloat16 or float32",
            )
        ]
    if (
        compute_dtype(model.dtype, quantized=model.quantization is not None) == "bfloat16"
        and not device.bf16
    ):
        default = " (quantized weights compute in it unless model.dtype says float16)"
        return [
            (
                "model.dtype",
                f"{device.cuda} cannot compute in bfloat16"
                f"{default if model.dtype == 'float32' else ''}; use float16 or float32",
            )
        ]
    return []


def compute_dtype(dtype: str, *, quantized: bool) -> str:
    """The dtype the weights compute in: ``model.dtype``, except that quantized weights, which
    cannot compute in their storage type, default to bfloat16 rather than float32 (QLoRA's)."""
    return "bfloat16" if quantized and dtype == "float32" else dtype
