"""Loading the model as configured: its weights in ``model.dtype`` (never the hub config's),
the refusals of what a device or method cannot train (each naming its key), the padding token
of decoders, and checkpoints that record it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from support.cli import run_cli
from support.configs import write_config
from support.models import BPE_TOKENIZER
from support.trials import tiny_config, trial_request
from tunefleet.config import METHODS, ModelConfig, TrainConfig, parse_config
from tunefleet.errors import ConfigError
from tunefleet.platform.checks import check_sweep
from tunefleet.trainers.checkpoint import load_checkpoint
from tunefleet.trainers.device import NOT_ON_QUANTIZED, ON_QUANTIZED, Device, check_weights
from tunefleet.trainers.model import load_classifier, load_tokenizer
from tunefleet.trainers.run import run_trial

LABELS = ("0", "1")
TEXTS = ["good food", "rude staff and cold fries, never again"]
CPU = Device(cuda=None, bf16=True)
GPU = Device(cuda="NVIDIA H100", bf16=True)
OLD_GPU = Device(cuda="Tesla V100", bf16=False)  # CUDA without bfloat16


def keys(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [where for where, _ in exc.value.problems]


def refusal(model: dict[str, object], train: dict[str, object], device: Device) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        check_weights(
            ModelConfig.model_validate(model), TrainConfig.model_validate(train), device=device
        )
    return exc.value


# --- dtype -------------------------------------------------------------------------------------


def test_bfloat16_weights_load_and_train_a_step_on_cpu(tiny_decoder: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_decoder))
    model = load_classifier(
        str(tiny_decoder), LABELS, pad_token_id=tokenizer.pad_token_id, dtype="bfloat16"
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([1, 0]))
    # The head's logits are cast, so the loss is float32 while every weight stays bfloat16.
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32
    out.loss.backward()
    assert model.score.weight.grad is not None
    assert model.score.weight.grad.dtype == torch.bfloat16
    assert model.score.weight.grad.abs().sum() > 0
    before = model.score.weight.detach().clone()
    torch.optim.AdamW(model.parameters(), lr=1e-2).step()
    assert not torch.equal(model.score.weight.detach(), before)


def test_a_bfloat16_trial_checkpoints_and_reloads_in_bfloat16(
    tiny_decoder: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_decoder, sentiment_csv, method="lora", learning_rate=1e-3)
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"dtype": "bfloat16"})}
    )
    outcome = run_trial(config, trial_request(tmp_path))
    assert outcome.checkpoint is not None and outcome.value is not None
    losses = [e["loss"] for e in outcome.history if "loss" in e]
    assert losses and all(loss is not None for loss in losses)
    model, _, _ = load_checkpoint(outcome.checkpoint)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    body = [d for name, d in dtypes.items() if "lora_" not in name and "score" not in name]
    assert body and set(body) == {torch.bfloat16}  # the body reloads as it trained


def test_the_configured_dtype_wins_over_the_hub_configs(tiny_decoder: Path, tmp_path: Path) -> None:
    # A folder whose config says bfloat16 (as many hub models' do) loads as configured.
    folder = tmp_path / "bf16-on-the-hub"
    shutil.copytree(tiny_decoder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert {p.dtype for p in load_classifier(str(folder), LABELS).parameters()} == {torch.float32}
    half = load_classifier(str(folder), LABELS, dtype="float16")
    assert {p.dtype for p in half.parameters()} == {torch.float16}


def test_float16_weights_are_refused_without_cuda() -> None:
    exc = refusal({"dtype": "float16"}, {}, CPU)
    assert [k for k, _ in exc.problems] == ["model.dtype"]
    assert "CUDA" in str(exc) and "bfloat16" in str(exc)
    check_weights(ModelConfig(dtype="float16"), TrainConfig(), device=GPU)
    check_weights(ModelConfig(dtype="bfloat16"), TrainConfig(), device=CPU)


def test_bfloat16_is_refused_where_the_gpu_cannot_compute_in_it() -> None:
    exc = refusal({"dtype": "bfloat16"}, {}, OLD_GPU)
    assert [k for k, _ in exc.problems] == ["model.dtype"] and "Tesla V100" in str(exc)
    check_weights(ModelConfig(dtype="float16"), TrainConfig(), device=OLD_GPU)


def test_float16_weights_with_fp16_autocast_are_refused_naming_the_precision() -> None:
    exc = refusal({"dtype": "float16"}, {"precision": "fp16"}, GPU)
    assert [k for k, _ in exc.problems] == ["train.precision"]
    assert "Attempting to unscale FP16 gradients" in str(exc)
    check_weights(ModelConfig(dtype="float16"), TrainConfig(precision="bf16"), device=GPU)


def test_the_fp16_refusal_guards_a_real_failure(tiny_model: Path) -> None:
    # What fp16 autocast would do with float16 weights: its GradScaler refuses their gradients.
    # torch's check is the same on every device; should it ever pass, lift the refusal.
    model = load_classifier(str(tiny_model), LABELS, dtype="float16")
    scaler = torch.amp.GradScaler("cpu")
    batch = load_tokenizer(str(tiny_model))(TEXTS, padding=True, return_tensors="pt")
    scaler.scale(model(**batch, labels=torch.tensor([1, 0])).loss).backward()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        scaler.unscale_(torch.optim.AdamW(model.parameters()))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_method_takes_bfloat16_weights_on_a_cpu(precision: str) -> None:
    # dann's domain classifier takes the head's dtype, so it needs no autocast either.
    for method in METHODS:
        check_weights(
            ModelConfig(dtype="bfloat16"),
            TrainConfig(method=method, precision=precision),
            device=CPU,
        )


# --- quantization ------------------------------------------------------------------------------


def test_quantization_refuses_methods_that_train_the_quantized_weights() -> None:
    for method in NOT_ON_QUANTIZED:
        exc = refusal({"quantization": {"bits": 4}}, {"method": method}, GPU)
        assert "train.method" in [k for k, _ in exc.problems], method
        message = dict(exc.problems)["train.method"]
        assert method in message and all(m in message for m in ON_QUANTIZED)
    assert set(ON_QUANTIZED) == {"lora", "ia3", "prefix", "prompt"}
    for method in ON_QUANTIZED:
        with pytest.raises(ConfigError) as caught:  # bitsandbytes is not installed here
            check_weights(
                ModelConfig.model_validate({"quantization": {"bits": 8}}),
                TrainConfig(method=method),  # type: ignore[arg-type]
                device=GPU,
            )
        assert "train.method" not in keys(caught)


def test_quantization_without_bitsandbytes_names_the_extra() -> None:
    # The dev environment has no bitsandbytes (it is the GPU-only extra).
    assert importlib.util.find_spec("bitsandbytes") is None
    exc = refusal({"quantization": {"bits": 4}}, {"method": "lora"}, GPU)
    assert [k for k, _ in exc.problems] == ["model.quantization"]
    assert "pip install 'tunefleet[quantization]'" in str(exc)


def test_quantization_without_cuda_is_refused() -> None:
    exc = refusal({"quantization": {"bits": 4}}, {"method": "lora"}, CPU)
    assert "model.quantization" in [k for k, _ in exc.problems]
    assert any("CUDA" in what for where, what in exc.problems if where == "model.quantization")


def test_quantized_compute_defaults_to_bfloat16_and_is_refused_where_it_cannot_run() -> None:
    exc = refusal({"quantization": {"bits": 4}}, {"method": "lora"}, OLD_GPU)
    assert "model.dtype" in [k for k, _ in exc.problems] and "float16" in str(exc)
    with pytest.raises(ConfigError) as caught:  # only the missing package is left
        check_weights(
            ModelConfig.model_validate({"quantization": {"bits": 4}, "dtype": "float16"}),
            TrainConfig(method="lora"),
            device=OLD_GPU,
        )
    assert keys(caught) == ["model.quantization"]


def test_a_trial_checks_its_weights_before_loading(
    tiny_decoder: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_decoder, sentiment_csv, method="full")
    quantized = ModelConfig.model_validate(
        {**config.model.model_dump(), "quantization": {"bits": 4}}
    )
    config = config.model_copy(update={"model": quantized})
    with pytest.raises(ConfigError) as exc:
        run_trial(config, trial_request(tmp_path))
    assert "train.method" in keys(exc)
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "work").exists()


def test_pre_flight_checks_every_searched_method(
    tiny_decoder: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    config = {
        "name": "q",
        "model": {"name_or_path": str(tiny_decoder), "quantization": {"bits": 4}},
        "data": {"train": str(sentiment_csv), "max_length": 32},
        "train": {"method": "lora"},
        "search": {"space": {"train.method": {"choices": ["lora", "prompt", "unfreeze"]}}},
    }
    with pytest.raises(ConfigError) as exc:
        check_sweep(parse_config(config))
    methods = [what for where, what in exc.value.problems if where == "train.method"]
    assert len(methods) == 1 and methods[0].startswith("unfreeze ")
    # And through the command line, as a user meets it: exit 2, the key named, no traceback.
    result = run_cli("validate", str(write_config(tmp_path, config)), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "train.method: unfreeze" in result.stderr and "Traceback" not in result.stderr


# --- padding token -----------------------------------------------------------------------------


def test_a_missing_pad_token_becomes_eos_and_the_model_follows(tiny_decoder: Path) -> None:
    # (Qwen2's tokenizer class, which transformers picks from the model type, brings its own
    # padding token, <|endoftext|>, the EOS token here; GPT-2's and Llama's have none.)
    tokenizer = load_tokenizer(str(tiny_decoder))
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    model = load_classifier(str(tiny_decoder), LABELS, pad_token_id=tokenizer.pad_token_id)
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_model_pad_token_overrides_and_must_be_in_the_vocabulary(tiny_decoder: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_decoder), pad_token="!")
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id != tokenizer.eos_token_id
    model = load_classifier(str(tiny_decoder), LABELS, pad_token_id=tokenizer.pad_token_id)
    assert model.config.pad_token_id == tokenizer.convert_tokens_to_ids("!")
    with pytest.raises(ConfigError) as exc:
        load_tokenizer(str(tiny_decoder), pad_token="<no such token>")
    assert keys(exc) == ["model.pad_token"] and "vocabulary" in str(exc.value)


def test_an_encoder_keeps_its_own_pad_token(tiny_model: Path) -> None:
    assert load_tokenizer(str(tiny_model)).pad_token == "[PAD]"


def test_a_tokenizer_without_pad_or_eos_is_refused(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(BPE_TOKENIZER)
    tokenizer.eos_token = tokenizer.bos_token = tokenizer.unk_token = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_tokenizer(str(tmp_path))
    assert keys(exc) == ["model.pad_token"] and "end-of-sequence" in str(exc.value)
    assert load_tokenizer(str(tmp_path), pad_token="!").pad_token == "!"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_decoder_checkpoint_records_its_padding(
    method: str, tiny_decoder: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    config = tiny_config(tiny_decoder, sentiment_csv, method=method)
    outcome = run_trial(config, trial_request(tmp_path))
    assert outcome.checkpoint is not None
    folder = outcome.checkpoint
    # Plain transformers reads the folder as trained: padding token and side, truncation length
    # (data.max_length), and a config whose pad_token_id is the padding token's, also beside
    # an adapter-only checkpoint.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eos = tokenizer.eos_token
    assert (tokenizer.pad_token, tokenizer.padding_side) == (eos, "right")
    assert tokenizer.model_max_length == config.data.max_length
    saved = json.loads((folder / "config.json").read_text())
    assert saved["pad_token_id"] == tokenizer.pad_token_id
    assert saved["id2label"] == {"0": "0", "1": "1"}
