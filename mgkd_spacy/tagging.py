"""Conversions between entity spans, spaCy's BILUO tags and the tags of every supported scheme."""
from typing import List, Optional, Sequence, Tuple

from .crf.constraints import OUTSIDE, check_scheme, parse_tag

MISSING = "-"
Span = Tuple[int, int, str]  # (start token, end token exclusive, entity type)

# The prefix a scheme writes for each role; IOB1's begin/unit prefix depends on the previous token (see below).
_PREFIX = {
    "BIO": {"begin": "B", "inside": "I", "last": "I", "unit": "B"},
    "IOB1": {"begin": "I", "inside": "I", "last": "I", "unit": "I"},
    "BILUO": {"begin": "B", "inside": "I", "last": "L", "unit": "U"},
    "BIOES": {"begin": "B", "inside": "I", "last": "E", "unit": "S"},
    "BMES": {"begin": "B", "inside": "M", "last": "E", "unit": "S"},
}


def biluo_to_scheme(biluo: Sequence[Optional[str]], scheme: str) -> List[str]:
    """Convert per-token BILUO tags (spaCy's ``Example.get_aligned_ner`` output) to ``scheme``.

    ``None`` and ``"-"`` (missing or misaligned annotation) become ``MISSING``. In IOB1, an entity that directly
    follows one of the same type begins with B, every other entity token is I.
    """
    scheme = check_scheme(scheme)
    out: List[str] = []
    previous = (OUTSIDE, "")
    for tag in biluo:
        if tag is None or tag == MISSING:
            out.append(MISSING)
            previous = (MISSING, "")
            continue
        role, label = parse_tag(tag, "BILUO")
        if role == "outside":
            out.append(OUTSIDE)
        elif scheme == "IOB1" and role in ("begin", "unit") and previous[0] in ("last", "unit") and previous[1] == label:
            out.append(f"B-{label}")
        else:
            out.append(f"{_PREFIX[scheme][role]}-{label}")
        previous = (role, label)
    return out


def tags_to_spans(tags: Sequence[str], scheme: str) -> List[Span]:
    """Entity spans of a tag sequence, read as ``conlleval`` chunks (robust to invalid sequences)."""
    scheme = check_scheme(scheme)
    spans: List[Span] = []
    start, label = -1, ""
    for i, tag in enumerate(tags):
        role, tag_label = parse_tag(tag, scheme)
        opens = role in ("begin", "unit") or (role in ("inside", "last") and (start < 0 or tag_label != label))
        if scheme == "IOB1" and role == "begin":
            opens = True
        if start >= 0 and (role == "outside" or opens):
            spans.append((start, i, label))
            start = -1
        if role != "outside" and opens:
            start, label = i, tag_label
        if start >= 0 and role in ("last", "unit") and scheme not in ("BIO", "IOB1"):
            spans.append((start, i + 1, label))
            start = -1
    if start >= 0:
        spans.append((start, len(tags), label))
    return spans
