"""Every CRF operation against brute-force enumeration of all L^n tag sequences."""
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgkd_spacy.crf import (
    PAD, SCHEMES, Constraints, build_constraints, constrain, entity_log_probs, kbest_viterbi, log_partition,
    log_residual, marginals, nll, sequence_score, tags_for_labels, viterbi,
)
from mgkd_spacy.tagging import tags_to_spans

NEG_INF = float("-inf")


def random_crf(seed, lengths, n_tags, dtype=torch.float64, constraints=None, pad=2, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    n_tokens = max(lengths, default=0) + pad
    emissions = torch.randn(len(lengths), n_tokens, n_tags, generator=g, dtype=dtype) * scale
    real = torch.arange(n_tokens)[None, :] < torch.tensor(lengths)[:, None]
    emissions = torch.where(real[:, :, None], emissions, torch.full_like(emissions, 1e3))  # garbage padding
    raw = [torch.randn(s, generator=g, dtype=dtype) * scale for s in ((n_tags, n_tags), (n_tags,), (n_tags,))]
    if constraints is None:
        masks = [torch.rand(s, generator=g) > 0.3 for s in ((n_tags, n_tags), (n_tags,), (n_tags,))]
        constraints = Constraints(*masks)
    return emissions, torch.tensor(lengths), constrain(*raw, constraints)


def enumerate_scores(emissions, length, transitions, start, end):
    """{sequence: score} of every allowed sequence of one sentence."""
    out = {}
    for seq in itertools.product(range(emissions.shape[-1]), repeat=length):
        if length == 0:
            out[seq] = 0.0
            continue
        s = float(start[seq[0]] + end[seq[-1]] + sum(emissions[t, y] for t, y in enumerate(seq)))
        s += sum(float(transitions[a, b]) for a, b in zip(seq, seq[1:]))
        if s > NEG_INF:
            out[seq] = s
    return out


def log_sum(values):
    values = list(values)
    if not values:
        return NEG_INF
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def check_all(emissions, lengths, potentials, k, tol):
    args = (emissions, lengths, *potentials)
    log_z = log_partition(*args)
    best_tags, best_scores = viterbi(*args)
    found = kbest_viterbi(*args, k)
    marg = marginals(*args)
    for b, n in enumerate(lengths.tolist()):
        scores = enumerate_scores(emissions[b], n, *potentials)
        z = log_sum(scores.values())
        assert float(log_z[b]) == pytest.approx(z, abs=tol) if z > NEG_INF else float(log_z[b]) == NEG_INF
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        n_valid = min(k, len(ranked))
        assert int(found.valid[b].sum()) == n_valid and bool(found.valid[b, :n_valid].all())
        got = [tuple(found.tags[b, j, :n].tolist()) for j in range(n_valid)]
        assert len(set(got)) == n_valid
        assert (found.tags[b, :, n:] == PAD).all() and (found.tags[b, n_valid:] == PAD).all()
        for j, seq in enumerate(got):
            assert seq in scores  # allowed
            assert float(found.scores[b, j]) == pytest.approx(ranked[j][1], abs=tol)
            assert float(found.scores[b, j]) == pytest.approx(scores[seq], abs=tol)
            assert math.exp(float(found.log_probs[b, j])) == pytest.approx(math.exp(ranked[j][1] - z), abs=1e-5)
        assert (found.log_probs[b, n_valid:] == NEG_INF).all()
        assert float(found.log_probs[b].exp().sum()) <= 1 + 1e-6
        if ranked:
            assert float(best_scores[b]) == pytest.approx(ranked[0][1], abs=tol)
            assert tuple(best_tags[b, :n].tolist()) in scores
        else:
            assert float(best_scores[b]) == NEG_INF
        for t in range(n):
            for y in range(emissions.shape[-1]):
                p = sum(math.exp(s - z) for seq, s in scores.items() if seq[t] == y) if ranked else 0.0
                assert float(marg[b, t, y]) == pytest.approx(p, abs=1e-5)
                if p == 0.0:
                    assert float(marg[b, t, y]) == 0.0  # forbidden: exactly zero
        assert float(marg[b, n:].abs().sum()) == 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-3)])
def test_random_masks_against_enumeration(seed, dtype, tol):
    n_tags = 2 + seed % 3
    emissions, lengths, potentials = random_crf(seed, [0, 1, 2, 4, 3], n_tags, dtype)
    check_all(emissions, lengths, potentials, k=1 + seed * 3, tol=tol)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("k", [1, 4, 50])
def test_schemes_against_enumeration(scheme, k):
    tags = tags_for_labels(["A", "B"] if scheme in ("BIO", "IOB1") else ["A"], scheme)
    emissions, lengths, potentials = random_crf(7, [0, 1, 3, 4], len(tags), constraints=build_constraints(tags, scheme))
    check_all(emissions, lengths, potentials, k=k, tol=1e-8)


def test_seven_tags_length_six():
    tags = tags_for_labels(["A", "B", "C"], "BIO")  # 7 tags
    emissions, lengths, potentials = random_crf(8, [6, 5], len(tags), constraints=build_constraints(tags, "BIO"))
    check_all(emissions, lengths, potentials, k=20, tol=1e-8)


@settings(max_examples=25, deadline=None)
@given(n_tags=st.integers(1, 5), lengths=st.lists(st.integers(0, 4), min_size=1, max_size=3), k=st.integers(1, 30),
       seed=st.integers(0, 10_000))
def test_hypothesis_sizes(n_tags, lengths, k, seed):
    emissions, lengths, potentials = random_crf(seed, lengths, n_tags)
    check_all(emissions, lengths, potentials, k=k, tol=1e-8)


def test_sequence_score_and_nll():
    emissions, lengths, potentials = random_crf(9, [3, 2], 3, constraints=Constraints(
        torch.ones(3, 3, dtype=torch.bool), torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)))
    tags = torch.tensor([[0, 2, 1, PAD, PAD], [1, 1, PAD, PAD, PAD]])
    score = sequence_score(emissions, lengths, *potentials, tags)
    loss = nll(emissions, lengths, *potentials, tags)
    for b, n in enumerate([3, 2]):
        scores = enumerate_scores(emissions[b], n, *potentials)
        seq = tuple(tags[b, :n].tolist())
        assert float(score[b]) == pytest.approx(scores[seq])
        assert float(loss[b]) == pytest.approx(log_sum(scores.values()) - scores[seq])


def test_marginals_equal_gradient_of_log_z():
    emissions, lengths, potentials = random_crf(10, [4, 0, 2], 4)
    emissions = emissions.clone().requires_grad_()
    log_z = log_partition(emissions, lengths, *potentials)
    (grad,) = torch.autograd.grad(torch.where(torch.isfinite(log_z), log_z, 0.0).sum(), emissions)
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, marginals(emissions.detach(), lengths, *potentials), atol=1e-9)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_entity_probabilities_against_enumeration(scheme):
    tags = tags_for_labels(["A", "B"], scheme) if scheme in ("BIO", "IOB1") else tags_for_labels(["A"], scheme)
    emissions, lengths, potentials = random_crf(11, [4, 3], len(tags), constraints=build_constraints(tags, scheme))
    spans = [(b, s, e, label) for b, n in enumerate([4, 3]) for s in range(n) for e in range(s + 1, n + 1)
             for label in sorted({t[2:] for t in tags if t != "O"})]
    got = entity_log_probs(emissions, lengths, *potentials, tags, scheme, spans).exp()
    for (b, s, e, label), p in zip(spans, got.tolist()):
        scores = enumerate_scores(emissions[b], int(lengths[b]), *potentials)
        z = log_sum(scores.values())
        expected = sum(math.exp(v - z) for seq, v in scores.items()
                       if (s, e, label) in tags_to_spans([tags[y] for y in seq], scheme))
        assert p == pytest.approx(expected, abs=1e-9)


def test_padding_length_does_not_matter():
    tags = tags_for_labels(["A"], "BILUO")
    c = build_constraints(tags, "BILUO")
    short, lengths, potentials = random_crf(12, [3, 2], len(tags), constraints=c, pad=0)
    long = torch.cat([short, torch.full((2, 6, len(tags)), 5e3, dtype=short.dtype)], dim=1)
    for fn in (log_partition, marginals):
        a, b = fn(short, lengths, *potentials), fn(long, lengths, *potentials)
        assert torch.allclose(a, b[:, : a.shape[1]] if a.dim() > 1 else b)
    ka, kb = kbest_viterbi(short, lengths, *potentials, 5), kbest_viterbi(long, lengths, *potentials, 5)
    assert torch.equal(ka.tags, kb.tags[:, :, :3]) and torch.allclose(ka.log_probs, kb.log_probs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_stay_finite(dtype):
    tags = tags_for_labels(["A", "B"], "BIO")
    emissions, lengths, potentials = random_crf(13, [5, 1], len(tags), dtype, build_constraints(tags, "BIO"), scale=1e4)
    args = (emissions, lengths, *potentials)
    assert torch.isfinite(log_partition(*args)).all()
    assert torch.isfinite(viterbi(*args)[1]).all()
    found = kbest_viterbi(*args, 3)
    assert torch.isfinite(found.log_probs[found.valid]).all()
    assert torch.isfinite(marginals(*args)).all()


def test_residual_is_finite_at_both_ends():
    log_probs = torch.tensor([[0.0, NEG_INF], [-1e-12, -50.0], [-80.0, -90.0]], dtype=torch.float32, requires_grad=True)
    valid = torch.tensor([[True, False], [True, True], [True, True]])
    rest = log_residual(log_probs, valid)
    assert torch.isfinite(rest).all()
    assert float(rest[2].detach()) == pytest.approx(0.0, abs=1e-6)
    (grad,) = torch.autograd.grad(rest.sum(), log_probs)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda e, l: (e.index_fill(1, torch.tensor([0]), float("nan")), l), "NaN or inf"),
        (lambda e, l: (e, l + 10), "lengths must lie"),
        (lambda e, l: (e, l - 10), "lengths must lie"),
        (lambda e, l: (e, l.float()), "integer tensor"),
        (lambda e, l: (e[0], l), r"\(B, T, L\)"),
    ],
)
def test_bad_inputs_raise_value_errors(change, match):
    emissions, lengths, potentials = random_crf(14, [3, 2], 3)
    emissions, lengths = change(emissions, lengths)
    with pytest.raises(ValueError, match=match):
        log_partition(emissions, lengths, *potentials)


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_bad_k(k):
    emissions, lengths, potentials = random_crf(15, [3], 3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        kbest_viterbi(emissions, lengths, *potentials, k)
