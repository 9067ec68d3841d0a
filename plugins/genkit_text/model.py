"""The text domain's networks: a transformers causal LM as the generator, a CNN discriminator over token
embeddings, and the two ways of getting a gradient through discrete samples.

Papers:
- SeqGAN: Yu, Zhang, Wang & Yu, "SeqGAN: Sequence Generative Adversarial Nets with Policy Gradient",
  AAAI 2017. The generator is a policy; the discriminator's score of a finished sequence is its reward
  (REINFORCE, ``estimator = "reinforce"``).
- RelGAN: Nie, Narodytska & Patel, "RelGAN: Relational Generative Adversarial Networks for Text
  Generation", ICLR 2019. The generator's outputs are Gumbel-softmax vectors ``softmax(beta (o_t + g_t))``
  fed to the discriminator through its embedding matrix; the inverse temperature ``beta`` grows from 1 to
  ``beta_max`` as ``beta_max ** (step / N)``; the loss is the relativistic standard GAN loss
  (``estimator = "gumbel"``, ``--loss rsgan``).

What this file follows: RelGAN's hard feedback (the sampled token ``argmax(o_t + g_t)`` is the next input;
the gradient reaches the generator through each step's logits ``o_t``), RelGAN's CNN discriminator over
embedded one-hot vectors (filter widths 2 to 5, max-pooling over time, a highway layer, dropout),
SeqGAN's start token, sequence-level reward and MLE pre-training.

Where it departs:
- The generator is any ``AutoModelForCausalLM`` (a small GPT-2 from ``GPT2Config`` by default), not an
  LSTM or RelGAN's relational memory.
- The hard-feedback Gumbel path samples with a key/value cache, then recomputes all logits in one
  teacher-forced pass with gradients; with the same Gumbel noise this is exactly RelGAN's computation, but
  costs one parallel pass instead of a sequential one. ``gumbel_feed = "soft"`` feeds the soft one-hot
  vectors times the embedding matrix back through ``inputs_embeds`` instead (gradients then also flow
  through the prefix).
- REINFORCE by default uses the discriminator's probability of "real" for the whole sequence as the reward
  of every token, with the batch mean as baseline. ``rollouts = N`` turns on SeqGAN's Monte-Carlo search
  (per-token values, N completions of every prefix, the per-position batch mean as baseline); it costs
  about N x T/2 generator passes per step, and it rolls out with the current generator rather than
  SeqGAN's delayed copy. ``mle_mix`` adds the MLE loss on real data.
- Adversarial updates run the LM without dropout, so that sampled tokens and recomputed logits agree;
  dropout is used in MLE pre-training only.
- Text has variable length: every sequence ends with EOS and is padded with EOS to a fixed length. After
  the first EOS the generator's output is forced to EOS (as ``generate()`` pads), so those positions carry
  no gradient and no likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = -1e9
_CACHE_ARG: dict[type, str] = {}


@dataclass
class LMConfig:
    """The from-scratch generator: a GPT-2 (Radford et al. 2019) small enough to train on 2 CPU cores."""

    vocab_size: int = 5001  # the tokenizer's size (the oracle's 5,000 tokens + <bos>)
    seq_len: int = 20  # tokens per sequence, EOS and padding included (SeqGAN's oracle: 20)
    n_layer: int = 1  # one block: the oracle's data is mostly local structure, and it is fast on a CPU
    n_embd: int = 32  # width, the oracle's own; the 5,001 x 32 embedding and output layer dominate the size
    n_head: int = 2
    dropout: float = 0.1  # MLE pre-training only; 10,000 sequences overfit without it
    tie_embeddings: bool = False  # GPT-2 ties them; the oracle's input and output embeddings are independent
    init_std: float = 0.1  # std of the initial token/position embeddings and output layer (GPT-2: 0.02)
    bos_id: int = 5000
    eos_id: int | None = None  # None: fixed-length data without EOS (the oracle)


def build_lm(cfg: LMConfig):
    """A fresh GPT-2 language model (``GPT2LMHeadModel``).

    Two departures from GPT-2's defaults, both measured on the oracle benchmark (docs/text.md): the output
    layer is not tied to the input embedding, and the embeddings and output layer start at ``init_std``
    (0.1) instead of 0.02. With a 1-block width-32 model they take MLE from NLL_oracle 9.53 to about 8.95-8.99
    in the same 1,500 steps.
    """
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=cfg.vocab_size, n_positions=max(cfg.seq_len + 1, 8), n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                        attn_pdrop=cfg.dropout, bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id,
                        pad_token_id=cfg.eos_id, tie_word_embeddings=cfg.tie_embeddings)
    lm = GPT2LMHeadModel(config)
    with torch.no_grad():
        for layer in (lm.transformer.wte, lm.transformer.wpe, lm.lm_head):
            layer.weight.normal_(0.0, cfg.init_std)
    lm.generation_config = GenerationConfig(bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id,
                                            pad_token_id=cfg.eos_id)
    return lm


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of ``softmax(logits)`` by inverting the CDF ([B, V] -> [B]).

    Several times faster than ``torch.multinomial`` for wide rows on a CPU, and as deterministic. The one
    categorical sampler of the text domain (the generator and the SeqGAN oracle both use it).
    """
    cdf = torch.softmax(logits.float(), dim=-1).cumsum_(dim=-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(1)


def warp_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                min_p: float = 0.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p), then min-p filtering: the order and meaning of
    ``generate()``'s. Min-p (Nguyen et al., "Turning Up the Heat: Min-p Sampling", ICLR 2025) drops the tokens whose
    probability is below ``min_p`` times the most likely token's."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        logits = _nucleus(logits, top_p)
    if min_p > 0.0:
        logp = logits.float().log_softmax(dim=-1)
        floor = logp.amax(dim=-1, keepdim=True) + math.log(min_p)
        logits = logits.masked_fill(logp < floor, NEG_INF)  # the most likely token is always kept
    return logits


def _nucleus(logits: torch.Tensor, top_p: float, k: int = 1024) -> torch.Tensor:
    """Top-p filtering of [..., V] logits: keep the most likely tokens whose more likely ones hold at most ``top_p``.

    A row's nucleus lies within its ``k`` most likely tokens whenever those hold more than ``top_p``: then ``topk``
    decides it, and the other rows are sorted in full. The same tokens either way (tested). On the docstrings
    default (8,000 words, top-p 0.9: a median nucleus of 199 tokens) this filtered a sampling run's logits 3.8 times
    faster than sorting every row, where sorting was half of the time of drawing 500 sentences."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    rows = torch.arange(flat.shape[0], device=flat.device)
    if V > 4 * k:
        top, idx = flat.topk(k, dim=-1)  # sorted, most likely first
        probs = (top - flat.float().logsumexp(dim=-1, keepdim=True)).exp()
        mass = probs.cumsum(dim=-1)
        fits = mass[:, -1] > top_p
        if bool(fits.any()):
            keep = (mass - probs)[fits] <= top_p  # the mass of strictly more likely tokens
            keep[:, 0] = True  # always keep the most likely token
            out = torch.full_like(flat, NEG_INF)
            out[rows[fits].unsqueeze(1), idx[fits]] = torch.where(keep, top[fits], NEG_INF)
            if bool(fits.all()):
                return out.view_as(logits)
            rest = ~fits
            out[rest] = _nucleus_sorted(flat[rest], top_p)
            return out.view_as(logits)
    return _nucleus_sorted(flat, top_p).view_as(logits)


def _nucleus_sorted(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass of strictly more likely tokens
    drop_sorted = before > top_p
    drop_sorted[..., 0] = False  # always keep the most likely token
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def gumbel_noise(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    return gumbel_noise_(torch.empty(shape, device=device, dtype=dtype), generator)


def gumbel_noise_(out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``, written into ``out`` (no temporaries: it is [B, V] per step)."""
    return out.uniform_(generator=generator).clamp_(1e-10, 1.0 - 1e-7).log_().neg_().log_().neg_()


def after_eos(tokens: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """True at the positions strictly after each row's first EOS (forced padding)."""
    if eos_id is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    is_eos = (tokens == eos_id).long()
    return (is_eos.cumsum(dim=1) - is_eos) > 0


class CachedGPT2:
    """Incremental decoding of a plain ``GPT2LMHeadModel`` in eval mode, nanoGPT-style: the model's own weights,
    key/value buffers allocated once for the whole sequence, and only the rows still running computed.

    The same arithmetic as the model's ``forward`` with a key/value cache (the tests compare them), without its
    per-call machinery: on 2 CPU cores a step of 64 rows took 10 ms through transformers, most of it overhead.
    ``of`` returns None for anything else (a pretrained or LoRA model, dropout on, another attention variant),
    which then samples through ``forward``; training mode is fine when every dropout is 0.
    """

    def __init__(self, lm, batch: int, length: int):
        self.lm, self.batch, self.length = lm, batch, length
        cfg = lm.config
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.t = 0

    @classmethod
    def of(cls, lm, batch: int, length: int) -> CachedGPT2 | None:
        from transformers import GPT2LMHeadModel

        if type(lm) is not GPT2LMHeadModel:
            return None
        cfg = lm.config
        if lm.training and max(cfg.embd_pdrop, cfg.attn_pdrop, cfg.resid_pdrop) > 0:
            return None
        if (not cfg.scale_attn_weights or cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn
                or cfg.add_cross_attention or length > cfg.n_positions):
            return None
        return cls(lm, batch, length)

    def logits(self, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Feed ``ids`` [len(rows), n] at the next n positions of the batch rows ``rows`` (ascending; every step
        feeds a subset of the previous step's rows); the next-token logits after the last one [len(rows), V]."""
        return self.lm.lm_head(self.hidden(ids, rows)).float()

    def hidden(self, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """As ``logits``, the last hidden state (after the final layer norm) instead [len(rows), d]."""
        tr, t = self.lm.transformer, self.t
        n = ids.shape[1]
        if n > 1 and t:
            raise ValueError("CachedGPT2: several positions at once only in the first call")
        every = len(rows) == self.batch
        x = tr.wte(ids) + tr.wpe.weight[t:t + n]
        B, H, D = len(rows), self.n_head, self.head_dim
        for i, block in enumerate(tr.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).view(B, n, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, n, D]
            if i == len(self.k):  # the first call: buffers in the arithmetic's dtype (autocast included)
                self.k.append(torch.zeros(self.batch, H, self.length, D, dtype=k.dtype, device=k.device))
                self.v.append(torch.zeros_like(self.k[-1]))
            if every:
                self.k[i][:, :, t:t + n] = k
                self.v[i][:, :, t:t + n] = v
                keys, values = self.k[i][:, :, :t + n], self.v[i][:, :, :t + n]
            else:
                self.k[i][rows, :, t:t + n] = k
                self.v[i][rows, :, t:t + n] = v
                keys, values = self.k[i][rows, :, :t + n], self.v[i][rows, :, :t + n]
            # several new positions come only with the first call (<bos> + a prefix): causal among themselves
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=n > 1,
                                               scale=getattr(attn, "scaling", D ** -0.5))
            x = x + attn.c_proj(y.transpose(1, 2).reshape(B, n, H * D))
            x = x + block.mlp(block.ln_2(x))
        self.t += n
        return tr.ln_f(x[:, -1])


class TextGenerator(nn.Module):
    """Wraps a causal LM (``self.lm``) with the sequence format the domain uses: ``<bos>`` + ``seq_len`` tokens.

    ``self.lm`` is a plain transformers model: ``lm.save_pretrained(DIR)`` is the exported generator.
    """

    def __init__(self, lm: nn.Module, seq_len: int, bos_id: int, eos_id: int | None, suppress: Sequence[int] = ()):
        super().__init__()
        self.lm = lm
        self.seq_len, self.bos_id, self.eos_id = seq_len, bos_id, eos_id
        self.vocab_size = int(lm.get_output_embeddings().weight.shape[0])
        # <bos> is never generated (unless it is also the EOS, as in OpenAI's GPT-2 tokenizer).
        self.banned = [bos_id] if bos_id != eos_id else []
        # Tokens held-out text may contain but samples never do (a word-level tokenizer's ``<unk>``): masked
        # when sampling (and in the Gumbel path, which recomputes the sampling distribution), scored otherwise.
        self.suppressed = self.banned + [t for t in suppress if t not in (bos_id, eos_id)]

    # -- teacher forcing ----------------------------------------------------------------------------
    def _inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        return torch.cat([bos, tokens[:, :-1]], dim=1)

    def _mask(self, logits: torch.Tensor, sampling: bool = True) -> torch.Tensor:
        masked = self.suppressed if sampling else self.banned
        if masked:
            logits = logits.clone()
            logits[..., masked] = NEG_INF
        return logits

    def logits(self, tokens: torch.Tensor, sampling: bool = False) -> torch.Tensor:
        """Next-token logits at every position of ``tokens`` [B, T] given ``<bos>`` and the prefix: [B, T, V]
        (with ``sampling``, the suppressed tokens masked as when sampling)."""
        inputs = self._inputs(tokens)  # EOS padding is attended to on purpose: it is masked out of every loss
        return self._mask(self.lm(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.float(), sampling)

    def token_log_probs(self, tokens: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each token [B, T] and the mask of positions that count (up to the first EOS)."""
        logits = self.logits(tokens)
        if temperature != 1.0:
            logits = logits / temperature
        logp = logits.log_softmax(dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return logp, ~after_eos(tokens, self.eos_id)

    def _counted_logits(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor | None:
        """Next-token logits [N, V] at only the positions that count (up to and including each row's first EOS),
        in row-major order (or at the indices ``where`` of ``tokens.flatten()``); None unless ``self.lm`` is a plain
        GPT-2, whose output layer is a bare linear map of the last hidden states. The output layer dominates a step
        on a large vocabulary, and a corpus's sentences
        are padded to ``seq_len`` (fortunes + docstrings: half of the positions), so this is the same loss in
        about three quarters of the time (an MLE step 0.26 -> 0.20 s on 2 cores; docs/text.md)."""
        from transformers import GPT2LMHeadModel

        if type(self.lm) is not GPT2LMHeadModel:
            return None
        inputs = self._inputs(tokens)
        hidden = self.lm.transformer(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
        hidden = hidden[~after_eos(tokens, self.eos_id)] if where is None else hidden.flatten(0, 1)[where]
        return self.lm.lm_head(hidden).float()

    def mle_loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per token (the positions up to and including the first EOS).

        The same value as ``token_log_probs`` gives, computed by one fused cross-entropy with the banned tokens
        masked in place: no copies of the [B, T, V] logits, which dominate a step on a large vocabulary (and, for
        a from-scratch GPT-2, no logits at the padding: ``_counted_logits``)."""
        logits = self._counted_logits(tokens)
        if logits is not None:
            if self.banned:
                logits[:, self.banned] = NEG_INF  # in place: the output layer's backward does not need its output
            return F.cross_entropy(logits, tokens[~after_eos(tokens, self.eos_id)])
        inputs = self._inputs(tokens)
        logits = self.lm(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.float()
        if self.banned:
            logits[..., self.banned] = NEG_INF  # in place: the output layer's backward does not need its output
        targets = tokens.masked_fill(after_eos(tokens, self.eos_id), -100)  # -100: ignored (cross_entropy's default)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def nll_sum(self, tokens: torch.Tensor, temperature: float = 1.0) -> tuple[float, int]:
        """The summed negative log-likelihood of ``tokens`` [B, T] at ``temperature`` and the number of positions
        it sums over (those of ``token_log_probs``'s mask), without gradients."""
        with torch.no_grad():
            logits = self._counted_logits(tokens)
            if logits is None:
                logp, mask = self.token_log_probs(tokens, temperature)
                return -float((logp * mask).sum()), int(mask.sum())
            if self.banned:
                logits[:, self.banned] = NEG_INF
            if temperature != 1.0:
                logits = logits / temperature
            targets = tokens[~after_eos(tokens, self.eos_id)]
            return float(F.cross_entropy(logits, targets, reduction="sum")), int(targets.numel())

    # -- sampling -----------------------------------------------------------------------------------
    def _step_logits(self, inputs_ids=None, inputs_embeds=None, cache=None, seen: int = 0, hidden: bool = False):
        """Logits after the last input, and the cache; ``seen`` counts the tokens so far, these included. With
        ``hidden``: ``(logits, hidden state, cache)``, the last layer's output (after its final norm) [B, d]."""
        # transformers 5 names the key/value cache ``cache``; 4.x named it ``past_key_values``.
        if _CACHE_ARG.get(type(self.lm)) is None:
            import inspect

            base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm  # under peft's LoRA
            _CACHE_ARG[type(self.lm)] = "cache" if "cache" in inspect.signature(base.forward).parameters \
                else "past_key_values"
        name = _CACHE_ARG[type(self.lm)]
        first = inputs_ids if inputs_ids is not None else inputs_embeds
        mask = torch.ones(first.shape[0], seen, dtype=torch.long, device=first.device) if seen else None
        out = self.lm(input_ids=inputs_ids, inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=True,
                      output_hidden_states=hidden, **{name: cache})
        if hidden:
            return self._mask(out.logits[:, -1].float()), out.hidden_states[-1][:, -1], out[name]
        return self._mask(out.logits[:, -1].float()), out[name]

    def _force_eos(self, logits: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        if self.eos_id is None or not bool(done.any()):
            return logits
        forced = torch.full_like(logits, NEG_INF)
        forced[:, self.eos_id] = 0.0
        return torch.where(done.unsqueeze(1), forced, logits)

    @torch.no_grad()
    def sample(self, n: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
               generator: torch.Generator | None = None, gumbel: bool = False, batch_size: int = 1000,
               prefix: torch.Tensor | None = None, memory=None):
        """Ancestral sampling with a key/value cache: token ids [n, seq_len].

        With ``gumbel=True`` tokens are ``argmax(o_t + g_t)`` (the Gumbel-max trick, same distribution) and
        ``(tokens, logits, noise)`` [n, seq_len, V] are returned for the Gumbel-softmax estimator (after a row's
        first EOS: the forced logits, 0 at EOS and -1e9 elsewhere, and no noise). With ``prefix`` [n, t]
        (t < seq_len) each row continues its prefix (SeqGAN's Monte-Carlo rollouts); the prefix is returned
        as the first t tokens. ``memory`` ``(Memory, lambda)``: each token from the kNN-LM mixture (``knn.py``; lambda
        None: the memory's choice for each row) instead of the LM alone, then warped as the LM's would be (not with
        ``gumbel`` or ``prefix``).
        """
        if memory is not None and (gumbel or prefix is not None):
            raise ValueError("sample: a memory applies to plain sampling only")
        if memory is not None:
            memory[0].refresh(self)
        all_tokens = []
        for start in range(0, n, batch_size):
            head = prefix[start:start + batch_size] if prefix is not None else None
            b = min(batch_size, n - start)
            if not gumbel:
                warp = lambda logits: warp_logits(logits, temperature, top_k, top_p, min_p)  # noqa: E731
                all_tokens.append(self._draw(b, generator, head, warp=warp, memory=memory))
                continue
            tokens, logits, noise, where = self._draw(b, generator, head, gumbel=True)
            full = torch.full((tokens.numel(), self.vocab_size), NEG_INF, device=tokens.device)
            if self.eos_id is not None:
                full[:, self.eos_id] = 0.0
            full[where] = logits
            all_noise = torch.zeros_like(full)
            all_noise[where] = noise
            shape = (*tokens.shape, self.vocab_size)
            all_tokens.append((tokens, full.view(shape), all_noise.view(shape)))
        if gumbel:
            return tuple(torch.cat(parts) for parts in zip(*all_tokens))
        return torch.cat(all_tokens)

    @torch.no_grad()
    def _draw(self, b: int, generator: torch.Generator | None, head: torch.Tensor | None = None, *,
              gumbel: bool = False, warp=None, memory=None):
        """``b`` rows of ``<bos>`` [+ ``head``] + sampled tokens, ``seq_len`` in all, EOS after each row's first EOS.

        Only the rows still running get an output layer, noise and a draw at each step (a corpus's sentences end
        early: about half of its positions are padding). With ``gumbel``: ``(tokens, logits, noise, where)``: the
        logits and noise [N, V] at the N positions that count (``~after_eos(tokens)``), in the order they were drawn,
        and each one's index in ``tokens.flatten()`` [N]; otherwise the tokens."""
        device = self.lm.get_input_embeddings().weight.device
        T, eos = self.seq_len, self.eos_id
        tokens = torch.full((b, T), eos if eos is not None else 0, dtype=torch.long, device=device)
        x = torch.full((b, 1), self.bos_id, dtype=torch.long, device=device)
        running = torch.ones(b, dtype=torch.bool, device=device)
        t0 = 0
        if head is not None:
            head = head.to(device)
            t0 = head.shape[1]
            tokens[:, :t0] = head
            x = torch.cat([x, head], dim=1)  # one pass over <bos> + prefix fills the cache
            if eos is not None:
                running = ~(head == eos).any(dim=1)
        decoder = CachedGPT2.of(self.lm, b, T + 1)
        cache, seen, rows, n = None, 0, torch.arange(b, device=device), 0
        if gumbel:  # filled in step order; memory is only touched where written (the counted positions)
            logits_at = torch.empty(b * T, self.vocab_size, device=device)
            noise_at = torch.empty_like(logits_at)
            where = torch.empty(b * T, dtype=torch.long, device=device)
        for t in range(t0, T):
            live = rows[running] if eos is not None else rows
            if len(live) == 0:
                break
            seen += x.shape[1]
            if decoder is not None:
                h = decoder.hidden(x[live] if len(live) < b else x, live)
                logits = self.lm.lm_head(h).float()
                if self.suppressed:
                    logits[:, self.suppressed] = NEG_INF
            else:
                if memory is not None:
                    logits, h, cache = self._step_logits(inputs_ids=x, cache=cache, seen=seen, hidden=True)
                    h = h[live] if len(live) < b else h
                else:
                    logits, cache = self._step_logits(inputs_ids=x, cache=cache, seen=seen)
                logits = logits[live] if len(live) < b else logits
            if memory is not None:
                logits = memory[0].mix(h, logits, memory[1])
                if self.suppressed:
                    logits[:, self.suppressed] = NEG_INF
            if gumbel:
                k = len(live)
                logits_at[n:n + k] = logits
                g = gumbel_noise_(noise_at[n:n + k], generator)
                where[n:n + k] = live * T + t
                n += k
                tok = logits.add_(g).argmax(dim=-1)
            else:
                tok = sample_categorical(warp(logits), generator)
            tokens[live, t] = tok
            if eos is not None:
                running[live] = tok != eos
            x = tokens[:, t:t + 1]
        if not gumbel:
            return tokens
        return tokens, logits_at[:n], noise_at[:n], where[:n]

    @torch.no_grad()
    def generate(self, n: int, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 batch_size: int = 500) -> torch.Tensor:
        """``n`` samples with transformers' ``generate()`` (torch's global RNG): token ids [n, seq_len]."""
        device = self.lm.get_input_embeddings().weight.device
        pad = self.eos_id if self.eos_id is not None else 0
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            ids = torch.full((b, 1), self.bos_id, dtype=torch.long, device=device)
            with _no_padding_warning():
                seq = self.lm.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=temperature,
                    top_k=top_k, top_p=top_p, min_p=min_p or None, max_new_tokens=self.seq_len, eos_token_id=self.eos_id,
                    pad_token_id=pad, suppress_tokens=self.suppressed or None)[:, 1:]
            if seq.shape[1] < self.seq_len:  # every row ended early
                seq = F.pad(seq, (0, self.seq_len - seq.shape[1]), value=pad)
            out.append(seq)
        return torch.cat(out)

    def forward(self, z: torch.Tensor, cond=None) -> torch.Tensor:
        """``G(z)``: ``len(z)`` sampled sequences (token ids); ``z`` only counts the samples."""
        return self.sample(len(z))

    # -- the two estimators -------------------------------------------------------------------------
    def gumbel_softmax(self, n: int, beta: float, generator: torch.Generator | None, feed: str = "hard"):
        """RelGAN's generator output: soft one-hot vectors ``softmax(beta (o_t + g_t))`` [n, seq_len, V].

        Differentiable with respect to the LM's parameters when grad is enabled. After a row's first EOS the
        output is EOS's one-hot vector, as the forced logits make it: no output layer, noise or softmax there.
        """
        if feed == "soft":
            return self._gumbel_soft_feed(n, beta, generator)
        tokens, logits, noise, where = self._draw(n, generator, gumbel=True)
        if torch.is_grad_enabled():  # the same logits again, teacher-forced, with gradients
            logits = self._counted_logits(tokens, where)
            if logits is None:
                logits = self.logits(tokens).flatten(0, 1)[where]
            if self.suppressed:
                logits[:, self.suppressed] = NEG_INF  # in place: the output layer's backward does not need its output
            soft = torch.softmax(beta * (logits + noise), dim=-1)
        else:
            soft = torch.softmax(logits.add_(noise).mul_(beta), dim=-1)
        out = torch.zeros(tokens.numel(), self.vocab_size, device=soft.device, dtype=soft.dtype)
        if self.eos_id is not None:
            out[after_eos(tokens, self.eos_id).flatten(), self.eos_id] = 1.0
        return out.index_put((where,), soft).view(*tokens.shape, self.vocab_size)

    def _gumbel_soft_feed(self, n: int, beta: float, generator):
        emb = self.lm.get_input_embeddings().weight
        x = emb[self.bos_id].expand(n, 1, -1)
        done = torch.zeros(n, dtype=torch.bool, device=emb.device)
        cache, outs = None, []
        for _ in range(self.seq_len):
            logits, cache = self._step_logits(inputs_embeds=x, cache=cache)
            logits = self._force_eos(logits, done)
            y = torch.softmax(beta * (logits + gumbel_noise(logits.shape, generator, emb.device)), dim=-1)
            outs.append(y)
            if self.eos_id is not None:
                done = done | (y.argmax(dim=-1) == self.eos_id)
            x = (y @ emb).unsqueeze(1).to(emb.dtype)
        return torch.stack(outs, dim=1)


@contextmanager
def _no_padding_warning():
    """Silence transformers' "pass an attention_mask" warning around ``generate()``: it feeds finished rows
    their padding without a mask and warns, but every prompt here is one ``<bos>``, never padded."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def reinforce_loss(log_probs: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor,
                   baseline: torch.Tensor | float) -> torch.Tensor:
    """REINFORCE (Williams 1992): ``loss = -mean_i[sum_t (r_it - b_t) log p(y_it)] / T``.

    ``log_probs`` and ``mask`` are [B, T]. ``rewards`` is [B] (one reward per sequence, given to each of its
    tokens) or [B, T] (SeqGAN's per-token action values from Monte-Carlo rollouts); ``baseline`` is a number,
    or broadcasts against ``rewards``. Divided by the fixed length ``T``: the gradient per token.
    """
    advantage = (rewards - baseline).detach()
    if advantage.dim() == 1:
        advantage = advantage.unsqueeze(1)
    return -(advantage * log_probs * mask).sum(dim=1).mean() / log_probs.shape[1]


@torch.no_grad()
def rollout_rewards(generator: TextGenerator, discriminator: nn.Module, tokens: torch.Tensor, rollouts: int,
                    rng: torch.Generator | None = None) -> torch.Tensor:
    """SeqGAN's action values ``Q(y_1..t)`` [B, T] by Monte-Carlo search (Yu et al. 2017, eq. 4).

    For each t < T, ``rollouts`` completions of the prefix ``y_1..t`` are sampled from the generator and the
    mean of ``sigmoid(D(completion))`` is the value of token t; the last token's value is ``sigmoid(D(y))``.
    """
    B, T = tokens.shape

    def score(x):  # token ids: the discriminator embeds them without materialising one-hot vectors
        return torch.sigmoid(discriminator(x))

    values = torch.empty(B, T, device=tokens.device)
    for t in range(1, T):
        prefix = tokens[:, :t].repeat_interleave(rollouts, dim=0)
        done = generator.sample(len(prefix), prefix=prefix, generator=rng, batch_size=len(prefix))
        values[:, t - 1] = score(done).view(B, rollouts).mean(dim=1)
    values[:, T - 1] = score(tokens)
    return values


class Discriminator(nn.Module):
    """RelGAN's CNN discriminator: embed (one-hot x matrix), convolutions of widths 2..5, max over time,
    highway, dropout, one logit per sequence. Accepts one-hot or soft one-hot [B, T, V] (or token ids [B, T])."""

    def __init__(self, vocab_size: int, embed: int = 64, filters: int = 64, widths=(2, 3, 4, 5), dropout: float = 0.25):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Parameter(torch.randn(vocab_size, embed) * 0.02)
        self.convs = nn.ModuleList(nn.Conv1d(embed, filters, w, padding=w - 1) for w in widths)
        feat = filters * len(widths)
        self.highway = nn.Linear(feat, feat)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(feat, 1)

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        e = F.embedding(x, self.embed) if not x.is_floating_point() else x @ self.embed
        h = e.transpose(1, 2)
        feats = torch.cat([F.relu(conv(h)).amax(dim=2) for conv in self.convs], dim=1)
        highway = self.highway(feats)  # RelGAN uses one projection for both the gate and the transform
        gate = torch.sigmoid(highway)
        feats = gate * F.relu(highway) + (1.0 - gate) * feats
        return self.out(self.dropout(feats)).squeeze(1)


class PhraseEncoder(nn.Module):
    """The text domain's condition encoder (``genkit run TARGET --condition text``): token ids (N, L), padded with
    EOS after the phrase, -> a one-block GPT-2 (transformers, width 64, 2 heads) -> the mean of the phrase's hidden
    states (its tokens and the first EOS) -> a linear map to ``dim``."""

    def __init__(self, vocab_size: int, seq_len: int, eos_id: int, dim: int):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.eos_id = eos_id
        self.body = GPT2Model(GPT2Config(vocab_size=vocab_size, n_positions=seq_len, n_embd=64, n_layer=1, n_head=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos_id,
                                         eos_token_id=eos_id))
        self.out = nn.Linear(64, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        is_eos = ids == self.eos_id
        # keep each phrase's tokens and its first EOS; what follows is padding
        keep = (is_eos.long().cumsum(dim=1) - is_eos.long()) == 0
        hidden = self.body(input_ids=ids, attention_mask=keep.long()).last_hidden_state
        w = keep.unsqueeze(-1).to(hidden.dtype)
        return self.out((hidden * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0))
