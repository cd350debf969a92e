"""Allowed-transition masks for the tagging schemes an entity CRF decodes with.

Tags are strings: ``"O"`` or ``"<prefix>-<type>"``. Supported schemes and their prefixes:

- ``BIO`` (IOB2): B begins an entity, I continues it.
- ``IOB1``: I begins or continues an entity; B only begins an entity that directly follows one of the same type.
- ``BILUO``: B/I/L for multi-token entities, U for single tokens.
- ``BIOES``: the same with E (end) and S (single).
- ``BMES``: the same with M (middle), E (end) and S (single), as used by Chinese NER corpora.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

# Role of each prefix: "begin", "inside", "last", "unit".
_ROLES: Dict[str, Dict[str, str]] = {
    "BIO": {"B": "begin", "I": "inside"},
    "IOB1": {"B": "begin", "I": "inside"},
    "BILUO": {"B": "begin", "I": "inside", "L": "last", "U": "unit"},
    "BIOES": {"B": "begin", "I": "inside", "E": "last", "S": "unit"},
    "BMES": {"B": "begin", "M": "inside", "E": "last", "S": "unit"},
}
SCHEMES: Tuple[str, ...] = tuple(_ROLES)
OUTSIDE = "O"


@dataclass(frozen=True)
class Constraints:
    """Boolean masks of what a valid tag sequence may do; True = allowed.

    transitions (torch.Tensor): (L, L), ``transitions[i, j]`` allows tag j right after tag i.
    start (torch.Tensor): (L,), tags a sentence may begin with.
    end (torch.Tensor): (L,), tags a sentence may end with.
    """

    transitions: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor


def check_scheme(scheme: str) -> str:
    """Return the canonical (upper-case) scheme name, or raise a ValueError naming the supported ones."""
    canonical = scheme.upper()
    if canonical not in _ROLES:
        raise ValueError(f"Unknown tagging scheme {scheme!r}: expected one of {', '.join(SCHEMES)}.")
    return canonical


def parse_tag(tag: str, scheme: str) -> Tuple[str, str]:
    """Split a tag into (role, entity type); ``"O"`` gives ("outside", "").

    Raises a ValueError for tags that do not belong to the scheme, e.g. ``"B-"`` or ``"X-PER"``.
    """
    roles = _ROLES[check_scheme(scheme)]
    if tag == OUTSIDE:
        return "outside", ""
    prefix, sep, label = tag.partition("-")
    if not sep or not label or prefix not in roles:
        raise ValueError(
            f"Malformed tag {tag!r} for scheme {scheme}: expected 'O' or '<prefix>-<type>' "
            f"with prefix in {sorted(roles)} and a non-empty type."
        )
    return roles[prefix], label


def tags_for_labels(labels: Sequence[str], scheme: str) -> List[str]:
    """The tag set of a scheme for entity types ``labels``: "O" first, then each prefix for each label."""
    prefixes = list(_ROLES[check_scheme(scheme)])
    for label in labels:
        if not label or label != label.strip() or label == OUTSIDE:
            raise ValueError(f"Entity label {label!r} is not a bare entity type such as 'PER'.")
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in prefixes]


def _allowed(prev: Tuple[str, str], cur: Tuple[str, str], scheme: str) -> bool:
    """Whether tag ``cur`` may follow tag ``prev`` (both parsed)."""
    (prev_role, prev_type), (cur_role, cur_type) = prev, cur
    if scheme == "BIO":
        return cur_role != "inside" or (prev_role in ("begin", "inside") and prev_type == cur_type)
    if scheme == "IOB1":
        return cur_role != "begin" or (prev_role in ("begin", "inside") and prev_type == cur_type)
    # BILUO-like schemes: an open entity (after begin/inside) must continue with inside/last of its type.
    if prev_role in ("begin", "inside"):
        return cur_role in ("inside", "last") and cur_type == prev_type
    return cur_role in ("outside", "begin", "unit")


def build_constraints(tags: Sequence[str], scheme: str) -> Constraints:
    """Allowed transitions, starts and ends for ``tags`` under ``scheme``.

    tags (Sequence[str]): the L tags, in the order of the CRF's tag axis.
    scheme (str): one of ``SCHEMES`` (case-insensitive).
    RETURNS (Constraints): boolean masks; forbidden moves get probability exactly 0 in every CRF operation.
    """
    scheme = check_scheme(scheme)
    if len(set(tags)) != len(tags):
        raise ValueError(f"Tag list has duplicates: {sorted(t for t in set(tags) if list(tags).count(t) > 1)}.")
    parsed = [parse_tag(tag, scheme) for tag in tags]
    n_tags = len(parsed)
    # shape: (L, L)
    transitions = torch.tensor(
        [[_allowed(prev, cur, scheme) for cur in parsed] for prev in parsed], dtype=torch.bool
    ).reshape(n_tags, n_tags)
    if scheme == "BIO":
        start = [role != "inside" for role, _ in parsed]
        end = [True] * n_tags
    elif scheme == "IOB1":
        start = [role != "begin" for role, _ in parsed]
        end = [True] * n_tags
    else:
        start = [role in ("outside", "begin", "unit") for role, _ in parsed]
        end = [role in ("outside", "last", "unit") for role, _ in parsed]
    return Constraints(transitions, torch.tensor(start, dtype=torch.bool), torch.tensor(end, dtype=torch.bool))
