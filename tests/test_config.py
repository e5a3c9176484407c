"""Every kind of config mistake is refused before any trial starts: exit code 2, and a message
that names the key path (or file and column) and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import apply_params, describe_options, load_config, parse_config
from tunefleet.errors import ConfigError
from tunefleet.platform.cli import main


def config_file(tmp_path: Path, data_file: Path, **sections: Any) -> Path:
    """A minimal valid config, its sections updated by ``sections``."""
    config: dict[str, Any] = {
        "name": "t",
        "model": {"name_or_path": "minilm"},
        "data": {"train": str(data_file)},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return write_config(tmp_path, config)


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_valid_config_passes(
    tmp_path: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = validate(config_file(tmp_path, sentiment_csv), capsys)
    assert code == 0, out
    assert "128 train / 32 eval rows" in out and "labels ['0', '1']" in out


@pytest.mark.parametrize(
    ("sections", "where", "what"),
    [
        ({"train": {"lerning_rate": 0.1}}, "train.lerning_rate", "allowed here: method, epochs"),
        ({"bogus": 1}, "bogus", "allowed here: name, model, data"),
        ({"train": {"epochs": "three"}}, "train.epochs", "valid integer"),
        ({"train": {"method": "qlora"}}, "train.method", "'full', 'lora', 'adapter'"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate", "greater than 0"),
        ({"search": {"direction": "up"}}, "search.direction", "'maximize' or 'minimize'"),
        ({"search": {"metric": "accuracy"}}, "search.metric", "starting with 'eval_'"),
        ({"name": "has space"}, "name", "pattern"),
    ],
    ids=[
        "misspelt-key",
        "unknown-section",
        "wrong-type",
        "unknown-method",
        "out-of-range",
        "bad-literal",
        "not-an-eval-metric",
        "bad-name",
    ],
)
def test_schema_mistakes(
    tmp_path: Path,
    sentiment_csv: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, Any],
    where: str,
    what: str,
) -> None:
    code, out = validate(config_file(tmp_path, sentiment_csv, **sections), capsys)
    assert code == 2
    assert f"{where}: " in out and what in out, out


@pytest.mark.parametrize(
    ("space", "where", "what"),
    [
        (
            {"train.lerning_rate": {"low": 0.1, "high": 0.2}},
            "search.space.train.lerning_rate",
            "names no config field",
        ),
        ({"train.lora": {"choices": [1]}}, "search.space.train.lora", "is a section, not a leaf"),
        (
            {"train.batch_size": {"choices": [8, "big"]}},
            "search.space.train.batch_size",
            "choice 'big' does not fit this int field",
        ),
        (
            {"train.method": {"choices": ["full", "prefix-x"]}},
            "search.space.train.method",
            "choice 'prefix-x' does not fit",
        ),
        (
            {"train.scheduler": {"low": 0, "high": 1}},
            "search.space.train.scheduler",
            "needs a numeric field",
        ),
        ({"train.epochs": {"low": 1.5, "high": 3}}, "search.space.train.epochs", "integer bounds"),
        (
            {"search.trials": {"choices": [1, 2]}},
            "search.space.search.trials",
            "cannot be searched",
        ),
        (
            {"train.learning_rate": {"low": 0, "high": 1, "log": True}},
            "search.space.train.learning_rate",
            "`log: true` needs `low` > 0",
        ),
        (
            {"train.learning_rate": {"low": 1e-5}},
            "search.space.train.learning_rate",
            "both `low` and `high`",
        ),
    ],
    ids=[
        "no-such-field",
        "section",
        "wrong-choice-type",
        "unknown-choice",
        "range-on-string",
        "fractional-int-range",
        "search-section",
        "log-from-zero",
        "half-range",
    ],
)
def test_search_space_mistakes(
    tmp_path: Path,
    sentiment_csv: Path,
    capsys: pytest.CaptureFixture[str],
    space: dict[str, Any],
    where: str,
    what: str,
) -> None:
    path = config_file(tmp_path, sentiment_csv, search={"space": space})
    code, out = validate(path, capsys)
    assert code == 2
    assert where in out and what in out, out


def test_grid_needs_a_finite_grid(
    tmp_path: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(
        tmp_path,
        sentiment_csv,
        search={"sampler": "grid", "space": {"train.learning_rate": {"low": 1e-5, "high": 1e-3}}},
    )
    code, out = validate(path, capsys)
    assert code == 2 and "search.space.train.learning_rate" in out and "grid sampler" in out


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "sections", "what"),
    [
        (None, {}, "file not found"),
        ("", {}, "holds no rows"),
        ("text,label\n", {}, "holds no rows"),
        (
            "sentence,label\nhi,1\nho,0\n",
            {},
            "has no column 'text' (named by data.text_column); its columns: sentence, label",
        ),
        ("text,label\nhi,1\nho,1\nhu,1\n", {}, "has one class ('1')"),
        ("text,label\nhi,1\n", {"data": {"label_column": "y"}}, "has no column 'y'"),
    ],
    ids=[
        "missing-file",
        "empty-file",
        "header-only",
        "missing-text-column",
        "one-class",
        "missing-label-column",
    ],
)
def test_data_mistakes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    sections: dict[str, Any],
    what: str,
) -> None:
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_text(content)
    code, out = validate(config_file(tmp_path, data, **sections), capsys)
    assert code == 2
    assert str(data) in out and what in out, out


def test_unsupported_data_suffix_names_allowed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _csv(tmp_path, "text\tlabel\n", "data.tsv")
    code, out = validate(config_file(tmp_path, data), capsys)
    assert code == 2 and "data.train" in out and ".csv, .jsonl" in out


def test_jsonl_and_string_labels_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        f'{{"text": "message {i}", "label": "{"spam" if i % 3 == 0 else "ham"}"}}'
        for i in range(30)
    ]
    data = _csv(tmp_path, "\n".join(lines) + "\n", "data.jsonl")
    code, out = validate(config_file(tmp_path, data), capsys)
    assert code == 0, out
    assert "labels ['ham', 'spam']" in out


def test_eval_labels_must_occur_in_train(
    tmp_path: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = _csv(tmp_path, "text,label\nhi,1\nho,7\n", "eval.csv")
    code, out = validate(
        config_file(tmp_path, sentiment_csv, data={"eval": str(evaluation)}), capsys
    )
    assert code == 2 and "data.eval" in out and "['7']" in out


def test_packaged_or_local_model_must_exist(
    tmp_path: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, sentiment_csv, model={"name_or_path": str(tmp_path / "nowhere")})
    code, out = validate(path, capsys)
    assert code == 2 and "model.name_or_path" in out and "config.json" in out


def test_missing_config_file_and_bad_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = validate(tmp_path / "absent.yaml", capsys)
    assert code == 2 and "config file not found" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, out = validate(bad, capsys)
    assert code == 2 and "not valid YAML" in out


def test_all_mistakes_are_reported_at_once(sentiment_csv: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "name": "t",
                "data": {"train": str(sentiment_csv)},
                "train": {"epochs": 0, "batch_size": "x"},
                "tracking": {"neptune": {}},
            }
        )
    assert {where for where, _ in info.value.problems} == {
        "train.epochs",
        "train.batch_size",
        "tracking.neptune",
    }


def test_relative_data_paths_resolve_against_the_working_directory(
    tmp_path: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sentiment_csv.parent)
    config = parse_config({"name": "t", "data": {"train": sentiment_csv.name}})
    assert config.data.train == sentiment_csv


def test_apply_params_validates_like_the_yaml(sentiment_csv: Path) -> None:
    config = parse_config({"name": "t", "data": {"train": str(sentiment_csv)}})
    tuned = apply_params(config, {"train.lora.r": 16, "train.learning_rate": 1e-3})
    assert (tuned.train.lora.r, tuned.train.learning_rate) == (16, 1e-3)
    assert config.train.lora.r == 8  # the base config is untouched
    with pytest.raises(ValueError, match="batch_size"):
        apply_params(config, {"train.batch_size": 0})


def test_every_option_is_documented_and_in_help() -> None:
    rows = describe_options()
    assert all(description for _, _, description in rows), [k for k, _, d in rows if not d]
    shown = run_cli("sweep", "--help")
    assert shown.returncode == 0, shown.stderr
    help_text = shown.stdout
    for key, _, _ in rows:
        assert f"  {key}  (" in help_text, key


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False and "train" in schema["properties"]


def test_load_config_overrides(tmp_path: Path, sentiment_csv: Path) -> None:
    path = config_file(tmp_path, sentiment_csv)
    config = load_config(path, overrides={"name": "other", "search.trials": 3})
    assert (config.name, config.search.trials) == ("other", 3)
