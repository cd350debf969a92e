"""Each distillation loss equals its definition computed by enumerating every tag sequence."""
import itertools
import math

import pytest
import torch

from mgkd_spacy import losses as L
from mgkd_spacy.crf import build_constraints, constrain, tags_for_labels

TAGS = tags_for_labels(["A", "B"], "BIO")  # O B-A I-A B-B I-B


def make_crf(seed: int, lengths=(4, 3, 1), n_tokens: int = 5):
    generator = torch.Generator().manual_seed(seed)
    n_tags = len(TAGS)
    emissions = torch.randn(len(lengths), n_tokens, n_tags, generator=generator, dtype=torch.float64)
    raw = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((n_tags, n_tags), (n_tags,), (n_tags,))]
    return emissions, torch.tensor(lengths), raw


def potentials(raw):
    return constrain(*raw, build_constraints(TAGS, "BIO"))


def enumerate_probs(emissions, length, transitions, start, end):
    """{sequence: probability} over all allowed sequences of one sentence."""
    scores = {}
    for seq in itertools.product(range(len(TAGS)), repeat=length):
        s = start[seq[0]] + end[seq[-1]] + sum(emissions[t, y] for t, y in enumerate(seq))
        s = s + sum(transitions[a, b] for a, b in zip(seq, seq[1:]))
        if math.isfinite(float(s)):
            scores[seq] = float(s)
    log_z = math.log(sum(math.exp(v) for v in scores.values()))
    return {seq: math.exp(v - log_z) for seq, v in scores.items()}


def teacher_kbest(seed: int, lengths, k: int, n_tokens: int = 5):
    """A teacher CRF's true top-k (sequences, log-probs) by enumeration, padded to (B, K, T)."""
    emissions, lengths, raw = make_crf(seed + 100, tuple(lengths.tolist()), n_tokens)
    trans, start, end = potentials(raw)
    n_batch, n_tokens = emissions.shape[:2]
    sequences = torch.full((n_batch, k, n_tokens), -1, dtype=torch.long)
    log_probs = torch.full((n_batch, k), float("-inf"), dtype=torch.float64)
    for b in range(n_batch):
        probs = enumerate_probs(emissions[b], int(lengths[b]), trans, start, end)
        best = sorted(probs.items(), key=lambda item: -item[1])[:k]
        for j, (seq, p) in enumerate(best):
            sequences[b, j, : len(seq)] = torch.tensor(seq)
            log_probs[b, j] = math.log(p)
    return sequences, log_probs, torch.isfinite(log_probs)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_kbest_and_fuzzy_match_definitions(k):
    emissions, lengths, raw = make_crf(0)
    args = (emissions, lengths, *potentials(raw))
    sequences, teacher_lp, valid = teacher_kbest(0, lengths, k)
    student_lp = L.sequence_log_probs(*args, sequences)
    kbest = L.kbest_cross_entropy(student_lp, teacher_lp, valid)
    fuzzy = L.fuzzy_loss(student_lp, teacher_lp, valid)
    for b in range(len(lengths)):
        p_s = enumerate_probs(emissions[b], int(lengths[b]), *potentials(raw))
        rows = [j for j in range(k) if valid[b, j]]
        seqs = [tuple(sequences[b, j, : int(lengths[b])].tolist()) for j in rows]
        p_t = [math.exp(float(teacher_lp[b, j])) for j in rows]
        s_sum, t_sum = sum(p_s[s] for s in seqs), sum(p_t)
        assert float(student_lp[b, 0]) == pytest.approx(math.log(p_s[seqs[0]]), abs=1e-9)
        rest = (1 - t_sum) * math.log(max(1 - s_sum, 1e-300)) if t_sum < 1 - 1e-12 else 0.0
        expected = -sum(p * math.log(p_s[s]) for p, s in zip(p_t, seqs)) - rest
        assert float(kbest[b]) == pytest.approx(expected, abs=1e-7)
        expected_fuzzy = -t_sum * math.log(s_sum) - (rest if t_sum < 1 - 1e-12 else 0.0)
        assert float(fuzzy[b]) == pytest.approx(expected_fuzzy, abs=1e-7)


def test_partial_nll_marginalises_missing_tokens():
    emissions, lengths, raw = make_crf(1)
    args = (emissions, lengths, *potentials(raw))
    allowed = torch.ones(emissions.shape, dtype=torch.bool)
    allowed[0, 0] = False
    allowed[0, 0, TAGS.index("B-A")] = True  # token 0 is B-A, tokens 1..3 unknown
    allowed[1] = False
    allowed[1, torch.arange(5), torch.tensor([0, 3, 4, 0, 0])] = True  # O B-B I-B (full annotation)
    loss = L.partial_nll(*args, allowed)
    p0 = enumerate_probs(emissions[0], 4, *potentials(raw))
    assert float(loss[0]) == pytest.approx(-math.log(sum(p for s, p in p0.items() if s[0] == 1)), abs=1e-9)
    p1 = enumerate_probs(emissions[1], 3, *potentials(raw))
    assert float(loss[1]) == pytest.approx(-math.log(p1[(0, 3, 4)]), abs=1e-9)
    assert float(loss[2]) == pytest.approx(0.0, abs=1e-9)  # nothing known about sentence 2


def test_token_losses_match_definitions():
    emissions, lengths, raw = make_crf(2)
    args = (emissions, lengths, *potentials(raw))
    teacher_em = torch.log_softmax(torch.randn(emissions.shape, dtype=torch.float64), -1)
    temperature = 2.0
    em = L.token_em_loss(emissions, teacher_em, lengths, temperature)
    t_emissions, _, t_raw = make_crf(3)
    from mgkd_spacy.crf import marginals

    teacher_marg = marginals(t_emissions, lengths, *potentials(t_raw))
    pos = L.token_pos_loss(*args, teacher_marg)
    for b in range(len(lengths)):
        n = int(lengths[b])
        p = torch.softmax(teacher_em[b, :n] / temperature, -1)
        q = torch.softmax(emissions[b, :n] / temperature, -1)
        assert float(em[b]) == pytest.approx(float((p * (p.log() - q.log())).sum()) * temperature**2, abs=1e-9)
        p_s = enumerate_probs(emissions[b], n, *potentials(raw))
        expected = 0.0
        for t in range(n):
            for y in range(len(TAGS)):
                pt = float(teacher_marg[b, t, y])
                ps = sum(p for s, p in p_s.items() if s[t] == y)
                if pt > 0:
                    expected += pt * (math.log(pt) - math.log(ps))
        assert float(pos[b]) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("name", ["kbest", "fuzzy", "token_pos", "partial_nll"])
def test_gradients_match_finite_differences(name):
    emissions, lengths, raw = make_crf(4, lengths=(3, 2), n_tokens=3)
    sequences, teacher_lp, valid = teacher_kbest(4, lengths, 3, n_tokens=3)
    t_emissions, _, t_raw = make_crf(5, lengths=(3, 2), n_tokens=3)
    from mgkd_spacy.crf import marginals

    teacher_marg = marginals(t_emissions, lengths, *potentials(t_raw))
    allowed = torch.rand(emissions.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    allowed[:, :, 0] = True

    def loss(e, trans, start, end):
        args = (e, lengths, *constrain(trans, start, end, build_constraints(TAGS, "BIO")))
        if name == "kbest":
            return L.kbest_cross_entropy(L.sequence_log_probs(*args, sequences), teacher_lp, valid).sum()
        if name == "fuzzy":
            return L.fuzzy_loss(L.sequence_log_probs(*args, sequences), teacher_lp, valid).sum()
        if name == "token_pos":
            return L.token_pos_loss(*args, teacher_marg).sum()
        return L.partial_nll(*args, allowed).sum()

    inputs = tuple(x.clone().requires_grad_() for x in (emissions, *raw))
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)


def test_confident_teacher_and_impossible_sequences_stay_finite():
    emissions, lengths, raw = make_crf(6)
    emissions = emissions.clone().requires_grad_()
    trans, start, end = potentials(raw)
    sequences, teacher_lp, valid = teacher_kbest(6, lengths, 2)
    confident = torch.where(valid[:, :1], torch.zeros_like(teacher_lp[:, :1]), teacher_lp[:, :1])  # p_t,sum = 1.0
    impossible = sequences[:, :1].clone()
    impossible[0, 0, :2] = torch.tensor([0, TAGS.index("I-A")])  # O -> I-A is forbidden for the student
    for seqs, teacher in ((sequences[:, :1], confident), (impossible, teacher_lp[:, :1])):
        student = L.sequence_log_probs(emissions, lengths, trans, start, end, seqs)
        total = (L.kbest_cross_entropy(student, teacher, valid[:, :1]) + L.fuzzy_loss(student, teacher, valid[:, :1])).sum()
        (grad,) = torch.autograd.grad(total, emissions)
        assert torch.isfinite(total) and torch.isfinite(grad).all()
