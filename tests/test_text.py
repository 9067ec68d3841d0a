"""The text domain: tokenizer, oracle, estimators, metrics, export, and tiny runs end to end through the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from genkit import GenkitError
from genkit.checkpoint import load_state
from genkit.plugins import registry
from genkit_text import data as tdata
from genkit_text.metrics import References, TrainIndex, bleu, distinct, self_bleu, text_metrics, word_perplexity
from genkit_text.model import (
    Discriminator,
    LMConfig,
    TextGenerator,
    after_eos,
    build_lm,
    reinforce_loss,
    rollout_rewards,
    warp_logits,
)
from genkit_text.oracle import oracle_data

from conftest import load_weights, read_metrics

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "an old man", "the small bird"]
VERBS = ["sees", "likes", "follows", "finds", "helps"]
OBJECTS = ["the ball.", "a red car.", "the garden!", "its owner.", "the café.", "every child?"]
SENTENCES = [f"{s} {v} {o}".capitalize() for s in SUBJECTS for v in VERBS for o in OBJECTS][:120]

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--d-embed", "16", "--d-filters", "8",
        "--vocab-size", "300", "--max-len", "12", "--batch-size", "8", "--pretrain-steps", "5", "--steps", "3",
        "--bleu-samples", "20", "--sweep", "0.8,1.0", "--eval-every", "0", "--checkpoint-every", "0",
        "--sample-every", "0", "--log-every", "1", "--device", "cpu", "--quiet"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def domain():
    return registry().domain("text")


def tiny_generator(vocab=50, seq_len=6, eos=1, bos=0):
    torch.manual_seed(0)
    lm = build_lm(LMConfig(vocab_size=vocab, seq_len=seq_len, n_layer=1, n_embd=16, n_head=2, dropout=0.0,
                           bos_id=bos, eos_id=eos))
    return TextGenerator(lm, seq_len, bos, eos)


def test_from_scratch_gpt2_is_untied_with_wider_init(tmp_path):
    """The default generator departs from GPT-2 in two measured ways (docs/text.md), and still exports."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = build_lm(LMConfig(vocab_size=500, seq_len=8))
    assert not lm.config.tie_word_embeddings
    assert lm.lm_head.weight.data_ptr() != lm.transformer.wte.weight.data_ptr()
    for w in (lm.transformer.wte.weight, lm.lm_head.weight):
        assert float(w.detach().std()) == pytest.approx(0.1, rel=0.05)
    assert float(lm.transformer.h[0].attn.c_attn.weight.detach().std()) == pytest.approx(0.02, rel=0.1)  # the rest: GPT-2's
    lm.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(again.lm_head.weight, lm.lm_head.weight)
    assert not torch.equal(again.lm_head.weight, again.transformer.wte.weight)
    tied = build_lm(LMConfig(vocab_size=500, seq_len=8, tie_embeddings=True, init_std=0.02))
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()
    assert float(tied.lm_head.weight.detach().std()) == pytest.approx(0.02, rel=0.05)


# -- tokenizer and data --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_tokenizer_training_and_round_trip(kind):
    tok = tdata.train_tokenizer(SENTENCES, kind, 300)
    assert tok.bos_token == "<bos>" and tok.eos_token == "<eos>" and tok.pad_token == "<eos>"
    ids, cut = tdata.encode(tok, SENTENCES[:3], 16, "test")
    assert ids.shape == (3, 16) and cut == 0.0
    assert (ids == tok.eos_token_id).any(dim=1).all()  # every row ends with EOS (and EOS padding)
    texts = tdata.decode(tok, ids, tok.eos_token_id)
    if kind == "bpe":  # byte level: exact round trip, unseen characters included
        assert texts == SENTENCES[:3]
        unseen = "Zürich ☃ naïve"
        assert tdata.decode(tok, tdata.encode(tok, [unseen], 40, "t")[0], tok.eos_token_id) == [unseen]
    else:  # word level: the same words, punctuation split off
        assert [t.replace(" .", ".").replace(" !", "!").replace(" ?", "?") for t in texts] == SENTENCES[:3]


def test_long_examples_are_cut_and_counted():
    tok = tdata.train_tokenizer(SENTENCES, "bpe", 300)
    ids, cut = tdata.encode(tok, [SENTENCES[0], " ".join(SENTENCES[:10])], 40, "t")
    assert cut == 0.5 and ids[1, -1] == tok.eos_token_id


def test_pydoc_corpus_is_english_sentences():
    sents = tdata.pydoc_sentences()
    assert len(sents) > 1000
    assert all(s[0].isupper() and s[-1] in ".!?" for s in sents)
    train, test = tdata.split(sents, 0.1, 0)
    assert (train, test) == tdata.split(sents, 0.1, 0)  # fixed by the seed
    assert len(test) == round(0.1 * len(sents)) and not set(test) & set(train) - set(test)


WRAPPED = """It was the best of times, it was the worst of times, it was the age of
wisdom, it was the age of foolishness. Mr. Lorry said "Yes." It was the
season of Light!

There were a king with a large jaw and a queen with a plain face, on the
throne of England; there were a king with a large jaw and a queen with a
fair face, on the throne of France. In both countries it was clearer than
crystal to the lords of the State preserves of loaves and fishes, that
things in general were settled for ever.
"""
WRAPPED_SENTENCES = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
    'Mr. Lorry said "Yes."', "It was the season of Light!",
    "There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king "
    "with a large jaw and a queen with a fair face, on the throne of France.",
    "In both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, that "
    "things in general were settled for ever."]


def test_sentences_split_after_end_punctuation_not_after_abbreviations_or_initials():
    assert tdata.split_sentences('Dr. Watson met J. R. Smith, e.g. The Times. "Why?" he asked. (It rained.) 3 left.') == [
        "Dr. Watson met J. R. Smith, e.g. The Times.", '"Why?" he asked.', "(It rained.)", "3 left."]
    assert tdata.split_sentences("no capital. follows here") == ["no capital. follows here"]


def test_unit_auto_splits_wrapped_prose_and_paragraph_lines_into_sentences_and_keeps_sentence_lines():
    assert tdata.guess_unit(WRAPPED) == "sentence"
    assert tdata.guess_unit(" ".join(WRAPPED.split()) + "\n" + "Another paragraph. It has two sentences.\n") == "sentence"
    assert tdata.guess_unit("\n".join(SENTENCES)) == "line"  # one sentence a line
    assert tdata.guess_unit("\n".join(WRAPPED_SENTENCES)) == "line"
    verse = "The woods are lovely, dark and deep,\nBut I have promises to keep,\nAnd miles to go before I sleep,\n"
    assert tdata.guess_unit(verse * 3) == "line"  # verse: each line starts upper-case
    # The Penn Treebank's form (lower case, no end punctuation, one sentence a line) is not wrapped prose: splitting
    # it at sentence ends would make one example of the whole file.
    ptb = "the company said it expects to report a loss\nmr. smith declined to comment on the report\n" * 40
    assert tdata.guess_unit(ptb) == "line"


def test_read_text_examples_by_unit(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a_book.txt").write_text(WRAPPED, encoding="utf-8")
    (folder / "b_lines.txt").write_text("\n".join(SENTENCES[:5]) + "\n", encoding="utf-8")
    examples, source = tdata.read_text_examples(folder, "auto")
    assert examples == WRAPPED_SENTENCES + SENTENCES[:5]
    assert "one example per line (1 file) or sentence (1 file), by --unit auto" in source
    lines, source = tdata.read_text_examples(folder / "a_book.txt", "line")  # asked for: kept as it is
    assert lines == [line.strip() for line in WRAPPED.splitlines() if line.strip()] and "per line)" in source
    paragraphs, _ = tdata.read_text_examples(folder / "a_book.txt", "paragraph")
    assert paragraphs == [" ".join(p.split()) for p in WRAPPED.split("\n\n")]
    sentences, source = tdata.read_text_examples(folder / "a_book.txt", "sentence")
    assert sentences == WRAPPED_SENTENCES and source.endswith("one example per sentence)")


def test_max_len_auto_holds_most_examples_whole_within_its_bounds(tmp_path, capsys):
    """--max-len auto: long enough for 95 % of the training examples (tokens and EOS), never under the measured
    32, never over 40; the run's config.toml records the length in use, and an explicit --max-len wins."""
    short = tdata.train_tokenizer(SENTENCES, "word", 300)
    whole = tdata.whole_len(tdata.tokenize(short, SENTENCES))
    assert whole < 10 and tdata.auto_max_len(whole) == 32
    sizes = [6] * 90 + [1] * 10  # 90 examples of 6 sentences (about 36 tokens), 10 of one
    long_ones = [" ".join(s.rstrip(".!?") for s in SENTENCES[i:i + k]) + "." for i, k in zip(range(100), sizes)]
    tok = tdata.train_tokenizer(long_ones, "word", 300)
    lengths = sorted(len(ids) + 1 for ids in tok(long_ones, add_special_tokens=False)["input_ids"])
    tokens = tdata.tokenize(tok, long_ones)
    assert tdata.whole_len(tokens) == lengths[94] and 32 < lengths[94] < 40
    assert tdata.whole_len(tokens, 0.5) == lengths[49] and tdata.whole_len([]) == 0
    assert tdata.auto_max_len(lengths[94]) == lengths[94] and tdata.auto_max_len(90) == 40  # the upper bound
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n".join(long_ones) + "\n", encoding="utf-8")
    text = domain()
    data = text.load_data(str(corpus), text.Options(tokenizer="word", vocab_size=300), cache_dir=tmp_path)
    n = data.state["seq_len"]
    assert 32 < n < 40 and data.train[0][0].shape == (n,)
    assert text.resolve_options(text.Options(), data).max_len == n
    assert "were cut" not in capsys.readouterr().err  # 5 % cut
    cut = text.load_data(str(corpus), text.Options(tokenizer="word", vocab_size=300, max_len=12), cache_dir=tmp_path)
    assert cut.state["seq_len"] == 12 and cut.train[0][0].shape == (12,)
    assert f"were cut; --max-len {n} keeps 95 % whole, at about" in capsys.readouterr().err


def test_repeated_examples_are_dropped_before_the_split_so_nothing_held_out_was_trained_on(tmp_path):
    text = domain()
    corpus = tmp_path / "boilerplate.txt"
    lines = SENTENCES[:60] + ["This program is free software."] * 30 + SENTENCES[:10]  # 30 + 10 repeats
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = text.load_data(str(corpus), text.Options(tokenizer="word", vocab_size=300), cache_dir=tmp_path)
    train, test = data.extra["train_texts"], data.extra["test_texts"]
    assert len(train) + len(test) == 61 and not set(train) & set(test) and len(set(train)) == len(train)
    assert "39 repeated examples dropped; 55 train / 6 test" in data.source
    kept = text.load_data(str(corpus), text.Options(tokenizer="word", vocab_size=300, dedup=False), cache_dir=tmp_path)
    assert len(kept.extra["train_texts"]) + len(kept.extra["test_texts"]) == 100 and "dropped" not in kept.source
    with pytest.raises(GenkitError, match="1 distinct example of text"):
        corpus.write_text("Same line.\n" * 20, encoding="utf-8")
        text.load_data(str(corpus), text.Options(tokenizer="word", vocab_size=300), cache_dir=tmp_path)
    pydoc = text.load_data("pydoc", text.Options(tokenizer="word", vocab_size=8000), cache_dir=tmp_path)
    assert not set(pydoc.extra["train_texts"]) & set(pydoc.extra["test_texts"])  # 83 of its 221 were, before


def test_a_run_on_wrapped_prose_trains_on_its_sentences(tmp_path, invoke):
    book = tmp_path / "book.txt"
    book.write_text(WRAPPED * 6, encoding="utf-8")
    out = tmp_path / "run"
    result = invoke("run", "text", "--data", book, "--out", out, *TINY, "--no-dedup")  # the book 6 times over
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "data.json").read_text())
    assert "one example per sentence, by --unit auto" in meta["source"] and "27 train / 3 test" in meta["source"]
    assert 'unit = "auto"' in (out / "config.toml").read_text()


def test_invalid_utf8_names_file_and_line(tmp_path, invoke):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"first line\nsecond line\nthird \xff line\n")
    with pytest.raises(GenkitError, match=r"bad\.txt: line 3: not valid UTF-8"):
        tdata.read_text_examples(bad)
    out = tmp_path / "run"
    result = invoke("run", "text", "--data", bad, "--out", out, *TINY)
    assert result.exit_code == 1
    assert "bad.txt: line 3: not valid UTF-8" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_empty_input_is_a_one_line_error(tmp_path, invoke):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    result = invoke("run", "text", "--data", empty, "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 1
    expected = f"genkit: error: --data {empty}: no text (the input is empty or only blank lines)"
    assert result.stderr.strip().splitlines() == [expected]
    folder = tmp_path / "dir"
    folder.mkdir()
    result = invoke("run", "text", "--data", folder, "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 1 and "holds no .txt files" in result.stderr
    assert not (tmp_path / "run").exists()


# -- oracle --------------------------------------------------------------------------------------------
def test_oracle_is_deterministic():
    o1, tr1, te1 = oracle_data(seed=5, n_train=30, n_test=10)
    o2, tr2, te2 = oracle_data(seed=5, n_train=30, n_test=10)
    assert tr1.shape == (30, 20) and te1.shape == (10, 20) and tr1.dtype == torch.int64
    assert torch.equal(tr1, tr2) and torch.equal(te1, te2)
    assert all(torch.equal(a, b) for a, b in zip(o1.state_dict().values(), o2.state_dict().values()))
    _, tr3, _ = oracle_data(seed=6, n_train=30, n_test=10)
    assert not torch.equal(tr1, tr3)
    # SeqGAN's recipe: embedding and hidden 32 over 5,000 tokens, weights N(0, 1)
    assert o1.embed.weight.shape == (5000, 32) and o1.lstm.hidden_size == 32
    assert 0.9 < o1.out.weight.std().item() < 1.1
    # the oracle finds its own samples far likelier than uniform random tokens
    assert o1.nll(tr1) < o1.nll(torch.randint(0, 5000, (30, 20))) - 2


def test_oracle_metrics_through_the_domain():
    oracle, train, test = oracle_data(seed=1, n_train=64, n_test=32)
    from genkit import Data

    data = Data(train=None, state={"kind": "oracle", "vocab_size": 5001, "bos_id": 5000, "eos_id": None, "seq_len": 20},
                extra={"oracle": oracle, "test_ids": test, "nll_oracle_data": oracle.nll(test)})
    opts = domain().Options(n_layer=1, n_embd=16, n_head=2, eval_samples=50)
    torch.manual_seed(0)
    G, D = domain().build_models(opts, data)
    m = domain().metrics(G.eval(), data, opts, temperature=1.0, top_k=0, top_p=1.0)
    assert set(m) == {"nll_oracle", "nll_gen", "nll_oracle_data"}
    # an untrained model is near uniform over the 5,000 tokens, and its samples are unlikely under the oracle
    assert abs(m["nll_gen"] - math.log(5000)) < 0.1
    assert m["nll_oracle"] > m["nll_oracle_data"] + 2


# -- estimators ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("feed", ["hard", "soft"])
def test_gumbel_softmax_gradients_reach_the_generator(feed):
    G = tiny_generator()
    D = Discriminator(G.vocab_size, 8, 4)
    y = G.gumbel_softmax(4, beta=3.0, generator=torch.Generator().manual_seed(0), feed=feed)
    assert y.shape == (4, 6, 50) and torch.allclose(y.sum(-1), torch.ones(4, 6), atol=1e-5)
    assert y[..., 0].max() < 1e-6  # <bos> is never generated
    D(y).sum().backward()
    grads = {n: p.grad for n, p in G.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "wpe" not in n), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


def test_gumbel_hard_feed_recomputes_the_sampled_logits():
    G = tiny_generator()
    tokens, logits, noise = G.sample(3, generator=torch.Generator().manual_seed(1), gumbel=True)
    assert torch.equal((logits + noise).argmax(-1), tokens)
    keep = ~after_eos(tokens, G.eos_id)  # the teacher-forced pass gives the same logits where a token counts
    assert torch.allclose(G.logits(tokens, sampling=True)[keep], logits[keep], atol=1e-4)


def test_gumbel_softmax_computes_only_where_tokens_count_to_relgans_output_and_gradients():
    """The hard-feed output skips the output layer, noise and softmax after each row's first EOS, where the forced
    logits make it EOS's one-hot vector anyway: the same output and generator gradients as RelGAN's formula over
    every position (softmax(beta (o + g)) with the forced logits), from the same draws."""
    G = tiny_generator(vocab=6, seq_len=8, eos=1)  # a 6-token vocabulary: most rows end early
    draw = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    tokens, logits, noise = G.sample(16, generator=draw(), gumbel=True, batch_size=16)
    forced = after_eos(tokens, 1)
    assert 0.2 < forced.float().mean() < 0.8  # both kinds of position are there
    full = G.logits(tokens, sampling=True)
    eos_row = torch.full_like(full[0, 0], -1e9)
    eos_row[1] = 0.0
    full = torch.where(forced.unsqueeze(-1), eos_row, full)
    ref = torch.softmax(4.0 * (full + noise), dim=-1)
    ref_grads = torch.autograd.grad((ref * torch.arange(6.0)).sum(), list(G.parameters()), allow_unused=True)
    y = G.gumbel_softmax(16, beta=4.0, generator=draw())
    assert torch.allclose(y, ref, atol=1e-6)
    assert not G._draw(4, draw(), gumbel=True)[1].requires_grad  # the draw itself records no graph
    assert torch.equal(y[forced], torch.nn.functional.one_hot(torch.ones_like(tokens[forced]), 6).float())
    grads = torch.autograd.grad((y * torch.arange(6.0)).sum(), list(G.parameters()), allow_unused=True)
    for a, b in zip(grads, ref_grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():  # the discriminator's batch: the same vectors without the teacher-forced pass
        assert torch.allclose(G.gumbel_softmax(16, beta=4.0, generator=draw()), ref, atol=1e-6)


def test_the_cached_gpt2_decoder_matches_transformers_forward(monkeypatch):
    """Sampling decodes a plain GPT-2 with its own key/value buffers (CachedGPT2), computing only the rows still
    running: its logits are the model's teacher-forced ones, its samples those of transformers' cache, and anything
    it does not cover (dropout in training, another model) falls back to transformers."""
    from genkit_text.model import CachedGPT2

    torch.manual_seed(0)
    lm = build_lm(LMConfig(vocab_size=30, seq_len=7, n_layer=2, n_embd=16, n_head=2, bos_id=0, eos_id=1)).eval()
    ids = torch.randint(2, 30, (5, 7))
    with torch.no_grad():
        ref = lm(input_ids=ids).logits
        dec = CachedGPT2.of(lm, 5, 8)
        out = [dec.logits(ids[:, :3], torch.arange(5))]  # a prefix in one call, then one token at a time
        rows = torch.arange(5)
        for t in range(3, 7):
            rows = rows[rows != t - 2] if t > 3 else rows  # rows drop out as they would end
            out.append(dec.logits(ids[rows, t:t + 1], rows))
            assert torch.allclose(out[-1], ref[rows, t], atol=1e-5)
        assert torch.allclose(out[0], ref[:, 2], atol=1e-5)
    assert CachedGPT2.of(lm.train(), 5, 8) is None  # dropout 0.1 in training: transformers' forward
    assert CachedGPT2.of(lm.eval(), 5, 9) is None  # longer than its positions
    G = TextGenerator(lm.eval(), 7, 0, 1)
    fast = G.sample(40, top_p=0.9, generator=torch.Generator().manual_seed(5))
    fast_g = G.sample(40, generator=torch.Generator().manual_seed(5), gumbel=True)
    monkeypatch.setattr(CachedGPT2, "of", classmethod(lambda cls, *a: None))
    slow = G.sample(40, top_p=0.9, generator=torch.Generator().manual_seed(5))
    slow_g = G.sample(40, generator=torch.Generator().manual_seed(5), gumbel=True)
    assert torch.equal(fast, slow) and (fast == 1).any()
    assert torch.equal(fast_g[0], slow_g[0]) and torch.allclose(fast_g[1], slow_g[1], atol=1e-5)


def test_positions_after_eos_are_forced_to_eos():
    G = tiny_generator(vocab=5, seq_len=12, eos=1)  # a 5-token vocabulary ends sequences early
    tokens = G.sample(20, generator=torch.Generator().manual_seed(0))
    for row in tokens.tolist():
        if 1 in row:
            assert set(row[row.index(1):]) == {1}


def test_mle_loss_is_the_mean_nll_up_to_the_first_eos():
    G = tiny_generator(vocab=50, seq_len=8, eos=1, bos=0)
    x = torch.randint(2, 50, (4, 8), generator=torch.Generator().manual_seed(0))
    x[0, 3:] = 1
    x[1, 5] = 1  # a token after an EOS is padding: not counted
    logp, mask = G.token_log_probs(x)
    assert int(mask.sum()) == 4 + 6 + 8 + 8
    assert G.mle_loss(x).item() == pytest.approx((-(logp * mask).sum() / mask.sum()).item(), rel=1e-6)


def test_a_from_scratch_gpt2_scores_only_the_counted_positions_to_the_same_loss_gradients_and_nll():
    """The output layer runs only where a position counts (up to each row's first EOS: the padding of a corpus's
    short sentences is about half of its positions) and gives the loss and gradients of the full [B, T, V] logits,
    and the held-out NLL of ``token_log_probs`` at any temperature; a model that is not a plain GPT-2 (a pretrained
    one, LoRA) takes the full path, to the same value."""
    import torch.nn.functional as F
    from transformers import GPT2LMHeadModel

    from genkit_text.metrics import model_nll
    from genkit_text.model import NEG_INF, after_eos

    G = tiny_generator(vocab=50, seq_len=8, eos=1, bos=0)
    x = torch.randint(2, 50, (5, 8), generator=torch.Generator().manual_seed(0))
    x[0, 2:] = 1
    x[3, 4:] = 1
    assert G._counted_logits(x).shape == (3 + 8 + 8 + 5 + 8, 50)
    fast = G.mle_loss(x)
    fast.backward()
    grads = {n: p.grad.clone() for n, p in G.named_parameters()}
    G.zero_grad()
    inputs = G._inputs(x)
    logits = G.lm(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.float()
    logits[..., G.banned] = NEG_INF
    full = F.cross_entropy(logits.flatten(0, 1), x.masked_fill(after_eos(x, 1), -100).flatten())
    full.backward()
    assert float(fast.detach()) == pytest.approx(float(full.detach()), rel=1e-6)
    for n, p in G.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6), n
    for t in (1.0, 0.8):
        logp, mask = G.token_log_probs(x, t)
        total, count = G.nll_sum(x, t)
        assert count == int(mask.sum()) and float(total) == pytest.approx(-float((logp * mask).sum().detach()), rel=1e-6)
    before = model_nll(G, x, 0.8, batch_size=2)

    G.lm.__class__ = type("OtherLM", (GPT2LMHeadModel,), {})  # not a plain GPT-2: the full path
    assert G._counted_logits(x) is None
    assert float(G.mle_loss(x).detach()) == pytest.approx(float(full.detach()), rel=1e-6)
    assert model_nll(G, x, 0.8, batch_size=2) == pytest.approx(before, rel=1e-6)


def test_mle_early_stopping_keeps_the_best_held_out_weights():
    from genkit_text import EarlyStop

    G = tiny_generator(vocab=50, seq_len=8)
    held_out = torch.randint(2, 50, (16, 8), generator=torch.Generator().manual_seed(1))
    stop = EarlyStop(G, held_out, domain().Options(mle_patience=1, mle_check_sentences=10))
    assert len(stop.ids) == 10
    best = {k: v.clone() for k, v in G.state_dict().items()}
    assert stop.check(100) is False  # the first check is the best so far
    with torch.no_grad():
        G.lm.lm_head.weight.mul_(30.0)  # a sharper, wrong distribution: worse held-out NLL
    assert stop.check(200) is True  # patience 1: one check without improvement stops the phase
    stats = stop.finish(1800)
    assert stats == {"mle_best_step": 100.0, "mle_best_nll_heldout": pytest.approx(stats["mle_best_nll_heldout"]),
                     "mle_stopped_early": 1.0}
    assert all(torch.equal(v, best[k]) for k, v in G.state_dict().items())  # the best weights are back
    assert EarlyStop(G, None, domain().Options(mle_patience=1)).finish(10) == {}  # no held-out data: off


def test_weight_average_is_the_bias_corrected_mean_of_the_steps_weights_and_swaps_back():
    from genkit_text import WeightAverage

    G = tiny_generator()
    w = G.lm.lm_head.weight
    avg = WeightAverage(G, 0.5)
    start = w.detach().clone()
    avg.apply()  # no update yet: the weights stay as they are
    assert torch.equal(w, start)
    values = (1.0, -2.0, 3.0, 0.5)
    for value in values:
        with torch.no_grad():
            w.fill_(value)
        avg.update()
    # weights 1, 2, 4, 8 (halving backwards from the last step), normalised; nothing of the initial weights
    expected = (1 * 1.0 + 2 * -2.0 + 4 * 3.0 + 8 * 0.5) / 15
    with avg.swapped():
        assert torch.allclose(w, torch.full_like(w, expected))
    assert torch.equal(w, torch.full_like(w, 0.5))  # the live weights are back after the block
    avg.apply()
    assert torch.allclose(w, torch.full_like(w, expected))


def test_mle_ema_keeps_the_average_of_the_weights_it_went_through(monkeypatch):
    """--mle-ema: the MLE phase ends with the moving average of the weights after each Adam step, not the last
    ones; with early stopping, the check scores the average and restores the best average."""
    from types import SimpleNamespace

    import genkit_text
    from genkit_text import EarlyStop, WeightAverage

    G = tiny_generator(vocab=50, seq_len=8)
    seen = []
    update = WeightAverage.update

    def recording(self):
        seen.append([p.detach().clone() for p in self.params])  # the live weights after this step
        update(self)

    monkeypatch.setattr(WeightAverage, "update", recording)
    dom = domain()
    monkeypatch.setattr(dom, "temperature_sweep", lambda *a, **k: {})
    opts = dom.Options(mle_ema=0.8, mle_lr=1e-2, mle_patience=0)
    ids = torch.randint(2, 50, (8, 8), generator=torch.Generator().manual_seed(0))
    ctx = SimpleNamespace(generator=G, options=opts, data=SimpleNamespace(extra={}, state={}), device=torch.device("cpu"))
    control = SimpleNamespace(stop_requested=False, step=lambda n, stats: None)
    params = [p for p in G.parameters() if p.requires_grad]
    dom.pretrain(ctx, lambda: (ids,), 6, control)
    assert len(seen) == 6
    weights = [0.8 ** (5 - k) for k in range(6)]  # the last step's weights count most
    expected = [sum(c * live[i] for c, live in zip(weights, seen)) / sum(weights) for i in range(len(params))]
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(params, expected))
    assert not torch.allclose(params[0], seen[-1][0])  # not the last step's weights

    # Early stopping scores the average: live weights made worse, the average kept good, the good ones come back.
    monkeypatch.setattr(WeightAverage, "update", update)
    held_out = torch.randint(2, 50, (16, 8), generator=torch.Generator().manual_seed(1))
    avg = WeightAverage(G, 0.9)
    avg.update()  # the average: these weights
    good = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        G.lm.lm_head.weight.mul_(30.0)  # the live model: a sharper, wrong distribution
    stop = EarlyStop(G, held_out, dom.Options(mle_patience=1, mle_check_sentences=16), avg)
    assert stop.check(100) is False
    stats = stop.finish(200)
    assert stats["mle_best_nll_heldout"] == pytest.approx(genkit_text.metrics.model_nll(G, held_out))
    assert all(torch.allclose(v, good[k]) for k, v in G.state_dict().items())


def test_reinforce_loss_known_case():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]])).requires_grad_(True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    rewards = torch.tensor([1.0, 0.0])
    loss = reinforce_loss(logp, mask, rewards, rewards.mean())
    # advantages (+0.5, -0.5); sequence log-probs log(1/8), log(1/4):
    # -mean(0.5 log(1/8) - 0.5 log(1/4)) / T = -(0.5 log(1/2) / 2) / 2 = log(2) / 8
    assert loss.item() == pytest.approx(math.log(2) / 8, rel=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.125, -0.125], [0.125, 0.125]]))  # raise the rewarded one
    # masked positions (after EOS) carry neither loss nor gradient
    logp.grad = None
    masked = reinforce_loss(logp, torch.tensor([[True, False], [True, True]]), rewards, 0.5)
    masked.backward()
    assert logp.grad[0, 1] == 0 and masked.item() == pytest.approx(-(0.5 * math.log(0.5) - 0.5 * math.log(0.25)) / 4)


def test_reinforce_loss_with_per_token_rewards():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5]])).requires_grad_(True)
    mask = torch.ones(2, 2, dtype=torch.bool)
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # only the first token of the first sequence is rewarded
    loss = reinforce_loss(logp, mask, rewards, rewards.mean(dim=0, keepdim=True))
    loss.backward()
    # advantages [[0.5, 0], [-0.5, 0]]; gradient -A / (B T) on each log-prob
    assert torch.allclose(logp.grad, torch.tensor([[-0.125, 0.0], [0.125, 0.0]]))
    seq = reinforce_loss(logp.detach(), mask, torch.tensor([1.0, 0.0]), 0.5)
    per_token = reinforce_loss(logp.detach(), mask, torch.tensor([[1.0, 1.0], [0.0, 0.0]]), 0.5)
    assert seq.item() == pytest.approx(per_token.item())  # a [B] reward is the same reward on every token


class LastTokenCritic(torch.nn.Module):
    """A discriminator stub whose logit depends only on the last token: ``w[y_T]``."""

    def __init__(self, vocab):
        super().__init__()
        self.w = torch.linspace(-3, 3, vocab)

    def forward(self, x, cond=None):  # token ids [B, T] or one-hot [B, T, V]
        return self.w[x[:, -1]] if not x.is_floating_point() else x[:, -1] @ self.w


def test_prefix_sampling_and_monte_carlo_rollouts():
    G = tiny_generator(vocab=12, seq_len=4, eos=None).eval()
    rng = torch.Generator().manual_seed(0)
    tokens = G.sample(3, generator=rng)
    cont = G.sample(3, prefix=tokens[:, :2], generator=rng)
    assert cont.shape == (3, 4) and torch.equal(cont[:, :2], tokens[:, :2])
    D = LastTokenCritic(12)
    values = rollout_rewards(G, D, tokens, rollouts=4000, rng=rng)
    assert values.shape == (3, 4)
    assert torch.allclose(values[:, 3], torch.sigmoid(D(torch.nn.functional.one_hot(tokens, 12).float())))
    # Q(y_1..3) = E[sigmoid(w[y_4]) | y_1..3], exactly from the teacher-forced next-token distribution
    with torch.no_grad():
        p_last = G.logits(tokens)[:, 3].softmax(dim=-1)
    exact = p_last @ torch.sigmoid(D.w)
    assert torch.allclose(values[:, 2], exact, atol=0.02)
    assert ((values > 0) & (values < 1)).all()
    eos = tiny_generator(vocab=12, seq_len=4, eos=1)
    done = eos.sample(2, prefix=torch.tensor([[1], [2]]), generator=rng)
    assert done[0].tolist() == [1, 1, 1, 1]  # a prefix that already ended stays ended


def test_beta_schedule_is_relgans_exponential():
    from types import SimpleNamespace

    opts = {"beta_max": 100.0, "beta_steps": 200}
    beta = lambda step, **kw: domain().beta(SimpleNamespace(options=domain().Options(**{**opts, **kw}), step=step,
                                                            total_steps=10))
    assert beta(0) == 1.0 and beta(200) == pytest.approx(100.0)
    assert beta(100) == pytest.approx(10.0)  # 100 ** (1/2)
    assert beta(50, beta_steps=50) == pytest.approx(100.0) and beta(150, beta_steps=50) == pytest.approx(100.0)
    assert beta(25, beta_steps=50, beta_max=1000.0) == pytest.approx(1000 ** 0.5)


def test_own_sampler_agrees_with_generate():
    G = tiny_generator().eval()
    greedy = G.sample(3, top_k=1)
    ids = torch.zeros(3, 1, dtype=torch.long)
    ref = G.lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                        eos_token_id=1, pad_token_id=1, suppress_tokens=[0])[:, 1:]
    ref = torch.nn.functional.pad(ref, (0, 6 - ref.shape[1]), value=1)
    assert torch.equal(greedy, ref)
    torch.manual_seed(0)
    assert G.generate(7, top_k=5, top_p=0.9).shape == (7, 6)


def test_warp_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (warp_logits(logits, top_k=2) > -1e8).tolist() == [[True, True, False, False]]
    assert (warp_logits(logits, top_p=0.7) > -1e8).tolist() == [[True, True, False, False]]
    assert (warp_logits(logits, top_p=0.1) > -1e8).tolist() == [[True, False, False, False]]
    assert torch.allclose(warp_logits(logits, temperature=2.0), logits / 2)


def test_top_p_through_topk_keeps_the_tokens_a_full_sort_keeps():
    """Nucleus filtering decides a row from its k most likely tokens when they hold more than top-p, and sorts the
    other rows in full: the same kept tokens and logits as sorting every row, in a batch with both kinds of row."""
    from genkit_text.model import _nucleus, _nucleus_sorted

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 100, generator=g) * torch.tensor([0.1, 4.0, 12.0]).view(3, 1, 1)  # flat .. peaked
    for top_p in (0.5, 0.9, 0.99):
        fast, full = _nucleus(logits, top_p, k=8), _nucleus_sorted(logits.reshape(-1, 100), top_p).view_as(logits)
        assert torch.equal(fast, full)
        kept = (fast > -1e8).sum(-1)
        assert (kept[0] > 8).all()  # the flat rows were sorted
        assert top_p > 0.9 or (kept[2] <= 8).all()  # the peaked ones were not
    assert torch.equal(_nucleus(logits[:, 0], 0.9, k=8), _nucleus_sorted(logits[:, 0], 0.9))


def test_min_p_keeps_tokens_relative_to_the_most_likely_and_agrees_with_generate():
    # min-p 0.5: keep p >= 0.5 x p_max; a peaked row keeps one token, a flat row keeps all four
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.28, 0.26, 0.24, 0.22], [0.9, 0.04, 0.03, 0.03]]))
    kept = warp_logits(logits, min_p=0.5) > -1e8
    assert kept.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]
    assert torch.equal(warp_logits(logits, min_p=0.0), logits)
    # after top-p, as transformers orders its warpers; and the same tokens as generate(min_p=...)
    assert (warp_logits(logits[:1], top_p=0.1, min_p=0.01) > -1e8).tolist() == [[True, False, False, False]]
    G = tiny_generator().eval()
    torch.manual_seed(0)
    ours = G.sample(64, min_p=0.999)  # keeps only the most likely token: greedy, whatever the RNG
    assert torch.equal(ours, G.sample(64, top_k=1))
    assert torch.equal(G.generate(4, min_p=0.999), G.sample(4, top_k=1))


def test_discriminator_accepts_ids_one_hot_and_soft_one_hot():
    torch.manual_seed(0)
    D = Discriminator(30, 8, 4).eval()
    ids = torch.randint(0, 30, (3, 7))
    one_hot = torch.nn.functional.one_hot(ids, 30).float()
    assert D(ids).shape == (3,) and torch.allclose(D(ids), D(one_hot), atol=1e-5)
    assert D(torch.softmax(torch.randn(3, 7, 30), -1)).shape == (3,)


# -- metrics -------------------------------------------------------------------------------------------
def test_bleu_known_cases():
    # Papineni et al. 2002: clipped unigram precision 2/7; no "the the" bigram in the references
    hyp = "the the the the the the the".split()
    refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    assert bleu([hyp], refs, (2,))[2] == pytest.approx(math.sqrt(2 / 7 * 0.1 / 6))  # method1: 0 -> 0.1 / 6
    # brevity penalty: hypothesis of 2 words, closest reference 6 words
    assert bleu([["the", "cat"]], [refs[0]], (2,))[2] == pytest.approx(math.exp(1 - 6 / 2))
    # nltk's documentation example of sentence_bleu (BLEU-4): 0.5045...
    h1 = ("It is a guide to action which ensures that the military always obeys the commands of the party").split()
    r1 = "It is a guide to action that ensures that the military will forever heed Party commands".split()
    r2 = ("It is the guiding principle which guarantees the military forces always being under the command of "
          "the Party").split()
    r3 = "It is the practical guide for the army always to heed the directions of the party".split()
    assert bleu([h1], [r1, r2, r3], (4,))[4] == pytest.approx(0.5045666840058485)
    assert bleu([["nothing", "shared"]], refs, (2,))[2] == 0.0


def test_self_bleu_leaves_each_sentence_out():
    same = [["a", "b", "c", "d"]] * 3
    assert self_bleu(same, (2, 3))[2] == pytest.approx(1.0)
    distinct_sents = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]
    assert self_bleu(distinct_sents, (2,))[2] == 0.0
    # a duplicated sentence is still found among the others after leaving one copy out
    refs = References([["x", "y"], ["x", "y"], ["z"]], 2)
    assert refs.max_count(("x", "y"), exclude=0) == 1 and refs.max_count(("z",), exclude=2) == 0
    assert distinct([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)


def test_text_metrics_name_their_smoothing():
    m = text_metrics(SENTENCES[:20], SENTENCES[20:60])
    assert {f"bleu{n}_method1" for n in (2, 3, 4, 5)} <= set(m)
    assert {f"self_bleu{n}_method1" for n in (2, 3, 4, 5)} <= set(m)
    assert 0 < m["bleu2_method1"] <= 1 and 0 < m["distinct1"] <= 1


def test_read_alike_measures_against_the_training_text():
    train = ["The cat sat on the mat.", "A dog ran in the park today."]
    index = TrainIndex(train)
    # words: case-folded, punctuation is not a word
    assert index.in_vocab(["the CAT ran.", "zebra cat"]) == pytest.approx(4 / 5)
    # 4-grams, case-folded: "the cat sat on" is in the training text, "cat sat on a" and "sat on a mat" are not
    assert index.ngram_share(["The cat sat on a mat"]) == pytest.approx(1 / 3)
    assert index.ngram_share(["too short"]) == 0.0
    assert index.copied(["A dog ran  in the park today.", "A dog ran."]) == 0.5
    m = text_metrics(["The cat sat on the mat."] * 3, ["A dog sat.", "The cat ran away.", "It rained."], train=index)
    assert m["copied"] == 1.0 and m["in_vocab"] == 1.0 and m["ngram4_in_train"] == 1.0
    assert m["real_ngram4_in_train"] == 0.0 and m["self_bleu4_at_real_n"] == pytest.approx(1.0)
    assert m["real_self_bleu4_method1"] < 0.5


def test_word_perplexity_counts_words_not_tokens():
    eos = 9
    tokens = torch.tensor([[1, 2, 3, eos, eos], [4, eos, eos, eos, eos]])  # 4 + 2 scored positions
    # 6 tokens at NLL 1.0 each over 3 + 1 words and 2 end marks: exp(6 / 6)
    assert word_perplexity(1.0, tokens, eos, ["a b c", "d"]) == pytest.approx(math.e)
    assert word_perplexity(2.0, tokens, eos, ["a b c d e", "f g h i j"]) == pytest.approx(math.exp(12 / 12))


def test_recipes_for_a_corpus_the_oracle_and_a_pretrained_model(tmp_path):
    """One domain, three measured recipes: --data oracle and --model layer their own over the corpus default,
    under --preset, --config and flags."""
    from genkit.config import resolve

    text, losses = domain(), registry().losses
    corpus = resolve(text, losses, data="my.txt")
    assert corpus.options.tokenizer == "word" and corpus.options.n_layer == 4 and corpus.train.pretrain_steps > 1000
    oracle = resolve(text, losses, data="oracle")
    assert (oracle.options.n_layer, oracle.options.n_embd, oracle.options.mle_lr) == (1, 32, 1e-2)
    assert (oracle.train.pretrain_steps, oracle.train.steps) == (1500, 100)
    assert resolve(text, losses, data="oracle", preset="quick").train.pretrain_steps == 100  # preset over it
    assert resolve(text, losses, data="oracle", flags={"n_embd": 64}).options.n_embd == 64  # flags over it
    pretrained = resolve(text, losses, data="my.txt", flags={"model": "smollm2"})
    assert pretrained.train.batch_size == 16 and pretrained.options.max_len == 32
    assert corpus.options.max_len is None and corpus.options.dedup  # auto: from the training examples (load_data)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[text]\nmodel = "smollm2"\n')
    assert resolve(text, losses, file=cfg).train.batch_size == 16  # a --config value counts as given
    # sampling: nucleus 0.925 for a corpus; the full distribution for the oracle (NLL_oracle) and a pretrained model
    assert (corpus.options.top_p, oracle.options.top_p, pretrained.options.top_p) == (0.925, 1.0, 1.0)
    assert resolve(text, losses, data="my.txt", flags={"top_p": 1.0}).options.top_p == 1.0
    # averaged MLE weights for a corpus only: the oracle and a pretrained model keep their measured recipes
    assert (corpus.options.mle_ema, oracle.options.mle_ema, pretrained.options.mle_ema) == (0.995, 0.0, 0.0)
    # early stopping after two checks without a better average on a corpus (docs/text.md: the same kept step as 4);
    # the oracle keeps the 4 it was measured with
    assert (corpus.options.mle_patience, oracle.options.mle_patience, pretrained.options.mle_patience) == (2, 4, 0)


def test_real_batches_are_token_ids_and_penalties_still_work(tmp_path, invoke, corpus):
    data = domain().load_data(str(corpus), domain().Options(tokenizer="bpe", vocab_size=300, max_len=12),
                              cache_dir=tmp_path)
    assert data.transform is None and data.train[0][0].dtype == torch.long  # no one-hot batches
    out = tmp_path / "gp"
    summary = run_text(invoke, out, corpus, "--loss", "wgan-gp")  # the engine one-hots the reals for the GP
    assert summary["status"] == "completed"
    penalties = [r["penalty"] for r in read_metrics(out) if "penalty" in r]
    assert penalties and all(math.isfinite(p) and p > 0 for p in penalties)


def test_word_tokenizer_keeps_spacing_and_never_samples_unknown_words(tmp_path):
    tok = tdata.train_tokenizer(SENTENCES, "word", 30)  # too small for the corpus: many words are <unk>
    text = 'The cat sees "the ball." My friend\'s car!'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    unk = tok.get_vocab()[tdata.UNK]
    assert unk in ids
    full = tdata.train_tokenizer([*SENTENCES, text], "word", 1000)
    assert tdata.decode(full, torch.tensor([full(text, add_special_tokens=False)["input_ids"]]), None) == [text]
    lm = build_lm(LMConfig(vocab_size=len(tok), seq_len=10, n_layer=1, n_embd=16, n_head=2,
                           bos_id=tok.bos_token_id, eos_id=tok.eos_token_id))
    G = TextGenerator(lm, 10, tok.bos_token_id, tok.eos_token_id, suppress=[unk])
    with torch.no_grad():
        G.lm.lm_head.weight.zero_()  # uniform next-token distribution: about 7 of 200 draws would be <unk>
    drawn = G.sample(20, generator=torch.Generator().manual_seed(0))
    assert len(set(drawn.flatten().tolist())) > 10 and unk not in drawn.flatten().tolist()
    x = torch.full((2, 10), tok.eos_token_id)
    x[:, 0] = unk
    assert torch.isfinite(G.token_log_probs(x)[0]).all()  # held-out <unk> is scored, not impossible


# -- end to end ----------------------------------------------------------------------------------------
def run_text(invoke, out, data, *extra):
    result = invoke("run", "text", "--data", data, "--out", out, *TINY, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("estimator, extra", [("gumbel", []), ("reinforce", ["--mle-mix", "0.5"]),
                                               ("reinforce", ["--rollouts", "2"])])
def test_tiny_run_end_to_end(tmp_path, invoke, corpus, estimator, extra):
    out = tmp_path / "run"
    summary = run_text(invoke, out, corpus, "--estimator", estimator, *extra)
    assert summary["status"] == "completed" and summary["steps"] == 3 and summary["loss"] == "rsgan"
    metrics = summary["metrics"]
    for key in ("bleu2_method1", "self_bleu4_method1", "distinct2", "nll_gen", "ppl_word", "in_vocab",
                "ngram4_in_train", "real_ngram4_in_train", "copied", "real_self_bleu4_method1",
                "mle_t0.8_bleu2_method1", "mle_t1_nll_gen", "mle_t1_self_bleu2_method1", "mle_t1_in_vocab"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert ("gumbel_beta" in metrics) == (estimator == "gumbel")
    records = read_metrics(out)
    assert records[0]["phase"] == "mle" and records[0]["mle_nll_train"] > 0
    assert records[0]["mle_t1_nll_gen"] == pytest.approx(metrics["mle_t1_nll_gen"])  # the sweep reaches the summary
    steps = [r for r in records if "loss_g" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(math.isfinite(r["loss_g"]) for r in steps)
    lines = (out / "samples" / "final.txt").read_text(encoding="utf-8").split("\n")
    assert len(lines) == 101 and lines[-1] == ""  # the snapshot: 100 samples, one per line
    assert (out / "model" / "tokenizer.json").is_file() and (out / "model" / "model.safetensors").is_file()
    state = load_state(out / "checkpoints" / "step-00000003")["domain_state"]  # what sampling restores
    assert state["kind"] == "text" and "json" in state["tokenizer"]
    assert state["mle_sweep"]["mle_t1_nll_gen"] == pytest.approx(metrics["mle_t1_nll_gen"])
    if estimator == "gumbel":
        check_export_and_sample(tmp_path, invoke, out)


def check_export_and_sample(tmp_path, invoke, out):
    """The exported model loads with plain transformers; genkit sample -n 5 writes 5 lines, reproducibly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.decode(tok(SENTENCES[0])["input_ids"]) == SENTENCES[0]
    weights = load_weights(out / "checkpoints" / "step-00000003" / "generator.safetensors")
    state = lm.state_dict()
    assert all(torch.equal(state[k[len("lm."):]], v) for k, v in weights.items() if k.startswith("lm."))
    ids = lm.generate(input_ids=torch.tensor([[tok.bos_token_id]]), max_new_tokens=5, do_sample=False)
    assert ids.shape[1] >= 2

    result = invoke("sample", out, "-n", "5", "--out", tmp_path / "five")
    assert result.exit_code == 0, result.stderr
    files = [line for line in result.stdout.splitlines() if line]
    assert files == [str(tmp_path / "five" / "samples.txt")]
    lines = (tmp_path / "five" / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and any(lines)
    invoke("sample", out, "-n", "5", "--out", tmp_path / "again")
    assert (tmp_path / "again" / "samples.txt").read_text() == (tmp_path / "five" / "samples.txt").read_text()


def test_resume_is_exact(tmp_path, invoke, corpus):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_text(invoke, straight, corpus, "--steps", "4")
    run_text(invoke, split, corpus, "--steps", "2")
    result = invoke("run", "text", "--resume", split, "--steps", "4", "--quiet")
    assert result.exit_code == 0, result.stderr
    a = load_weights(straight / "checkpoints" / "step-00000004" / "generator.safetensors")
    b = load_weights(split / "checkpoints" / "step-00000004" / "generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sum(1 for r in read_metrics(split) if r.get("phase") == "mle") == 1  # pre-trained only once
    # the MLE sweep measured before the interruption is still reported at the end (it is the run's state)
    ends = [json.loads((d / "summary.json").read_text())["metrics"] for d in (straight, split)]
    assert ends[0]["mle_t1_nll_gen"] == pytest.approx(ends[1]["mle_t1_nll_gen"])


def test_runs_saved_before_the_untied_default_still_load_tied(tmp_path, invoke, corpus):
    """A config.toml written before tie_embeddings/init_std existed means GPT-2's tied layout."""
    import tomllib

    import tomli_w

    out = tmp_path / "run"
    run_text(invoke, out, corpus, "--tie-embeddings", "--steps", "1")
    raw = tomllib.loads((out / "config.toml").read_text())
    del raw["text"]["tie_embeddings"], raw["text"]["init_std"]  # as the older genkit wrote it
    (out / "config.toml").write_text(tomli_w.dumps(raw))
    result = invoke("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    assert len((tmp_path / "s" / "samples.txt").read_text(encoding="utf-8").splitlines()) == 2


def test_pretrained_model_folder(tmp_path, invoke, corpus):
    from transformers import AutoModelForCausalLM

    tok = tdata.train_tokenizer(SENTENCES, "bpe", 300)
    torch.manual_seed(0)
    lm = build_lm(LMConfig(vocab_size=len(tok), seq_len=16, n_layer=1, n_embd=32, n_head=2,
                           bos_id=tok.bos_token_id, eos_id=tok.eos_token_id))
    src = tmp_path / "pretrained"
    lm.save_pretrained(src)
    tok.save_pretrained(src)
    out = tmp_path / "run"
    summary = run_text(invoke, out, corpus, "--model", src, "--pretrain-steps", "0")
    assert summary["status"] == "completed" and "mle_t1_nll_gen" not in summary["metrics"]
    tuned = AutoModelForCausalLM.from_pretrained(out / "model")
    assert tuned.config.n_embd == 32
    shutil.rmtree(src)  # the run alone is enough to sample: config and tokenizer are part of its state
    result = invoke("sample", out, "-n", "3", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    assert len((tmp_path / "s" / "samples.txt").read_text(encoding="utf-8").splitlines()) == 3
    bad = invoke("run", "text", "--data", corpus, "--model", tmp_path / "nowhere", "--out", tmp_path / "r2", *TINY)
    assert bad.exit_code == 1 and "--model" in bad.stderr and "no such folder" in bad.stderr


def test_plugin_import_does_not_import_torch():
    code = "import sys, genkit_text; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_nll_samples_auto_scores_a_corpus_first_2000_held_out_sentences_and_all_of_the_oracle():
    """--nll-samples auto (recorded in config.toml when resolved): a corpus's first 2,000 held-out sentences, all of
    the oracle's (SeqGAN's benchmark), 256 for a pretrained --model, never more than there are; a flag wins."""
    from types import SimpleNamespace

    dom = domain()

    def resolved(kind, n, **options):
        data = SimpleNamespace(extra={"test_ids": list(range(n))}, state={"kind": kind})
        return dom.resolve_options(dom.Options(**options), data).nll_samples

    assert resolved("text", 9868) == 2000
    assert resolved("text", 221) == 221
    assert resolved("oracle", 9868) == 9868
    assert resolved("text", 9868, model="smollm2") == 256
    assert resolved("text", 9868, nll_samples=5000) == 5000
