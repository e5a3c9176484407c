"""The architecture table against the real modules of a tiny model of every row, its defaults
against peft's, the methods it lets through preparing on every row, and the refusals
``method_problem`` gives, also at ``validate`` (``check_sweep``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import IA3Config, PeftModel
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
)
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from tunefleet.config import METHODS, TrainConfig, parse_config
from tunefleet.errors import ConfigError
from tunefleet.platform.checks import check_methods, check_sweep
from tunefleet.trainers.architectures import ARCHITECTURES, method_problem, model_type_at
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.methods._head import pooling, task_head
from tunefleet.trainers.methods._peft import takes_past_key_values
from tunefleet.trainers.methods.adapter import Adapted, is_norm

LAYERS = 2
# One set of small sizes every config accepts (unknown keys become plain attributes); DeBERTa's
# relative attention is on so that its relative-position table exists to be classified.
SMALL: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 16,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "relative_attention": True,
    "norm_rel_ebd": "layer_norm",
    "pos_att_type": ["p2c", "c2p"],
    "num_labels": 2,
}
#: Grouped-query attention where the architecture has it (peft would read the keys as given to
#: any config, so only these get them); head_dim so the heads fill the width (Gemma's and
#: Qwen3's defaults are wider).
GQA = {"num_key_value_heads": 1, "head_dim": 8}
GQA_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"}
#: Where the table's defaults deliberately differ from peft's (the module docstring says why).
NOT_PEFTS = {("ia3", "qwen2"), ("ia3", "qwen3"), ("ia3", "gemma")}
#: Module names the head may hold besides the classifier: the pooler and a final norm.
HEAD_MODULES = re.compile(r"^(?:\w+\.)?(?:classifier|score|pre_classifier|pooler|ln_f|norm)\.")
TYPES = sorted(ARCHITECTURES)


def tiny(model_type: str) -> PreTrainedModel:
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **SMALL, **(GQA if model_type in GQA_TYPES else {}))
    model: PreTrainedModel = AutoModelForSequenceClassification.from_config(config)
    return model


def matches(name: str, target: str) -> bool:
    """peft's rule for a target_modules entry: the whole name or a suffix at a dot."""
    return name == target or name.endswith(f".{target}")


def ids() -> torch.Tensor:
    return torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])


@pytest.mark.parametrize("model_type", TYPES)
def test_the_sites_blocks_and_embeddings_are_the_real_modules(model_type: str) -> None:
    row, model = ARCHITECTURES[model_type], tiny(model_type)
    modules = dict(model.named_modules())
    houlsby = [name for name in modules if row.sites("houlsby").search(name)]
    pfeiffer = [name for name in modules if row.sites("pfeiffer").search(name)]
    assert len(houlsby) == 2 * LAYERS and len(pfeiffer) == LAYERS
    assert set(pfeiffer) < set(houlsby)
    assert all(isinstance(modules[name], nn.Linear | Conv1D) for name in houlsby)

    params = dict(model.named_parameters())
    in_block = {n: int(m.group(1)) for n in params if (m := row.block_pattern().search(n))}
    assert set(in_block.values()) == set(range(LAYERS))
    embeddings = {n for n in params if row.embeddings_pattern().search(n)}
    assert not embeddings & set(in_block)
    word = model.get_input_embeddings().weight
    assert any(params[n] is word for n in embeddings)
    head = set(params) - set(in_block) - embeddings
    assert all(HEAD_MODULES.search(name) for name in head), sorted(head)
    assert {id(p) for p in task_head(model).parameters()} <= {id(params[n]) for n in head}


@pytest.mark.parametrize("model_type", TYPES)
def test_default_targets_exist_and_feed_forward_ones_are_targets(model_type: str) -> None:
    row, model = ARCHITECTURES[model_type], tiny(model_type)
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)]
    for target in (*row.lora_targets, *row.ia3_targets):
        assert sum(matches(name, target) for name in linear) >= LAYERS, target
    assert set(row.ia3_feedforward) <= set(row.ia3_targets)
    assert row.ia3_feedforward  # IA3 scales the feed-forward output's input in every row


@pytest.mark.parametrize("model_type", TYPES)
def test_prefix_and_pooling_columns_say_what_the_model_does(model_type: str) -> None:
    row, model = ARCHITECTURES[model_type], tiny(model_type)
    assert row.prefix == takes_past_key_values(model)
    seen: list[int] = []
    task_head(model).register_forward_pre_hook(lambda _, args: seen.append(args[0].dim()))
    model(input_ids=ids())
    # A head fed every position's state (3-D) reads one of them: a decoder's last real token.
    assert row.pooling == ("last" if seen == [3] else "first")
    assert pooling(model) == row.pooling


PEFT_DEFAULTS = {
    "lora": TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
    "ia3": TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
    "ia3-feedforward": TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
}


@pytest.mark.parametrize("model_type", TYPES)
def test_defaults_are_pefts_where_peft_has_them(model_type: str) -> None:
    row = ARCHITECTURES[model_type]
    ours = {
        "lora": row.lora_targets,
        "ia3": row.ia3_targets,
        "ia3-feedforward": row.ia3_feedforward,
    }
    for kind, mapping in PEFT_DEFAULTS.items():
        if model_type not in mapping:
            continue
        theirs = list(mapping[model_type])
        if (kind, model_type) in NOT_PEFTS:
            # peft scales queries here but keys for Llama and Mistral; the table keys throughout.
            theirs = [{"q_proj": "k_proj"}.get(name, name) for name in theirs]
        assert sorted(ours[kind]) == sorted(theirs), kind


@pytest.mark.parametrize("model_type", TYPES)
def test_every_method_the_table_lets_through_prepares_runs_and_pads_right(model_type: str) -> None:
    batch = {"input_ids": ids(), "attention_mask": (ids() != 0).long()}
    alone = {key: value[1:, :2] for key, value in batch.items()}  # the padded row, unpadded
    for method in METHODS:
        if method_problem(method, model_type) is not None:
            continue
        settings = TrainConfig(method=method, adapter={"size": 4})
        prepared = get_method(method).prepare(tiny(model_type), settings).eval()
        with torch.inference_mode():
            logits = prepared(**batch).logits
            single = prepared(**alone).logits
        assert logits.shape == (2, 2), method
        assert torch.isfinite(logits).all(), method
        assert (logits[1:] - single).abs().max() <= 1e-5, method
        if method == "adapter":
            # Every norm trains, RMSNorms (LlamaRMSNorm and kin) included.
            norms = [m for m in prepared.modules() if is_norm(m)]
            assert norms and all(p.requires_grad for m in norms for p in m.parameters())
            assert sum(isinstance(m, Adapted) for m in prepared.modules()) == 2 * LAYERS


@pytest.mark.parametrize("model_type", TYPES)
def test_lora_and_ia3_left_null_take_the_tables_defaults(model_type: str) -> None:
    row = ARCHITECTURES[model_type]
    lora = get_method("lora").prepare(tiny(model_type), TrainConfig(method="lora"))
    assert isinstance(lora, PeftModel)
    assert lora.peft_config["default"].target_modules == set(row.lora_targets)
    ia3 = get_method("ia3").prepare(tiny(model_type), TrainConfig(method="ia3"))
    assert isinstance(ia3, PeftModel)
    config = ia3.peft_config["default"]
    assert isinstance(config, IA3Config)
    assert config.target_modules == set(row.ia3_targets)
    assert config.feedforward_modules == set(row.ia3_feedforward)
    # Given targets win over the table.
    given = TrainConfig(method="lora", lora={"target_modules": [row.ia3_feedforward[0]]})
    chosen = get_method("lora").prepare(tiny(model_type), given)
    assert isinstance(chosen, PeftModel)
    assert chosen.peft_config["default"].target_modules == {row.ia3_feedforward[0]}


def test_method_problem_refuses_prefix_where_there_is_no_cache() -> None:
    for model_type in ("distilbert", "deberta", "deberta-v2"):
        problem = method_problem("prefix", model_type)
        assert problem is not None and model_type in problem and "past_key_values" in problem
    assert method_problem("prefix", "gpt2") is None and method_problem("prefix", "llama") is None


def test_method_problem_refuses_table_methods_for_unknown_model_types() -> None:
    for method in ("adapter", "unfreeze"):
        problem = method_problem(method, "t5")
        assert problem is not None
        assert "'t5'" in problem and "gpt2" in problem and "llama" in problem
    # peft (or the methods' own runtime checks) decide for the rest.
    for method in ("full", "lora", "ia3", "prefix", "prompt", "dann"):
        assert method_problem(method, "t5") is None


def test_every_method_serves_every_decoder() -> None:
    for model_type, row in ARCHITECTURES.items():
        if row.pooling == "last":
            assert [m for m in METHODS if method_problem(m, model_type)] == [], model_type


def local_model(folder: Path, model_type: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def sweep(model: str, data: Path, **extra: Any) -> Any:
    return parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": model},
            "data": {"train": str(data)},
            **extra,
        }
    )


def test_validate_refuses_a_method_naming_it_and_the_model_type(
    tmp_path: Path, sentiment_csv: Path
) -> None:
    model = local_model(tmp_path / "distil", "distilbert")
    with pytest.raises(ConfigError) as info:
        check_sweep(sweep(str(model), sentiment_csv, train={"method": "prefix"}))
    [(key, why)] = info.value.problems
    assert key == "train.method" and "prefix" in why and "distilbert" in why
    # Another method on the same model passes the check (and the rest of validate).
    check_sweep(sweep(str(model), sentiment_csv, train={"method": "prompt"}))


def test_validate_checks_every_searched_method(tmp_path: Path, sentiment_csv: Path) -> None:
    model = local_model(tmp_path / "t5", "t5")
    space = {"space": {"train.method": {"choices": ["lora", "adapter", "unfreeze"]}}}
    with pytest.raises(ConfigError) as info:
        # The fixed train.method (lora) is fine; the searched choices are what trials use.
        check_sweep(sweep(str(model), sentiment_csv, search=space))
    problems = info.value.problems
    assert [key for key, _ in problems] == ["search.space.train.method"] * 2
    assert ["adapter" in problems[0][1], "unfreeze" in problems[1][1]] == [True, True]
    assert all("'t5'" in why for _, why in problems)


def test_validate_never_looks_up_a_hub_id(sentiment_csv: Path) -> None:
    # Not local, so unknown here: the check passes it on (the hub is never asked).
    assert model_type_at("distilbert/distilbert-base-uncased") is None
    check_methods(
        sweep("distilbert/distilbert-base-uncased", sentiment_csv, train={"method": "prefix"})
    )


def test_the_table_imports_without_torch() -> None:
    # ``tunefleet validate`` reads it and must answer without importing torch or transformers.
    code = (
        "import sys; import tunefleet.platform.checks; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
