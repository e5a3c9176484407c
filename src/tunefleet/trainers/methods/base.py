"""The contract every adaptation method fulfils."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from tunefleet.config import TrainConfig

BaseFactory = Callable[[], PreTrainedModel]


class Method(Protocol):
    """An adaptation method: how a model is prepared, saved and restored.

    Training itself is the same for every method (HF Trainer + tunefleet callbacks), so a method
    only decides which parameters train (``prepare``), what a checkpoint holds (``save``/``load``)
    and, where it must, adds a small Trainer hook (``callbacks``).

    Contract:
        - ``prepare`` returns the module to train; parameters with ``requires_grad=False`` never
          change.
        - ``save`` writes safetensors into ``folder`` (an existing, empty folder); ``load`` rebuilds
          the same module from ``folder`` and, if it needs the pretrained body, ``base()``; the
          reloaded module gives the trained module's logits exactly.
    """

    name: str

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module: ...

    def save(self, model: nn.Module, folder: Path) -> None: ...

    def load(self, folder: Path, base: BaseFactory) -> nn.Module: ...

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]: ...
