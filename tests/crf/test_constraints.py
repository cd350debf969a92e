"""Scheme constraints and tag validation."""
import pytest

from mgkd_spacy.crf import build_constraints, tags_for_labels


def allowed(tags, scheme, a, b):
    c = build_constraints(tags, scheme)
    return bool(c.transitions[tags.index(a), tags.index(b)])


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
    assert allowed(tags, "IOB1", "O", "I-PER") and allowed(tags, "IOB1", "I-LOC", "I-PER")
    assert allowed(tags, "IOB1", "I-PER", "B-PER") and not allowed(tags, "IOB1", "O", "B-PER")
    tags = tags_for_labels(["NAME"], "BMES")
    assert allowed(tags, "BMES", "B-NAME", "M-NAME") and allowed(tags, "BMES", "M-NAME", "E-NAME")
    assert not allowed(tags, "BMES", "S-NAME", "E-NAME")


@pytest.mark.parametrize(
    "tags,scheme,match",
    [
        (["O", "B-"], "BIO", "Malformed tag"),
        (["O", "X-PER"], "BIO", "Malformed tag"),
        (["O", "L-PER"], "BIO", "Malformed tag"),
        (["O", "O"], "BIO", "duplicates"),
        (["O"], "XYZ", "Unknown tagging scheme"),
    ],
)
def test_bad_tags_raise(tags, scheme, match):
    with pytest.raises(ValueError, match=match):
        build_constraints(tags, scheme)
