"""Gradient norms by module group: embeddings, encoder blocks, head, the method's own parameters.

The norms are measured once per optimizer step, before clipping, from the same per-tensor norms
that give the global norm (``TunefleetTrainer`` clips with that total), so the groups' squares sum
to the logged ``grad_norm`` squared. Everything stays on the device: one fused ``_foreach_norm``
per (device, dtype) and a scatter-add into the groups; the host reads the group norms only at a
logging step, with one ``tolist``.

Which group a parameter falls in is decided once, by name and module, in this order: the
method's own (``Method.owns``, the group named after the method), ``embeddings``, the block it
sits in (``block_03``; a model deeper than ``max_block_groups`` blocks gets contiguous runs such
as ``blocks_00-03``), then ``head``. Blocks and embeddings are where the architecture table
(``tunefleet.trainers.architectures``) says: encoder blocks (``encoder.layer.N``) and decoder
blocks (GPT-2's ``transformer.h.N``, Llama's ``model.layers.N``) are named alike. For a model in
the table the head is everything else: the classifier or ``score``, the pooler, and a decoder's
final norm (``ln_f``, ``model.norm``), which feeds the head. For a model not in the table the
groups are guessed from common names, the head is the classifier, score, pre_classifier, pooler
and peft's copies of them, and ``other`` holds whatever is left.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import (
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tunefleet.trainers.architectures import ARCHITECTURES

PREFIX = "grad_norm/"
MAX_BLOCK_GROUPS = 12
EMBEDDINGS = "embeddings"
HEAD = "head"
OTHER = "other"

# For models outside the architecture table. Anchored at a name component so wrappers' prefixes
# (peft's ``base_model.model.``, dann's ``classifier.``, ``_orig_mod.``) do not matter.
_EMBEDDING = re.compile(r"(?:^|\.)(?:\w*embed\w*|wte|wpe)\.")
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_BLOCK_GROUP = re.compile(r"blocks?_(\d+)")
_HEAD_MODULES = frozenset({"classifier", "score", "pre_classifier", "pooler"})


class Owner(Protocol):
    """What grouping needs of a method (``tunefleet.trainers.methods.Method`` fulfils it)."""

    name: str

    def owns(self, parameter_name: str) -> bool: ...


def assign_groups(
    model: nn.Module, owner: Owner | None = None, *, max_block_groups: int = MAX_BLOCK_GROUPS
) -> dict[str, str]:
    """Parameter name -> group name, for every parameter of ``model`` (trainable or not)."""
    names = [name for name, _ in model.named_parameters()]
    scheme = _scheme(model)
    blocks = _block_labels(
        {int(m.group(1)) for name in names if (m := scheme.block.search(name))}, max_block_groups
    )

    def group(name: str) -> str:
        if owner is not None and owner.owns(name):
            return owner.name
        if scheme.embeddings.search(name):
            return EMBEDDINGS
        if block := scheme.block.search(name):
            return blocks[int(block.group(1))]
        if scheme.head(name):
            return HEAD
        return OTHER

    return {name: group(name) for name in names}


@dataclass(frozen=True)
class _Scheme:
    """Where a model keeps its blocks (group 1: the index) and embeddings, and what is head."""

    block: re.Pattern[str]
    embeddings: re.Pattern[str]
    head: Callable[[str], bool]


def _scheme(model: nn.Module) -> _Scheme:
    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    row = ARCHITECTURES.get(str(getattr(getattr(inner, "config", None), "model_type", "")))
    if row is not None:
        return _Scheme(row.block_pattern(), row.embeddings_pattern(), lambda _: True)
    heads = _head_prefixes(model)
    return _Scheme(_BLOCK, _EMBEDDING, lambda name: name.startswith(heads))


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    # A whole task model can sit under a head-like name (dann keeps it as ``classifier``): only
    # modules that are not models themselves are heads.
    return tuple(
        f"{name}."
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in _HEAD_MODULES and not isinstance(module, PreTrainedModel)
    )


def _block_labels(indices: set[int], max_groups: int) -> dict[int, str]:
    # Runs of one length (the last may be shorter): a group's norm grows with its size, so equal
    # runs keep the groups comparable.
    ordered = sorted(indices)
    size = max(1, math.ceil(len(ordered) / max_groups))
    labels: dict[int, str] = {}
    for start in range(0, len(ordered), size):
        run = ordered[start : start + size]
        labels.update(dict.fromkeys(run, _block_label(run[0], run[-1])))
    return labels


def _block_label(first: int, last: int) -> str:
    return f"block_{first:02d}" if first == last else f"blocks_{first:02d}-{last:02d}"


@dataclass(frozen=True)
class _Bucket:
    """Gradients sharing a device and dtype, normed by one fused call, and where each goes."""

    positions: list[int]
    """Indices into the parameters that have a gradient now."""
    groups: Tensor
    """The group of each, on the device the group norms are summed on."""
    dtype: torch.dtype
    """What the norms are computed in: at least fp32, as a half-precision norm overflows."""


@dataclass(frozen=True)
class _Layout:
    """How the parameters that have gradients map to groups; fixed until that set changes."""

    params: list[nn.Parameter]
    buckets: list[_Bucket]
    dtype: torch.dtype
    """What the squared norms are summed in: the widest of the buckets'."""
    present: tuple[bool, ...]
    """Per group: whether any of its parameters has a gradient."""


class GradientGroups:
    """Measures the global and per-group gradient norms of a model's parameters."""

    def __init__(
        self,
        model: nn.Module,
        owner: Owner | None = None,
        *,
        max_block_groups: int = MAX_BLOCK_GROUPS,
    ) -> None:
        self.assignment = assign_groups(model, owner, max_block_groups=max_block_groups)
        """Parameter name -> group name."""
        self.names: tuple[str, ...] = tuple(dict.fromkeys(self._ordered(owner)))
        """Group names in reporting order."""
        position = {name: i for i, name in enumerate(self.names)}
        named = list(model.named_parameters())
        self._params = [param for _, param in named]
        self._group_of = [position[self.assignment[name]] for name, _ in named]
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        self._norms: Tensor | None = None
        self._present: tuple[bool, ...] = ()

    def _ordered(self, owner: Owner | None) -> Iterable[str]:
        groups = set(self.assignment.values())
        first = [owner.name] if owner is not None else []
        blocks = sorted((g for g in groups if _BLOCK_GROUP.match(g)), key=_first_block)
        return (g for g in [*first, EMBEDDINGS, *blocks, HEAD, OTHER] if g in groups)

    def with_grad(self) -> list[nn.Parameter]:
        """The parameters that have a gradient now (gradual unfreezing changes which)."""
        return [p for p in self._params if p.grad is not None]

    def measure(self) -> Tensor:
        """The global gradient norm, as a 0-d device tensor; the group norms are kept (also on
        the device) for :meth:`as_logs`. Waits for nothing on the device: only the first step
        with a new set of gradients copies that set's group index to it."""
        present = tuple(i for i, p in enumerate(self._params) if p.grad is not None)
        if not present:
            self._norms, self._present = None, ()
            return torch.zeros((), device=self._params[0].device if self._params else None)
        layout = self._layouts.get(present)
        if layout is None:
            layout = self._layouts[present] = self._layout(present)
        squares = _group_squares(layout, len(self.names))
        self._norms, self._present = squares.sqrt(), layout.present
        return squares.sum().sqrt()

    def _layout(self, present: tuple[int, ...]) -> _Layout:
        params = [self._params[i] for i in present]
        groups = [self._group_of[i] for i in present]
        target = _grad(params[0]).device
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for position, param in enumerate(params):
            grad = _grad(param)
            by_kind.setdefault((grad.device, grad.dtype), []).append(position)
        buckets = [
            _Bucket(
                positions,
                torch.tensor([groups[p] for p in positions], device=target),
                torch.promote_types(dtype, torch.float32),
            )
            for (_, dtype), positions in by_kind.items()
        ]
        widest = functools.reduce(torch.promote_types, (b.dtype for b in buckets))
        filled = set(groups)
        return _Layout(params, buckets, widest, tuple(g in filled for g in range(len(self.names))))

    def as_logs(self) -> dict[str, float]:
        """``grad_norm/<group>`` at the last measured step, for the groups that had gradients;
        the one host copy of the group norms."""
        if self._norms is None:
            return {}
        values = self._norms.tolist()
        return {
            f"{PREFIX}{name}": value
            for name, value, present in zip(self.names, values, self._present, strict=True)
            if present
        }


def _first_block(group: str) -> int:
    match = _BLOCK_GROUP.match(group)
    assert match is not None
    return int(match.group(1))


def _grad(param: nn.Parameter) -> Tensor:
    grad = param.grad
    assert grad is not None  # layouts are built from parameters that have one
    return grad


def _group_squares(layout: _Layout, groups: int) -> Tensor:
    """Per group, the sum of its gradients' squared norms, on the first gradient's device."""
    target = layout.buckets[0].groups.device
    squares = torch.zeros(groups, dtype=layout.dtype, device=target)
    for bucket in layout.buckets:
        grads = [_grad(layout.params[p]) for p in bucket.positions]
        norms = torch.stack(torch._foreach_norm(grads, 2, dtype=bucket.dtype))
        squares.index_add_(0, bucket.groups, norms.to(target, layout.dtype).square())
    return squares


class GradientNormLogger(TrainerCallback):
    """Adds the grouped gradient norms to each training log, in place, so the callbacks after
    this one (the trackers) see them with ``loss`` and ``grad_norm``."""

    def __init__(self, groups: GradientGroups) -> None:
        self.groups = groups

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Evaluation logs and the end-of-training summary carry no "loss" key.
        if logs is not None and "loss" in logs:
            logs.update(self.groups.as_logs())
