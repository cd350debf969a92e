"""Every CRF operation against brute-force enumeration of all L^n tag sequences (float64 reference).

Sizes stay tiny (L <= 7, n <= 6): the reference scores every sequence of ``itertools.product``, keeps the allowed
(finite-score) ones, and derives log Z, the ranked sequences, marginals, window and entity probabilities from them.
"""
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgkd_spacy.crf import ops
from mgkd_spacy.crf import (
    PAD, SCHEMES, Constraints, build_constraints, constrain, entity_log_probs, kbest_viterbi, log1mexp, log_partition,
    log_residual, marginals, nll, sequence_score, tags_for_labels, viterbi, window_log_probs,
)

NEG_INF = float("-inf")
# (absolute tolerance on scores / log Z, absolute tolerance on probabilities)
TOL = {torch.float64: (1e-9, 1e-5), torch.float32: (2e-4, 1e-4)}
# Labels per scheme so that L <= 7.
LABELS = {"BIO": ["A", "B", "C"], "IOB1": ["A", "B", "C"], "BILUO": ["A"], "BIOES": ["A"], "BMES": ["A"]}


# ---------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True, scope="module", params=["kernel", "torch"])
def crf_backend(request):
    """Every test runs with the C kernel and again with the torch code (which CUDA and unbuilt installs use).

    Module-scoped (not monkeypatch) so that the hypothesis tests may use it.
    """
    if request.param == "kernel" and ops._kernel is None:
        pytest.skip("the C kernel is not built (test_kernel.py::test_c_kernel_is_built says why that fails)")
    with ops.use_kernel(request.param == "kernel"):
        yield request.param


def random_masks(g: torch.Generator, n_tags: int, density: float) -> Constraints:
    """Random allowed-move masks; low densities leave some sentences with no allowed sequence."""
    shapes = ((n_tags, n_tags), (n_tags,), (n_tags,))
    return Constraints(*(torch.rand(s, generator=g) < density for s in shapes))


def random_crf(
    seed: int,
    lengths: Sequence[int],
    n_tags: int,
    dtype: torch.dtype = torch.float64,
    constraints: Optional[Constraints] = None,
    density: float = 0.7,
    pad: int = 3,
    scale: float = 1.0,
    garbage: float = 1e3,
    integer: bool = False,
):
    """A padded batch and constrained potentials; padding (t >= length) is filled with ``garbage``."""
    g = torch.Generator().manual_seed(seed)
    n_tokens = max(lengths, default=0) + pad

    def draw(*shape):
        if integer:  # many exact ties
            return torch.randint(-1, 2, shape, generator=g).to(dtype)
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    emissions = draw(len(lengths), n_tokens, n_tags)
    lengths = torch.tensor(list(lengths), dtype=torch.long)
    real = torch.arange(n_tokens)[None, :] < lengths[:, None]
    emissions = torch.where(real[:, :, None], emissions, torch.full_like(emissions, garbage))
    raw = (draw(n_tags, n_tags), draw(n_tags), draw(n_tags))
    if constraints is None:
        constraints = random_masks(g, n_tags, density)
    return emissions, lengths, constrain(*raw, constraints), raw, constraints


@functools.lru_cache(maxsize=None)
def all_sequences(n_tags: int, length: int) -> torch.Tensor:
    # shape: (L^n, n)
    seqs = list(itertools.product(range(n_tags), repeat=length))
    return torch.tensor(seqs, dtype=torch.long).reshape(len(seqs), length)


@dataclass
class Reference:
    """Brute-force facts about one sentence, in float64."""

    seqs: torch.Tensor  # (N, n) allowed sequences
    scores: torch.Tensor  # (N,)
    log_z: float
    probs: torch.Tensor  # (N,)
    marginals: torch.Tensor  # (n, L)
    lookup: Dict[Tuple[int, ...], float]


def enumerate_sentence(emissions: torch.Tensor, length: int, transitions, start, end) -> Reference:
    emissions, transitions, start, end = (x.detach().double() for x in (emissions[:length], transitions, start, end))
    n_tags = transitions.shape[0]
    seqs = all_sequences(n_tags, length)
    if length == 0:
        scores = torch.zeros(1, dtype=torch.float64)
    else:
        scores = (
            start[seqs[:, 0]] + end[seqs[:, -1]] + emissions[torch.arange(length), seqs].sum(1)
            + transitions[seqs[:, :-1], seqs[:, 1:]].sum(1)
        )
    keep = torch.isfinite(scores)
    seqs, scores = seqs[keep], scores[keep]
    log_z = float(torch.logsumexp(scores, 0)) if len(scores) else NEG_INF
    probs = (scores - log_z).exp() if len(scores) else scores
    marg = torch.zeros(length, n_tags, dtype=torch.float64)
    for t in range(length):
        marg[t].index_add_(0, seqs[:, t], probs)
    lookup = dict(zip(map(tuple, seqs.tolist()), scores.tolist()))
    return Reference(seqs, scores, log_z, probs, marg, lookup)


def naive_score(emissions, length, transitions, start, end, seq) -> float:
    """Score of one sequence by the textbook sum (Python floats); -inf if it uses a forbidden move."""
    if length == 0:
        return 0.0
    total = float(start[seq[0]]) + float(end[seq[length - 1]])
    total += sum(float(emissions[t, seq[t]]) for t in range(length))
    total += sum(float(transitions[seq[t], seq[t + 1]]) for t in range(length - 1))
    return total


def is_allowed(seq: Sequence[int], constraints: Constraints) -> bool:
    if not seq:
        return True
    ok = bool(constraints.start[seq[0]]) and bool(constraints.end[seq[-1]])
    return ok and all(bool(constraints.transitions[a, b]) for a, b in zip(seq, seq[1:]))


# ------------------------------------------------------------------------------------------------------------ checks


def check_kbest(found, b: int, n: int, ref: Reference, k: int, dtype, constraints: Optional[Constraints]) -> None:
    """K-best of sentence b against the ranked enumeration; ties are compared by score and as sets."""
    score_tol, prob_tol = TOL[dtype]
    n_valid = min(k, len(ref.scores))
    assert found.tags.shape[1:] == (k, found.tags.shape[2]) and found.scores.shape[1] == k
    assert int(found.valid[b].sum()) == n_valid and bool(found.valid[b, :n_valid].all())
    expected = ref.scores.sort(descending=True).values[:n_valid]
    got_scores = found.scores[b, :n_valid].double()
    assert torch.allclose(got_scores, expected, atol=score_tol, rtol=0), (got_scores, expected)
    assert bool((found.scores[b, :-1] >= found.scores[b, 1:]).all())  # descending (ties allowed)
    got = [tuple(row) for row in found.tags[b, :n_valid, :n].tolist()]
    assert len(set(got)) == n_valid  # no duplicate sequences
    for j, seq in enumerate(got):
        assert seq in ref.lookup, f"rank {j} sequence {seq} is forbidden"
        assert ref.lookup[seq] == pytest.approx(float(got_scores[j]), abs=score_tol)
        if constraints is not None:
            assert is_allowed(seq, constraints)
    if n_valid:  # every sequence strictly better than the K-th must be among the K returned
        better = ref.seqs[ref.scores > float(expected[-1]) + score_tol]
        assert set(map(tuple, better.tolist())) <= set(got)
    assert bool((found.tags[b, :, n:] == PAD).all()) and bool((found.tags[b, n_valid:] == PAD).all())
    assert bool((found.scores[b, n_valid:] == NEG_INF).all()) and bool((found.log_probs[b, n_valid:] == NEG_INF).all())
    probs = found.log_probs[b, :n_valid].double().exp()
    assert torch.allclose(probs, (expected - ref.log_z).exp(), atol=prob_tol, rtol=0)
    assert float(probs.sum()) <= 1 + prob_tol


def check_against_enumeration(emissions, lengths, potentials, ks, dtype, constraints=None) -> None:
    score_tol, prob_tol = TOL[dtype]
    args = (emissions, lengths, *potentials)
    log_z = log_partition(*args)
    best_tags, best_scores = viterbi(*args)
    marg = marginals(*args)
    found = {k: kbest_viterbi(*args, k) for k in ks}
    leaf = emissions.clone().requires_grad_()
    # (+ 0 * leaf.sum() keeps a batch of empty sentences, whose log Z = 0 is a constant, in the graph)
    (grad,) = torch.autograd.grad(log_partition(leaf, lengths, *potentials).sum() + 0 * leaf.sum(), leaf)
    assert bool(torch.isfinite(grad).all()), "d log Z / d emissions has NaN or inf"
    assert torch.allclose(grad, marg, atol=prob_tol, rtol=0), "marginals differ from d log Z / d emissions"
    for b, n in enumerate(lengths.tolist()):
        ref = enumerate_sentence(emissions[b], n, *potentials)
        if ref.log_z == NEG_INF:
            assert float(log_z[b]) == NEG_INF
            assert float(best_scores[b]) == NEG_INF and bool((best_tags[b] == PAD).all())
            assert float(marg[b].abs().sum()) == 0.0
        else:
            assert float(log_z[b]) == pytest.approx(ref.log_z, abs=score_tol)
            assert float(best_scores[b]) == pytest.approx(float(ref.scores.max()), abs=score_tol)
            best = tuple(best_tags[b, :n].tolist())
            assert ref.lookup.get(best, NEG_INF) == pytest.approx(float(ref.scores.max()), abs=score_tol)
            assert bool((best_tags[b, n:] == PAD).all())
            assert torch.allclose(marg[b, :n].double(), ref.marginals, atol=prob_tol, rtol=0)
            assert bool((marg[b, :n][ref.marginals == 0] == 0).all()), "impossible tags must get exactly 0"
            assert float(marg[b, n:].abs().sum()) == 0.0
        if n == 0:
            assert float(log_z[b]) == 0.0
        for k, kbest in found.items():
            check_kbest(kbest, b, n, ref, k, dtype, constraints)


def scheme_batch(scheme: str, seed: int, lengths: Sequence[int], dtype=torch.float64, **kwargs):
    tags = tags_for_labels(LABELS[scheme], scheme)
    constraints = build_constraints(tags, scheme)
    emissions, lengths, potentials, raw, _ = random_crf(seed, lengths, len(tags), dtype, constraints, **kwargs)
    return tags, constraints, emissions, lengths, potentials, raw


def n_valid_max(emissions, lengths, potentials) -> int:
    return max(len(enumerate_sentence(emissions[b], n, *potentials).scores) for b, n in enumerate(lengths.tolist()))


# ------------------------------------------------------------------------------------ Z, Viterbi, k-best, marginals


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(4))
def test_random_masks_against_enumeration(seed, dtype):
    """Lengths 0..6 in one padded batch, random masks (some sentences impossible), K up to beyond #valid."""
    n_tags = [3, 4, 5, 7][seed]
    lengths = [0, 1, 2, 3, 4, 5, 6] if n_tags <= 5 else [0, 1, 2, 3, 4, 5]
    density = [0.3, 0.5, 0.7, 0.6][seed]
    emissions, lengths, potentials, _, constraints = random_crf(seed, lengths, n_tags, dtype, density=density)
    ks = [1, 2, 7, n_valid_max(emissions, lengths, potentials) + 3]
    check_against_enumeration(emissions, lengths, potentials, ks, dtype, constraints)


def test_some_sentences_have_no_allowed_sequence():
    """No transition is allowed: only lengths 0 and 1 have sequences; the rest have log Z = -inf."""
    n_tags = 3
    constraints = Constraints(torch.zeros(n_tags, n_tags, dtype=torch.bool), torch.ones(n_tags, dtype=torch.bool),
                              torch.tensor([True, False, True]))
    emissions, lengths, potentials, raw, _ = random_crf(1, [2, 0, 1, 4], n_tags, constraints=constraints)
    log_z = log_partition(emissions, lengths, *potentials)
    assert log_z[0] == NEG_INF and log_z[1] == 0 and torch.isfinite(log_z[2]) and log_z[3] == NEG_INF
    found = kbest_viterbi(emissions, lengths, *potentials, 4)
    assert found.valid.sum(1).tolist() == [0, 1, 2, 0]
    assert bool((found.tags[[0, 3]] == PAD).all()) and bool((found.log_probs[[0, 3]] == NEG_INF).all())
    check_against_enumeration(emissions, lengths, potentials, [1, 4], torch.float64, constraints)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_schemes_against_enumeration(scheme, dtype):
    tags, constraints, emissions, lengths, potentials, _ = scheme_batch(scheme, 3, [0, 1, 2, 3, 4, 5, 6], dtype)
    ks = [1, 5, n_valid_max(emissions, lengths, potentials) + 2]
    check_against_enumeration(emissions, lengths, potentials, ks, dtype, constraints)


@pytest.mark.parametrize("seed", range(3))
def test_ties_against_enumeration(seed):
    """Integer potentials in {-1, 0, 1} make many sequences tie; scores must still be the top K."""
    emissions, lengths, potentials, _, constraints = random_crf(seed, [6, 4, 5, 1, 0], 3, integer=True, density=0.8)
    ks = [1, 3, 10, 40, n_valid_max(emissions, lengths, potentials) + 1]
    check_against_enumeration(emissions, lengths, potentials, ks, torch.float64, constraints)


@settings(max_examples=30, deadline=None)
@given(
    n_tags=st.integers(1, 5),
    lengths=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    k=st.integers(1, 40),
    density=st.sampled_from([0.2, 0.5, 1.0]),
    integer=st.booleans(),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_sizes(n_tags, lengths, k, density, integer, pad, seed):
    emissions, lengths, potentials, _, constraints = random_crf(
        seed, lengths, n_tags, density=density, integer=integer, pad=pad
    )
    check_against_enumeration(emissions, lengths, potentials, [k], torch.float64, constraints)


@settings(max_examples=15, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), lengths=st.lists(st.integers(0, 4), min_size=1, max_size=3),
       k=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_hypothesis_schemes(scheme, lengths, k, seed):
    tags = tags_for_labels(["A"], scheme)  # 3 or 5 tags
    constraints = build_constraints(tags, scheme)
    emissions, lengths, potentials, _, _ = random_crf(seed, lengths, len(tags), constraints=constraints)
    check_against_enumeration(emissions, lengths, potentials, [k], torch.float64, constraints)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(2))
def test_kbest_on_longer_sentences_against_enumeration(seed, dtype):
    """Sentences longer than K: the k-best keeps only the K - 1 cheapest detours along each best continuation.

    float32 and float64 take the packed and the paired detour table respectively.
    """
    emissions, lengths, potentials, _, constraints = random_crf(seed, [8, 7, 0, 5, 8, 2], 3, dtype, density=0.8)
    check_against_enumeration(emissions, lengths, potentials, [2, 3, 6, 25], dtype, constraints)


def test_kbest_with_k_one_matches_viterbi():
    tags, _, emissions, lengths, potentials, _ = scheme_batch("BIOES", 4, [5, 0, 3, 6])
    best_tags, best_scores = viterbi(emissions, lengths, *potentials)
    found = kbest_viterbi(emissions, lengths, *potentials, 1)
    assert torch.equal(found.tags[:, 0], best_tags) and torch.allclose(found.scores[:, 0], best_scores)


def test_decoding_results_are_ordinary_tensors_usable_in_a_loss():
    """Neither backend hands out inference-mode tensors: a loss may save them for backward."""
    emissions, lengths, potentials, _, _ = random_crf(0, [3, 2, 0], 3)
    leaf = emissions.clone().requires_grad_()
    found = kbest_viterbi(leaf, lengths, *potentials, 3)
    tags, scores = viterbi(leaf, lengths, *potentials)
    for x in (found.tags, found.scores, found.log_probs, found.valid, tags, scores):
        assert not x.is_inference() and not x.requires_grad
    (leaf.sum() * found.log_probs[found.valid].sum() * scores[torch.isfinite(scores)].sum()).backward()
    assert leaf.grad is not None


# ---------------------------------------------------------------------------------------- sequence score and NLL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sequence_score_and_nll_against_enumeration(dtype):
    """Random sequences, allowed and forbidden, in sentences that are possible and impossible."""
    score_tol, _ = TOL[dtype]
    emissions, lengths, potentials, _, constraints = random_crf(8, [0, 1, 3, 5, 4, 2], 4, dtype, density=0.45)
    log_z = log_partition(emissions, lengths, *potentials)
    assert log_z[1] == NEG_INF and int(torch.isfinite(log_z).sum()) == 5  # sentence 1 is impossible
    g = torch.Generator().manual_seed(0)
    for draw in range(20):
        tags = torch.randint(0, 4, lengths.shape + emissions.shape[1:2], generator=g)
        if draw % 2:  # half the draws: allowed sequences where there are some
            for b, n in enumerate(lengths.tolist()):
                ref = enumerate_sentence(emissions[b], n, *potentials)
                if len(ref.seqs):
                    tags[b, :n] = ref.seqs[int(torch.randint(len(ref.seqs), (1,), generator=g))]
        tags = torch.where(torch.arange(tags.shape[1])[None, :] < lengths[:, None], tags, PAD)
        score = sequence_score(emissions, lengths, *potentials, tags)
        loss = nll(emissions, lengths, *potentials, tags)
        for b, n in enumerate(lengths.tolist()):
            expected = naive_score(emissions[b].double(), n, *(p.double() for p in potentials), tags[b].tolist())
            log_z = enumerate_sentence(emissions[b], n, *potentials).log_z
            assert is_allowed(tags[b, :n].tolist(), constraints) == (expected > NEG_INF)
            if expected == NEG_INF:
                assert float(score[b]) == NEG_INF and float(loss[b]) == math.inf, (b, float(loss[b]))
            else:
                assert float(score[b]) == pytest.approx(expected, abs=score_tol)
                assert float(loss[b]) == pytest.approx(log_z - expected, abs=score_tol)


def test_nll_gradient_is_marginals_minus_gold_counts():
    emissions, lengths, potentials, _, _ = random_crf(6, [4, 2, 0], 3, density=1.0)
    tags = torch.tensor([[0, 2, 1, 1, PAD, PAD, PAD], [2, 2, PAD, PAD, PAD, PAD, PAD], [PAD] * 7])
    leaf = emissions.clone().requires_grad_()
    (grad,) = torch.autograd.grad(nll(leaf, lengths, *potentials, tags).sum(), leaf)
    gold = torch.zeros_like(emissions)
    for b, n in enumerate(lengths.tolist()):
        gold[b, torch.arange(n), tags[b, :n]] = 1.0
    assert torch.allclose(grad, marginals(emissions, lengths, *potentials) - gold, atol=1e-9)


# ------------------------------------------------------------------------------------------------------- gradients


def test_gradients_of_potentials_are_expected_counts_and_zero_where_forbidden():
    """d log Z / d (raw) potentials = expected counts; forbidden entries get exactly 0; no NaN anywhere."""
    emissions, lengths, _, raw, constraints = random_crf(7, [0, 1, 3, 5, 4], 4, density=0.5)
    leaves = [r.clone().requires_grad_() for r in raw]
    potentials = constrain(*leaves, constraints)
    log_z = log_partition(emissions, lengths, *potentials)
    assert bool((log_z == NEG_INF).any()) and bool(torch.isfinite(log_z).any())  # both kinds of sentence present
    grads = torch.autograd.grad(log_z.sum(), leaves)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    expected = [torch.zeros_like(r) for r in raw]
    for b, n in enumerate(lengths.tolist()):
        ref = enumerate_sentence(emissions[b], n, *potentials)
        if n == 0 or not len(ref.seqs):
            continue
        expected[1].index_add_(0, ref.seqs[:, 0], ref.probs)
        expected[2].index_add_(0, ref.seqs[:, -1], ref.probs)
        for t in range(n - 1):
            expected[0].index_put_((ref.seqs[:, t], ref.seqs[:, t + 1]), ref.probs, accumulate=True)
    for grad, want, mask in zip(grads, expected, (constraints.transitions, constraints.start, constraints.end)):
        assert torch.allclose(grad, want, atol=1e-9)
        assert bool((grad[~mask] == 0).all())


def test_gradients_through_every_differentiable_op_are_finite():
    """-inf masks, impossible sentences, length 0: losses built on marginals, windows and entities backprop cleanly."""
    tags, _, emissions, lengths, _, raw = scheme_batch("BILUO", 8, [0, 1, 4, 3])
    constraints = build_constraints(tags, "BILUO")
    constraints = Constraints(constraints.transitions, constraints.start.clone(), constraints.end)
    leaves = [emissions.clone().requires_grad_()] + [r.clone().requires_grad_() for r in raw]
    potentials = constrain(*leaves[1:], constraints)
    args = (leaves[0], lengths, *potentials)
    weights = torch.randn(emissions.shape, generator=torch.Generator().manual_seed(0), dtype=emissions.dtype)
    spans = [(1, 0, 1, "A"), (2, 1, 3, "A"), (3, 0, 3, "A")]
    entity = entity_log_probs(*args, tags, "BILUO", spans)
    loss = (marginals(*args) * weights).sum() + log_partition(*args).sum() + entity[torch.isfinite(entity)].sum()
    grads = torch.autograd.grad(loss, leaves)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    real = torch.arange(emissions.shape[1])[None, :] < lengths[:, None]
    assert float(grads[0][~real].abs().sum()) == 0.0  # padding is never read


# --------------------------------------------------------------------------------------- windows and entity spans


def chunks(tags: Sequence[str], scheme: str) -> List[Tuple[int, int, str]]:
    """Entities of an allowed tag sequence, written independently of the package's own decoder."""
    spans = []
    current = None  # [start, type] of the open entity
    begin, inside, last, unit = {"BILUO": "BILU", "BIOES": "BIES", "BMES": "BMES"}.get(scheme, "BI??")
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-")
        if scheme in ("BIO", "IOB1"):
            # I-X continues an open X entity; in IOB1 it opens one after O or another type, B-X always opens one.
            continues = current is not None and prefix == "I" and label == current[1]
            if current is not None and not continues:
                spans.append((current[0], i, current[1]))
                current = None
            if prefix in ("B", "I") and not continues:
                current = [i, label]
        elif prefix == unit:
            spans.append((i, i + 1, label))
        elif prefix == begin:
            current = [i, label]
        elif prefix == last:
            assert current is not None and current[1] == label
            spans.append((current[0], i + 1, label))
            current = None
        else:
            assert prefix in (inside, "O")
    return spans


def test_chunker_reads_iob1_as_documented():
    assert chunks(["I-A", "I-A", "B-A", "I-B", "O", "I-A"], "IOB1") == [(0, 2, "A"), (2, 3, "A"), (3, 4, "B"), (5, 6, "A")]
    assert chunks(["B-A", "I-A", "B-B", "I-B", "B-A"], "BIO") == [(0, 2, "A"), (2, 4, "B"), (4, 5, "A")]
    assert chunks(["U-A", "B-A", "I-A", "L-A", "O"], "BILUO") == [(0, 1, "A"), (1, 4, "A")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_entity_probabilities_against_enumeration(scheme, dtype):
    labels = LABELS[scheme][:2] if scheme in ("BIO", "IOB1") else LABELS[scheme]
    tags = tags_for_labels(labels, scheme)
    constraints = build_constraints(tags, scheme)
    emissions, lengths, potentials, _, _ = random_crf(9, [5, 3, 1, 0, 4], len(tags), dtype, constraints)
    spans = [(b, s, e, label) for b, n in enumerate(lengths.tolist()) for s in range(n) for e in range(s + 1, n + 1)
             for label in labels]
    got = entity_log_probs(emissions, lengths, *potentials, tags, scheme, spans).double().exp()
    expected = torch.zeros(len(spans), dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        ref = enumerate_sentence(emissions[b], n, *potentials)
        mass: Dict[Tuple[int, int, str], float] = {}
        for seq, p in zip(ref.seqs.tolist(), ref.probs.tolist()):
            for span in chunks([tags[y] for y in seq], scheme):
                mass[span] = mass.get(span, 0.0) + p
        for i, (sb, s, e, label) in enumerate(spans):
            if sb == b:
                expected[i] = mass.get((s, e, label), 0.0)
    assert torch.allclose(got, expected, atol=TOL[dtype][1], rtol=0)
    assert bool((got[expected == 0] == 0).all())


def test_iob1_entity_after_same_type_needs_b():
    """IOB1 'I-A I-A' is one entity [0, 2); 'I-A B-A' is two. Pin the potentials so one reading dominates."""
    tags = tags_for_labels(["A"], "IOB1")  # O, B-A, I-A
    potentials = constrain(torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), build_constraints(tags, "IOB1"))
    emissions = torch.tensor([[[-50.0, -50.0, 0.0], [-50.0, 0.0, -50.0]]])  # I-A then B-A
    probs = entity_log_probs(emissions, torch.tensor([2]), *potentials, tags, "IOB1",
                             [(0, 0, 1, "A"), (0, 1, 2, "A"), (0, 0, 2, "A")]).exp()
    assert probs[0] > 0.99 and probs[1] > 0.99 and probs[2] < 1e-10


def test_window_probabilities_against_enumeration():
    emissions, lengths, potentials, _, _ = random_crf(10, [5, 4, 2, 3], 4, density=0.6)
    g = torch.Generator().manual_seed(1)
    rows = []
    for b, n in enumerate(lengths.tolist()):
        for first in range(n):
            for width in range(1, n - first + 1):
                rows.append((b, first, width))
    tag_sets = torch.rand(len(rows), 5, 4, generator=g) < 0.6
    tag_sets[0] = True  # a window that is always satisfied: probability 1 (or sentence impossible)
    batch_index, first, widths = (torch.tensor(col) for col in zip(*rows))
    got = window_log_probs(emissions, lengths, *potentials, batch_index, first, tag_sets, widths).exp()
    refs = [enumerate_sentence(emissions[b], n, *potentials) for b, n in enumerate(lengths.tolist())]
    for i, (b, f, w) in enumerate(rows):
        ref = refs[b]
        inside = torch.ones(len(ref.seqs), dtype=torch.bool)
        for j in range(w):
            inside &= tag_sets[i, j][ref.seqs[:, f + j]]
        assert float(got[i]) == pytest.approx(float(ref.probs[inside].sum()), abs=1e-9)
        if not bool(inside.any()):
            assert float(got[i]) == 0.0


# ----------------------------------------------------------------------------------- padding, dtypes and extremes


def all_outputs(emissions, lengths, potentials, tags, scheme):
    """Every op on one batch, plus the gradient of a loss using all differentiable ones."""
    leaf = emissions.clone().requires_grad_()
    args = (leaf, lengths, *potentials)
    n_tokens = int(lengths.max())
    spans = [(b, s, s + 2, "A") for b, n in enumerate(lengths.tolist()) for s in range(n - 1)]
    gold = torch.zeros(emissions.shape[:2], dtype=torch.long)
    marg = marginals(*args)
    entity = entity_log_probs(*args, tags, scheme, spans)
    loss = log_partition(*args).sum() + (marg * marg).sum() + entity[torch.isfinite(entity)].sum()
    loss = loss + nll(*args, gold)[torch.isfinite(nll(*args, gold))].sum()
    (grad,) = torch.autograd.grad(loss, leaf)
    found = kbest_viterbi(*args, 6)
    best_tags, best_scores = viterbi(*args)
    return {
        "log_z": log_partition(*args).detach(),
        "score": sequence_score(*args, gold).detach(),
        "viterbi_tags": best_tags[:, :n_tokens],
        "viterbi_scores": best_scores,
        "kbest_tags": found.tags[:, :, :n_tokens],
        "kbest_log_probs": found.log_probs,
        "marginals": marg.detach()[:, :n_tokens],
        "entity": entity.detach(),
        "grad": grad[:, :n_tokens],
        "grad_pad": grad[:, n_tokens:],
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("garbage", [1e30, -1e30, float("nan"), float("inf"), float("-inf"), "max"])
def test_padding_is_never_read(garbage, dtype):
    """Extra padded positions holding garbage change no result and no gradient."""
    tags, _, emissions, lengths, potentials, _ = scheme_batch("BIO", 11, [4, 0, 2, 1, 3], dtype, pad=0, garbage=0.0)
    garbage = torch.finfo(dtype).max if garbage == "max" else garbage
    padded = torch.cat([emissions, torch.full((5, 4, len(tags)), garbage, dtype=dtype)], dim=1)
    real = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    padded = torch.where(real[:, :, None], padded, torch.full_like(padded, garbage))
    base = all_outputs(emissions, lengths, potentials, tags, "BIO")
    other = all_outputs(padded, lengths, potentials, tags, "BIO")
    for name, value in base.items():
        if name == "grad_pad":
            continue
        assert value.shape == other[name].shape, name
        if value.dtype.is_floating_point:
            assert torch.allclose(value, other[name], atol=1e-6, rtol=1e-6, equal_nan=False), name
        else:
            assert torch.equal(value, other[name]), name
    assert bool(torch.isfinite(other["grad"]).all())
    assert float(other["grad_pad"].abs().sum()) == 0.0


def test_float32_agrees_with_float64():
    tags, _, emissions, lengths, potentials, _ = scheme_batch("BMES", 12, [6, 3, 0, 5])
    low = (emissions.float(), lengths, *(p.float() for p in potentials))
    high = (emissions, lengths, *potentials)
    assert torch.allclose(log_partition(*low).double(), log_partition(*high), atol=1e-4)
    assert torch.allclose(marginals(*low).double(), marginals(*high), atol=1e-5)
    assert torch.allclose(kbest_viterbi(*low, 8).log_probs.double(), kbest_viterbi(*high, 8).log_probs, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scheme", ["BIO", "BILUO", "BMES"])
def test_scaled_log_partition_is_exact_without_fallback(monkeypatch, scheme, dtype):
    """Ordinary scores (here up to ~20 nats apart) take the matrix-product path alone and match enumeration.

    This and the next two tests are about the torch function; ``test_kernel.py`` checks the kernel's fallback.
    """
    monkeypatch.setattr(ops, "_kernel", None)
    _, _, emissions, lengths, potentials, _ = scheme_batch(scheme, 21, [6, 1, 0, 4, 5], dtype, scale=4.0)

    def no_fallback(*args):
        raise AssertionError("the scaled forward algorithm fell back to log space on ordinary scores")

    monkeypatch.setattr(ops, "_logspace_log_partition", no_fallback)
    log_z = log_partition(emissions, lengths, *potentials)
    assert log_z.dtype == dtype
    for b, n in enumerate(lengths.tolist()):
        assert float(log_z[b]) == pytest.approx(enumerate_sentence(emissions[b], n, *potentials).log_z, abs=TOL[dtype][0])


def spy_on_log_space(monkeypatch) -> List[List[int]]:
    """Record the lengths of every batch that the torch scaled forward algorithm hands back to log space."""
    monkeypatch.setattr(ops, "_kernel", None)
    seen = []
    logspace = ops._logspace_log_partition

    def spy(emissions, lengths, *rest):
        seen.append(lengths.tolist())
        return logspace(emissions, lengths, *rest)

    monkeypatch.setattr(ops, "_logspace_log_partition", spy)
    return seen


def test_scaled_log_partition_recomputes_only_steep_sentences(monkeypatch):
    _, _, emissions, lengths, potentials, _ = scheme_batch("BIO", 5, [5, 4, 3, 6])
    emissions[1, 2, 0] = 300.0  # 300 nats above the other tags: past SCALED_SPREAD
    seen = spy_on_log_space(monkeypatch)
    log_z = log_partition(emissions, lengths, *potentials)
    assert seen == [[4]]
    for b, n in enumerate(lengths.tolist()):
        assert float(log_z[b]) == pytest.approx(enumerate_sentence(emissions[b], n, *potentials).log_z, abs=1e-9)


def test_scaled_log_partition_recomputes_only_impossible_sentences(monkeypatch):
    n_tags = 3
    no_moves = Constraints(torch.zeros(n_tags, n_tags, dtype=torch.bool), torch.ones(n_tags, dtype=torch.bool),
                           torch.ones(n_tags, dtype=torch.bool))
    emissions, lengths, potentials, _, _ = random_crf(3, [1, 3, 0, 2], n_tags, constraints=no_moves)
    seen = spy_on_log_space(monkeypatch)
    log_z = log_partition(emissions, lengths, *potentials)
    assert seen == [[3, 2]]
    assert math.isfinite(float(log_z[0])) and log_z[1:].tolist() == [NEG_INF, 0.0, NEG_INF]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [1e4, 3e4])
def test_extreme_finite_logits_stay_finite(dtype, magnitude):
    tags, constraints, emissions, lengths, potentials, raw = scheme_batch("BIO", 13, [6, 1, 0, 4, 5], dtype)
    g = torch.Generator().manual_seed(2)
    sign = lambda *shape: (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype) * magnitude  # noqa: E731
    real = torch.arange(emissions.shape[1])[None, :] < lengths[:, None]
    emissions = torch.where(real[:, :, None], sign(*emissions.shape), emissions)
    potentials = constrain(sign(*raw[0].shape), sign(*raw[1].shape), sign(*raw[2].shape), constraints)
    args = (emissions, lengths, *potentials)
    log_z = log_partition(*args)
    assert bool(torch.isfinite(log_z).all())
    assert bool(torch.isfinite(viterbi(*args)[1]).all())
    # Rounding error of sums of ~20 terms of this magnitude (about 0.03 in float32, 1e-10 in float64).
    slack = 20 * 3 * magnitude * torch.finfo(dtype).eps
    found = kbest_viterbi(*args, 10)
    assert bool(torch.isfinite(found.log_probs[found.valid]).all())
    assert float(found.log_probs[found.valid].max()) <= slack
    marg = marginals(*args)
    assert bool(torch.isfinite(marg).all()) and float(marg.min()) >= 0 and float(marg.max()) <= 1 + slack
    sums = marg.sum(2)[real]
    assert torch.allclose(sums, torch.ones_like(sums), atol=slack)
    leaf = emissions.clone().requires_grad_()
    (grad,) = torch.autograd.grad(log_partition(leaf, lengths, *potentials).sum(), leaf)
    assert bool(torch.isfinite(grad).all())
    # The float64 reference agrees where float64 is exact enough.
    for b, n in enumerate(lengths.tolist()):
        ref = enumerate_sentence(emissions[b], n, *potentials)
        assert float(log_z[b]) == pytest.approx(ref.log_z, abs=slack)


# ----------------------------------------------------------------------------------------- log1mexp, log_residual


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log1mexp_values_and_gradients(dtype):
    xs = [-1e-6, -1e-3, -0.1, -0.6931, -0.6932, -1.0, -5.0, -30.0, -700.0]
    x = torch.tensor(xs, dtype=dtype, requires_grad=True)
    y = log1mexp(x)
    want = torch.tensor([math.log(-math.expm1(v)) if v > -1 else math.log1p(-math.exp(v)) for v in xs],
                        dtype=torch.float64)
    assert torch.allclose(y.detach().double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                          atol=torch.finfo(dtype).tiny)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert bool(torch.isfinite(grad).all())
    # All mass accounted for (x = 0, or slightly above from rounding) and none (x = -inf): finite, gradient finite.
    edge = torch.tensor([0.0, 1e-7, 1e-3, NEG_INF], dtype=dtype, requires_grad=True)
    y = log1mexp(edge)
    tiny = math.log(torch.finfo(dtype).tiny)
    y = y.detach()
    assert bool(torch.isfinite(y).all()) and y[:3].tolist() == pytest.approx([tiny] * 3) and float(y[3]) == 0.0
    (grad,) = torch.autograd.grad(log1mexp(edge).sum(), edge)
    assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_residual_when_kbest_holds_all_or_none_of_the_mass(dtype):
    tags, _, emissions, lengths, potentials, _ = scheme_batch("BIOES", 14, [3, 2, 1, 0], dtype)
    leaf = emissions.clone().requires_grad_()
    everything = kbest_viterbi(emissions, lengths, *potentials, 200)  # far more than the allowed sequences
    assert bool((everything.valid.sum(1) < 200).all())
    # Differentiable log-probabilities of the k-best paths: sequence score minus log Z.
    log_z = log_partition(leaf, lengths, *potentials)
    flat = everything.tags.transpose(0, 1).reshape(-1, emissions.shape[1])
    repeat = lambda x: x.repeat(200, *([1] * (x.dim() - 1)))  # noqa: E731
    scores = sequence_score(repeat(leaf), repeat(lengths), *potentials, flat.clamp(min=0)).view(200, -1).t()
    log_probs = scores - log_z[:, None]
    rest = log_residual(log_probs, everything.valid)
    assert bool(torch.isfinite(rest).all())
    assert float(rest.detach().max()) < (-10 if dtype == torch.float32 else -25)
    (grad,) = torch.autograd.grad(rest.sum(), leaf)
    assert bool(torch.isfinite(grad).all())
    # Almost none of the mass, and none at all.
    log_probs = torch.tensor([[-1e4, -2e4], [-80.0, -90.0], [0.0, 0.0]], dtype=dtype, requires_grad=True)
    valid = torch.tensor([[True, True], [True, True], [False, False]])
    rest = log_residual(log_probs, valid)
    assert rest.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    (grad,) = torch.autograd.grad(rest.sum(), log_probs)
    assert bool(torch.isfinite(grad).all()) and float(grad[2].abs().sum()) == 0.0
    # Half the mass in two paths.
    half = torch.tensor([[math.log(0.25), math.log(0.25)]], dtype=dtype)
    assert float(log_residual(half)) == pytest.approx(math.log(0.5), abs=1e-6)


# ------------------------------------------------------------------------------------------------------ bad input


def call_every_op(emissions, lengths, transitions, start, end):
    """Run each public op; each must raise the same ValueError for bad shared inputs."""
    args = (emissions, lengths, transitions, start, end)
    return [
        lambda: log_partition(*args),
        lambda: viterbi(*args),
        lambda: kbest_viterbi(*args, 3),
        lambda: marginals(*args),
        lambda: sequence_score(*args, torch.zeros(2, 4, dtype=torch.long)),
        lambda: nll(*args, torch.zeros(2, 4, dtype=torch.long)),
        lambda: window_log_probs(*args, torch.tensor([0]), torch.tensor([0]), torch.ones(1, 1, 3, dtype=torch.bool),
                                 torch.tensor([1])),
        lambda: entity_log_probs(*args, ["O", "B-A", "I-A"], "BIO", [(0, 0, 1, "A")]),
    ]


def good_inputs():
    emissions, lengths, potentials, _, _ = random_crf(15, [3, 2], 3, pad=1, density=1.0)
    return [emissions, lengths, *potentials]


def set_real(value):
    def change(inputs):
        inputs[0] = inputs[0].clone()
        inputs[0][1, 1, 2] = value
        return inputs
    return change


def replace(i, fn):
    def change(inputs):
        inputs[i] = fn(inputs[i])
        return inputs
    return change


BAD_INPUTS = {
    "nan emission": (set_real(float("nan")), "NaN or inf"),
    "inf emission": (set_real(float("inf")), "NaN or inf"),
    "-inf emission": (set_real(float("-inf")), "NaN or inf"),
    "length > T": (replace(1, lambda l: l + 2), r"lengths must lie in \[0, T=4\]"),
    "negative length": (replace(1, lambda l: l - 3), r"lengths must lie in \[0, T=4\]"),
    "float lengths": (replace(1, lambda l: l.double()), "integer tensor"),
    "lengths shape": (replace(1, lambda l: torch.tensor([3, 2, 1])), r"shape \(2,\)"),
    "lengths 2-d": (replace(1, lambda l: l[:, None]), r"shape \(2,\)"),
    "emissions 2-d": (replace(0, lambda e: e[0]), r"\(B, T, L\)"),
    "emissions 4-d": (replace(0, lambda e: e[None]), r"\(B, T, L\)"),
    "no tags": (replace(0, lambda e: e[:, :, :0]), "at least one tag"),
    "transitions shape": (replace(2, lambda t: t[:, :2]), "do not match L=3"),
    "start shape": (replace(3, lambda s: torch.zeros(4, dtype=s.dtype)), "do not match L=3"),
    "end shape": (replace(4, lambda s: s[None]), "do not match L=3"),
    "nan transition": (replace(2, lambda t: t.index_fill(0, torch.tensor([1]), float("nan"))), "transitions contain NaN"),
    "+inf start": (replace(3, lambda s: s.index_fill(0, torch.tensor([0]), float("inf"))), r"start contain NaN or \+inf"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("op", range(8))
def test_bad_inputs_raise_value_errors(case, op):
    change, match = BAD_INPUTS[case]
    inputs = change(good_inputs())
    with pytest.raises(ValueError, match=match):
        call_every_op(*inputs)[op]()


def test_good_inputs_pass_every_op():
    for call in call_every_op(*good_inputs()):
        call()


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_bad_k(k):
    emissions, lengths, transitions, start, end = good_inputs()
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        kbest_viterbi(emissions, lengths, transitions, start, end, k)


@pytest.mark.parametrize(
    "tags,match",
    [
        (torch.zeros(2, 3, dtype=torch.long), r"tags must be integer \(B, T\)"),
        (torch.zeros(2, 4), r"tags must be integer \(B, T\)"),
        (torch.full((2, 4), 3), r"must lie in \[0, L=3\)"),
        (torch.full((2, 4), PAD), r"must lie in \[0, L=3\)"),
    ],
)
def test_bad_tags_for_scores(tags, match):
    emissions, lengths, transitions, start, end = good_inputs()
    for op in (sequence_score, nll):
        with pytest.raises(ValueError, match=match):
            op(emissions, lengths, transitions, start, end, tags)


@pytest.mark.parametrize(
    "tags,scheme,spans,match",
    [
        (["O", "B-A", "I-A"], "XYZ", [(0, 0, 1, "A")], "Unknown tagging scheme"),
        (["O", "B-", "I-A"], "BIO", [(0, 0, 1, "A")], "Malformed tag"),
        (["O", "X-A", "I-A"], "BIO", [(0, 0, 1, "A")], "Malformed tag"),
        (["O", "B-A"], "BIO", [(0, 0, 1, "A")], "2 tags given for emissions with L=3"),
        (["O", "B-A", "I-A"], "BIO", [(0, 2, 4, "A")], "not inside sentence 0"),
        (["O", "B-A", "I-A"], "BIO", [(0, 1, 1, "A")], "not inside sentence 0"),
        (["O", "B-A", "I-A"], "BIO", [(2, 0, 1, "A")], "not inside sentence 2"),
        (["O", "B-A", "I-A"], "BIO", [(-1, 0, 1, "A")], "not inside sentence -1"),
    ],
)
def test_bad_entity_queries(tags, scheme, spans, match):
    emissions, lengths, transitions, start, end = good_inputs()
    with pytest.raises(ValueError, match=match):
        entity_log_probs(emissions, lengths, transitions, start, end, tags, scheme, spans)


@pytest.mark.parametrize(
    "first,width,tag_sets,match",
    [
        (0, 0, torch.ones(1, 2, 3, dtype=torch.bool), r"widths must lie in \[1, W\]"),
        (0, 3, torch.ones(1, 2, 3, dtype=torch.bool), r"widths must lie in \[1, W\]"),
        (-1, 1, torch.ones(1, 2, 3, dtype=torch.bool), "must be >= 0"),
        (2, 2, torch.ones(1, 2, 3, dtype=torch.bool), "past the end"),
        (0, 1, torch.ones(1, 2, 4, dtype=torch.bool), r"tag_sets must be \(N=1, W, L=3\)"),
    ],
)
def test_bad_windows(first, width, tag_sets, match):
    emissions, lengths, transitions, start, end = good_inputs()
    with pytest.raises(ValueError, match=match):
        window_log_probs(emissions, lengths, transitions, start, end, torch.tensor([0]), torch.tensor([first]),
                         tag_sets, torch.tensor([width]))


def test_empty_batch_and_zero_tokens():
    for n_batch, n_tokens in ((0, 3), (2, 0)):
        emissions = torch.zeros(n_batch, n_tokens, 3, dtype=torch.float64)
        lengths = torch.zeros(n_batch, dtype=torch.long)
        potentials = (torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                      torch.zeros(3, dtype=torch.float64))
        args = (emissions, lengths, *potentials)
        assert log_partition(*args).tolist() == [0.0] * n_batch
        assert marginals(*args).shape == (n_batch, n_tokens, 3)
        tags, scores = viterbi(*args)
        assert tags.shape == (n_batch, n_tokens) and scores.tolist() == [0.0] * n_batch
        found = kbest_viterbi(*args, 3)
        assert found.tags.shape == (n_batch, 3, n_tokens) and found.valid.sum().item() == n_batch
