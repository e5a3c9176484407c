"""Every shipped example config is valid, with its data, as a user would run it (from the
repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunefleet.platform.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def test_there_is_an_example_per_method() -> None:
    from tunefleet.config import METHODS

    named = {p.stem for p in (ROOT / "examples" / "methods").glob("*.yaml")}
    assert named | {"dann"} == set(METHODS)
    assert (ROOT / "examples" / "domain-adaptation.yaml").is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    code = main(["validate", str(path.relative_to(ROOT))])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "valid." in out.out
