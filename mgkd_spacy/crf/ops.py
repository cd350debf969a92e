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

On the CPU, Viterbi, k-best Viterbi and log Z without gradients run in the C kernel (``_kernel.c``, built by
``pip install``; float64 inside, results in the emissions' dtype); on CUDA, for gradients, and where the kernel is
not built, the torch code below runs. Both are checked against brute-force enumeration (``tests/crf``).
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ContextManager, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .constraints import Constraints

try:  # the C kernel (CPU decoding and log Z), built by ``pip install`` where a C compiler exists (setup.py)
    from . import _kernel
except ImportError:  # pragma: no cover - depends on the install
    _kernel = None

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
    if torch.is_grad_enabled() and any(x.requires_grad for x in (emissions, transitions, start, end)):
        return _logspace_log_partition(emissions, lengths, transitions, start, end)
    if _on_kernel(emissions):
        return _kernel_log_partition(emissions, lengths, transitions, start, end)[0]
    return _scaled_log_partition(emissions, lengths, transitions, start, end)


KERNEL_MISSING = ("the C CRF kernel (mgkd_spacy.crf._kernel) is not built: reinstall with `pip install --no-deps -e .` "
                  "on a machine with a C compiler and the Python headers")


def use_kernel(enabled: bool) -> ContextManager[None]:
    """A block in which CPU calls run on the C kernel (``enabled``) or on the torch code (as on CUDA).

    Raises a ValueError (``KERNEL_MISSING``) at once when the kernel is asked for but not built.
    """
    if enabled and _kernel is None:
        raise ValueError(KERNEL_MISSING)
    return _kernel_set_to(_kernel if enabled else None)


@contextmanager
def _kernel_set_to(kernel) -> Iterator[None]:
    global _kernel
    built, _kernel = _kernel, kernel
    try:
        yield
    finally:
        _kernel = built


def _on_kernel(emissions: Tensor) -> bool:
    """Whether the C kernel serves this (no-gradient) call: it is built and the batch is on the CPU."""
    return _kernel is not None and emissions.device.type == "cpu"


def _as_buffer(x: Tensor):
    """A C-contiguous float64 NumPy view (or copy) of a CPU tensor, for the C kernel."""
    return x.detach().to(torch.float64).contiguous().numpy()


def _kernel_log_partition(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tuple[Tensor, Tensor]:
    """``_scaled_log_partition`` by the C kernel: (B,) log Z in the emissions' dtype, and (B,) bool, True where a
    sentence failed the exactness check and was recomputed in log space."""
    n_batch, n_tokens, n_tags = emissions.shape
    log_z = torch.empty(n_batch, dtype=torch.float64)
    fell_back = torch.empty(n_batch, dtype=torch.bool)
    _kernel.log_partition(_as_buffer(emissions), lengths.contiguous().numpy(), _as_buffer(transitions),
                          _as_buffer(start), _as_buffer(end), log_z.numpy(), fell_back.numpy(), n_batch, n_tokens,
                          n_tags)
    return log_z.to(emissions.dtype), fell_back


def _logspace_log_partition(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """log Z by the forward algorithm in log space (differentiable; any finite scores)."""
    alphas = forward_scores(emissions, lengths, transitions, start)
    log_z = _logsumexp(alphas[:, -1] + end[None, :], dim=1)
    return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))


# Spread (in nats) below the row maximum that the scaled forward algorithm accepts for its factors; three such
# factors multiply to exp(-690), still a normal float64 (smallest normal: exp(-708)), so nothing underflows.
SCALED_SPREAD = 230.0


def _scaled_log_partition(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """log Z by the scaled forward algorithm: probabilities in float64, one (B, L) x (L, L) product per step.

    Each step multiplies the normalised forward vector by exp(transitions) and exp(emissions), every factor scaled
    so that its row maximum is 1, and renormalises. The result is exact to float64 rounding when no factor lies
    more than ``SCALED_SPREAD`` nats below its row's maximum (then no product underflows); that is checked per
    sentence, and the sentences that fail it (extreme scores, no allowed sequence) are recomputed in log space.
    """
    n_batch, n_tokens, n_tags = emissions.shape
    device = emissions.device
    real = torch.arange(n_tokens, device=device)[:, None] < lengths[None, :]
    # shape: (T, B, L) time-major; padded rows zeroed so garbage there reaches nothing read below
    scores = _zero_padding(emissions, lengths).transpose(0, 1).double()
    moves = transitions.double()
    # shape: (L,) the largest score into each tag, folded into that tag's emissions
    into = moves.amax(0)
    into = torch.where(torch.isfinite(into), into, torch.zeros_like(into))
    factors = torch.exp(moves - into)
    scores[1:] += into
    scores[0] += start.double()
    # shape: (T, B, 1)
    top = scores.amax(2, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    scores -= top
    allowed_moves = torch.isfinite(moves)
    spread_ok = bool(((moves - into) >= -SCALED_SPREAD)[allowed_moves].all())
    # shape: (T, B, L) normalised forward vectors; (T, B, 1) their normalisers
    vectors = torch.exp(scores)
    norms = torch.ones_like(top)
    product = torch.empty((n_batch, n_tags), dtype=torch.float64, device=device)
    for t in range(1, n_tokens):
        torch.mm(vectors[t - 1], factors, out=product)
        vectors[t] *= product
        torch.amax(vectors[t], dim=1, keepdim=True, out=norms[t])
        vectors[t] /= norms[t]
    last = (lengths - 1).clamp(min=0)
    batch = torch.arange(n_batch, device=device)
    # shape: (B,)
    scale = (top[:, :, 0] + torch.log(norms[:, :, 0])).cumsum(0)[last, batch]
    log_z = scale + torch.logsumexp(torch.log(vectors[last, batch]) + end.double(), dim=1)
    tiny = (vectors > 0) & (vectors < math.exp(-SCALED_SPREAD))
    steep = torch.isfinite(scores) & (scores < -SCALED_SPREAD)
    exact = torch.isfinite(log_z) & ~((tiny | steep) & real[:, :, None]).any(2).any(0) & spread_ok
    log_z = torch.where(lengths > 0, log_z, torch.zeros_like(log_z)).to(emissions.dtype)
    if bool(exact.all()):
        return log_z
    redo = (~exact).nonzero()[:, 0]
    log_z[redo] = _logspace_log_partition(emissions[redo], lengths[redo], transitions, start, end)
    return log_z


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


def _viterbi_search(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tuple[Tensor, Tensor]:
    """Batched 1-best Viterbi (forward pass, back-pointers, backtrack): (B, 1) scores and (B, 1, T) tags."""
    n_batch, n_tokens, n_tags = emissions.shape
    device = emissions.device
    # shape: (B, L, 1)
    score = (start[None, :] + emissions[:, 0])[:, :, None]
    # shape: (B, L, 1), flat index (tag) of each cell itself
    identity = torch.arange(n_tags, device=device).view(1, n_tags, 1).expand(n_batch, n_tags, 1)
    pointers = []
    # shape: (L, L), contiguous so each step reads the scores into one tag from one row
    into = transitions.t().contiguous()
    for t in range(1, n_tokens):
        # shape: (B, L)
        top, pointer = (score[:, None, :, 0] + into[None]).max(dim=2)
        active = (t < lengths)[:, None, None]
        score = torch.where(active, top[:, :, None] + emissions[:, t, :, None], score)
        pointers.append(torch.where(active, pointer[:, :, None], identity))
    # shape: (B, 1)
    best, cell = (score + end[None, :, None]).reshape(n_batch, n_tags).topk(1, dim=1)
    tags = [cell]
    for pointer in reversed(pointers):
        cell = pointer.reshape(n_batch, n_tags).gather(1, cell)
        tags.append(cell)
    # shape: (B, 1, T)
    return best, torch.stack(tags[::-1], dim=2)


def _align_right(emissions: Tensor, lengths: Tensor) -> Tensor:
    """(T, B, L) emissions shifted so that every sentence ends at T - 1; the positions before it hold 0."""
    n_tokens = emissions.shape[1]
    # shape: (B, T) source position of each aligned position
    source = torch.arange(n_tokens, device=emissions.device)[None, :] - (n_tokens - lengths)[:, None]
    shifted = emissions.gather(1, source.clamp(min=0)[:, :, None].expand_as(emissions))
    zero = torch.zeros((), dtype=emissions.dtype, device=emissions.device)
    shifted = torch.where((source >= 0)[:, :, None], shifted, zero)
    return shifted.transpose(0, 1).contiguous()


def _backward_best(emissions: Tensor, transitions: Tensor, end: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Backward max-product pass over right-aligned (T, B, L) emissions.

    Returns ``best`` (T, B, L): best score of a suffix from tag l at s, emission at s and ``end`` included;
    ``follow`` (T, B, L + 1): ``follow[s, b, a]`` best tag at s after tag a at s - 1 (column L is filled for the root
    later); ``detour`` (T, B, L): cost of leaving that best continuation after (s, a) for the runner-up tag at s + 1
    (inf if there is none).
    """
    n_tokens, n_batch, n_tags = emissions.shape
    best = torch.empty_like(emissions)
    # shape: (T, B, L) the best and runner-up continuation of each (s, a); the best one's tag at s + 1
    head = torch.full_like(emissions, NEG_INF)
    runner = torch.full_like(emissions, NEG_INF)
    follow = torch.zeros((n_tokens, n_batch, n_tags + 1), dtype=torch.long, device=emissions.device)
    moves = torch.empty((n_batch, n_tags, n_tags), dtype=emissions.dtype, device=emissions.device)
    torch.add(emissions[-1], end, out=best[-1])
    for s in range(n_tokens - 2, -1, -1):
        # shape: (B, L, L) tag a at s then tag y at s + 1
        torch.add(transitions, best[s + 1][:, None, :], out=moves)
        torch.max(moves, dim=2, out=(head[s], follow[s + 1, :, :n_tags]))
        torch.add(emissions[s], head[s], out=best[s])
        torch.amax(moves.scatter_(2, follow[s + 1, :, :n_tags, None], NEG_INF), dim=2, out=runner[s])
    detour = torch.nan_to_num(head - runner, nan=float("inf"), posinf=float("inf"))
    return best, follow, detour


def _detour_cells(n_tokens: int, n_batch: int, n_tags: int, device: torch.device) -> Tensor:
    """(T, B, L) the pool cell that a detour after tag a at s opens: ``(s + 1) * B + b`` times ``L + 1``, plus a.

    The cell is the flat index of ``follow[s + 1, b, a]``; it names the position, the sentence and the previous tag.
    """
    # shape: (T, B, 1) flat (position s + 1, sentence b) node
    nodes = (torch.arange(1, n_tokens + 1, device=device)[:, None] * n_batch + torch.arange(n_batch, device=device))[:, :, None]
    return nodes * (n_tags + 1) + torch.arange(n_tags, device=device)


def _detour_table(follow: Tensor, detour: Tensor, size: int) -> Tuple[Optional[Tensor], Tensor]:
    """The ``size`` cheapest detours along the best continuation from every (s, l), cheapest first.

    A detour is named by the pool cell it opens (``_detour_cells``). Returns (costs, cells), both (T, B, L, size);
    when costs and cells both fit in 32 bits they are packed in one int64 (see ``_packed_detour_table``) and costs
    is None.
    """
    n_tokens, n_batch, n_tags = detour.shape
    if detour.dtype.itemsize <= 4 and (n_tokens + 1) * n_batch * (n_tags + 1) < 2**32:
        return None, _packed_detour_table(follow, detour.float(), size)
    costs = torch.full((n_tokens, n_batch, n_tags, size), float("inf"), dtype=detour.dtype, device=detour.device)
    cells = torch.zeros((n_tokens, n_batch, n_tags, size), dtype=torch.long, device=detour.device)
    floor = torch.full((n_batch, n_tags, 1), NEG_INF, dtype=detour.dtype, device=detour.device)
    opened = _detour_cells(n_tokens, n_batch, n_tags, detour.device)[:, :, :, None]
    for s in range(n_tokens - 2, -1, -1):
        index = follow[s + 1, :, :n_tags, None].expand(n_batch, n_tags, size)
        # shape: (B, L, size) the table of the next node on the best continuation, and it shifted by one
        cost, cell = costs[s + 1].gather(1, index), cells[s + 1].gather(1, index)
        shifted, shifted_cell = torch.cat([floor, cost[:, :, :-1]], 2), torch.cat([cell[:, :, :1], cell[:, :, :-1]], 2)
        new = detour[s][:, :, None]
        torch.minimum(cost, torch.maximum(new, shifted), out=costs[s])
        cells[s] = torch.where(cost <= new, cell, torch.where(shifted <= new, opened[s], shifted_cell))
    return costs, cells


def _packed_detour_table(follow: Tensor, detour: Tensor, size: int) -> Tensor:
    """``_detour_table`` for float32 detours: (T, B, L, 1 + size) int64 ``cost bits << 32 | cell``, slot 0 a floor.

    Costs are >= 0, so their bits order like the costs and one min/max keeps cost and cell together.
    """
    n_tokens, n_batch, n_tags = detour.shape
    cells = _detour_cells(n_tokens, n_batch, n_tags, detour.device)
    # shape: (T, B, L, 1)
    packed = ((detour.view(torch.int32).long() << 32) | cells)[:, :, :, None]
    # cost +inf at cell 0: no detour
    none = torch.tensor(float("inf")).view(torch.int32).long() << 32
    # rows s < T - 1 are written below, all but their floor slot 0
    table = torch.empty((n_tokens, n_batch, n_tags, 1 + size), dtype=torch.long, device=detour.device)
    table[:, :, :, 0] = torch.iinfo(torch.long).min
    table[-1, :, :, 1:] = int(none)
    # shape: (T, B * L) row of the next node on the best continuation in a flattened (B * L, 1 + size) table
    rows = (follow[:, :, :n_tags] + n_tags * torch.arange(n_batch, device=detour.device)[:, None]).view(n_tokens, -1)
    for s in range(n_tokens - 2, -1, -1):
        # shape: (B, L, 1 + size)
        row = table[s + 1].view(n_batch * n_tags, 1 + size).index_select(0, rows[s + 1]).view(n_batch, n_tags, 1 + size)
        torch.minimum(row[:, :, 1:], torch.maximum(packed[s], row[:, :, :-1]), out=table[s, :, :, 1:])
    return table


def _lookup_detours(table: Tuple[Optional[Tensor], Tensor], index: Tensor, count: int) -> Tuple[Tensor, Tensor]:
    """(B, count) costs and cells of the cheapest detours from each sentence's node (a flat (T * B * L) index)."""
    costs, cells = table
    if costs is not None:
        return costs.flatten(0, 2).index_select(0, index)[:, :count], cells.flatten(0, 2).index_select(0, index)[:, :count]
    packed = cells.flatten(0, 2).index_select(0, index)[:, 1:1 + count]
    return (packed >> 32).int().view(torch.float32), packed & 0xFFFFFFFF


def _pop_kbest(
    best: Tensor, follow: Tensor, table: Tuple[Optional[Tensor], Tensor], transitions: Tensor, start: Tensor,
    root: Tensor, k: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pop the K best paths from a pool of disjoint path sets (Nilsson & Goldberger's partition of the N best).

    A pool item is the set of paths that copy path ``parent`` before position ``pos``, have tag ``pred`` at
    ``pos - 1`` (``pred = L``: the start) and the tag of rank >= ``rank`` at ``pos`` (ranked by the best complete
    score; rank 0 is the best continuation); its key is the best score in the set, and (pos, pred) is stored as
    the cell ``(pos * B + b) * (L + 1) + pred``. Popping an item yields its best path, and its remainder splits into
    the next rank at ``pos`` and one detour per later node on the best continuation, of which only the cheapest
    (``table``) can still be popped.
    Returns (B, K) scores (descending), and (B, K) position, tag and parent of each path's last choice.
    """
    n_tokens, n_batch, n_tags = best.shape
    device = best.device
    batch = torch.arange(n_batch, device=device)
    size = table[1].shape[-1] - (table[0] is None)
    # shape: (L + 1, L + 1) transitions with the start scores as row L; column L a never-chosen -inf tag
    moves = torch.cat([torch.cat([transitions, start[None, :]]), torch.full((n_tags + 1, 1), NEG_INF, dtype=best.dtype, device=device)], 1)
    # shape: (T * B, L + 1)
    suffix = torch.cat([best, best.new_zeros(n_tokens, n_batch, 1)], 2).view(-1, n_tags + 1)
    follow_flat = follow.view(-1)
    # pop i pushes its next rank and its detours, of which only the K - 1 - i cheapest can still be popped
    pushed = [1 + min(size, k - 1 - i) for i in range(k - 1)]
    # shape: (B, Q) keys and (B, 3, Q) cell, rank, parent of the pool: item 0 is every path, then the items
    # pushed by each pop (rank 1 and parent = that pop, except for the next rank)
    keys = torch.full((n_batch, 1 + sum(pushed)), NEG_INF, dtype=best.dtype, device=device)
    items = torch.zeros((n_batch, 3, keys.shape[1]), dtype=torch.long, device=device)
    items[:, 1, 1:] = 1
    items[:, 2, 1:] = torch.repeat_interleave(torch.tensor(pushed, device=device, dtype=torch.long))
    items[:, 0, 0] = (root * n_batch + batch) * (n_tags + 1) + n_tags
    keys[:, 0], follow[root, batch, n_tags] = (start + best[root, batch]).max(dim=1)
    next_rank = torch.tensor([0, 1, 0], device=device)
    rank_limit = torch.tensor([n_tags - 1, n_tags], device=device)
    # per pop, (B, 1) score and (B,) node (pos * B + b), tag, parent of the popped path
    found, nodes, tags, parents = [], [], [], []
    for i in range(k):
        # shape: (B, 1)
        key, slot = keys.max(dim=1, keepdim=True)
        keys.scatter_(1, slot, NEG_INF)
        # shape: (B, 3)
        item = items.gather(2, slot[:, None, :].expand(n_batch, 3, 1)).view(n_batch, 3)
        cell, rank, parent = item.unbind(1)
        node, pred = cell.div(n_tags + 1, rounding_mode="floor"), cell.remainder(n_tags + 1)
        # shape: (B, L + 1) best complete score through each tag at pos, ranked; the best continuation ranks first
        scores = moves.index_select(0, pred) + suffix.index_select(0, node)
        scores.scatter_(1, follow_flat.index_select(0, cell)[:, None], float("inf"))
        ranked, order = scores.sort(dim=1, descending=True, stable=True)
        # shape: (B, 2) ranks rank and rank + 1 (clamped for the -inf items popped when fewer than K paths exist)
        ranks = torch.stack([rank, rank + 1], dim=1).clamp(max=rank_limit)
        tag = order.gather(1, ranks[:, :1])
        found.append(key)
        nodes.append(node)
        tags.append(tag[:, 0])
        parents.append(parent)
        if i == k - 1:
            break
        # shape: (B, 2) scores of the two ranks (rank 0, only popped first, scores +inf: use the key)
        pair = ranked.gather(1, ranks)
        gap = torch.nan_to_num((key if i == 0 else pair[:, :1]) - pair[:, 1:], nan=float("inf"), posinf=float("inf"))
        first, count = 1 + sum(pushed[:i]), pushed[i] - 1
        cost, opened = _lookup_detours(table, node * n_tags + tag[:, 0], count)
        keys[:, first:first + 1 + count] = key - torch.cat([gap, cost], 1)
        items[:, :, first] = item + next_rank
        items[:, 0, first + 1:first + 1 + count] = opened
    return (torch.cat(found, 1), torch.stack(nodes, 1).div(n_batch, rounding_mode="floor"), torch.stack(tags, 1),
            torch.stack(parents, 1))


def _trace_paths(follow: Tensor, pos: Tensor, tag: Tensor, parent: Tensor) -> Tensor:
    """(B, K, T) aligned tags of the popped paths: the parent's tags before ``pos``, then the best continuation."""
    n_tokens = follow.shape[0]
    n_batch, k = pos.shape
    device = pos.device
    # shape: (T, B, K)
    here = torch.arange(n_tokens, device=device)[:, None, None] == pos[None]
    paths = torch.empty((n_tokens, n_batch, k), dtype=torch.long, device=device)
    paths[0] = torch.where(here[0], tag, torch.zeros_like(tag))
    for s in range(1, n_tokens):
        torch.where(here[s], tag, follow[s].gather(1, paths[s - 1]), out=paths[s])
    # shape: (B, K, T)
    paths = paths.permute(1, 2, 0).contiguous()
    before = torch.arange(n_tokens, device=device)[None, None, :] < pos[:, :, None]
    for i in range(1, k):
        copied = paths.gather(1, parent[:, i, None, None].expand(n_batch, 1, n_tokens))[:, 0]
        paths[:, i] = torch.where(before[:, i], copied, paths[:, i])
    return paths


def _kernel_kbest(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int, with_log_z: bool = False
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """``_kbest_search`` by the C kernel (CPU, float64 inside): (B, K) scores in the emissions' dtype, (B, K, T) tags,
    and with ``with_log_z`` the (B,) log Z of ``_log_partition`` from the same pass (else None)."""
    n_batch, n_tokens, n_tags = emissions.shape
    scores = torch.empty((n_batch, k), dtype=torch.float64)
    tags = torch.empty((n_batch, k, n_tokens), dtype=torch.long)
    log_z = torch.empty(n_batch, dtype=torch.float64) if with_log_z else None
    extra = (log_z.numpy(), torch.empty(n_batch, dtype=torch.bool).numpy()) if with_log_z else ()
    _kernel.kbest(_as_buffer(emissions), lengths.contiguous().numpy(), _as_buffer(transitions.t()), _as_buffer(start),
                  _as_buffer(end), scores.numpy(), tags.numpy(), n_batch, n_tokens, n_tags, k, *extra)
    return scores.to(emissions.dtype), tags, None if log_z is None else log_z.to(emissions.dtype)


def _kbest_search(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int
) -> Tuple[Tensor, Tensor]:
    """Batched k-best Viterbi: (B, K) scores (best first, -inf = no such sequence) and (B, K, T) tags.

    On the CPU with the C kernel built, the kernel's lazy k-best (``_kernel_kbest``; K = 1 is its forward Viterbi).
    Elsewhere K = 1 is the forward Viterbi, and otherwise a backward max-product pass gives every node its best
    continuation and the cost of each detour from it, and the K best paths are popped from a pool of disjoint path
    sets (``_pop_kbest``); sentences are right-aligned so that every one ends at T - 1.
    """
    n_batch, n_tokens, n_tags = emissions.shape
    device = emissions.device
    ranks = torch.arange(k, device=device)
    if n_tokens == 0:
        scores = torch.where(ranks == 0, 0.0, NEG_INF).to(emissions.dtype).expand(n_batch, k).clone()
        return scores, torch.full((n_batch, k, 0), PAD, dtype=torch.long, device=device)
    if _on_kernel(emissions):
        return _kernel_kbest(emissions, lengths, transitions, start, end, k)[:2]
    if k == 1:
        best, paths = _viterbi_search(emissions, lengths, transitions, start, end)
    else:
        best_suffix, follow, detour = _backward_best(_align_right(emissions, lengths), transitions, end)
        table = _detour_table(follow, detour, min(k - 1, n_tokens - 1))
        shift = (n_tokens - lengths).clamp(max=n_tokens - 1)
        best, pos, tag, parent = _pop_kbest(best_suffix, follow, table, transitions, start, shift, k)
        # shape: (B, K, T) back to left-aligned positions
        source = (torch.arange(n_tokens, device=device)[None, :] + shift[:, None]).clamp(max=n_tokens - 1)
        paths = _trace_paths(follow, pos, tag, parent).gather(2, source[:, None, :].expand(n_batch, k, n_tokens))
    empty = lengths == 0
    best = torch.where(empty[:, None], torch.where(ranks == 0, 0.0, NEG_INF).to(best.dtype), best)
    real = torch.arange(n_tokens, device=device)[None, None, :] < lengths[:, None, None]
    keep = real & torch.isfinite(best)[:, :, None]
    return best, torch.where(keep, paths, torch.full_like(paths, PAD))


def viterbi(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tuple[Tensor, Tensor]:
    """Best tag sequence per sentence: (B, T) tags (``PAD``-padded) and (B,) scores (-inf if none is allowed)."""
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    kernel = _on_kernel(emissions)
    with torch.inference_mode(not kernel):  # as in kbest_viterbi
        scores, paths = _kbest_search(emissions, lengths, transitions, start, end, 1)
    if kernel:
        return paths[:, 0], scores[:, 0]
    return paths[:, 0].clone(), scores[:, 0].clone()


def kbest_viterbi(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int
) -> KBest:
    """The K best tag sequences per sentence with their exact probabilities (score - log Z)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}.")
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    # Inference mode skips autograd's bookkeeping on the torch code's many small ops; its results are cloned out of
    # it so that they can still be used as constants in a loss. The kernel's results are new tensors outside autograd
    # and need neither.
    kernel = _on_kernel(emissions)
    with torch.inference_mode(not kernel), torch.no_grad():
        if kernel:
            scores, paths, log_z = _kernel_kbest(emissions, lengths, transitions, start, end, k, with_log_z=True)
        else:
            scores, paths = _kbest_search(emissions, lengths, transitions, start, end, k)
            log_z = _log_partition(emissions, lengths, transitions, start, end)
        valid = torch.isfinite(scores)
        log_probs = torch.where(valid, scores - log_z[:, None], torch.full_like(scores, NEG_INF))
    if not kernel:
        paths, scores, log_probs, valid = (x.clone() for x in (paths, scores, log_probs, valid))
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
