"""``mgkd annotate``: shards, atomic chunks, resumption after an interruption with identical output, and chunks made
from another teacher, input or settings annotated again."""
import json

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

    def crash_after_two(content, path):
        if isinstance(content, list):  # a chunk (the recipe JSON beside it is written after it)
            if calls["n"] == 2:
                raise KeyboardInterrupt
            calls["n"] += 1
        original(content, path)

    monkeypatch.setattr(cli, "write_atomically", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(setup, interrupted)
    assert len(read_all(interrupted)) == 2 and not list(interrupted.glob(".*tmp"))
    monkeypatch.setattr(cli, "write_atomically", original)
    run(setup, interrupted)
    assert read_all(interrupted) == read_all(reference)


def test_chunks_from_another_teacher_or_settings_are_annotated_again(setup, tmp_path):
    out = tmp_path / "out"
    run(setup, out)
    first = read_all(out)
    save_trained(tmp_path / "other_teacher", steps=3)  # a different teacher, same output directory
    cli.annotate_cli(tmp_path / "other_teacher", setup / "input.spacy", out, k=3, shard="0/1", chunk_size=2, batch_size=2,
                     token_targets=True, gpu_id=-1)
    redone = read_all(out)
    assert sorted(redone) == sorted(first) and all(redone[name] != first[name] for name in first)
    recipe = json.loads((out / "part-00000.json").read_text())
    assert recipe["teacher"] == cli.checksum(tmp_path / "other_teacher") and recipe["k"] == 3
    run(setup, out, shard="0/1")  # back to the first teacher: its annotation again, byte for byte
    assert read_all(out) == first
    (out / "part-00001.json").unlink()  # a chunk without a record (written before records existed, or cut off)
    (out / "part-00001.spacy").write_bytes(b"stale")
    run(setup, out)
    assert read_all(out) == first


def test_chunks_beyond_the_end_of_the_input_are_removed(setup, tmp_path):
    out = tmp_path / "out"
    run(setup, out)
    for name in ("part-00007.spacy", "part-00007.json"):  # left by an earlier, longer input
        (out / name).write_bytes((out / name.replace("7", "0")).read_bytes())
    run(setup, out)
    assert sorted(read_all(out)) == [f"part-{j:05d}.spacy" for j in range(5)] and not (out / "part-00007.json").exists()


def test_bad_shard_is_rejected():
    with pytest.raises(typer.BadParameter, match="i/N"):
        cli.parse_shard("3/2")
