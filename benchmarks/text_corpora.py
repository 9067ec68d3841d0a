"""English corpora for the text benchmarks, assembled offline from files that ship with Python or Debian.

- ``fortunes.txt``: sentences of the English fortune cookies of Debian's ``fortunes`` and ``fortunes-min``
  packages (``/usr/share/games/fortunes``; ``apt-get install fortunes fortunes-min``): quotations, jokes and
  aphorisms, conversational English far from Python's documentation.
- ``docstrings.txt``: sentences of the docstrings of Python's own standard library (``ast`` over the ``.py``
  files under ``sysconfig.get_paths()["stdlib"]``), technical English, about five times the pydoc corpus.
- ``perlpod.txt``: sentences of the documentation that ships inside Debian's ``perl`` (the POD of its modules
  under ``/usr/share/perl``, rendered by ``pod2text``): longer sentences than the other two, and the licence and
  support boilerplate that many modules repeat (kept here, as a user's folder would have it; genkit's ``--dedup``
  drops the repeats).

All use the pydoc corpus's rules: prose paragraphs only, split into sentences, 20 to 200 characters (300 for
``perlpod.txt``), starting upper-case and ending with ``.``, ``!`` or ``?``, order stable; the first two with
duplicates dropped.

    python benchmarks/text_corpora.py --out /tmp/corpora   # writes fortunes.txt, docstrings.txt and perlpod.txt
    genkit run text --data /tmp/corpora/fortunes.txt

No file is committed: they are rebuilt from the machine's own packages.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from genkit_text.data import SENTENCE_END

FORTUNES = Path("/usr/share/games/fortunes")
PERL = Path("/usr/share/perl")


def sentences(paragraphs: Iterable[str], *, longest: int = 200, unique: bool = True) -> list[str]:
    """Prose sentences of ``paragraphs`` (the pydoc corpus's rules), duplicates dropped (``unique``), order kept."""
    out: list[str] = []
    for para in paragraphs:
        lines = [line.strip() for line in para.splitlines()]
        if not lines or any(line.startswith((">>>", "...", "+--", "===", "---", "%")) for line in lines):
            continue
        text = " ".join(para.split())
        if not text or sum(c.isalpha() or c == " " for c in text) < 0.85 * len(text):
            continue
        for sent in SENTENCE_END.split(text):
            sent = sent.strip()
            if 20 <= len(sent) <= longest and sent[0].isupper() and sent[-1] in ".!?":
                out.append(sent)
    return list(dict.fromkeys(out)) if unique else out


def fortunes(root: Path = FORTUNES) -> list[str]:
    """Sentences of the fortune files (the ``%``-separated text files, not their ``.dat`` indexes)."""
    files = sorted(p for p in root.glob("*") if p.is_file() and not p.suffix)
    if not files:
        raise SystemExit(f"{root}: no fortune files (apt-get install fortunes fortunes-min)")
    paragraphs: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        for cookie in re.split(r"^%$", text, flags=re.M):
            # Attributions ("-- Mark Twain") and indented verse are not prose sentences.
            body = "\n".join(line for line in cookie.splitlines() if not line.strip().startswith("--"))
            paragraphs += re.split(r"\n\s*\n", body)
    return sentences(paragraphs)


def docstrings(root: Path | None = None) -> list[str]:
    """Sentences of the standard library's docstrings (modules, classes, functions)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    paragraphs: list[str] = []
    for file in sorted(root.rglob("*.py")):
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for part in file.parts):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    paragraphs += re.split(r"\n\s*\n", doc)
    return sentences(paragraphs)


def perlpod(root: Path = PERL) -> list[str]:
    """Sentences of the POD documentation of Perl's modules, rendered as text by ``pod2text`` (part of perl)."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".pm", ".pod") and p.is_file())
    if not files:
        raise SystemExit(f"{root}: no Perl modules (apt-get install perl)")
    paragraphs: list[str] = []
    for file in files:
        text = subprocess.run(["pod2text", "-w", "10000", str(file)], capture_output=True, text=True,
                              errors="replace").stdout
        for para in re.split(r"\n\s*\n", text):
            lines = [line for line in para.splitlines() if line.strip()]
            # pod2text indents prose by 4 and verbatim code by 8 or more; headings start at the margin
            if lines and all(line.startswith("    ") and not line.startswith("        ") for line in lines):
                paragraphs.append(para)
    return sentences(paragraphs, longest=300, unique=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the corpora to")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in (("fortunes", fortunes), ("docstrings", docstrings), ("perlpod", perlpod)):
        lines = build()
        (args.out / f"{name}.txt").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
        print(f"{args.out / name}.txt: {len(lines)} sentences", file=sys.stderr)


if __name__ == "__main__":
    main()
