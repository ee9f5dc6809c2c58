"""The README's runnable examples, executed against the session daemon."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

SECTIONS = ["Quick start", "The branching workflow", "asyncio", "Pattern: beam search", "Pattern: best-of-N"]


def first_python_block(section: str) -> str:
    text = README.read_text()
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"README has no section {section!r}"
    code = re.search(r"```python\n(.*?)```", m.group(1), re.S)
    assert code, f"README section {section!r} has no python example"
    return code.group(1)


@pytest.fixture
def local_daemon(daemon: Any, base: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k in ("ARBOR_URL", "ARBOR_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ARBOR_HOME", str(daemon.home))
    yield
    base.set_tag("busybox")  # the quick start re-imports busybox; keep the fixture's tag


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_example(section: str, local_daemon: None, capsys: pytest.CaptureFixture[str]) -> None:
    ns: Dict[str, Any] = {"__name__": "readme"}
    exec(compile(first_python_block(section), f"README.md#{section}", "exec"), ns)
    out = capsys.readouterr().out
    if section == "The branching workflow":
        assert out.split() == ["retry", "PASS", "pool", "PASS", "async", "PASS"]
    if section == "Pattern: beam search":
        assert "best:" in out
        # Every checkpoint tag the example set still names its survivor.
        assert [ns["c"].images.use(f"beam/{i}") for i in range(2)] == ns["beam"]
    if section == "Pattern: best-of-N":
        assert out.startswith("kept Image(")
