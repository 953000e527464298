"""Every ``python`` block of README.md runs, in order, in one namespace (as a
reader would paste them), and every ``print(...)  # -> text`` prints that text."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)\s*#\s*->\s*(.+)$", re.M)


def blocks():
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert len(blocks()) >= 5


def test_readme_python_blocks_run(capsys):
    pytest.importorskip("sklearn")  # the training block loads scikit-learn's digits
    namespace = {"__name__": "readme"}
    for i, code in enumerate(blocks()):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        printed = capsys.readouterr().out
        for want in PRINTED.findall(code):
            assert want.strip() in printed, f"block {i + 1} should print {want.strip()!r}, printed {printed!r}"
