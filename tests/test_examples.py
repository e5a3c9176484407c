"""Every shipped example config is valid, with its data, as a user would run it (from the
repository root, or a folder laid out like it); the tiny-decoder example runs as its header says."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from support.cli import cli_env, run_cli
from tunefleet.platform.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
TINY_DECODER = ROOT / "examples" / "tiny_decoder.py"


def _trained_method(path: Path) -> str | None:
    train = yaml.safe_load(path.read_text(encoding="utf-8")).get("train") or {}
    method = train.get("method")
    return None if method is None else str(method)


def _build_tiny_decoder(workdir: Path) -> None:
    spec = importlib.util.spec_from_file_location("tiny_decoder", TINY_DECODER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(workdir / "runs" / "tiny-llama")


#: Examples whose model a script writes first (what their header comment says to run).
PREPARED: dict[str, Callable[[Path], None]] = {"llm-tiny": _build_tiny_decoder}


def _workdir(tmp_path: Path) -> Path:
    """A folder laid out like the repository root for the examples (they name paths relative to
    it), so that what they write lands in the test's folder."""
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    return tmp_path


def test_there_is_an_example_per_method() -> None:
    from tunefleet.config import METHODS

    trained = {_trained_method(p) for p in EXAMPLES}
    assert not set(METHODS) - trained, f"no example trains {sorted(set(METHODS) - trained)}"
    # examples/methods/NAME.yaml trains NAME.
    for path in (ROOT / "examples" / "methods").glob("*.yaml"):
        assert _trained_method(path) == path.stem


def test_every_prepared_example_exists() -> None:
    assert set(PREPARED) <= {path.stem for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = _workdir(tmp_path)
    if path.stem in PREPARED:
        PREPARED[path.stem](workdir)
    monkeypatch.chdir(workdir)
    code = main(["validate", str(path.relative_to(ROOT))])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "valid." in out.out


def test_the_tiny_decoder_example_needs_its_model_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_workdir(tmp_path))
    assert main(["validate", "examples/llm-tiny.yaml"]) == 2
    err = capsys.readouterr().err
    assert "model.name_or_path" in err and "runs/tiny-llama" in err


def test_the_gpu_example_is_a_bf16_lora_sweep_of_a_hub_decoder() -> None:
    config = yaml.safe_load((ROOT / "examples" / "llm-lora.yaml").read_text(encoding="utf-8"))
    assert config["model"]["name_or_path"] == "meta-llama/Llama-3.2-1B"
    assert (config["model"]["dtype"], config["train"]["precision"]) == ("bfloat16", "bf16")
    assert config["train"]["method"] == "lora"


@pytest.mark.slow
def test_the_tiny_decoder_example_runs_as_its_header_says(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path)
    header = (ROOT / "examples" / "llm-tiny.yaml").read_text(encoding="utf-8")
    build = "python examples/tiny_decoder.py runs/tiny-llama"
    sweep = "tunefleet sweep examples/llm-tiny.yaml --out runs"
    assert f"#   {build}\n#   {sweep}\n" in header

    built = subprocess.run(
        [sys.executable, *build.split()[1:]],
        cwd=workdir,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    swept = run_cli(*sweep.split()[1:], cwd=workdir, timeout=600)
    assert swept.returncode == 0, swept.stdout + swept.stderr

    status = run_cli("status", "llm-tiny", "--out", "runs", "--json", cwd=workdir)
    assert status.returncode == 0, status.stdout + status.stderr
    trials = json.loads(status.stdout)["trials"]
    assert [trial["state"] for trial in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        tokenizer = Path(trial["checkpoint"]) / "tokenizer_config.json"
        saved = json.loads(tokenizer.read_text(encoding="utf-8"))
        assert saved["pad_token"] == "<|endoftext|>"  # the tokenizer had none: EOS pads
