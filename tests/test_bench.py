"""The CRF benchmark runs, its loop baseline is exact, and it writes its table."""
import torch

from mgkd_spacy.bench import loop_kbest, run_crf, write_markdown
from mgkd_spacy.crf import build_constraints, constrain, kbest_viterbi, tags_for_labels


def test_loop_baseline_matches_batched_kbest():
    tags = tags_for_labels(["A", "B"], "BIO")
    g = torch.Generator().manual_seed(0)
    potentials = constrain(torch.randn(5, 5, generator=g), torch.randn(5, generator=g), torch.randn(5, generator=g),
                           build_constraints(tags, "BIO"))
    emissions = torch.randn(1, 6, 5, generator=g, dtype=torch.float32)
    found = kbest_viterbi(emissions, torch.tensor([6]), *potentials, 7)
    loop = loop_kbest(emissions[0], *potentials, 7)
    assert [round(s, 4) for s, _ in loop] == [round(float(s), 4) for s in found.scores[0]]
    assert [p for _, p in loop][0] == found.tags[0, 0].tolist()


def test_benchmark_writes_table(tmp_path):
    rows = run_crf(batch=4, lengths=[8], n_tags_list=[9], ks=[1, 3], loop_sentences=2, repeats=1)
    out = tmp_path / "crf.md"
    write_markdown(rows, [1, 3], 4, 2, "cmd", out)
    text = out.read_text()
    assert "| 9 | 8 |" in text and "k=3 / viterbi time" in text
