"""Exact, batched linear-chain CRF operations over padded batches (torch, CPU or CUDA).

Letters: B batch, T tokens (padded length), L tags, K k-best, N queried windows, W window width.

- ``emissions`` (B, T, L): per-token tag scores; only the first ``lengths[b]`` rows of sentence b are read.
- ``lengths`` (B,): integer, ``0 <= lengths[b] <= T``. A sentence of length 0 has one (empty) sequence of score 0.
- ``transitions`` (L, L): ``transitions[i, j]`` scores tag j directly after tag i.
- ``start`` / ``end`` (L,): scores of the first and last tag of a sentence.

The score of a sequence y of length n is ``start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_t, y_t+1]
+ end[y_n-1]``. Forbidden moves are ``-inf`` potentials (see ``constrain``): they get probability exactly 0 in every
operation. Every probability here is divided by the full partition function Z, never renormalised over the K best.
Padded tag positions hold ``PAD`` (-1).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .constraints import Constraints

PAD = -1
NEG_INF = float("-inf")


@dataclass
class KBest:
    """The K highest-scoring tag sequences of each sentence, best first.

    tags (Tensor): (B, K, T) int64, ``PAD`` beyond the sentence length and in invalid rows.
    scores (Tensor): (B, K) sequence scores s(x, y); -inf in invalid rows.
    log_probs (Tensor): (B, K) exact ``score - log Z``; -inf in invalid rows.
    valid (Tensor): (B, K) bool; False where the sentence has fewer than K allowed sequences.
    """

    tags: Tensor
    scores: Tensor
    log_probs: Tensor
    valid: Tensor


def constrain(transitions: Tensor, start: Tensor, end: Tensor, constraints: Constraints) -> Tuple[Tensor, Tensor, Tensor]:
    """Set forbidden transitions, starts and ends to -inf (differentiable in the allowed entries)."""
    device = transitions.device
    neg_inf = torch.tensor(NEG_INF, dtype=transitions.dtype, device=device)
    return (
        torch.where(constraints.transitions.to(device), transitions, neg_inf),
        torch.where(constraints.start.to(device), start, neg_inf),
        torch.where(constraints.end.to(device), end, neg_inf),
    )


def check_inputs(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Validate shapes and values; return ``lengths`` as int64 on the emissions' device.

    Raises a ValueError naming the problem: wrong shapes, lengths outside [0, T], non-finite emissions at real
    positions, NaN or +inf potentials.
    """
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be (B, T, L); got shape {tuple(emissions.shape)}.")
    n_batch, n_tokens, n_tags = emissions.shape
    if n_tags < 1:
        raise ValueError("emissions have no tag axis entries (L = 0): the CRF needs at least one tag.")
    if transitions.shape != (n_tags, n_tags) or start.shape != (n_tags,) or end.shape != (n_tags,):
        raise ValueError(
            f"CRF potentials do not match L={n_tags}: transitions {tuple(transitions.shape)}, "
            f"start {tuple(start.shape)}, end {tuple(end.shape)}; expected ({n_tags}, {n_tags}), ({n_tags},), ({n_tags},)."
        )
    lengths = torch.as_tensor(lengths, device=emissions.device)
    if lengths.shape != (n_batch,) or lengths.is_floating_point():
        raise ValueError(f"lengths must be an integer tensor of shape ({n_batch},); got {lengths.dtype} {tuple(lengths.shape)}.")
    lengths = lengths.long()
    if n_batch and (int(lengths.min()) < 0 or int(lengths.max()) > n_tokens):
        raise ValueError(f"lengths must lie in [0, T={n_tokens}]; got min {int(lengths.min())}, max {int(lengths.max())}.")
    # shape: (B, T)
    real = torch.arange(n_tokens, device=emissions.device)[None, :] < lengths[:, None]
    if not bool(torch.isfinite(emissions[real]).all()):
        raise ValueError("emissions contain NaN or inf at real (unpadded) positions; check the model producing them.")
    for name, value in (("transitions", transitions), ("start", start), ("end", end)):
        if bool(torch.isnan(value).any()) or bool((value == float("inf")).any()):
            raise ValueError(f"CRF {name} contain NaN or +inf; only finite scores or -inf (forbidden) are allowed.")
    return lengths


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """logsumexp that returns -inf for all -inf slices and keeps their gradient 0 (torch's gives NaN)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.logsumexp(x, dim)
    top = x.amax(dim, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.exp(x - top).sum(dim)
    positive = total > 0
    safe = torch.where(positive, total, torch.ones_like(total))
    return torch.where(positive, top.squeeze(dim) + torch.log(safe), torch.full_like(total, NEG_INF))


def _zero_padding(emissions: Tensor, lengths: Tensor) -> Tensor:
    """Emissions with padded rows (t >= lengths[b]) set to 0, so garbage there (NaN, inf) reaches no value or gradient."""
    # shape: (B, T, 1)
    real = (torch.arange(emissions.shape[1], device=emissions.device)[None, :] < lengths[:, None])[:, :, None]
    return torch.where(real, emissions, torch.zeros((), dtype=emissions.dtype, device=emissions.device))


def forward_scores(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor) -> Tensor:
    """Forward algorithm: (B, T, L) log-sums of all prefixes ending in each tag, emission included.

    Rows at t >= lengths[b] repeat the row at lengths[b] - 1.
    """
    emissions = _zero_padding(emissions, lengths)
    n_tokens = emissions.shape[1]
    # shape: (B, L)
    alpha = start[None, :] + emissions[:, 0]
    alphas = [alpha]
    for t in range(1, n_tokens):
        # shape: (B, L)
        step = _logsumexp(alpha[:, :, None] + transitions[None], dim=1) + emissions[:, t]
        alpha = torch.where((t < lengths)[:, None], step, alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def backward_scores(emissions: Tensor, lengths: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """Backward algorithm: (B, T, L) log-sums of all suffixes after each tag, ``end`` included, emission at t excluded.

    Rows at t >= lengths[b] - 1 equal ``end``.
    """
    emissions = _zero_padding(emissions, lengths)
    n_batch, n_tokens, n_tags = emissions.shape
    # shape: (B, L)
    last = end[None, :].expand(n_batch, n_tags)
    beta = last
    betas = [beta]
    for t in range(n_tokens - 2, -1, -1):
        # shape: (B, L)
        step = _logsumexp(transitions[None] + (emissions[:, t + 1] + beta)[:, None, :], dim=2)
        beta = torch.where((t < lengths - 1)[:, None], step, last)
        betas.append(beta)
    return torch.stack(betas[::-1], dim=1)


def log_partition(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """log Z per sentence, (B,). -inf where no allowed sequence exists; 0 for length 0."""
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    return _log_partition(emissions, lengths, transitions, start, end)


def _log_partition(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    n_batch, n_tokens, _ = emissions.shape
    if n_tokens == 0:
        return emissions.new_zeros(n_batch)
    alphas = forward_scores(emissions, lengths, transitions, start)
    log_z = _logsumexp(alphas[:, -1] + end[None, :], dim=1)
    return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))


def sequence_score(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, tags: Tensor
) -> Tensor:
    """Score s(x, y) of given tag sequences, (B,).

    tags (Tensor): (B, T) int64 tag indices; entries at t >= lengths[b] are ignored (``PAD`` is fine).
    """
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    return _sequence_score(emissions, lengths, transitions, start, end, _check_tags(tags, emissions, lengths))


def _check_tags(tags: Tensor, emissions: Tensor, lengths: Tensor) -> Tensor:
    """Validate (B, T) tags against the batch; return them with padding replaced by 0."""
    n_batch, n_tokens, n_tags = emissions.shape
    tags = torch.as_tensor(tags, device=emissions.device)
    if tags.shape != (n_batch, n_tokens) or tags.is_floating_point():
        raise ValueError(f"tags must be integer (B, T) = ({n_batch}, {n_tokens}); got {tags.dtype} {tuple(tags.shape)}.")
    real = torch.arange(n_tokens, device=emissions.device)[None, :] < lengths[:, None]
    if bool(((tags < 0) | (tags >= n_tags))[real].any()):
        raise ValueError(f"tags at real positions must lie in [0, L={n_tags}).")
    return torch.where(real, tags.long(), torch.zeros_like(tags, dtype=torch.long))


def _sequence_score(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, tags: Tensor
) -> Tensor:
    n_batch, n_tokens, _ = emissions.shape
    if n_tokens == 0:
        return emissions.new_zeros(n_batch)
    zero = emissions.new_zeros(())
    # shape: (B, T)
    real = torch.arange(n_tokens, device=emissions.device)[None, :] < lengths[:, None]
    emitted = torch.where(real, emissions.gather(2, tags[:, :, None]).squeeze(2), zero).sum(1)
    moved = torch.where(real[:, 1:], transitions[tags[:, :-1], tags[:, 1:]], zero).sum(1)
    last = tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    ends = torch.where(lengths > 0, start[tags[:, 0]] + end[last], zero)
    return emitted + moved + ends


def nll(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, tags: Tensor) -> Tensor:
    """Negative log-likelihood -log P(y | x) per sentence, (B,); +inf for forbidden sequences."""
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    tags = _check_tags(tags, emissions, lengths)
    score = _sequence_score(emissions, lengths, transitions, start, end, tags)
    log_z = _log_partition(emissions, lengths, transitions, start, end)
    # A forbidden sequence has NLL +inf even in a sentence with no allowed sequence (log Z = -inf), not NaN.
    return torch.where(score > NEG_INF, log_z - score, torch.full_like(score, float("inf")))


def _triangle(n_pred: int, k: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """(predecessor slot j, rank r) pairs with j + r < k, as two (M,) index tensors."""
    slots, ranks = zip(*((j, r) for j in range(n_pred) for r in range(k) if j + r < k))
    return torch.tensor(slots, device=device), torch.tensor(ranks, device=device)


def _kbest_step(score: Tensor, into: Tensor, k: int, triangle: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
    """One k-best Viterbi step: the K best extensions into each tag and their back-pointers (tag * K + rank).

    score (Tensor): (B, L, K) best prefix scores per (tag, rank), sorted by rank.
    into (Tensor): (L, L) transposed transitions, ``into[j, i]`` scores tag j right after tag i.
    Returns (B, L, K) scores and back-pointers. Only predecessors whose best prefix (rank 0) is among the K best
    "heads" can contribute, and the one in head position j at most its K - j best ranks (each candidate needs fewer
    than K better ones), so the search runs over that triangle of M <= K(K+1)/2 candidates instead of all L x K.
    """
    n_batch, n_tags, _ = score.shape
    # shape: (B, L, L_prev)
    heads = score[:, None, :, 0] + into[None]
    if k == 1:
        best, prev = heads.max(dim=2)
        return best[:, :, None], prev[:, :, None]
    slots, ranks = triangle
    # shape: (B, L, J) the J = min(L, K) predecessors with the best heads, best first, per current tag
    _, pred = heads.topk(int(slots.max()) + 1, dim=2)
    # shape: (B, L, M) predecessor tag and flat cell (tag * K + rank) of each triangle candidate
    pred = pred[:, :, slots]
    cells = pred * k + ranks
    # shape: (B, L, M) ranked prefix score plus the transition into the current tag
    candidates = score.reshape(n_batch, 1, n_tags * k).expand(n_batch, n_tags, n_tags * k).gather(2, cells)
    candidates = candidates + into.expand(n_batch, n_tags, n_tags).gather(2, pred)
    # shape: (B, L, K)
    top, index = candidates.topk(k, dim=2)
    return top, cells.gather(2, index)


def _kbest_search(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int
) -> Tuple[Tensor, Tensor]:
    """Batched k-best Viterbi: (B, K) scores (best first, -inf = no such sequence) and (B, K, T) tags.

    Each (tag, rank) cell keeps the K best prefixes ending there; candidates are distinct (predecessor, rank) cells,
    so every finite path is distinct. Sentences that have ended keep their state through identity back-pointers.
    """
    n_batch, n_tokens, n_tags = emissions.shape
    device = emissions.device
    ranks = torch.arange(k, device=device)
    if n_tokens == 0:
        scores = torch.where(ranks == 0, 0.0, NEG_INF).to(emissions.dtype).expand(n_batch, k).clone()
        return scores, torch.full((n_batch, k, 0), PAD, dtype=torch.long, device=device)
    # shape: (B, L, K)
    score = torch.full((n_batch, n_tags, k), NEG_INF, dtype=emissions.dtype, device=device)
    score[:, :, 0] = start[None, :] + emissions[:, 0]
    # shape: (B, L, K), flat index (tag * K + rank) of each cell itself
    identity = torch.arange(n_tags * k, device=device).view(1, n_tags, k).expand(n_batch, n_tags, k)
    pointers = []
    triangle = _triangle(min(n_tags, k), k, device)
    # shape: (L, L), contiguous so each step reads the scores into one tag from one row
    into = transitions.t().contiguous()
    for t in range(1, n_tokens):
        top, pointer = _kbest_step(score, into, k, triangle)
        active = (t < lengths)[:, None, None]
        # shape: (B, L, K)
        score = torch.where(active, top + emissions[:, t, :, None], score)
        pointers.append(torch.where(active, pointer, identity))
    # shape: (B, K)
    best, cell = (score + end[None, :, None]).reshape(n_batch, n_tags * k).topk(k, dim=1)
    tags = [cell // k]
    for pointer in reversed(pointers):
        cell = pointer.reshape(n_batch, n_tags * k).gather(1, cell)
        tags.append(cell // k)
    # shape: (B, K, T)
    paths = torch.stack(tags[::-1], dim=2)
    empty = lengths == 0
    best = torch.where(empty[:, None], torch.where(ranks == 0, 0.0, NEG_INF).to(best.dtype), best)
    real = torch.arange(n_tokens, device=device)[None, None, :] < lengths[:, None, None]
    keep = real & torch.isfinite(best)[:, :, None]
    return best, torch.where(keep, paths, torch.full_like(paths, PAD))


def viterbi(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tuple[Tensor, Tensor]:
    """Best tag sequence per sentence: (B, T) tags (``PAD``-padded) and (B,) scores (-inf if none is allowed)."""
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    with torch.no_grad():
        scores, paths = _kbest_search(emissions, lengths, transitions, start, end, 1)
    return paths[:, 0], scores[:, 0]


def kbest_viterbi(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int
) -> KBest:
    """The K best tag sequences per sentence with their exact probabilities (score - log Z)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}.")
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    with torch.no_grad():
        scores, paths = _kbest_search(emissions, lengths, transitions, start, end, k)
        log_z = _log_partition(emissions, lengths, transitions, start, end)
    valid = torch.isfinite(scores)
    log_probs = torch.where(valid, scores - log_z[:, None], torch.full_like(scores, NEG_INF))
    return KBest(tags=paths, scores=scores, log_probs=log_probs, valid=valid)


def marginals(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Per-token marginals P(y_t = l | x), (B, T, L); rows beyond the length and of impossible sentences are 0.

    Differentiable (forward-backward in log space), so it can sit inside a loss.
    """
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    n_batch, n_tokens, n_tags = emissions.shape
    if n_tokens == 0:
        return emissions.new_zeros(n_batch, 0, n_tags)
    alphas = forward_scores(emissions, lengths, transitions, start)
    betas = backward_scores(emissions, lengths, transitions, end)
    log_z = _logsumexp(alphas[:, -1] + end[None, :], dim=1)
    real = torch.arange(n_tokens, device=emissions.device)[None, :] < lengths[:, None]
    ok = (real & torch.isfinite(log_z)[:, None])[:, :, None]
    safe_z = torch.where(torch.isfinite(log_z), log_z, torch.zeros_like(log_z))
    return torch.where(ok, torch.exp(alphas + betas - safe_z[:, None, None]), torch.zeros_like(alphas))


def window_log_probs(
    emissions: Tensor,
    lengths: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    batch_index: Tensor,
    first: Tensor,
    tag_sets: Tensor,
    widths: Tensor,
) -> Tensor:
    """Exact log P(y_{first+w} in tag_sets[n, w] for w < widths[n]) for N windows, (N,).

    batch_index (Tensor): (N,) sentence of each window.
    first (Tensor): (N,) first position of each window.
    tag_sets (Tensor): (N, W, L) bool, the tags allowed at each window position (rows past ``widths[n]`` ignored).
    widths (Tensor): (N,) window widths, >= 1, with ``first + widths <= lengths[batch_index]``.
    Returns -inf for events of probability 0 (and for sentences with no allowed sequence).
    """
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    device = emissions.device
    batch_index, first, widths = (torch.as_tensor(v, device=device).long() for v in (batch_index, first, widths))
    tag_sets = torch.as_tensor(tag_sets, device=device).bool()
    n_windows = batch_index.shape[0]
    if tag_sets.dim() != 3 or tag_sets.shape[0] != n_windows or tag_sets.shape[2] != emissions.shape[2]:
        raise ValueError(f"tag_sets must be (N={n_windows}, W, L={emissions.shape[2]}); got {tuple(tag_sets.shape)}.")
    if n_windows == 0:
        return emissions.new_zeros(0)
    if bool((widths < 1).any() | (widths > tag_sets.shape[1]).any() | (first < 0).any()):
        raise ValueError("window widths must lie in [1, W] and first positions must be >= 0.")
    if bool((first + widths > lengths[batch_index]).any()):
        raise ValueError("a window reaches past the end of its sentence.")
    n_tokens = emissions.shape[1]
    alphas = forward_scores(emissions, lengths, transitions, start)
    betas = backward_scores(emissions, lengths, transitions, end)
    log_z = _logsumexp(alphas[:, -1] + end[None, :], dim=1)
    neg_inf = emissions.new_tensor(NEG_INF)
    # shape: (N, L)
    v = torch.where(tag_sets[:, 0], alphas[batch_index, first], neg_inf)
    for w in range(1, tag_sets.shape[1]):
        position = (first + w).clamp(max=n_tokens - 1)
        step = _logsumexp(v[:, :, None] + transitions[None], dim=1) + emissions[batch_index, position]
        step = torch.where(tag_sets[:, w], step, neg_inf)
        v = torch.where((w < widths)[:, None], step, v)
    last = first + widths - 1
    joint = _logsumexp(v + betas[batch_index, last], dim=1)
    z = log_z[batch_index]
    return torch.where(torch.isfinite(z), joint - torch.where(torch.isfinite(z), z, torch.zeros_like(z)), neg_inf)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends and always finite.

    x is clamped to at most -tiny (the dtype's smallest normal number), so x = 0 (all mass accounted for) gives
    log(tiny) instead of -inf; x = -inf gives 0.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    near_zero = x > -0.6931471805599453
    # Each branch only sees inputs where it is used, so the unused branch cannot put NaN into the gradient.
    steep = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, -1.0))))
    flat = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, -1.0), x)))
    return torch.where(near_zero, steep, flat)


def log_residual(log_probs: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """log(1 - sum_k p_k) over the last axis, (...,): the log of the mass outside the given sequences.

    log_probs (Tensor): (..., K) log-probabilities of distinct sequences; rows where ``valid`` is False are ignored.
    """
    if valid is not None:
        log_probs = torch.where(valid, log_probs, torch.full_like(log_probs, NEG_INF))
    return log1mexp(_logsumexp(log_probs, dim=-1))
