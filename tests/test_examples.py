"""Every shipped example config is valid, with its data, as a user would run it (from the
repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunefleet.platform.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def _trained_method(path: Path) -> str | None:
    train = yaml.safe_load(path.read_text(encoding="utf-8")).get("train") or {}
    method = train.get("method")
    return None if method is None else str(method)


def test_there_is_an_example_per_method() -> None:
    from tunefleet.config import METHODS

    trained = {_trained_method(p) for p in EXAMPLES}
    assert not set(METHODS) - trained, f"no example trains {sorted(set(METHODS) - trained)}"
    # examples/methods/NAME.yaml trains NAME.
    for path in (ROOT / "examples" / "methods").glob("*.yaml"):
        assert _trained_method(path) == path.stem


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["validate", str(path.relative_to(ROOT))])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "valid." in out.out
