"""Bottleneck adapters (Houlsby et al. 2019): small residual MLPs inserted into a frozen body.

Each adapter maps ``x -> x + up(act(down(x)))`` with ``down: hidden -> size`` and
``up: size -> hidden``. It wraps the output projection of a sub-layer, so it acts on that
projection's output before the sub-layer's dropout, residual sum and norm. ``houlsby`` places
one after the attention output and one after the feed-forward output of every block; ``pfeiffer``
only the feed-forward one. Where those projections are comes from the architecture table
(``tunefleet.trainers.architectures``): BERT's ``attention.output.dense`` and ``output.dense``,
GPT-2's ``attn.c_proj`` and ``mlp.c_proj``, Llama/Mistral/Qwen2's ``self_attn.o_proj`` and
``mlp.down_proj``.

What trains, as in the reference implementation (google-research/adapter-bert): the adapters,
every norm and the task head, i.e. every parameter outside the pretrained body. On a decoder the
norms are its pre-norms and final norm, RMSNorms in Llama-style models (``LlamaRMSNorm`` and kin
are not ``nn.LayerNorm``: a norm is recognised by its class name). The pooler belongs to the
pretrained body there and here, so it stays frozen.

A checkpoint holds only those tensors (``adapter_model.safetensors``) plus
``adapter_config.json`` naming where adapters sit; it is restored onto the pretrained body.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from tunefleet.config import AdapterConfig, TrainConfig
from tunefleet.errors import CheckpointError, ConfigError
from tunefleet.trainers.architectures import ARCHITECTURES
from tunefleet.trainers.methods.base import BaseFactory, MethodBase
from tunefleet.trainers.methods.registry import register

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
FORMAT = 1
LAYOUT_ATTRIBUTE = "_tunefleet_adapter_layout"
#: Weight std of both projections (adapter-bert's ``init_scale``): small enough that the adapted
#: model starts as the pretrained one, yet non-zero so every adapter weight gets a gradient from
#: the first step (an all-zero up-projection would leave the down-projection without one).
INIT_STD = 1e-3
#: The bottlenecks themselves (``Adapted.adapter``); the norms and head that also train belong to
#: the body and its head.
OWN = re.compile(r"(?:^|\.)adapter\.(?:down|up)\.")


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class Bottleneck(nn.Module):
    """``x + up(act(down(x)))``, near the identity at initialisation."""

    def __init__(
        self, width: int, size: int, activation: str, *, like: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        # Built on the wrapped layer's device and dtype, so inserting never moves the model.
        factory: dict[str, Any] = (
            {"device": like.device, "dtype": like.dtype} if like is not None else {}
        )
        self.down = nn.Linear(width, size, **factory)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, width, **factory)
        for projection in (self.down, self.up):
            nn.init.trunc_normal_(projection.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            nn.init.zeros_(projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        change: torch.Tensor = self.up(self.act(self.down(x)))
        return x + change


class Adapted(nn.Module):
    """A frozen output projection followed by its adapter."""

    def __init__(self, base: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out: torch.Tensor = self.adapter(self.base(*args, **kwargs))
        return out


@dataclass(frozen=True)
class AdapterSpec:
    """The contents of ``adapter_config.json``: enough to re-insert the same adapters."""

    size: int
    activation: str
    placement: str
    model_type: str
    modules: list[str]

    def write(self, folder: Path) -> None:
        data = {"format": FORMAT, "method": "adapter", **asdict(self)}
        (folder / CONFIG).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> AdapterSpec:
        data = json.loads((folder / CONFIG).read_text())
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", type(model).__name__))


def find_sites(model: PreTrainedModel, placement: str) -> list[str]:
    """Names of the modules to wrap; ConfigError for an architecture without a table row."""
    model_type = _model_type(model)
    row = ARCHITECTURES.get(model_type)
    names: list[str] = []
    if row is not None:
        wanted = row.sites(placement)
        names = [name for name, _ in model.named_modules() if wanted.search(name)]
    if not names:
        raise ConfigError(
            [
                (
                    "train.method",
                    f"adapter cannot place adapters in model.name_or_path "
                    f"{getattr(model, 'name_or_path', '') or type(model).__name__!r} "
                    f"(model type {model_type!r}); supported model types: "
                    f"{', '.join(sorted(ARCHITECTURES))}. Use another method (lora, full) for it.",
                )
            ]
        )
    return names


def _output_width(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, Conv1D):  # GPT-2's transposed linear: weight is (in, out)
        return int(layer.nf)
    raise TypeError(f"cannot adapt a {type(layer).__name__}: not a linear projection")


def insert(model: nn.Module, modules: list[str], size: int, activation: str) -> None:
    """Wrap each named module in place with a fresh adapter."""
    if any(isinstance(module, Adapted) for module in model.modules()):
        raise ValueError("model already holds adapters; prepare a fresh model")
    for name in modules:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        weight = next(layer.parameters())
        adapter = Bottleneck(_output_width(layer), size, activation, like=weight)
        setattr(parent, child, Adapted(layer, adapter))


def is_norm(module: nn.Module) -> bool:
    """LayerNorm or RMSNorm, torch's or a model's own (``LlamaRMSNorm``, ``T5LayerNorm``)."""
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith("Norm")


def trained_names(model: nn.Module) -> list[str]:
    """Parameters that train and are saved: adapters, norms, and all outside the body."""
    body = model.base_model if isinstance(model, PreTrainedModel) else model
    in_body = {id(p) for p in body.parameters()}
    kept = {
        id(p)
        for module in model.modules()
        if isinstance(module, Bottleneck) or is_norm(module)
        for p in module.parameters()
    }
    return [name for name, p in model.named_parameters() if id(p) in kept or id(p) not in in_body]


def _freeze(model: nn.Module) -> None:
    model.requires_grad_(False)
    names = set(trained_names(model))
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(True)


@register("adapter")
class Adapter(MethodBase):
    self_contained = False

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        settings: AdapterConfig = config.adapter
        modules = find_sites(model, settings.placement)
        insert(model, modules, settings.size, settings.activation)
        _freeze(model)
        layout = AdapterSpec(
            size=settings.size,
            activation=settings.activation,
            placement=settings.placement,
            model_type=_model_type(model),
            modules=modules,
        )
        # Kept on the model: save() receives nothing else (Trainer hands callbacks the model).
        setattr(model, LAYOUT_ATTRIBUTE, layout)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        layout = getattr(model, LAYOUT_ATTRIBUTE, None)
        if not isinstance(layout, AdapterSpec):
            raise ValueError("save() needs a model returned by the adapter method's prepare()")
        params = dict(model.named_parameters())
        tensors = {name: params[name].detach().cpu().contiguous() for name in trained_names(model)}
        save_file(tensors, str(folder / WEIGHTS))
        layout.write(folder)

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        layout = AdapterSpec.read(folder)
        model: nn.Module = base()  # typed as a Module: PreTrainedModel.eval() is untyped
        if _model_type(model) != layout.model_type:
            raise CheckpointError(
                f"{folder} holds adapters for model type {layout.model_type!r}, "
                f"but the base model is {_model_type(model)!r}"
            )
        missing_sites = [m for m in layout.modules if not _has_module(model, m)]
        if missing_sites:
            raise CheckpointError(
                f"{folder / CONFIG} names modules the base model lacks: {missing_sites}"
            )
        insert(model, layout.modules, layout.size, layout.activation)
        _freeze(model)
        setattr(model, LAYOUT_ATTRIBUTE, layout)
        _load_exact(model, load_file(str(folder / WEIGHTS)), folder / WEIGHTS)
        model.eval()
        return model

    def owns(self, parameter_name: str) -> bool:
        return OWN.search(parameter_name) is not None


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _load_exact(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load every trained tensor, refusing missing, unexpected or mis-shaped ones."""
    params = dict(model.named_parameters())
    expected = set(trained_names(model))
    problems = [f"missing {name}" for name in sorted(expected - set(tensors))]
    problems += [f"unexpected {name}" for name in sorted(set(tensors) - expected)]
    problems += [
        f"{name} has shape {tuple(tensor.shape)}, the model {tuple(params[name].shape)}"
        for name, tensor in sorted(tensors.items())
        if name in expected and tensor.shape != params[name].shape
    ]
    if problems:
        raise CheckpointError(f"{path} does not fit the base model: " + "; ".join(problems))
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
