"""The C kernel (``mgkd_spacy/crf/_kernel.c``): built, used on the CPU, equal to the torch code, memory-safe.

``test_ops.py`` runs every brute-force check with both backends; these tests cover what enumeration cannot: long
sentences, the dispatch, the log-space fallback, and the kernel's own argument checks.
"""
import pytest
import torch

from mgkd_spacy.crf import (
    build_constraints, constrain, kbest_viterbi, log_partition, ops, sequence_score, tags_for_labels, viterbi,
)


def bio_batch(seed: int, n_batch: int, max_length: int, dtype: torch.dtype):
    """A padded batch of BIO sentences (4 types, 9 tags) with lengths 0..max_length and constrained potentials."""
    g = torch.Generator().manual_seed(seed)
    tags = tags_for_labels(["PER", "ORG", "LOC", "MISC"], "BIO")
    potentials = constrain(*(torch.randn(s, generator=g, dtype=dtype) for s in ((9, 9), (9,), (9,))),
                           build_constraints(tags, "BIO"))
    lengths = torch.randint(0, max_length + 1, (n_batch,), generator=g)
    emissions = torch.randn(n_batch, max_length, 9, generator=g, dtype=dtype) * 2
    return emissions, lengths, potentials


def on_torch(op, *args):
    """``op(*args)`` with the kernel switched off: the torch code."""
    with ops.use_kernel(False):
        return op(*args)


def test_c_kernel_is_built():
    assert ops._kernel is not None, ops.KERNEL_MISSING


@pytest.mark.parametrize("op, torch_function", [
    (lambda *args: kbest_viterbi(*args, 5), "_pop_kbest"),
    (viterbi, "_viterbi_search"),
    (log_partition, "_scaled_log_partition"),
])
def test_cpu_calls_use_the_kernel(monkeypatch, op, torch_function):
    emissions, lengths, potentials = bio_batch(0, 4, 6, torch.float32)

    def fail(*args, **kwargs):
        raise AssertionError("the torch code ran")

    monkeypatch.setattr(ops, torch_function, fail)
    op(emissions, lengths, *potentials)
    with pytest.raises(AssertionError, match="torch code ran"):
        on_torch(op, emissions, lengths, *potentials)


@pytest.mark.parametrize("k", [1, 2, 15, 40])
@pytest.mark.parametrize("seed", range(3))
def test_kernel_equals_torch_search_on_long_sentences(seed, k):
    """Sentences of up to 60 tokens (beyond enumeration): the same K sequences, scores and log Z, in float64."""
    emissions, lengths, potentials = bio_batch(seed, 48, 60, torch.float64)
    found = kbest_viterbi(emissions, lengths, *potentials, k)
    expected = on_torch(kbest_viterbi, emissions, lengths, *potentials, k)
    assert torch.equal(found.valid, expected.valid)
    assert torch.allclose(found.scores, expected.scores, atol=1e-9, rtol=0)
    assert torch.allclose(found.log_probs, expected.log_probs, atol=1e-9, rtol=0)
    assert torch.equal(found.tags, expected.tags)
    assert torch.allclose(log_partition(emissions, lengths, *potentials),
                          on_torch(log_partition, emissions, lengths, *potentials), atol=1e-9, rtol=0)


def test_kernel_keeps_float32_scores_close_to_the_torch_search():
    emissions, lengths, potentials = bio_batch(5, 32, 40, torch.float32)
    found = kbest_viterbi(emissions, lengths, *potentials, 15)
    expected = on_torch(kbest_viterbi, emissions, lengths, *potentials, 15)
    assert found.scores.dtype == found.log_probs.dtype == torch.float32
    assert torch.equal(found.valid, expected.valid)
    assert torch.allclose(found.scores, expected.scores, atol=1e-3, rtol=0)


def test_kernel_kbest_on_a_sentence_of_200000_tokens():
    """Far deeper than a C stack could recurse: the request chain must not live on the stack."""
    g = torch.Generator().manual_seed(7)
    emissions = torch.randn(1, 200_000, 3, generator=g, dtype=torch.float64)
    potentials = [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((3, 3), (3,), (3,))]
    lengths = torch.tensor([200_000])
    found = kbest_viterbi(emissions, lengths, *potentials, 3)
    assert found.valid.all() and bool((found.scores[0, :-1] >= found.scores[0, 1:]).all())
    assert len({tuple(row) for row in found.tags[0].tolist()}) == 3
    rescored = torch.stack([sequence_score(emissions, lengths, *potentials, found.tags[:, i]) for i in range(3)], 1)
    assert torch.allclose(rescored, found.scores, atol=1e-6, rtol=0)
    assert torch.equal(found.tags[:, 0], viterbi(emissions, lengths, *potentials)[0])


def kernel_args(n_batch=2, n_tokens=3, n_tags=4, k=2, lengths=(3, 1)):
    buffers = [torch.zeros(n_batch, n_tokens, n_tags, dtype=torch.float64), torch.tensor(lengths),
               torch.zeros(n_tags, n_tags, dtype=torch.float64), torch.zeros(n_tags, dtype=torch.float64),
               torch.zeros(n_tags, dtype=torch.float64), torch.zeros(n_batch, k, dtype=torch.float64),
               torch.zeros(n_batch, k, n_tokens, dtype=torch.long)]
    return [x.numpy() for x in buffers]


def test_kernel_writes_what_its_docstring_says():
    args = kernel_args()
    ops._kernel.kbest(*args, 2, 3, 4, 2)
    scores, tags = args[5], args[6]
    assert scores.tolist() == [[0.0, 0.0], [0.0, 0.0]]  # all-zero potentials: every sequence scores 0
    assert tags[1, :, 1:].tolist() == [[-1, -1], [-1, -1]]  # beyond sentence 1's single token
    assert len({tuple(row) for row in tags[0].tolist()}) == 2


@pytest.mark.parametrize("sizes, match", [
    ((2, 3, 5, 2), "emissions holds 192 bytes; expected 240"),
    ((2, 3, 4, 3), "scores holds 32 bytes; expected 48"),
    ((2, 3, 4, 0), "k must be >= 1"),
    ((2, 3, 0, 2), "at least one tag"),
])
def test_kernel_rejects_buffers_that_do_not_match_the_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        ops._kernel.kbest(*kernel_args(), *sizes)


def test_kernel_rejects_lengths_outside_the_padded_length():
    with pytest.raises(ValueError, match="length 4 of sentence 0 is outside"):
        ops._kernel.kbest(*kernel_args(lengths=(4, 1)), 2, 3, 4, 2)
    buffers = kernel_args(lengths=(2, -1))[:5] + [torch.zeros(2, dtype=torch.float64).numpy(),
                                                   torch.zeros(2, dtype=torch.bool).numpy()]
    with pytest.raises(ValueError, match="length -1 of sentence 1 is outside"):
        ops._kernel.log_partition(*buffers, 2, 3, 4)


def test_kernel_log_partition_falls_back_only_where_the_scaled_one_is_not_exact():
    """A 300-nat emission gap (past SCALED_SPREAD) and sentences with no allowed sequence fall back; others do not."""
    emissions, _, (transitions, start, end) = bio_batch(3, 4, 7, torch.float64)
    lengths = torch.tensor([7, 5, 0, 1])
    emissions[1, 2, 0] = 300.0
    log_z, fell_back = ops._kernel_log_partition(emissions, lengths, transitions, start, end)
    assert fell_back.tolist() == [False, True, False, False]
    expected = on_torch(log_partition, emissions, lengths, transitions, start, end)
    assert torch.allclose(log_z, expected, atol=1e-9, rtol=0)
    no_moves = torch.full_like(transitions, float("-inf"))
    log_z, fell_back = ops._kernel_log_partition(emissions, lengths, no_moves, start, end)
    assert fell_back.tolist() == [True, True, False, False]
    assert log_z[:3].tolist() == [float("-inf"), float("-inf"), 0.0] and torch.isfinite(log_z[3])
    for moves in (transitions, no_moves):  # kbest_viterbi computes log Z in the k-best pass: the same fallback
        found = kbest_viterbi(emissions, lengths, moves, start, end, 4)
        expected = on_torch(kbest_viterbi, emissions, lengths, moves, start, end, 4)
        assert torch.equal(found.valid, expected.valid)
        assert torch.allclose(found.log_probs, expected.log_probs, atol=1e-9, rtol=0)


def test_use_kernel_switches_and_restores_and_refuses_a_missing_kernel(monkeypatch):
    built = ops._kernel
    with ops.use_kernel(False):
        assert ops._kernel is None
    assert ops._kernel is built
    monkeypatch.setattr(ops, "_kernel", None)
    with pytest.raises(ValueError, match="not built: reinstall"):
        ops.use_kernel(True)
