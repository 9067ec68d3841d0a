"""Text corpora and tokenizers for the text domain.

- ``pydoc``: the default, real English that ships with every Python: the documentation topics of
  ``pydoc_data.topics`` (the text ``help("topics")`` shows), split into sentences; the train/test split is
  a fixed permutation drawn from the seed.
- ``FILE.txt`` or a folder of ``.txt`` files: one example per line, per paragraph (blank-line separated) or per
  sentence (``--unit``); by default (``auto``) per line, unless the file's lines are hard-wrapped prose or whole
  paragraphs, which are split into sentences (``guess_unit``).
- ``oracle``: SeqGAN's synthetic data (see ``oracle.py``).

A from-scratch model gets a tokenizer trained on the training split with the ``tokenizers`` library
(byte-level BPE, or word level); it is wrapped in a ``PreTrainedTokenizerFast`` so that it is saved and
loaded with the model by plain transformers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genkit import GenkitError

BOS, EOS = "<bos>", "<eos>"  # EOS doubles as padding: a sequence is text, <eos>, then <eos> to the fixed length
UNK = "<unk>"  # the word-level tokenizer's out-of-vocabulary token
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
# Where --unit sentence splits: after ., ! or ? (and a closing quote or bracket), before a capital, digit or an
# opening quote; not after the abbreviations below ("Mr. Smith", "e.g. The").
_SPLIT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc e.g i.e cf no fig vol ch p pp mt gen col lt capt rev "
                           "hon sgt u.s a.m p.m inc ltd co".split())
MAX_SENTENCE_WORDS = 60  # guess_unit: longer "sentences" mean text that does not punctuate them
_TERMINAL = tuple(".!?:;\"'\u201d\u2019)]")


def _clean(text: str) -> str:
    return " ".join(text.split())


DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_SPELLINGS = {0: ["nought", "oh"], 2: ["too"], 4: ["for"], 8: ["ate"]}  # homophones and old spellings
DIGIT_TEMPLATES = ["{w}", "{n}", "the number {w}", "the number {n}", "a handwritten {w}", "a handwritten {n}",
                   "the digit {w}", "digit {n}", "number {w}", "write a {w}", "draw the number {w}", "a {w}",
                   "it is a {w}", "this is the digit {n}", "the figure {w}", "a {w} written by hand", "{w}!",
                   "the numeral {n}", "a scribbled {w}", "a neat {w}", "a messy {n}", "handwritten digit {n}",
                   "an image of a {w}", "a picture of the number {n}", "say {w}", "the word {w}", "{w} please",
                   "I wrote {w}", "a small {n}", "a big {w}"]


def digit_phrases() -> tuple[list[str], list[int]]:
    """Phrases naming each digit ("seven", "the number 7", "a handwritten seven", ...): every template with the
    digit's word, its numeral, capitalised, and its other spellings; the class is the digit. Generated offline."""
    phrases, labels = [], []
    for d, word in enumerate(DIGIT_WORDS):
        seen = set()
        for template in DIGIT_TEMPLATES:
            for w in [word, *DIGIT_SPELLINGS.get(d, [])]:
                for text in (template.format(w=w, n=d), template.format(w=w, n=d).capitalize()):
                    if text not in seen:
                        seen.add(text)
                        phrases.append(text)
                        labels.append(d)
    return phrases, labels


def pydoc_sentences() -> list[str]:
    """Sentences of Python's own documentation topics, in a stable order (topic name, then position)."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for name in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[name]):
            lines = [line.strip() for line in para.splitlines()]
            # Skip code blocks, tables and grammar rules: keep prose (lines of mostly letters).
            if not lines or any(line.startswith((">>>", "...", "+--", "===", "---")) for line in lines):
                continue
            text = _clean(para)
            if sum(c.isalpha() or c == " " for c in text) < 0.85 * len(text):
                continue
            for sent in SENTENCE_END.split(text):
                sent = sent.strip()
                if 20 <= len(sent) <= 200 and sent[0].isupper() and sent[-1] in ".!?":
                    out.append(sent)
    return out


def split_sentences(text: str) -> list[str]:
    """``text`` (one paragraph, any line breaks) as its sentences, whitespace collapsed; a period after a common
    abbreviation or an initial ("Mr.", "e.g.", "J. R. R.") does not end one."""
    out: list[str] = []
    for part in _SPLIT.split(_clean(text)):
        if out:
            last = out[-1].rsplit(" ", 1)[-1].lower().strip("\"'(\u201c\u2018")
            if last.endswith(".") and (last[:-1] in _ABBREVIATIONS or (len(last) == 2 and last[0].isalpha())):
                out[-1] += " " + part
                continue
        out.append(part)
    return [p for p in out if p]


def guess_unit(text: str) -> str:
    """``--unit auto``: ``"sentence"`` when the lines of ``text`` are hard-wrapped prose (a tenth or more of them
    break off mid-sentence: no closing punctuation, the next line going on in lower case) or whole paragraphs (a
    third or more hold two sentences or more), and its sentences are sentence-sized (a median of at most
    ``MAX_SENTENCE_WORDS`` words: lower-cased text without punctuation, such as the Penn Treebank's one sentence
    a line, stays per line); else ``"line"`` (one sentence, title, name or verse per line)."""
    lines = [line.strip() for line in text.splitlines()]
    filled = [line for line in lines if line]
    if len(filled) < 2:
        return "line"
    wrapped = sum(1 for a, b in zip(lines, lines[1:])
                  if a and b and not a.endswith(_TERMINAL) and b[0].islower())
    multi = sum(1 for line in filled if len(split_sentences(line)) >= 2)
    if wrapped < 0.1 * len(filled) and multi < 0.3 * len(filled):
        return "line"
    words = sorted(len(sent.split()) for para in re.split(r"\n\s*\n", text) for sent in split_sentences(para))
    return "sentence" if words and words[len(words) // 2] <= MAX_SENTENCE_WORDS else "line"


def read_text_examples(path: Path, unit: str = "line") -> tuple[list[str], str]:
    """Examples from a UTF-8 ``.txt`` file or a folder of them (sorted, recursive), one per ``unit``: ``line``,
    ``paragraph`` (blank-line separated), ``sentence`` (paragraphs split into sentences, so hard-wrapped prose
    reads as whole sentences) or ``auto`` (each file's own, by ``guess_unit``; the source says which).

    Invalid UTF-8 raises ``GenkitError`` naming the file and the line; no examples at all is an error too.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise GenkitError(f"--data {path}: no such file or folder (built-in data: pydoc, oracle)")
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise GenkitError(f"--data {path}: the folder holds no .txt files")
    examples: list[str] = []
    units: dict[str, int] = {}
    for file in files:
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise GenkitError(f"{file}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                              f"{exc.start})") from None
        text = text.lstrip("\ufeff")
        chosen = guess_unit(text) if unit == "auto" else unit
        units[chosen] = units.get(chosen, 0) + 1
        if chosen == "line":
            parts = text.splitlines()
        else:
            parts = re.split(r"\n\s*\n", text)
            if chosen == "sentence":
                parts = [sent for para in parts for sent in split_sentences(para)]
        examples += [e for e in (_clean(p) for p in parts) if e]
    if not examples:
        raise GenkitError(f"--data {path}: no text (the input is empty or only blank lines)")
    per = " or ".join(f"{u} ({n} file{'s' if n != 1 else ''})" if len(units) > 1 else u
                      for u, n in sorted(units.items()))
    how = f"one example per {per}" + (", by --unit auto" if unit == "auto" else "")
    return examples, f"{path} ({len(files)} file{'s' if len(files) != 1 else ''}, {how})"


def split(examples: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed train/test split: a permutation drawn from ``seed`` (independent of torch's global RNG)."""
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(examples) * test_fraction)) if len(examples) > 1 else 0
    n_test = min(max(n_test, 1 if len(examples) >= 10 else 0), len(examples) - 1)
    test = [examples[i] for i in order[:n_test]]
    train = [examples[i] for i in order[n_test:]]
    return train, test


def train_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 2000):
    """Train a ``PreTrainedTokenizerFast`` on ``texts``: byte-level BPE (any text round-trips) or word level."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = list(texts)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "word":
        # Words as GPT-2's pre-tokenizer cuts them (" the", "Hello", "'s", " ."), each with its leading space:
        # decoding is exact concatenation, so punctuation, quotes and contractions read as written. Words
        # outside the vocabulary are <unk>, which the generator never samples.
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, UNK],
                                            show_progress=False)
    else:  # pragma: no cover - guarded by Option choices
        raise GenkitError(f"unknown tokenizer {kind!r} (bpe or word)")
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def id_tokenizer(vocab: int):
    """A word-level tokenizer whose tokens are the numbers ``0 .. vocab-1`` (the oracle's), plus ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    table = {str(i): i for i in range(vocab)}
    table[BOS] = vocab
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token=BOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return wrap_tokenizer(tok, eos=None)


def wrap_tokenizer(tok, eos: str | None = EOS):
    from transformers import PreTrainedTokenizerFast

    kwargs = {"bos_token": BOS}
    if eos is not None:
        kwargs.update(eos_token=eos, pad_token=eos)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def serialise_tokenizer(tokenizer) -> dict[str, Any]:
    """A fast tokenizer as plain data (its ``tokenizer.json`` text and special tokens), for the run's state."""
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
               if getattr(tokenizer, k, None) is not None}
    return {"json": tokenizer.backend_tokenizer.to_str(), "special": {k: str(v) for k, v in special.items()}}


def deserialise_tokenizer(saved: dict[str, Any]):
    """The tokenizer ``serialise_tokenizer`` saved (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(saved["json"]), **saved.get("special", {}))


# --max-len auto: long enough for this share of a corpus's training examples whole (EOS included), within the bounds.
# 32 was the measured corpus default (pydoc, the docstrings, fortunes: 5-13 % cut); a corpus of longer sentences gets
# at most 40, about 1.25 x the step time (Perl's documentation: 19 % cut at 32, 8 % at 40; keeping 95 % of a first
# build of it whole took 52 tokens and 1.5 x the step time; docs/text.md).
MAX_LEN_QUANTILE, MAX_LEN_BOUNDS = 0.95, (32, 40)


def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids, no special tokens."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def whole_len(tokens: list[list[int]], quantile: float = MAX_LEN_QUANTILE) -> int:
    """The length (tokens and an EOS) that holds ``quantile`` of the examples ``tokens`` (``tokenize``) whole; 0 for
    none."""
    if not tokens:
        return 0
    lengths = sorted(len(ids) + 1 for ids in tokens)
    return lengths[math.ceil(quantile * len(lengths)) - 1]


def auto_max_len(whole: int) -> int:
    """--max-len auto for a corpus whose examples fit ``whole`` tokens (``whole_len``): within ``MAX_LEN_BOUNDS``."""
    lo, hi = MAX_LEN_BOUNDS
    return min(max(whole, lo), hi)


def encode(tokenizer, texts: list[str], max_len: int, source: str, tokens: list[list[int]] | None = None):
    """Token ids [N, max_len]: each text's tokens, then EOS, padded with EOS; longer texts are cut. ``tokens``: the
    texts already tokenized (``tokenize``).

    Returns the ids and the fraction of examples that were cut.
    """
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise GenkitError(f"{source}: the tokenizer has no end-of-sequence token")
    ids = tokenize(tokenizer, texts) if tokens is None else tokens
    cut = sum(len(seq) > max_len - 1 for seq in ids)
    rows = [seq[:max_len - 1] + [eos] * (max_len - min(len(seq), max_len - 1)) for seq in ids]
    out = torch.tensor(rows, dtype=torch.long) if rows else torch.full((0, max_len), eos, dtype=torch.long)
    return out, cut / max(len(ids), 1)


def decode(tokenizer, ids, eos_id: int | None) -> list[str]:
    """Texts of token-id rows, each cut at its first EOS."""
    texts = []
    for row in ids.tolist():
        if eos_id is not None and eos_id in row:
            row = row[:row.index(eos_id)]
        texts.append(_clean(tokenizer.decode(row, skip_special_tokens=True)))
    return texts
