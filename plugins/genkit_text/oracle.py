"""The SeqGAN synthetic benchmark: an "oracle" LSTM whose samples are the training data.

Yu, Zhang, Wang & Yu, "SeqGAN: Sequence Generative Adversarial Nets with Policy Gradient", AAAI 2017,
section "Synthetic Data Experiments": a randomly initialised LSTM (embedding and hidden size 32, every
weight drawn from N(0, 1)) over a vocabulary of 5,000 tokens generates 10,000 sequences of length 20;
a model trained on them is scored by NLL_oracle, the oracle's negative log-likelihood per token of the
model's samples (lower = samples the oracle finds likely), and by NLL_gen (here: the model's NLL per
token of held-out oracle samples, as in Texygen and Caccia et al.; lower = the model covers the data).

Where this departs from the paper: SeqGAN ships its oracle's weights in a pickle (``target_params.pkl``);
genkit cannot download it, so the oracle is rebuilt from a fixed seed with the same recipe (N(0, 1)
weights, start token 0, zero initial state, one bias per gate). Absolute numbers therefore differ a little
from the paper's table; the oracle's own NLL of its samples (``nll_oracle_data``) is reported beside them
as the floor a perfect model would reach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import sample_categorical

VOCAB = 5000  # SeqGAN's synthetic vocabulary
SEQ_LEN = 20  # SeqGAN's sequence length
EMB = 32  # SeqGAN's oracle embedding size
HIDDEN = 32  # SeqGAN's oracle hidden size
START = 0  # SeqGAN feeds token 0's embedding as the first input
N_TRAIN = 10_000  # SeqGAN's training set size
DEFAULT_SEED = 88  # SeqGAN's own seed (SEED = 88 in sequence_gan.py); the oracle is a pure function of it


class OracleLSTM(nn.Module):
    """An LSTM language model with N(0, 1) weights; never trained."""

    def __init__(self, seed: int = DEFAULT_SEED, vocab: int = VOCAB, emb: int = EMB, hidden: int = HIDDEN):
        super().__init__()
        self.vocab, self.seed = vocab, seed
        self.embed = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name == "lstm.bias_hh_l0":  # SeqGAN's LSTM has one bias per gate, not PyTorch's two
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=g))
        self.requires_grad_(False)
        self.eval()

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position of ``tokens`` [B, T] (position t predicts tokens[:, t])."""
        start = torch.full_like(tokens[:, :1], START)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1)
        h, _ = self.lstm(self.embed(inputs))
        return self.out(h)

    @torch.no_grad()
    def nll(self, tokens: torch.Tensor, batch_size: int = 2000) -> float:
        """The oracle's mean negative log-likelihood per token of ``tokens`` [N, T] (nats)."""
        total, count = 0.0, 0
        for i in range(0, len(tokens), batch_size):
            chunk = tokens[i:i + batch_size].to(self.out.weight.device)
            logits = self.logits(chunk)
            total += F.cross_entropy(logits.reshape(-1, self.vocab), chunk.reshape(-1), reduction="sum").item()
            count += chunk.numel()
        return total / max(count, 1)

    @torch.no_grad()
    def sample(self, n: int, length: int = SEQ_LEN, generator: torch.Generator | None = None,
               batch_size: int = 5000) -> torch.Tensor:
        """Draw ``n`` sequences of ``length`` tokens by ancestral sampling (int64 [n, length])."""
        chunks = []
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            x = torch.full((b, 1), START, dtype=torch.long)
            state = None
            out = []
            for _ in range(length):
                h, state = self.lstm(self.embed(x), state)
                x = sample_categorical(self.out(h[:, -1]), generator).unsqueeze(1)
                out.append(x)
            chunks.append(torch.cat(out, dim=1))
        return torch.cat(chunks)


def oracle_data(seed: int = DEFAULT_SEED, n_train: int = N_TRAIN, n_test: int = N_TRAIN,
                length: int = SEQ_LEN) -> tuple[OracleLSTM, torch.Tensor, torch.Tensor]:
    """The oracle and its training and held-out samples; the same seed gives the same tensors."""
    oracle = OracleLSTM(seed)
    g = torch.Generator().manual_seed(seed + 1)
    data = oracle.sample(n_train + n_test, length, generator=g)
    return oracle, data[:n_train], data[n_train:]
