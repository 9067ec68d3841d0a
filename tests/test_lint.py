"""Code habits CI keeps: ruff (pyproject.toml's [tool.ruff]), mypy on genkit/, and no block of six or more
lines standing twice in genkit/ and plugins/ (a copy-paste detector in the spirit of pylint's duplicate-code)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 6


def tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path, f"{name} is not installed: pip install -e '.[test]'"
    return path


def test_ruff_finds_nothing():
    out = subprocess.run([tool("ruff"), "check", "genkit", "plugins", "tests", "examples", "benchmarks", "docs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_passes_on_the_core():
    out = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are code: no blanks, comments, docstrings or imports."""
    out, in_doc = [], False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        quotes = line.count('"""')
        if in_doc or (line.startswith('"""') and quotes == 1):
            in_doc = not in_doc if quotes % 2 == 1 else in_doc
            continue
        if not line or line.startswith(("#", '"""', "import ", "from ")) or re.fullmatch(r"[\)\]\}:,]+", line):
            continue
        out.append((number, line))
    return out


def duplicate_blocks(files: list[Path], root: Path = ROOT) -> list[str]:
    seen: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in files:
        lines = code_lines(path)
        for i in range(len(lines) - WINDOW + 1):
            window = tuple(text for _, text in lines[i:i + WINDOW])
            seen[window].append(f"{path.relative_to(root)}:{lines[i][0]}")
    return [" ~ ".join(places) for places in seen.values() if len(places) > 1]


def test_no_block_of_six_lines_stands_twice():
    files = sorted(p for folder in ("genkit", "plugins") for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20
    assert duplicate_blocks(files) == []


def test_the_detector_finds_a_copy(tmp_path):
    body = "".join(f"    x{i} = f({i})\n" for i in range(7))
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(f"def one():\n{body}")
    b.write_text(f'"""doc"""\n\n# comment\ndef two():\n{body}')
    found = duplicate_blocks([a, b], root=tmp_path)
    assert found and found[0].startswith("a.py:2 ~ b.py:5")
