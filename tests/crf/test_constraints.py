"""Scheme constraints and tag validation.

The main check is a bijection: the tag sequences a scheme's masks allow are exactly the encodings of all entity
segmentations, written here independently of the package.
"""
import itertools
from typing import List, Sequence, Tuple

import pytest
import torch

from mgkd_spacy.crf import SCHEMES, build_constraints, check_scheme, parse_tag, tags_for_labels


def allowed(tags, scheme, a, b):
    c = build_constraints(tags, scheme)
    return bool(c.transitions[tags.index(a), tags.index(b)])


def segmentations(n: int, labels: Sequence[str]) -> List[List[Tuple[int, int, str]]]:
    """Every set of non-overlapping typed entities over n tokens."""
    if n == 0:
        return [[]]
    out = [s for s in segmentations(n - 1, labels)]  # last token is O
    for width in range(1, n + 1):
        for label in labels:
            out += [s + [(n - width, n, label)] for s in segmentations(n - width, labels)]
    return out


def encode(spans: Sequence[Tuple[int, int, str]], n: int, scheme: str) -> Tuple[str, ...]:
    tags = ["O"] * n
    ends = {}
    for s, e, label in spans:
        if scheme == "BIO":
            tags[s:e] = [f"B-{label}"] + [f"I-{label}"] * (e - s - 1)
        elif scheme == "IOB1":  # B only for an entity directly after one of the same type
            first = "B" if ends.get(s) == label else "I"
            tags[s:e] = [f"{first}-{label}"] + [f"I-{label}"] * (e - s - 1)
        else:
            begin, inside, last, unit = {"BILUO": "BILU", "BIOES": "BIES", "BMES": "BMES"}[scheme]
            if e - s == 1:
                tags[s] = f"{unit}-{label}"
            else:
                tags[s:e] = [f"{begin}-{label}"] + [f"{inside}-{label}"] * (e - s - 2) + [f"{last}-{label}"]
        ends[e] = label
    return tuple(tags)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_allowed_sequences_are_exactly_the_encoded_segmentations(scheme):
    labels = ["PER", "LOC"]
    tags = tags_for_labels(labels, scheme)
    c = build_constraints(tags, scheme)
    for n in range(0, 5):
        allowed_seqs = set()
        for seq in itertools.product(range(len(tags)), repeat=n):
            ok = n == 0 or (bool(c.start[seq[0]]) and bool(c.end[seq[-1]])
                            and all(bool(c.transitions[a, b]) for a, b in zip(seq, seq[1:])))
            if ok:
                allowed_seqs.add(tuple(tags[y] for y in seq))
        encoded = [encode(sorted(s), n, scheme) for s in segmentations(n, labels)]
        assert len(set(encoded)) == len(encoded), "two segmentations share an encoding"
        assert set(encoded) == allowed_seqs, (n, set(encoded) ^ allowed_seqs)


def test_bio_rules():
    tags = tags_for_labels(["PER", "LOC"], "BIO")
    c = build_constraints(tags, "BIO")
    assert not allowed(tags, "BIO", "O", "I-PER") and not allowed(tags, "BIO", "B-PER", "I-LOC")
    assert allowed(tags, "BIO", "B-PER", "I-PER") and allowed(tags, "BIO", "I-PER", "B-PER")
    assert not c.start[tags.index("I-PER")] and c.end.all()


def test_biluo_rules():
    tags = tags_for_labels(["PER"], "BILUO")
    c = build_constraints(tags, "BILUO")
    assert allowed(tags, "BILUO", "B-PER", "L-PER") and not allowed(tags, "BILUO", "B-PER", "O")
    assert not allowed(tags, "BILUO", "L-PER", "I-PER") and allowed(tags, "BILUO", "U-PER", "B-PER")
    assert [t for t, ok in zip(tags, c.start) if ok] == ["O", "B-PER", "U-PER"]
    assert [t for t, ok in zip(tags, c.end) if ok] == ["O", "L-PER", "U-PER"]


def test_iob1_and_bmes_rules():
    tags = tags_for_labels(["PER", "LOC"], "IOB1")
    c = build_constraints(tags, "IOB1")
    assert allowed(tags, "IOB1", "O", "I-PER") and allowed(tags, "IOB1", "I-LOC", "I-PER")
    assert allowed(tags, "IOB1", "I-PER", "B-PER") and allowed(tags, "IOB1", "B-PER", "B-PER")
    assert not allowed(tags, "IOB1", "O", "B-PER") and not allowed(tags, "IOB1", "I-LOC", "B-PER")
    assert not c.start[tags.index("B-PER")] and c.end.all()
    tags = tags_for_labels(["NAME"], "BMES")
    assert allowed(tags, "BMES", "B-NAME", "M-NAME") and allowed(tags, "BMES", "M-NAME", "E-NAME")
    assert not allowed(tags, "BMES", "S-NAME", "E-NAME") and not allowed(tags, "BMES", "B-NAME", "O")


def test_tags_for_labels_layout_and_case_insensitive_scheme():
    assert tags_for_labels(["PER", "LOC"], "bio") == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert tags_for_labels(["X"], "BILUO") == ["O", "B-X", "I-X", "L-X", "U-X"]
    assert tags_for_labels([], "BMES") == ["O"]
    assert check_scheme("bioes") == "BIOES"
    assert parse_tag("O", "BIO") == ("outside", "") and parse_tag("L-MISC", "BILUO") == ("last", "MISC")
    assert parse_tag("B-ORG-X", "BIO") == ("begin", "ORG-X")


@pytest.mark.parametrize(
    "tags,scheme,match",
    [
        (["O", "B-"], "BIO", "Malformed tag 'B-'"),
        (["O", "X-PER"], "BIO", "Malformed tag 'X-PER'"),
        (["O", "-PER"], "BIO", "Malformed tag"),
        (["O", "BPER"], "BIO", "Malformed tag"),
        (["O", "b-PER"], "BIO", "Malformed tag"),
        (["O", "L-PER"], "BIO", "Malformed tag"),
        (["O", "M-PER"], "BILUO", "Malformed tag"),
        (["O", "U-PER"], "BMES", "Malformed tag"),
        (["O", "B-PER", "B-PER"], "BIO", r"duplicates: \['B-PER'\]"),
        (["O", "O"], "BIO", "duplicates"),
        (["O"], "XYZ", "Unknown tagging scheme 'XYZ'"),
        (["O"], "", "Unknown tagging scheme"),
    ],
)
def test_bad_tags_raise(tags, scheme, match):
    with pytest.raises(ValueError, match=match):
        build_constraints(tags, scheme)


@pytest.mark.parametrize("labels,scheme,match", [
    (["PER"], "IOB2", "Unknown tagging scheme"),
    ([""], "BIO", "not a bare entity type"),
    ([" PER"], "BIO", "not a bare entity type"),
    (["O"], "BIO", "not a bare entity type"),
])
def test_bad_labels_raise(labels, scheme, match):
    with pytest.raises(ValueError, match=match):
        tags_for_labels(labels, scheme)


def test_masks_are_bool_and_shaped():
    tags = tags_for_labels(["A", "B"], "BIOES")
    c = build_constraints(tags, "BIOES")
    assert c.transitions.dtype == c.start.dtype == c.end.dtype == torch.bool
    assert c.transitions.shape == (9, 9) and c.start.shape == c.end.shape == (9,)
    single = build_constraints(["O"], "BIO")
    assert single.transitions.tolist() == [[True]] and single.start.tolist() == [True]
