"""The contract every adaptation method fulfils."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

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
        - ``self_contained`` says whether ``load`` needs ``base()``: True when the checkpoint
          holds the whole model, False when it holds only what the method trained (an adapter,
          a prompt) and is restored onto the pretrained body; promotion bundles that body with
          every checkpoint that is not self-contained.
        - ``name`` is the name the method is registered under: ``register`` sets it.
    """

    name: str
    self_contained: bool
    """Whether a checkpoint is the whole model, loadable without the pretrained body."""
    uses_target_rows: bool
    """Whether training also reads the target-domain rows (texts only, labels as IGNORE_INDEX,
    each row with its domain id as ``domain_labels``); only domain adaptation (dann) does."""

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module: ...

    def save(self, model: nn.Module, folder: Path) -> None: ...

    def load(self, folder: Path, base: BaseFactory) -> nn.Module: ...

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]: ...

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (a group may set ``lr_scale``); None: the default two
        groups (decayed weights; biases and norms without decay) of the trainable parameters."""
        ...

    def owns(self, parameter_name: str) -> bool:
        """Whether the parameter (named as in the prepared model) is one the method adds (LoRA
        matrices, adapters, a prompt, a domain classifier): its gradient norm is reported as the
        method's own group, apart from the pretrained body's."""
        ...


class MethodBase:
    """Defaults for the optional parts of :class:`Method`: no hooks, default parameter groups,
    source rows only, no parameters of its own. ``self_contained`` has no default: each method
    declares it (``register`` refuses one that does not)."""

    name: str
    self_contained: bool
    uses_target_rows: bool = False

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]:
        return []

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]] | None:
        return None

    def owns(self, parameter_name: str) -> bool:
        return False
