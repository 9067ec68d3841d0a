"""A nearest-neighbour memory of the training text, mixed into the generator's next-token distribution.

Paper: Khandelwal, Levy, Jurafsky, Zettlemoyer & Lewis, "Generalization through Memorization: Nearest Neighbor
Language Models" (kNN-LM), ICLR 2020.

    keys    k_i = f(c_i)       the LM's last hidden state after each training prefix c_i
    values  v_i = w_i          the token that followed it
    p_kNN(w | c) ∝ sum over the k nearest keys with v_i = w of exp(-||f(c) - k_i||^2 / T)
    p(w | c) = lambda(c) p_kNN(w | c) + (1 - lambda(c)) p_LM(w | c)

What this file follows: the paper's keys (the final layer's output, after GPT-2's last layer norm, which is what
the output layer reads), squared L2 distances, exact search, and lambda chosen by held-out perplexity.

lambda(c) follows the retrieval's quality (Drozdov, Wang, Rahimi, McCallum, Zamani & Iyyer, "You can't pick your
neighbors, or can you? When and how to rely on retrieval in the kNN-LM", Findings of EMNLP 2022): the held-out
queries are split into ``buckets`` equally sized groups by the distance to their nearest key, and each group gets
its own lambda, so a context close to one of the training text's trusts the memory more than one far from all of
them. ``buckets = 1`` is the paper's one constant lambda (and the choice of runs saved before, which hold no
``edges``). The paper's proxy for quality is a separate encoder's similarity; here it is the nearest squared
distance that the search computes anyway.

Where it departs:
- Exact search with a matrix product instead of FAISS: a corpus of 100k sentences has about 1.5M training
  positions, and at most ``MAX_KEYS`` of them (a seeded random subset) are kept, so one query costs about
  ``MAX_KEYS`` x 128 multiply-adds.
- ``k`` and ``T`` are chosen with the lambdas on held-out sentences (the paper tuned them once on WikiText-103's
  validation set): a grid of ``KS`` x ``TEMPERATURES`` x ``LAMBDAS``, the same sentences early stopping checks.
- The datastore is rebuilt from the current weights whenever they changed since it was built (the adversarial
  phase trains the LM; a checkpoint is loaded), so it is never stale; training itself (MLE, Gumbel, REINFORCE)
  uses the LM alone, as top-p does.
- Positions whose target is a token that is never sampled (the word tokenizer's ``<unk>``) are left out of the
  datastore, so the mixture puts no mass there when sampling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from . import eval_mode
from .model import NEG_INF, after_eos

MAX_KEYS = 300_000
KS = (16, 64, 256, 1024)
TEMPERATURES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
LAMBDAS = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 .. 0.9
QUERY_BYTES = 200e6  # the distance matrix of one chunk of queries


@torch.no_grad()
def hidden_states(generator, ids: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM's last hidden state before each counted position of ``ids`` [N, T] (``<bos>`` + prefix) and the
    token there: ``(keys [M, d], values [M])``, in row-major order."""
    lm = generator.lm
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # under peft's LoRA
    backbone = base.base_model  # the decoder without its output layer (GPT2Model, LlamaModel, ...)
    device = lm.get_input_embeddings().weight.device
    keys, values = [], []
    for start in range(0, len(ids), batch):
        t = ids[start:start + batch].to(device).long()
        inputs = generator._inputs(t)
        out = backbone(input_ids=inputs, attention_mask=torch.ones_like(inputs))
        counted = ~after_eos(t, generator.eos_id)
        keys.append(out.last_hidden_state[counted].float())
        values.append(t[counted])
    return torch.cat(keys), torch.cat(values)


def output_logits(generator, hidden: torch.Tensor) -> torch.Tensor:
    """The LM's next-token logits [M, V] at hidden states [M, d], as scoring sees them (``<bos>`` masked)."""
    head = generator.lm.get_output_embeddings()
    logits = head(hidden.to(head.weight.dtype)).float()
    if generator.banned:
        logits[:, generator.banned] = NEG_INF
    return logits


def neighbours(queries: torch.Tensor, keys: torch.Tensor, key_norms: torch.Tensor, k: int):
    """Squared L2 distances to the ``k`` nearest keys of each query, ascending, and their indices: [Q, k] each."""
    k = min(k, len(keys))
    chunk = max(16, int(QUERY_BYTES / 4 / max(len(keys), 1)))
    dist, index = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d = torch.addmm(key_norms, q, keys.T, alpha=-2.0).add_((q * q).sum(1, keepdim=True))
        dk, ik = d.topk(k, dim=1, largest=False)
        dist.append(dk.clamp_min_(0.0))
        index.append(ik)
    return torch.cat(dist), torch.cat(index)


class Memory:
    """The datastore of one generator: ``choice`` (``lambda``, ``k``, ``temperature``) from ``choose``, the
    training ids [N, T] it is built from, and the tokens never sampled. Rebuilt lazily when the weights change."""

    def __init__(self, ids: torch.Tensor, choice: Mapping[str, float], never: list[int], seed: int = 0):
        self.ids, self.choice, self.never, self.seed = ids, dict(choice), list(never), seed
        self._built_for: tuple | None = None
        self.keys = self.values = self.key_norms = None

    def __deepcopy__(self, memo):  # a copied generator builds its own datastore from its own weights
        return Memory(self.ids, self.choice, self.never, self.seed)

    @staticmethod
    def _weights_version(generator) -> tuple:
        return tuple((id(p), p._version) for p in generator.lm.parameters())

    def refresh(self, generator) -> None:
        version = self._weights_version(generator)
        if version == self._built_for:
            return
        with eval_mode(generator):
            keys, values = hidden_states(generator, self.ids)
        keep = ~torch.isin(values, torch.tensor(self.never, dtype=values.dtype, device=values.device)) \
            if self.never else torch.ones_like(values, dtype=torch.bool)
        keys, values = keys[keep], values[keep]
        if len(keys) > MAX_KEYS:
            pick = torch.randperm(len(keys), generator=torch.Generator().manual_seed(self.seed))[:MAX_KEYS]
            keys, values = keys[pick.to(keys.device)], values[pick.to(values.device)]
        self.keys, self.values, self.key_norms = keys, values, (keys * keys).sum(1)
        self._built_for = self._weights_version(generator)

    def lambdas(self, nearest: torch.Tensor) -> torch.Tensor:
        """lambda [Q, 1] for queries whose nearest key is at squared distance ``nearest`` [Q]: the choice's one
        ``lambda``, or with ``edges`` (B - 1 ascending distances) the ``lambdas`` of the B groups they bound."""
        edges = self.choice.get("edges")
        if not edges:
            return torch.full((len(nearest), 1), float(self.choice["lambda"]), device=nearest.device)
        table = torch.tensor(self.choice["lambdas"], dtype=torch.float32, device=nearest.device)
        group = torch.bucketize(nearest.contiguous(), torch.tensor(edges, dtype=nearest.dtype, device=nearest.device))
        return table[group].unsqueeze(1)

    def mix(self, hidden: torch.Tensor, logits: torch.Tensor, lam: float | None = None) -> torch.Tensor:
        """Log-probabilities [B, V] of lambda p_kNN + (1 - lambda) softmax(``logits``) at hidden states [B, d]:
        lambda is ``lam`` when given, else the choice's for each row (``lambdas``)."""
        assert self.keys is not None, "Memory.refresh first"
        k, temperature = int(self.choice["k"]), float(self.choice["temperature"])
        dist, index = neighbours(hidden.float(), self.keys, self.key_norms, k)
        share = self.lambdas(dist[:, 0]) if lam is None else torch.full((len(dist), 1), float(lam), device=dist.device)
        weights = torch.softmax(-dist / temperature, dim=1) * share
        p = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(1, self.values[index], weights)
        p.add_(torch.softmax(logits.float(), dim=1) * (1.0 - share))
        out = p.log_()
        return out.clamp_min_(NEG_INF)


@torch.no_grad()
def choose(generator, train_ids: torch.Tensor, check_ids: torch.Tensor, never: list[int], seed: int = 0,
           lam: float | None = None, buckets: int = 1) -> dict[str, float]:
    """``k``, ``T`` and (unless given) lambda of the lowest held-out NLL of ``check_ids`` under the mixture;
    with the LM's own NLL and the mixture's, per token. lambda 0 when no mixture beats the LM.

    ``buckets`` > 1 (and no ``lam``): the held-out positions are split into that many equally sized groups by
    their nearest key's distance, and each group gets the lambda of its own lowest NLL (the NLL is a sum over
    positions, so the groups are chosen independently for each ``k`` and ``T``): the choice then holds
    ``edges`` (the B - 1 distances between groups) and ``lambdas``, and ``lambda`` is their mean over the held-out
    positions (0 only when every group's is)."""
    memory = Memory(train_ids, {"k": 1, "temperature": 1.0}, never, seed)
    memory.refresh(generator)
    with eval_mode(generator):
        queries, targets = hidden_states(generator, check_ids)
        logits = output_logits(generator, queries)
    p_lm = torch.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    nll_lm = float(-p_lm.clamp_min(1e-30).log().mean())
    dist, index = neighbours(queries, memory.keys, memory.key_norms, max(KS))
    hit = memory.values[index] == targets[:, None]  # [Q, k]: the neighbour's token is the target
    best = {"lambda": 0.0, "k": float(KS[0]), "temperature": TEMPERATURES[0], "nll_lm": nll_lm, "nll_knn": nll_lm}
    buckets = 1 if lam is not None else max(1, min(int(buckets), len(p_lm)))
    if buckets == 1:  # the paper's one lambda (or the one given)
        for k in KS:
            for temperature in TEMPERATURES:
                w = torch.softmax(-dist[:, :k] / temperature, dim=1)
                p_knn = (w * hit[:, :k]).sum(1)
                for share in (LAMBDAS if lam is None else (lam,)):
                    nll = float(-(share * p_knn + (1 - share) * p_lm).clamp_min(1e-30).log().mean())
                    if nll < best["nll_knn"] - 1e-4 or (lam is not None and best["lambda"] == 0.0):
                        best = {**best, "lambda": share, "k": float(k), "temperature": temperature, "nll_knn": nll}
    else:
        edges = torch.quantile(dist[:, 0], torch.linspace(0, 1, buckets + 1, dtype=dist.dtype)[1:-1])
        group = torch.bucketize(dist[:, 0].contiguous(), edges)  # [Q]: each position's group, 0 = the nearest
        members = [group == b for b in range(buckets)]
        grid = (0.0,) + LAMBDAS  # 0, the LM alone, first
        shares = torch.tensor(grid, dtype=p_lm.dtype)  # [L]
        for k in KS:
            for temperature in TEMPERATURES:
                w = torch.softmax(-dist[:, :k] / temperature, dim=1)
                p_knn = (w * hit[:, :k]).sum(1)
                nll = -(shares * p_knn[:, None] + (1 - shares) * p_lm[:, None]).clamp_min(1e-30).log()  # [Q, L]
                sums = torch.stack([nll[m].sum(0) for m in members])  # [B, L]: the groups are independent
                chosen = sums.argmin(dim=1)
                mean_nll = float(sums.gather(1, chosen[:, None]).sum()) / len(p_lm)
                if mean_nll < best["nll_knn"] - 1e-4:
                    lambdas = [grid[i] for i in chosen.tolist()]
                    best = {**best, "lambda": round(float(shares[chosen][group].mean()), 4), "k": float(k),
                            "temperature": temperature, "nll_knn": mean_nll,
                            "edges": [float(e) for e in edges], "lambdas": lambdas}
    best["keys"] = float(len(memory.keys))
    if not math.isfinite(best["nll_knn"]):
        best["lambda"] = 0.0
    return best


class StateLink:
    """The run's state (``Data.state``) as the generator sees it: a reference that a copy of the generator (an EMA
    copy, say) shares rather than copies, so a choice made later reaches every copy."""

    def __init__(self, state: dict):
        self.state = state

    def __deepcopy__(self, memo):
        return self


def memory_of(generator) -> tuple[Memory, float | None] | None:
    """``(Memory, lambda)`` for ``generator`` from its run's state (``knn_state``: the choice and the training ids),
    lambda None when the choice has one for each group of queries (``Memory.lambdas``); or None when there is no
    choice yet, every lambda of the choice is 0, or the run keeps no training ids."""
    link = getattr(generator, "knn_state", None)
    state = link.state if link is not None else None
    if not state:
        return None
    choice, ids = state.get("knn"), state.get("knn_ids")
    if not choice or not choice.get("lambda") or ids is None:
        return None
    memory = getattr(generator, "knn_memory", None)
    if memory is None or memory.choice != dict(choice) or memory.ids is not ids:
        memory = Memory(ids, choice, never=generator.suppressed)
        generator.knn_memory = memory  # a plain attribute: rebuilt, never saved
    return memory, (None if choice.get("edges") else float(choice["lambda"]))


@torch.no_grad()
def mixture_nll(generator, mixture: tuple[Memory, float | None], ids: torch.Tensor) -> float:
    """The held-out NLL per token of ``ids`` [N, T] under the kNN-LM mixture (the LM's own: ``model_nll``)."""
    memory, lam = mixture
    memory.refresh(generator)
    total, count = 0.0, 0
    with eval_mode(generator):
        for start in range(0, len(ids), 256):  # 256 sentences' logits [M, V] at a time
            queries, targets = hidden_states(generator, ids[start:start + 256])
            logp = memory.mix(queries, output_logits(generator, queries), lam).gather(1, targets[:, None])
            total, count = total - float(logp.sum()), count + len(targets)
    return total / max(count, 1)
