r"""Text metrics, computed offline: BLEU and self-BLEU (Texygen), distinct-n, and likelihoods.

- BLEU-n (Papineni et al. 2002) of each generated sentence against *all* test sentences as references,
  averaged over the generated sentences, as Texygen (Zhu et al. 2018, ``geek-ai/Texygen``) computes it with
  nltk's ``sentence_bleu``: clipped n-gram counts (max count over the references), the closest reference
  length for the brevity penalty, uniform weights ``1/n`` over orders 1..n. Smoothing: nltk's
  ``SmoothingFunction().method1`` (Chen & Cherry 2014, method 1: a zero count becomes epsilon = 0.1), which
  Texygen uses; the metric keys carry its name (``bleu2_method1``). Higher = closer to the test text.
- self-BLEU-n: the same with each generated sentence scored against the *other* generated sentences
  (Texygen's diversity measure; lower = more diverse).
- distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the samples.
- NLL_gen: the model's mean negative log-likelihood per token of held-out data (for the oracle:
  NLL_oracle, the oracle's NLL of the model's samples, is in ``oracle.py``); ``ppl_word``: the held-out
  perplexity per *word* (the summed token NLL over the number of words and end-of-sequence marks), which
  compares models whatever their tokenizer.
- Against the training text (``TrainIndex``): ``in_vocab``, the share of generated words (``\w+`` tokens,
  case-folded) that occur in the training text; ``ngram4_in_train``, the share of generated word 4-grams that
  occur in it, beside ``real_ngram4_in_train``, the same share for the held-out test sentences (what real
  unseen text scores); ``copied``, the share of samples that are a training example verbatim (memorisation).
- ``real_self_bleu4_method1``: the held-out sentences' own self-BLEU-4, beside ``self_bleu4_at_real_n``, the
  samples' self-BLEU-4 over the same number of sentences (self-BLEU grows with the number of sentences).

Numbers are comparable between genkit runs with the same tokenisation; Texygen tokenises with nltk's
``word_tokenize``, genkit with the regular expression ``WORD`` below, so they are close to but not the
same as published Texygen numbers.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"\w+|[^\w\s]")
SMOOTHING = "method1"
EPSILON = 0.1  # nltk's SmoothingFunction(epsilon=0.1).method1


def words(text: str) -> list[str]:
    return WORD.findall(text)


def ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class References:
    """References indexed once for fast sentence BLEU: per n-gram the two largest counts and the owner of the
    largest, so that self-BLEU can leave each hypothesis out of its own references in O(1)."""

    def __init__(self, references: Sequence[Sequence], max_n: int = 5):
        self.max_n = max_n
        self.top: list[dict[tuple, tuple[int, int, int]]] = [{} for _ in range(max_n + 1)]  # (max, owner, second)
        self.len_count = Counter(len(r) for r in references)
        self.lens = sorted(self.len_count)
        for owner, ref in enumerate(references):
            for n in range(1, max_n + 1):
                table = self.top[n]
                for gram, c in ngrams(ref, n).items():
                    best, who, second = table.get(gram, (0, -1, 0))
                    if c > best:
                        table[gram] = (c, owner, best)
                    elif c > second:
                        table[gram] = (best, who, c)

    def max_count(self, gram: tuple, exclude: int = -1) -> int:
        best, who, second = self.top[len(gram)].get(gram, (0, -1, 0))
        return second if who == exclude else best

    def closest_length(self, hyp_len: int, exclude_len: int | None = None) -> int | None:
        """nltk's rule: the reference length closest to the hypothesis's, the shorter on a tie."""
        lens = [n for n in self.lens if not (n == exclude_len and self.len_count[n] == 1)]
        if not lens:
            return None
        i = bisect.bisect_left(lens, hyp_len)
        candidates = lens[max(i - 1, 0):i + 1]
        return min(candidates, key=lambda r: (abs(r - hyp_len), r))

    def sentence_bleu(self, hyp: Sequence, n: int, exclude: int = -1, exclude_len: int | None = None) -> float:
        """nltk ``sentence_bleu(refs, hyp, weights=(1/n,)*n, smoothing_function=method1)``."""
        numerators, denominators = [], []
        for k in range(1, n + 1):
            counts = ngrams(hyp, k)
            numerators.append(sum(min(c, self.max_count(g, exclude)) for g, c in counts.items()))
            denominators.append(max(1, sum(counts.values())))
        if numerators[0] == 0:  # no unigram in common: nltk returns 0
            return 0.0
        c = len(hyp)
        r = self.closest_length(c, exclude_len)
        if r is None:
            return 0.0
        bp = 1.0 if c > r else math.exp(1.0 - r / c)
        log_sum = 0.0
        for num, den in zip(numerators, denominators):
            p = num / den if num > 0 else EPSILON / den
            log_sum += math.log(p) / n
        return bp * math.exp(log_sum)


def bleu(hypotheses: Sequence[Sequence], references: Sequence[Sequence], orders=(2, 3, 4, 5)) -> dict[int, float]:
    """Mean sentence BLEU-n of ``hypotheses`` against all ``references`` (token lists)."""
    if not hypotheses or not references:
        return {n: 0.0 for n in orders}
    refs = References(references, max(orders))
    return {n: sum(refs.sentence_bleu(h, n) for h in hypotheses) / len(hypotheses) for n in orders}


def self_bleu(hypotheses: Sequence[Sequence], orders=(2, 3, 4, 5)) -> dict[int, float]:
    """Mean sentence BLEU-n of each hypothesis against all the others."""
    if len(hypotheses) < 2:
        return {n: 0.0 for n in orders}
    refs = References(hypotheses, max(orders))
    return {n: sum(refs.sentence_bleu(h, n, exclude=i, exclude_len=len(h)) for i, h in enumerate(hypotheses))
            / len(hypotheses) for n in orders}


def distinct(hypotheses: Sequence[Sequence], n: int) -> float:
    """Distinct n-grams / all n-grams over the samples (0 when there are none)."""
    seen: set = set()
    total = 0
    for h in hypotheses:
        grams = [tuple(h[i:i + n]) for i in range(len(h) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def is_word(token: str) -> bool:
    """A ``\\w+`` token of ``words`` (not punctuation)."""
    return token[0].isalnum() or token[0] == "_"


class TrainIndex:
    """The training text indexed once: its case-folded word vocabulary, its word 4-grams and its examples."""

    def __init__(self, train: Sequence[str]):
        self.examples = {" ".join(t.split()) for t in train}
        self.vocab: set[str] = set()
        self.grams: set[tuple] = set()
        for text in train:
            toks = words(text.lower())
            self.vocab.update(t for t in toks if is_word(t))
            self.grams.update(ngrams(toks, 4))

    def in_vocab(self, texts: Sequence[str]) -> float:
        """Share of the words of ``texts`` (``\\w+`` tokens, case-folded) found in the training text."""
        toks = [t for text in texts for t in words(text.lower()) if is_word(t)]
        return sum(t in self.vocab for t in toks) / len(toks) if toks else 0.0

    def ngram_share(self, texts: Sequence[str]) -> float:
        """Share of the word 4-grams of ``texts`` (case-folded) found in the training text."""
        grams = [g for text in texts for g in ngrams(words(text.lower()), 4).elements()]
        return sum(g in self.grams for g in grams) / len(grams) if grams else 0.0

    def copied(self, texts: Sequence[str]) -> float:
        """Share of ``texts`` that are a training example verbatim."""
        return sum(" ".join(t.split()) in self.examples for t in texts) / len(texts) if texts else 0.0


def text_metrics(samples: Sequence[str], test: Sequence[str], orders=(2, 3, 4, 5),
                 train: TrainIndex | None = None) -> dict[str, float]:
    """BLEU, self-BLEU (smoothing named in the key) and distinct-1..3 of ``samples`` vs ``test`` sentences;
    with ``train``, the shares of the samples' words and 4-grams found in the training text and of verbatim
    copies, beside the test sentences' own figures."""
    hyps = [words(s) for s in samples]
    refs = [words(s) for s in test]
    out: dict[str, float] = {}
    for n, v in bleu(hyps, refs, orders).items():
        out[f"bleu{n}_{SMOOTHING}"] = v
    for n, v in self_bleu(hyps, orders).items():
        out[f"self_bleu{n}_{SMOOTHING}"] = v
    for n in (1, 2, 3):
        out[f"distinct{n}"] = distinct(hyps, n)
    out["mean_words"] = sum(map(len, hyps)) / max(len(hyps), 1)
    if len(refs) >= 2 and len(hyps) >= 2:  # self-BLEU of real text over as many sentences as are compared
        m = min(len(hyps), len(refs))
        out[f"real_self_bleu4_{SMOOTHING}"] = self_bleu(refs[:m], (4,))[4]
        out["self_bleu4_at_real_n"] = self_bleu(hyps[:m], (4,))[4] if m < len(hyps) else out[f"self_bleu4_{SMOOTHING}"]
    if train is not None:
        out["in_vocab"] = train.in_vocab(samples)
        out["ngram4_in_train"] = train.ngram_share(samples)
        out["real_ngram4_in_train"] = train.ngram_share(test)
        out["copied"] = train.copied(samples)
    return out


def word_perplexity(nll_per_token: float, tokens, eos_id: int | None, texts: Sequence[str]) -> float:
    """Held-out perplexity per word: ``exp(total token NLL / (words + one end mark per text))``. The token
    count is that of ``model_nll`` (positions up to and including each row's first EOS); ``texts`` are the
    rows of ``tokens`` decoded (so a text cut at --max-len counts only the words the model scored)."""
    from .model import after_eos

    counted = int((~after_eos(tokens, eos_id)).sum())
    n_words = sum(len(words(t)) for t in texts) + len(texts)
    return math.exp(min(nll_per_token * counted / max(n_words, 1), 700.0))


def model_nll(generator, tokens, temperature: float = 1.0, batch_size: int = 1000) -> float:
    """The generator's mean NLL per token of ``tokens`` [N, T] (positions up to the first EOS), at ``temperature``."""
    total, count = 0.0, 0
    device = generator.lm.get_input_embeddings().weight.device
    for i in range(0, len(tokens), batch_size):
        chunk_total, chunk_count = generator.nll_sum(tokens[i:i + batch_size].to(device), temperature)
        total += chunk_total
        count += chunk_count
    return total / max(count, 1)
