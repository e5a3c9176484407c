"""Secrets (model.token, passwords inside URLs) never leave a process in clear: every JSON dump
of a config redacts them, logs and printed errors mask them, and a worker gets the real values
back through its environment or ``--config``, never through the store."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import (
    SweepConfig,
    apply_params,
    describe_options,
    flatten,
    json_schema,
    load_config,
    parse_config,
    with_secrets,
)
from tunefleet.errors import ConfigError
from tunefleet.platform.store import Store
from tunefleet.redaction import (
    REDACTED,
    SECRETS_ENV,
    RedactingFilter,
    install_log_redaction,
    is_secret_key,
    redact_params,
    redact_text,
    redact_url,
    secret_params,
    secret_values,
    url_passwords,
)

TOKEN = "hf_FAKE_token_123"
PASSWORD = "S3cretPw"
URI = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:5432/mlflow"


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (URI, "postgresql+psycopg2://postgres:***@127.0.0.1:5432/mlflow"),
        ("mysql://u:pw@db.example.com", "mysql://u:***@db.example.com"),
        ("https://user:pw@host:8443/path?x=1#f", "https://user:***@host:8443/path?x=1#f"),
        # Raw "@" and ":" (URL parsers accept them): the host is still told apart.
        (
            "postgresql://u:p@ss:w0rd!@db.example.com:5432/x",
            "postgresql://u:***@db.example.com:5432/x",
        ),
        ("postgresql://u:p%40ss%2Fw@db/x", "postgresql://u:***@db/x"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(text: str, redacted: str) -> None:
    assert redact_url(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "http://localhost:5000",
        "https://user@host/path",
        "sqlite:////tmp/runs/mlflow.db",
        "file:///tmp/mlartifacts",
        "http://host:8080/path?x=1",
        "postgresql://u:@host/db",  # an empty password: nothing to hide
        "no url here: a:b@c",
        "",
    ],
)
def test_redact_url_leaves_urls_without_a_password_untouched(text: str) -> None:
    assert redact_url(text) == text


def test_redact_url_handles_several_urls_in_one_string() -> None:
    text = (
        f"store 'postgresql://a:one@h1/db', tracking={URI}, "
        '{"u": "mysql://b:two@h2:3306/x"} and http://plain:8080/'
    )
    assert redact_url(text) == (
        "store 'postgresql://a:***@h1/db', tracking=postgresql+psycopg2://postgres:***@"
        '127.0.0.1:5432/mlflow, {"u": "mysql://b:***@h2:3306/x"} and http://plain:8080/'
    )
    assert url_passwords(text) == {"one", PASSWORD, "two"}


def test_url_passwords_gives_both_the_written_and_the_decoded_form() -> None:
    assert url_passwords("postgresql://u:p%40ss@db/x") == {"p%40ss", "p@ss"}
    assert url_passwords("postgresql://u:***@db/x") == set()


# --- params ----------------------------------------------------------------------------------


def test_redact_params_by_key_name_and_url_passwords_in_values() -> None:
    params = {
        "model.token": TOKEN,
        "model.name_or_path": "bert-base-uncased",
        "x.API_KEY": "k1",
        "x.apikey": "k2",
        "x.db_password": "k3",
        "x.hf_token": "k4",
        "x.Secret": "k5",
        "x.aws_access_key": "k6",
        "x.private_key": "k7",
        "x.passwd": "k8",
        "x.unset_token": None,
        "tracking.mlflow.tracking_uri": URI,
        "x.uris": [URI, "http://h"],
        "train.prefix.virtual_tokens": 10,
        "x.max_tokens": 512,
        "x.tokenizer": "fast",
    }
    redacted = redact_params(params)
    for key in ("model.token", "x.API_KEY", "x.apikey", "x.db_password", "x.hf_token"):
        assert redacted[key] == REDACTED, key
    for key in ("x.Secret", "x.aws_access_key", "x.private_key", "x.passwd"):
        assert redacted[key] == REDACTED, key
    assert redacted["x.unset_token"] is None  # says that none was set
    assert redacted["tracking.mlflow.tracking_uri"] == redact_url(URI)
    assert redacted["x.uris"] == [redact_url(URI), "http://h"]
    kept = ("model.name_or_path", "train.prefix.virtual_tokens", "x.max_tokens", "x.tokenizer")
    assert {k: redacted[k] for k in kept} == {k: params[k] for k in kept}
    assert TOKEN not in json.dumps(redacted) and PASSWORD not in json.dumps(redacted)


def test_secret_key_names() -> None:
    assert is_secret_key("model.token") and is_secret_key("a.b.OPENAI-API-KEY")
    assert not is_secret_key("train.prompt.virtual_tokens") and not is_secret_key("token.count")


# --- logs ------------------------------------------------------------------------------------


def _logger(name: str, *filters: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for f in filters:
        handler.addFilter(f)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_filter_masks_message_args_and_exception_text() -> None:
    logger, stream = _logger("tunefleet.test.filter", RedactingFilter({TOKEN, PASSWORD}))
    logger.warning("token %s for %s", TOKEN, {"uri": URI})
    logger.info(f"inline {TOKEN}")
    try:
        raise RuntimeError(f"cannot connect with {PASSWORD} and {TOKEN}")
    except RuntimeError:
        logger.exception("failed at %s", "http://u:other@host/x")
    output = stream.getvalue()
    assert TOKEN not in output and PASSWORD not in output, output
    assert "other" not in output  # a URL password nobody declared is masked too
    assert "RuntimeError: cannot connect with *** and ***" in output
    assert "Traceback" in output and "token *** for {'uri': 'postgresql+psycopg2" in output


def test_installed_redaction_covers_later_handlers_tracebacks_and_printed_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_log_redaction({"installed-Secret-42"})
    logger, stream = _logger("tunefleet.test.later")  # its handler has no filter of its own
    logger.warning("value %s", "installed-Secret-42")
    assert stream.getvalue() == "WARNING value ***\n"
    assert redact_text(f"error: installed-Secret-42 at {URI}") == (
        "error: *** at postgresql+psycopg2://postgres:***@127.0.0.1:5432/mlflow"
    )
    try:
        raise ValueError("uncaught installed-Secret-42")
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    printed = capsys.readouterr().err
    assert "ValueError: uncaught ***" in printed and "installed-Secret-42" not in printed


# --- config ----------------------------------------------------------------------------------


def _config_data(train: Path) -> dict[str, Any]:
    return {
        "name": "s",
        "model": {"name_or_path": "minilm", "token": TOKEN},
        "data": {"train": str(train)},
        "tracking": {"mlflow": {"tracking_uri": URI}},
    }


@pytest.fixture
def secret_yaml(tmp_path: Path, sentiment_csv: Path) -> Path:
    return write_config(tmp_path, _config_data(sentiment_csv), name="secret")


def test_a_config_dump_holds_neither_secret_but_the_model_keeps_them(secret_yaml: Path) -> None:
    config = load_config(secret_yaml)
    assert config.model.token is not None and config.model.token.get_secret_value() == TOKEN
    assert config.tracking.mlflow.tracking_uri == URI
    dumped = json.dumps(config.model_dump(mode="json"))
    assert TOKEN not in dumped and PASSWORD not in dumped
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    flat = flatten(config.model_dump(mode="json"))
    assert flat["model.token"] == REDACTED
    assert flat["tracking.mlflow.tracking_uri"] == redact_url(URI)
    assert secret_params(config) == {"model.token": TOKEN, "tracking.mlflow.tracking_uri": URI}
    assert secret_values(config) == {TOKEN, PASSWORD}
    # A trial's config is rebuilt from a dump: its secrets must survive that.
    tuned = apply_params(config, {"train.lora.r": 4})
    assert tuned.model.token == config.model.token and tuned.tracking.mlflow.tracking_uri == URI


def test_options_and_schema_list_the_secret_fields() -> None:
    rows = {key: (kind, text) for key, kind, text in describe_options()}
    assert rows["model.token"][0] == "secret str | None, default None"
    assert "HF_TOKEN" in rows["model.token"][1]
    assert rows["tracking.mlflow.tracking_uri"][0] == "str | None, default None"
    schema = json.dumps(json_schema())
    assert '"token"' in schema and '"tracking_uri"' in schema


def test_a_secret_cannot_be_searched(sentiment_csv: Path) -> None:
    data = _config_data(sentiment_csv)
    data["search"] = {"space": {"model.token": {"choices": ["a", "b"]}}}
    with pytest.raises(ConfigError, match=re.escape("search.space.model.token: is a secret")):
        parse_config(data)


def test_the_secret_round_trip_gives_back_an_equal_config(secret_yaml: Path) -> None:
    config = load_config(secret_yaml)
    stored = json.loads(json.dumps(config.model_dump(mode="json")))  # what the store keeps
    back = SweepConfig.model_validate(stored)
    assert back != config
    assert with_secrets(back, secret_params(config)) == config
    # Only what the store redacted is filled in: no secret is added to a sweep without one.
    plain = SweepConfig.model_validate({**stored, "model": {}, "tracking": {}})
    assert with_secrets(plain, {"model.token": TOKEN}).model.token is None


def test_a_missing_or_foreign_secret_is_named(secret_yaml: Path) -> None:
    config = load_config(secret_yaml)
    back = SweepConfig.model_validate(config.model_dump(mode="json"))
    with pytest.raises(ConfigError) as missing:
        with_secrets(back, {"model.token": TOKEN})
    message = str(missing.value)
    assert "tracking.mlflow.tracking_uri" in message and "model.token" not in message
    assert "--config" in message and SECRETS_ENV in message
    other = URI.replace("127.0.0.1", "elsewhere")
    with pytest.raises(ConfigError, match="not the sweep's") as foreign:
        with_secrets(back, {"model.token": TOKEN, "tracking.mlflow.tracking_uri": other})
    assert PASSWORD not in str(foreign.value)


def test_resuming_compares_redacted_configs(secret_yaml: Path) -> None:
    from tunefleet.platform.launcher import _refuse_changed

    config = load_config(secret_yaml)
    stored = SweepConfig.model_validate(config.model_dump(mode="json"))
    _refuse_changed(config, stored)  # the same secrets: a resume
    rotated = with_secrets(
        stored,
        {"model.token": "hf_new", "tracking.mlflow.tracking_uri": URI.replace(PASSWORD, "n")},
    )
    _refuse_changed(rotated, stored)  # a rotated secret alone is not a different sweep
    moved = apply_params(config, {"tracking.mlflow.tracking_uri": URI.replace("mlflow", "other")})
    with pytest.raises(ConfigError, match=re.escape("tracking.mlflow.tracking_uri")):
        _refuse_changed(moved, stored)


# --- launcher and worker ---------------------------------------------------------------------


def test_the_launcher_hands_secrets_to_workers_in_the_environment(
    secret_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunefleet.platform import launcher
    from tunefleet.platform.layout import Layout

    started: list[tuple[list[str], dict[str, str]]] = []

    def popen(command: list[str], env: dict[str, str]) -> Any:
        started.append((command, env))
        return None

    monkeypatch.setattr(launcher, "_gpu_count", lambda: 0)
    monkeypatch.setattr(launcher.subprocess, "Popen", popen)
    config = load_config(secret_yaml)
    launcher.start_workers(
        "s",
        Layout.at(tmp_path),
        "sqlite:///x.db",
        workers=1,
        deadline=None,
        secrets=secret_params(config),
    )
    [(command, env)] = started
    assert not any(TOKEN in part or PASSWORD in part for part in command)
    assert json.loads(env[SECRETS_ENV]) == secret_params(config)
    dashboards = launcher.dashboards(config, Layout.at(tmp_path), f"postgresql://u:{PASSWORD}@h/d")
    assert PASSWORD not in "\n".join(dashboards)


def test_worker_secrets_come_from_the_environment_or_config(
    secret_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunefleet.platform.cli import _worker_secrets

    monkeypatch.setenv(SECRETS_ENV, json.dumps({"model.token": "from-env"}))
    assert _worker_secrets(None) == {"model.token": "from-env"}
    assert SECRETS_ENV not in __import__("os").environ  # children of the worker never see it
    monkeypatch.setenv(SECRETS_ENV, json.dumps({"model.token": "from-env"}))
    assert _worker_secrets(secret_yaml) == {
        "model.token": TOKEN,
        "tracking.mlflow.tracking_uri": URI,
    }
    monkeypatch.setenv(SECRETS_ENV, "not json")
    with pytest.raises(ConfigError, match=SECRETS_ENV):
        _worker_secrets(None)


def test_a_worker_without_the_secrets_exits_2_naming_them(
    secret_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tunefleet.platform.cli import main

    out = tmp_path / "runs"
    out.mkdir()
    config = load_config(secret_yaml)
    store = Store(f"sqlite:///{out / 'tunefleet.db'}")
    store.create_sweep("s", config=config.model_dump(mode="json"), budget=1)
    store.dispose()
    assert main(["worker", "s", "--out", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "model.token" in printed and "tracking.mlflow.tracking_uri" in printed
    assert "--config" in printed and SECRETS_ENV in printed
    assert TOKEN not in printed and PASSWORD not in printed


def test_a_local_model_with_a_token_loads_offline(tiny_model: Path) -> None:
    from tunefleet.trainers.model import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model), token=TOKEN)
    model = load_classifier(str(tiny_model), ("0", "1"), token=TOKEN)
    assert tokenizer("hello")["input_ids"] and model.config.num_labels == 2


def test_worker_help_lists_its_config_option() -> None:
    shown = run_cli("worker", "--help")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "--config" in text and SECRETS_ENV in text
