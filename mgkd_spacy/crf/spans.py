"""Exact probability that a CRF labels a span as one entity of a given type, for every supported scheme."""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .constraints import check_scheme, parse_tag
from .ops import check_inputs, window_log_probs

Span = Tuple[int, int, int, str]  # (sentence index, start token, end token exclusive, entity type)


def _span_events(
    parsed: Sequence[Tuple[str, str]], scheme: str, start: int, end: int, label: str, length: int
) -> List[Tuple[int, List[List[bool]]]]:
    """Disjoint events whose union is "tokens [start, end) form exactly one entity of type ``label``".

    parsed (Sequence[Tuple[str, str]]): (role, entity type) of each tag, from ``parse_tag``.
    Each event is (first position, per-position allowed-tag lists), a product of per-position tag sets.
    """

    def is_(role_names: Sequence[str]) -> List[bool]:
        return [role in role_names and label_type == label for role, label_type in parsed]

    def not_(role_names: Sequence[str]) -> List[bool]:
        return [not (role in role_names and label_type == label) for role, label_type in parsed]

    width = end - start
    if scheme in ("BIO", "IOB1"):
        inner = [is_(["inside"])] * (width - 1)
        after = [not_(["inside"])] if end < length else []
        if scheme == "BIO":
            return [(start, [is_(["begin"])] + inner + after)]
        events = [(start, [is_(["begin"])] + inner + after)]
        before = [not_(["begin", "inside"])] if start > 0 else []
        events.append((start - len(before), before + [is_(["inside"])] + inner + after))
        return events
    if width == 1:
        return [(start, [is_(["unit"])])]
    return [(start, [is_(["begin"])] + [is_(["inside"])] * (width - 2) + [is_(["last"])])]


def entity_log_probs(
    emissions: Tensor,
    lengths: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    tags: Sequence[str],
    scheme: str,
    spans: Sequence[Span],
) -> Tensor:
    """Exact log-probability of each span being one entity of its type, (N,), divided by the true Z.

    tags (Sequence[str]): the L tags of the CRF's tag axis; scheme (str): their scheme.
    spans (Sequence[Span]): (sentence index, start, end exclusive, type) with 0 <= start < end <= length.
    For BIO and IOB1 the event includes the next tag not continuing the entity (and, for IOB1, the boundary
    before it), so the probabilities of different analyses of the same tokens are disjoint.
    """
    scheme = check_scheme(scheme)
    lengths = check_inputs(emissions, lengths, transitions, start, end)
    if len(tags) != emissions.shape[2]:
        raise ValueError(f"{len(tags)} tags given for emissions with L={emissions.shape[2]}.")
    owners: List[int] = []
    batch_index: List[int] = []
    firsts: List[int] = []
    windows: List[List[List[bool]]] = []
    parsed = [parse_tag(tag, scheme) for tag in tags]
    for n, (b, begin, stop, label) in enumerate(spans):
        length = int(lengths[b]) if 0 <= b < len(lengths) else -1
        if not 0 <= begin < stop <= length:
            raise ValueError(f"span {n} = {(b, begin, stop, label)} is not inside sentence {b} (length {length}).")
        for first, sets in _span_events(parsed, scheme, begin, stop, label, length):
            owners.append(n)
            batch_index.append(b)
            firsts.append(first)
            windows.append(sets)
    if not spans:
        return emissions.new_zeros(0)
    width = max(len(w) for w in windows)
    n_tags = len(tags)
    # shape: (E, W, L)
    tag_sets = torch.ones((len(windows), width, n_tags), dtype=torch.bool)
    for e, sets in enumerate(windows):
        tag_sets[e, : len(sets)] = torch.tensor(sets, dtype=torch.bool).reshape(len(sets), n_tags)
    widths = torch.tensor([len(w) for w in windows])
    event_log_probs = window_log_probs(
        emissions, lengths, transitions, start, end, torch.tensor(batch_index), torch.tensor(firsts), tag_sets, widths
    )
    # shape: (N, E), -inf where an event does not belong to the span
    owner = torch.tensor(owners, device=emissions.device)
    grid = torch.full((len(spans), len(windows)), float("-inf"), dtype=emissions.dtype, device=emissions.device)
    grid[owner, torch.arange(len(windows), device=emissions.device)] = event_log_probs
    return torch.logsumexp(grid, dim=1)
