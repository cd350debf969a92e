"""The CRF benchmark runs, its per-sentence loop baseline is exact, and it writes its table."""
import pytest
import torch
from typer.testing import CliRunner

from mgkd_spacy.bench import app, loop_kbest, run_crf, write_markdown
from mgkd_spacy.crf import build_constraints, constrain, kbest_viterbi, ops, tags_for_labels


def test_loop_baseline_matches_batched_kbest():
    tags = tags_for_labels(["A", "B"], "BILUO")
    g = torch.Generator().manual_seed(0)
    potentials = constrain(torch.randn(9, 9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64),
                           torch.randn(9, generator=g, dtype=torch.float64), build_constraints(tags, "BILUO"))
    emissions = torch.randn(3, 6, 9, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 1])
    found = kbest_viterbi(emissions, lengths, *potentials, 40)
    for b, n in enumerate(lengths.tolist()):
        loop = loop_kbest(emissions[b, :n], *potentials, 40)
        n_valid = int(found.valid[b].sum())
        assert len(loop) == n_valid  # 40 > allowed sequences for n <= 2
        assert torch.allclose(torch.tensor([s for s, _ in loop], dtype=torch.float64), found.scores[b, :n_valid], atol=1e-9)
        assert [p for _, p in loop] == found.tags[b, :n_valid, :n].tolist()
    assert loop_kbest(emissions[0, :0], *potentials, 3) == [(0.0, [])]


def test_benchmark_writes_table(tmp_path):
    rows = run_crf(batch=4, lengths=[8], n_tags_list=[9], ks=[1, 3], loop_sentences=2, repeats=1)
    out = tmp_path / "crf.md"
    write_markdown(rows, [1, 3], 4, 2, "python -m mgkd_spacy.bench crf", out, "the torch code")
    text = out.read_text()
    assert "Command: `python -m mgkd_spacy.bench crf`" in text and "2 CPU cores, no GPU" in text
    assert "Backend: the torch code." in text
    assert "| T | length | log Z | viterbi | k=1 | k=3 | loop k=3 | k=3 / viterbi time | k=3 speedup vs loop |" in text
    assert "| 9 | 8 |" in text and "set_num_threads" in text


@pytest.mark.parametrize("flag, backend", [("--kernel", "the C kernel"), ("--no-kernel", "the torch code")])
def test_benchmark_command_names_its_backend_and_restores_the_kernel(tmp_path, monkeypatch, flag, backend):
    seen = []
    monkeypatch.setattr("mgkd_spacy.bench.run_crf", lambda *args: seen.append(ops._kernel) or [])
    built = ops._kernel
    result = CliRunner().invoke(app, ["crf", "--out", str(tmp_path / "crf.md"), "--threads", str(torch.get_num_threads()), flag])
    assert result.exit_code == 0, result.output
    assert f"Backend: {backend}" in (tmp_path / "crf.md").read_text()
    assert seen == [built if flag == "--kernel" else None] and ops._kernel is built
