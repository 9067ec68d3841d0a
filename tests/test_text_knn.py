"""The text domain's kNN-LM memory (plugins/genkit_text/knn.py): the mixture, its choice, its datastore, and
``--knn`` through a run, ``genkit sample`` and a run saved before it."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w
import torch
from test_text import SENTENCES, TINY

from genkit.checkpoint import load_state
from genkit_text.knn import Memory, StateLink, choose, hidden_states, memory_of, mixture_nll
from genkit_text.metrics import model_nll
from genkit_text.model import LMConfig, TextGenerator, build_lm


def generator(vocab=50, seq_len=8, eos=1, bos=0, seed=0):
    torch.manual_seed(seed)
    lm = build_lm(LMConfig(vocab_size=vocab, seq_len=seq_len, n_layer=1, n_embd=16, n_head=2, dropout=0.0,
                           bos_id=bos, eos_id=eos))
    return TextGenerator(lm, seq_len, bos, eos).eval()


def sequences(n, seq_len=8, tokens=range(2, 10), seed=1):
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(list(tokens))
    ids = pool[torch.randint(len(pool), (n, seq_len), generator=g)]
    ends = torch.randint(3, seq_len, (n,), generator=g)
    for row, end in zip(ids, ends):
        row[end:] = 1  # EOS, then EOS padding
    return ids


def test_the_mixture_is_lambda_knn_plus_one_minus_lambda_lm():
    memory = Memory(torch.zeros(1, 1, dtype=torch.long), {"k": 2, "temperature": 2.0}, never=[])
    memory.keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    memory.values = torch.tensor([3, 4, 3])
    memory.key_norms = (memory.keys ** 2).sum(1)
    hidden, logits = torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 1.0, 2.0, 0.5, -1.0]])
    got = memory.mix(hidden, logits, 0.25).exp()
    # the two nearest keys (squared distances 0.25 and 0.25) weigh exp(-d / T) each: half to token 3, half to 4
    knn = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.5]])
    assert torch.allclose(got, 0.25 * knn + 0.75 * torch.softmax(logits, 1), atol=1e-6)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_each_query_gets_the_lambda_of_its_nearest_keys_group():
    """--knn-buckets: the choice's ``edges`` split queries by the squared distance to their nearest key; a choice
    without them (one lambda, as every run saved before) mixes as it always did."""
    memory = Memory(torch.zeros(1, 1, dtype=torch.long), {"k": 1, "temperature": 1.0, "lambda": 0.3}, never=[])
    memory.keys, memory.values = torch.tensor([[0.0, 0.0], [10.0, 0.0]]), torch.tensor([3, 4])
    memory.key_norms = (memory.keys ** 2).sum(1)
    hidden = torch.tensor([[0.5, 0.0], [5.0, 4.0], [10.0, 0.2]])  # nearest at 0.25, 41 and 0.04
    logits = torch.zeros(3, 5)
    assert torch.allclose(memory.mix(hidden, logits), memory.mix(hidden, logits, 0.3))
    memory.choice.update(edges=[1.0], lambdas=[0.8, 0.1])
    assert memory.lambdas(torch.tensor([0.25, 41.0, 0.04, 1.0])).squeeze(1).tolist() == pytest.approx([0.8, 0.1, 0.8, 0.8])
    got = memory.mix(hidden, logits).exp()
    uniform = torch.full((5,), 0.2)
    assert torch.allclose(got[0], 0.8 * torch.tensor([0, 0, 0, 1.0, 0]) + 0.2 * uniform, atol=1e-6)
    assert torch.allclose(got[1], 0.1 * torch.tensor([0, 0, 0, 1.0, 0]) + 0.9 * uniform, atol=1e-6)
    assert torch.allclose(got[2], 0.8 * torch.tensor([0, 0, 0, 0, 1.0]) + 0.2 * uniform, atol=1e-6)


def test_choose_with_groups_is_at_least_as_good_as_one_lambda_and_is_what_sampling_mixes():
    G, ids = generator(), sequences(64)
    held_out = torch.cat([ids[:8], sequences(8, tokens=range(20, 30), seed=5)])  # half the memory holds, half not
    one = choose(G, ids, held_out, never=[])
    four = choose(G, ids, held_out, never=[], buckets=4)
    assert "edges" not in one and len(four["edges"]) == 3 and four["edges"] == sorted(four["edges"])
    assert len(four["lambdas"]) == 4 and four["lambdas"][0] > four["lambdas"][-1]  # the nearest trust the memory more
    assert four["nll_knn"] <= one["nll_knn"] + 1e-4 and four["nll_lm"] == one["nll_lm"]
    G.knn_state = StateLink({"knn": four, "knn_ids": ids})
    mixture = memory_of(G)
    assert mixture[1] is None and mixture[0].choice == four
    assert mixture_nll(G, mixture, held_out) == pytest.approx(four["nll_knn"], rel=1e-5)
    assert choose(G, ids, held_out, never=[], lam=0.1, buckets=4)["lambda"] == 0.1  # a lambda given: one group


def test_choose_finds_a_memory_of_text_it_has_seen_and_reports_the_lms_own_nll():
    G, ids = generator(), sequences(64)
    choice = choose(G, ids, ids[:16], never=[])
    assert choice["nll_lm"] == pytest.approx(model_nll(G, ids[:16]), rel=1e-4)  # the LM alone, as early stopping
    # an untrained LM against a memory holding the very sentences: the memory takes most of the mass
    assert choice["lambda"] >= 0.5 and choice["nll_knn"] < choice["nll_lm"] - 0.5
    assert choice["keys"] == float((~(ids[:, :-1] == 1)).sum() + len(ids))  # every counted position: EOS included
    fixed = choose(G, ids, ids[:16], never=[], lam=0.1)
    assert fixed["lambda"] == 0.1 and choice["nll_knn"] <= fixed["nll_knn"] < choice["nll_lm"]


def test_a_memory_of_weight_one_draws_only_what_follows_in_the_training_text():
    G, ids = generator(), sequences(64, tokens=range(2, 10))
    torch.manual_seed(0)
    alone = G.sample(200)
    assert bool((alone >= 10).any())  # an untrained LM over 50 tokens: the test can fail
    memory = Memory(ids, {"k": 1, "temperature": 1.0}, never=[])
    with_memory = G.sample(200, memory=(memory, 1.0))
    assert set(with_memory.unique().tolist()) <= set(range(1, 10))
    with pytest.raises(ValueError, match="plain sampling"):
        G.sample(4, gumbel=True, memory=(memory, 1.0))


def test_the_datastore_is_rebuilt_when_the_weights_change_and_only_then():
    G, ids = generator(), sequences(32)
    memory = Memory(ids, {"k": 4, "temperature": 5.0}, never=[5])
    memory.refresh(G)
    keys = memory.keys
    assert not bool((memory.values == 5).any())  # a token never sampled is not a value
    expected, values = hidden_states(G, ids)
    assert torch.allclose(keys, expected[values != 5])
    memory.refresh(G)
    assert memory.keys is keys  # the same weights: nothing recomputed
    with torch.no_grad():
        G.lm.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    memory.refresh(G)
    assert memory.keys is not keys and not torch.allclose(memory.keys, keys)
    assert torch.allclose(memory.keys, hidden_states(G, ids)[0][values != 5], atol=1e-6)


def test_mixture_nll_is_the_mean_negative_log_of_the_mixture_at_each_counted_position():
    G, ids = generator(), sequences(32)
    memory = Memory(ids, {"k": 8, "temperature": 5.0}, never=[])
    memory.refresh(G)
    held_out = sequences(8, seed=7)
    queries, targets = hidden_states(G, held_out)
    logits = G.lm.lm_head(queries).float()
    logits[:, G.banned] = -1e9
    expected = -memory.mix(queries, logits, 0.3).gather(1, targets[:, None]).mean().item()
    assert mixture_nll(G, (memory, 0.3), held_out) == pytest.approx(expected, rel=1e-5)


def run(invoke, out, corpus, *extra):
    result = invoke("run", "text", "--data", corpus, "--out", out, *TINY, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "summary.json").read_text())["metrics"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def test_a_corpus_run_samples_through_its_memory_and_genkit_sample_needs_no_data(tmp_path, invoke, corpus):
    out = tmp_path / "run"
    metrics = run(invoke, out, corpus)  # --knn is a corpus recipe's default
    state = load_state(out / "checkpoints" / "step-00000003")["domain_state"]
    choice = state["knn"]
    assert choice["lambda"] > 0 and metrics["knn_lambda"] == choice["lambda"]
    assert len(choice["lambdas"]) == 4 and len(choice["edges"]) == 3  # --knn-buckets 4, the default
    assert state["knn_ids"].shape[0] == 108 and state["knn_ids"].dtype == torch.int32  # 120 sentences, 10 % held out
    assert metrics["nll_gen_knn"] < metrics["nll_gen"]  # on held-out text the mixture predicts better than the LM
    assert metrics["ppl_word_knn"] < metrics["ppl_word"]
    phase = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert phase["phase"] == "mle" and phase["knn_lambda"] == choice["lambda"]

    corpus.unlink()  # genkit sample reads the memory's sentences from the run, not from --data
    assert invoke("sample", out, "-n", "40", "--out", tmp_path / "a").exit_code == 0
    assert invoke("sample", out, "-n", "40", "--out", tmp_path / "b").exit_code == 0
    a = (tmp_path / "a" / "samples.txt").read_text(encoding="utf-8")
    assert a == (tmp_path / "b" / "samples.txt").read_text(encoding="utf-8")  # reproducible
    raw = tomllib.loads((out / "config.toml").read_text())
    raw["text"]["knn"] = False  # the LM alone, as the exported model samples
    (out / "config.toml").write_text(tomli_w.dumps(raw))
    assert invoke("sample", out, "-n", "40", "--out", tmp_path / "lm").exit_code == 0
    assert (tmp_path / "lm" / "samples.txt").read_text(encoding="utf-8") != a


def test_no_knn_and_runs_saved_before_it_sample_the_lm_alone(tmp_path, invoke, corpus):
    out = tmp_path / "run"
    metrics = run(invoke, out, corpus, "--no-knn")
    assert "nll_gen_knn" not in metrics and "knn_lambda" not in metrics
    state = load_state(out / "checkpoints" / "step-00000003")["domain_state"]
    assert "knn" not in state and "knn_ids" not in state
    assert invoke("sample", out, "-n", "20", "--out", tmp_path / "now").exit_code == 0
    raw = tomllib.loads((out / "config.toml").read_text())
    del raw["text"]["knn"]  # as genkit before --knn wrote it
    (out / "config.toml").write_text(tomli_w.dumps(raw))
    assert invoke("sample", out, "-n", "20", "--out", tmp_path / "before").exit_code == 0
    assert (tmp_path / "before" / "samples.txt").read_text() == (tmp_path / "now" / "samples.txt").read_text()
    G = generator()
    assert memory_of(G) is None  # a generator built outside a run has no memory
