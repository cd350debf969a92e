"""``mgkd annotate``: shards, atomic chunks, and resumption after an interruption with identical output."""
import pytest
import typer
from spacy.tokens import Doc, DocBin

from mgkd_spacy.cli import annotate as cli
from mgkd_spacy.surrogates import get_surrogate

from .pipeline.test_distilled_ner import TRAIN_DATA, make_nlp, save_trained


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate")
    teacher = save_trained(root / "teacher", steps=20)
    docs = [Doc(teacher.vocab, words=text.split()) for text, _ in TRAIN_DATA] * 3
    DocBin(docs=docs).to_disk(root / "input.spacy")
    return root


def run(root, out, shard="0/1", **kwargs):
    cli.annotate_cli(root / "teacher", root / "input.spacy", out, k=3, shard=shard, chunk_size=2, batch_size=2,
                     token_targets=True, gpu_id=-1, **kwargs)


def read_all(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.spacy"))}


def test_shards_cover_all_chunks_once(setup):
    out = setup / "sharded"
    run(setup, out, shard="0/2")
    run(setup, out, shard="1/2")
    assert sorted(read_all(out)) == [f"part-{j:05d}.spacy" for j in range(5)]  # 9 docs in chunks of 2
    docs = list(DocBin().from_disk(out / "part-00000.spacy").get_docs(make_nlp().vocab))
    assert all(get_surrogate(doc) is not None for doc in docs)


def test_resume_after_interruption_gives_identical_output(setup, monkeypatch):
    reference = setup / "reference"
    run(setup, reference)
    interrupted = setup / "interrupted"
    original = cli.write_atomically
    calls = {"n": 0}

    def crash_after_two(docs, path):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(docs, path)

    monkeypatch.setattr(cli, "write_atomically", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(setup, interrupted)
    assert len(read_all(interrupted)) == 2 and not list(interrupted.glob(".*tmp"))
    monkeypatch.setattr(cli, "write_atomically", original)
    run(setup, interrupted)
    assert read_all(interrupted) == read_all(reference)


def test_bad_shard_is_rejected():
    with pytest.raises(typer.BadParameter, match="i/N"):
        cli.parse_shard("3/2")
