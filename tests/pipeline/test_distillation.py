"""distilled_ner learns from teacher surrogates alone, with every loss term and weighting, reproducibly from a seed."""
import numpy
import pytest
from spacy.lang.en import English
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import fix_random_seed

from mgkd_spacy.annotate import annotate_docs
from mgkd_spacy.surrogates import get_surrogate

from .test_distilled_ner import TRAIN_DATA, make_examples, make_nlp, train


@pytest.fixture(scope="module")
def teacher():
    nlp = make_nlp()
    train(nlp, make_examples(nlp), steps=80)
    return nlp


def unlabeled_examples(nlp, teacher, k=5):
    """Teacher-annotated docs without gold entities, round-tripped through a DocBin."""
    docs = [Doc(nlp.vocab, words=text.split()) for text, _ in TRAIN_DATA]
    annotate_docs(teacher, docs, k=k, batch_size=2, with_token_targets=True)
    restored = list(DocBin(docs=docs, store_user_data=True).from_bytes(
        DocBin(docs=docs, store_user_data=True).to_bytes()).get_docs(nlp.vocab))
    return [Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in restored]


def test_surrogates_survive_docbin_and_sum_below_one(teacher):
    examples = unlabeled_examples(English(), teacher)
    for i, eg in enumerate(examples):
        surrogate = get_surrogate(eg.reference, doc_index=i)
        assert surrogate.sequences.shape[1] == len(eg.reference)
        assert numpy.exp(surrogate.log_probs).sum() <= 1.0 + 1e-5
        assert surrogate.marginals.shape == (len(eg.reference), len(surrogate.tags))


@pytest.mark.parametrize(
    "losses,weighting",
    [
        ({"hard": 1.0, "kbest": 1.0, "fuzzy": 1.0}, "uncertainty"),
        ({"kbest": 1.0}, "fixed"),
        ({"hard": 1.0, "token_em": 1.0}, "equal"),
        ({"hard": 1.0, "token_pos": 1.0}, "fixed"),
    ],
)
def test_student_learns_from_teacher_alone(teacher, losses, weighting):
    student = make_nlp(losses=losses, weighting=weighting)
    examples = unlabeled_examples(student, teacher)
    optimizer = student.initialize(get_examples=lambda: examples)
    for _ in range(100):
        result = student.update(examples, sgd=optimizer, losses={})
    assert all(numpy.isfinite(v) for v in result.values())
    assert result["distilled_ner_no_target"] == 0
    for term in losses:
        assert f"distilled_ner_{term}" in result
    gold = make_examples(student)
    assert student.evaluate(gold)["ents_f"] == 1.0


def distilled_bytes(teacher, seed, steps=10):
    """The serialized pipe of a small SEQ student (no TE) trained ``steps`` updates on teacher surrogates from ``seed``."""
    fix_random_seed(seed)
    student = make_nlp(losses={"hard": 1.0, "kbest": 1.0, "fuzzy": 1.0}, weighting="uncertainty")
    examples = unlabeled_examples(student, teacher)
    optimizer = student.initialize(get_examples=lambda: examples)
    for _ in range(steps):
        student.update(examples, sgd=optimizer)
    return student.get_pipe("distilled_ner").to_bytes()


def test_same_seed_gives_the_same_student(teacher):
    # What `spacy train --system.seed N` relies on: the BiLSTM's torch init and dropout follow spaCy's seed.
    assert distilled_bytes(teacher, seed=0) == distilled_bytes(teacher, seed=0)
    assert distilled_bytes(teacher, seed=0) != distilled_bytes(teacher, seed=1)


def test_uncertainty_weights_are_learned_and_saved(teacher, tmp_path):
    student = make_nlp(losses={"hard": 1.0, "kbest": 1.0}, weighting="uncertainty")
    examples = unlabeled_examples(student, teacher)
    optimizer = student.initialize(get_examples=lambda: examples)
    crf = student.get_pipe("distilled_ner").model.get_ref("crf")
    before = crf.get_param("loss_log_weights").copy()
    for _ in range(5):
        student.update(examples, sgd=optimizer)
    after = crf.get_param("loss_log_weights").copy()
    assert not numpy.allclose(before[:2], after[:2])
    student.to_disk(tmp_path)
    reloaded = make_nlp(losses={"hard": 1.0, "kbest": 1.0}, weighting="uncertainty").from_disk(tmp_path)
    assert numpy.array_equal(reloaded.get_pipe("distilled_ner").model.get_ref("crf").get_param("loss_log_weights"), after)


def test_mismatched_teacher_tags_name_the_doc(teacher):
    student = make_nlp(scheme="BIO", losses={"kbest": 1.0})
    examples = unlabeled_examples(student, teacher)
    student.initialize(get_examples=lambda: make_examples(student))
    with pytest.raises(ValueError, match="doc 0: the teacher tags with BILUO but the student with BIO"):
        student.update(examples)


def test_token_loss_without_stored_targets_is_an_error(teacher):
    student = make_nlp(losses={"token_pos": 1.0})
    docs = [Doc(student.vocab, words=text.split()) for text, _ in TRAIN_DATA]
    annotate_docs(teacher, docs, k=2, batch_size=8, with_token_targets=False)
    examples = [Example(Doc(student.vocab, words=[t.text for t in d]), d) for d in docs]
    student.initialize(get_examples=lambda: examples)
    with pytest.raises(ValueError, match="needs teacher marginals"):
        student.update(examples)


def test_teacher_k_truncates_and_keeps_residual(teacher):
    student = make_nlp(losses={"kbest": 1.0}, teacher_k=1)
    examples = unlabeled_examples(student, teacher)
    optimizer = student.initialize(get_examples=lambda: examples)
    result = student.update(examples, sgd=optimizer, losses={})
    assert numpy.isfinite(result["distilled_ner_kbest"])


def test_teacher_sequences_breaking_constraints_are_rejected(teacher):
    student = make_nlp(losses={"kbest": 1.0})
    examples = unlabeled_examples(student, teacher)
    student.initialize(get_examples=lambda: examples)
    data = examples[0].reference._.mgkd_surrogate
    surrogate = get_surrogate(examples[0].reference)
    surrogate.sequences[0, 0] = surrogate.tags.index("L-LOC")  # a sentence cannot start inside an entity
    from mgkd_spacy.surrogates import set_surrogate

    set_surrogate(examples[0].reference, surrogate)
    assert data is not examples[0].reference._.mgkd_surrogate
    with pytest.raises(ValueError, match="example 0: a teacher sequence breaks the BILUO constraints"):
        student.update(examples)
