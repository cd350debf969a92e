"""The surrogate schema: DocBin round trips, validation errors, alignment to the student's tags, k-best rows."""
from dataclasses import replace

import msgpack
import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin

from mgkd_spacy.crf import build_constraints, kbest_viterbi, marginals, tags_for_labels
from mgkd_spacy.surrogates import (
    EXTENSION,
    SURROGATE_VERSION,
    Surrogate,
    align_to_student,
    get_surrogate,
    register_extension,
    set_surrogate,
    surrogate_from_kbest,
    validate_surrogate,
)

TAGS = tags_for_labels(["PER", "LOC"], "BILUO")  # 9 tags, "O" first
WORDS = ["Ada", "Lovelace", "met", "Babbage", "in", "London"]
DOC_INDEX = 7


@pytest.fixture
def nlp():
    return spacy.blank("en")


@pytest.fixture
def doc(nlp):
    return Doc(nlp.vocab, words=WORDS)


def make_surrogate(n_tokens=len(WORDS), k=3, seed=0, token_targets=True):
    """A valid surrogate with random distinct sequences and float16 token-level arrays."""
    rng = numpy.random.default_rng(seed)
    n_tags = len(TAGS)
    rows = set()
    while len(rows) < k:
        rows.add(tuple(rng.integers(0, n_tags, size=n_tokens).tolist()))
    # shape: (K, T)
    sequences = numpy.array(sorted(rows), dtype="int64").reshape(k, n_tokens)
    # shape: (K,) probabilities summing to 0.8, best first
    probs = numpy.sort(rng.dirichlet(numpy.ones(k)))[::-1] * 0.8
    emission_log_probs = marginal_values = None
    if token_targets:
        # shape: (T, L)
        scores = rng.normal(size=(n_tokens, n_tags)) * 3
        emission_log_probs = (scores - numpy.logaddexp.reduce(scores, axis=1, keepdims=True)).astype("float16")
        marginal_values = rng.dirichlet(numpy.ones(n_tags), size=n_tokens).astype("float16")
    return Surrogate(
        tags=list(TAGS),
        scheme="BILUO",
        sequences=sequences,
        log_probs=numpy.log(probs).astype("float32"),
        emission_log_probs=emission_log_probs,
        marginals=marginal_values,
    )


def docbin_round_trip(nlp, docs):
    data = DocBin(docs=docs, store_user_data=True).to_bytes()
    return list(DocBin(store_user_data=True).from_bytes(data).get_docs(nlp.vocab))


def assert_bit_exact(actual, expected):
    if expected is None:
        assert actual is None
        return
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes()


def test_register_extension_is_idempotent(doc):
    register_extension()
    register_extension()
    assert Doc.has_extension(EXTENSION)
    assert doc._.get(EXTENSION) is None


def test_get_surrogate_returns_none_without_annotation(doc):
    assert get_surrogate(doc) is None


def test_stored_value_is_plain_msgpack_data(doc):
    set_surrogate(doc, make_surrogate())
    stored = doc._.get(EXTENSION)
    # Plain msgpack (no numpy extension hooks) must accept it unchanged.
    assert msgpack.unpackb(msgpack.packb(stored), raw=False) == stored
    assert stored["version"] == SURROGATE_VERSION


def test_docbin_round_trip_preserves_all_fields(nlp, doc):
    surrogate = make_surrogate()
    set_surrogate(doc, surrogate)
    (restored,) = docbin_round_trip(nlp, [doc])
    result = get_surrogate(restored, doc_index=0)
    assert result.tags == surrogate.tags
    assert result.scheme == surrogate.scheme
    assert result.version == SURROGATE_VERSION
    numpy.testing.assert_array_equal(result.sequences, surrogate.sequences)
    assert_bit_exact(result.log_probs, surrogate.log_probs)
    assert_bit_exact(result.emission_log_probs, surrogate.emission_log_probs)
    assert_bit_exact(result.marginals, surrogate.marginals)


def test_docbin_round_trip_keeps_missing_token_targets_missing(nlp, doc):
    set_surrogate(doc, make_surrogate(token_targets=False))
    (restored,) = docbin_round_trip(nlp, [doc])
    result = get_surrogate(restored)
    assert result.emission_log_probs is None
    assert result.marginals is None


def test_docbin_round_trip_keeps_docs_without_surrogate_empty(nlp, doc):
    other = Doc(nlp.vocab, words=["no", "teacher"])
    set_surrogate(doc, make_surrogate())
    restored = docbin_round_trip(nlp, [doc, other])
    assert get_surrogate(restored[0]) is not None
    assert get_surrogate(restored[1]) is None


def test_zero_token_doc_round_trips(nlp):
    empty = Doc(nlp.vocab, words=[])
    surrogate = surrogate_from_kbest(TAGS, "BILUO", [[]], [0.0], [True])
    set_surrogate(empty, surrogate)
    (restored,) = docbin_round_trip(nlp, [empty])
    result = get_surrogate(restored)
    assert result.sequences.shape == (1, 0)
    assert result.log_probs.tolist() == [0.0]


def test_zero_token_doc_accepts_empty_token_targets():
    surrogate = make_surrogate(n_tokens=0, k=1)
    surrogate.log_probs = numpy.zeros(1, dtype="float32")
    validate_surrogate(surrogate, 0, DOC_INDEX)


def test_validation_allows_ties():
    surrogate = make_surrogate(k=3)
    log_probs = numpy.array([-1.0, -2.0, -2.0], dtype="float32")
    validate_surrogate(replace(surrogate, log_probs=log_probs), len(WORDS), DOC_INDEX)


def test_validation_allows_rounding_above_zero():
    surrogate = make_surrogate(k=1)
    log_probs = numpy.array([5e-5], dtype="float32")  # a certain sentence: score - log Z rounded up
    validate_surrogate(replace(surrogate, log_probs=log_probs), len(WORDS), DOC_INDEX)


def _bad(field, value_fn):
    def make():
        surrogate = make_surrogate()
        return replace(surrogate, **{field: value_fn(surrogate)})

    return make


def _set_row(values, row, value):
    values = values.copy()
    values[row] = value
    return values


BAD_CASES = {
    "unknown version": (_bad("version", lambda s: 2), "schema version 2 is not supported"),
    "unknown scheme": (_bad("scheme", lambda s: "XYZ"), "Unknown tagging scheme 'XYZ'"),
    "duplicate tags": (_bad("tags", lambda s: s.tags[:-1] + ["O"]), r"duplicate tags \['O'\]"),
    "tag outside scheme": (_bad("tags", lambda s: s.tags[:-1] + ["X-LOC"]), "Malformed tag 'X-LOC'"),
    "no sequences": (
        lambda: replace(make_surrogate(), sequences=numpy.zeros((0, 6), "int64"), log_probs=numpy.zeros(0, "float32")),
        r"no sequences \(K = 0\)",
    ),
    "float sequences": (_bad("sequences", lambda s: s.sequences.astype("float32")), "integer array"),
    "sequences not 2d": (_bad("sequences", lambda s: s.sequences[0]), r"must have shape \(K, 6\)"),
    "wrong token count": (_bad("sequences", lambda s: s.sequences[:, :5]), r"expected \(3, 6\) for a doc of 6 tokens"),
    "log_probs per sequence": (_bad("log_probs", lambda s: s.log_probs[:2]), r"log_probs have shape \(2,\)"),
    "tag index too large": (_bad("sequences", lambda s: _set_row(s.sequences, (0, 0), 9)), r"must lie in \[0, 9\)"),
    "negative tag index": (_bad("sequences", lambda s: _set_row(s.sequences, (1, 2), -1)), r"must lie in \[0, 9\)"),
    "duplicate sequences": (
        _bad("sequences", lambda s: _set_row(s.sequences, 1, s.sequences[0])),
        "duplicate sequences",
    ),
    "NaN log_prob": (_bad("log_probs", lambda s: _set_row(s.log_probs, 1, numpy.nan)), "log_probs contain NaN"),
    "-inf log_prob": (_bad("log_probs", lambda s: _set_row(s.log_probs, 2, -numpy.inf)), "drop invalid rows"),
    "positive log_prob": (_bad("log_probs", lambda s: _set_row(s.log_probs, 0, 0.1)), "must be finite and <= 0"),
    "probabilities over 1": (
        _bad("log_probs", lambda s: numpy.log(numpy.array([0.6, 0.3, 0.3], "float32"))),
        "sum to 1.2 > 1; log_probs must be divided by the teacher's true partition function",
    ),
    "not sorted": (_bad("log_probs", lambda s: s.log_probs[::-1].copy()), "not sorted best first"),
    "emissions shape": (
        _bad("emission_log_probs", lambda s: s.emission_log_probs[:, :8]),
        r"emission_log_probs has shape \(6, 8\), expected \(6, 9\)",
    ),
    "emissions NaN": (
        _bad("emission_log_probs", lambda s: _set_row(s.emission_log_probs, 3, numpy.nan)),
        "emission_log_probs contains NaN",
    ),
    "emissions raw scores": (
        _bad("emission_log_probs", lambda s: (s.emission_log_probs + 2).astype("float16")),
        "must be a per-token log-softmax",
    ),
    "marginals shape": (_bad("marginals", lambda s: s.marginals[:5]), r"marginals has shape \(5, 9\)"),
    "marginals NaN": (_bad("marginals", lambda s: _set_row(s.marginals, (0, 0), numpy.nan)), "marginals contains NaN"),
    "marginals above 1": (
        _bad("marginals", lambda s: _set_row(s.marginals, 0, numpy.eye(9, dtype="float16")[0] * 1.5)),
        r"marginals must lie in \[0, 1\]",
    ),
    "marginals rows not summing to 1": (
        _bad("marginals", lambda s: (s.marginals * 0.9).astype("float16")),
        "sum to 1 over the tags of each token",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_validation_names_problem_and_doc(case):
    make, message = BAD_CASES[case]
    with pytest.raises(ValueError, match=message) as excinfo:
        validate_surrogate(make(), len(WORDS), doc_index=DOC_INDEX)
    assert f"doc {DOC_INDEX}" in str(excinfo.value)


def test_set_surrogate_rejects_invalid_and_stores_nothing(doc):
    bad = replace(make_surrogate(), sequences=make_surrogate().sequences[:, :5])
    with pytest.raises(ValueError, match=f"doc {DOC_INDEX}: sequences have shape"):
        set_surrogate(doc, bad, doc_index=DOC_INDEX)
    assert doc._.get(EXTENSION) is None


def test_get_surrogate_rejects_surrogate_of_other_doc(nlp, doc):
    set_surrogate(doc, make_surrogate())
    shorter = Doc(nlp.vocab, words=WORDS[:4])
    shorter._.set(EXTENSION, doc._.get(EXTENSION))
    with pytest.raises(ValueError, match=f"doc {DOC_INDEX}: .* for a doc of 4 tokens"):
        get_surrogate(shorter, doc_index=DOC_INDEX)


def test_get_surrogate_rejects_stored_other_version(doc):
    set_surrogate(doc, make_surrogate())
    doc._.get(EXTENSION)["version"] = 99
    with pytest.raises(ValueError, match=f"doc {DOC_INDEX}: schema version 99 is not supported"):
        get_surrogate(doc, doc_index=DOC_INDEX)


def test_get_surrogate_rejects_malformed_stored_data(doc):
    set_surrogate(doc, make_surrogate())
    del doc._.get(EXTENSION)["sequences"]
    with pytest.raises(ValueError, match=f"doc {DOC_INDEX}: malformed stored data"):
        get_surrogate(doc, doc_index=DOC_INDEX)


def test_get_surrogate_rejects_non_numeric_stored_dtype(doc):
    set_surrogate(doc, make_surrogate())
    doc._.get(EXTENSION)["log_probs"]["dtype"] = "|O"
    with pytest.raises(ValueError, match="malformed stored data"):
        get_surrogate(doc, doc_index=DOC_INDEX)


def _permuted_tags(seed=1):
    order = numpy.random.default_rng(seed).permutation(len(TAGS))
    return [TAGS[i] for i in order]


def test_align_to_student_keeps_tag_strings_per_position():
    surrogate = make_surrogate()
    student_tags = _permuted_tags()
    aligned = align_to_student(surrogate, student_tags, doc_index=DOC_INDEX)
    assert aligned.tags == student_tags
    teacher_strings = [[surrogate.tags[i] for i in row] for row in surrogate.sequences]
    student_strings = [[student_tags[i] for i in row] for row in aligned.sequences]
    assert student_strings == teacher_strings
    assert_bit_exact(aligned.log_probs, surrogate.log_probs)


def test_align_to_student_permutes_token_target_columns():
    surrogate = make_surrogate()
    student_tags = _permuted_tags()
    aligned = align_to_student(surrogate, student_tags)
    for j, tag in enumerate(student_tags):
        teacher_j = surrogate.tags.index(tag)
        assert_bit_exact(aligned.emission_log_probs[:, j], surrogate.emission_log_probs[:, teacher_j])
        assert_bit_exact(aligned.marginals[:, j], surrogate.marginals[:, teacher_j])
    validate_surrogate(aligned, len(WORDS))


def test_align_to_student_leaves_input_unchanged():
    surrogate = make_surrogate()
    sequences = surrogate.sequences.copy()
    aligned = align_to_student(surrogate, list(TAGS))
    aligned.sequences[0, 0] = 0
    numpy.testing.assert_array_equal(surrogate.sequences, sequences)


@pytest.mark.parametrize(
    "student_tags,message",
    [
        (
            tags_for_labels(["PER"], "BILUO"),
            r"teacher only: \['B-LOC', 'I-LOC', 'L-LOC', 'U-LOC'\], student only: \[\]",
        ),
        (tags_for_labels(["PER", "LOC", "ORG"], "BILUO"), r"teacher only: \[\], student only: \['B-ORG'"),
        (tags_for_labels(["PER", "LOC"], "BIO"), r"teacher only: \['L-LOC', 'L-PER', 'U-LOC', 'U-PER'\]"),
    ],
)
def test_align_to_student_rejects_differing_tag_sets(student_tags, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        align_to_student(make_surrogate(), student_tags, doc_index=DOC_INDEX)
    assert f"doc {DOC_INDEX}" in str(excinfo.value)
    assert "train the student with the teacher's labels and the same scheme" in str(excinfo.value)


def test_align_to_student_rejects_other_scheme():
    teacher = Surrogate(
        tags=tags_for_labels(["PER"], "BIO"),
        scheme="BIO",
        sequences=numpy.zeros((1, len(WORDS)), "int64"),
        log_probs=numpy.zeros(1, "float32"),
    )
    with pytest.raises(ValueError, match=f"doc {DOC_INDEX}: the teacher tags with BIO but the student with IOB1"):
        align_to_student(teacher, teacher.tags, doc_index=DOC_INDEX, student_scheme="IOB1")


def test_surrogate_from_kbest_drops_invalid_rows():
    sequences = [[1, 2, 3], [-1, -1, -1], [0, 0, 0], [-1, -1, -1]]
    log_probs = [-0.5, -numpy.inf, -1.5, -numpy.inf]
    surrogate = surrogate_from_kbest(TAGS, "biluo", sequences, log_probs, [True, False, True, False])
    assert surrogate.scheme == "BILUO"
    assert surrogate.sequences.tolist() == [[1, 2, 3], [0, 0, 0]]
    assert surrogate.log_probs.tolist() == [-0.5, -1.5]
    validate_surrogate(surrogate, 3)


def test_surrogate_from_kbest_keeps_single_path_of_empty_sentence():
    # A K = 3 decoder row for a length-0 sentence: one valid empty path, the rest padding.
    log_probs = [0.0, -numpy.inf, -numpy.inf]
    surrogate = surrogate_from_kbest(TAGS, "BILUO", numpy.zeros((3, 0), "int64"), log_probs, [True, False, False])
    assert surrogate.sequences.shape == (1, 0)
    validate_surrogate(surrogate, 0)


def test_surrogate_from_kbest_rejects_no_valid_row():
    with pytest.raises(ValueError, match="no valid sequence"):
        surrogate_from_kbest(TAGS, "BILUO", [[1, 2]], [-numpy.inf], [False])


def test_surrogate_from_kbest_rejects_mismatched_k():
    with pytest.raises(ValueError, match=r"must have shapes \(K, T\), \(K,\) and \(K,\)"):
        surrogate_from_kbest(TAGS, "BILUO", [[1, 2], [0, 0]], [-0.1], [True, True])


def test_crf_decoder_output_makes_valid_surrogates(nlp):
    """kbest_viterbi + marginals output, as the annotate command uses it, passes validation and a DocBin."""
    torch.manual_seed(0)
    constraints = build_constraints(TAGS, "BILUO")
    neg = torch.tensor(float("-inf"))
    transitions = torch.where(constraints.transitions, torch.randn(len(TAGS), len(TAGS)), neg)
    start = torch.where(constraints.start, torch.zeros(len(TAGS)), neg)
    end = torch.where(constraints.end, torch.zeros(len(TAGS)), neg)
    emissions = torch.randn(2, 4, len(TAGS))
    lengths = torch.tensor([4, 2])
    args = (emissions, lengths, transitions, start, end)
    best = kbest_viterbi(*args, 5)
    marg = marginals(*args)
    log_softmax = torch.log_softmax(emissions, dim=-1)
    docs = [Doc(nlp.vocab, words=WORDS[:4]), Doc(nlp.vocab, words=WORDS[:2])]
    for i, (doc, n) in enumerate(zip(docs, lengths.tolist())):
        surrogate = surrogate_from_kbest(
            TAGS,
            "BILUO",
            best.tags[i, :, :n].numpy(),
            best.log_probs[i].numpy(),
            best.valid[i].numpy(),
            emission_log_probs=log_softmax[i, :n].numpy().astype("float16"),
            marginals=marg[i, :n].numpy().astype("float16"),
        )
        set_surrogate(doc, surrogate, doc_index=i)
    restored = docbin_round_trip(nlp, docs)
    assert [get_surrogate(doc, i).sequences.shape[1] for i, doc in enumerate(restored)] == [4, 2]
