"""``mgkd speed``: times each pipeline on the same text and records which CRF code decoded it."""
import json

import pytest
import torch
from spacy.tokens import DocBin
from typer.testing import CliRunner

from mgkd_spacy.cli import app
from mgkd_spacy.crf import ops

from .pipeline.test_distilled_ner import TRAIN_DATA, save_trained


@pytest.fixture(scope="module")
def student_and_text(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speed")
    nlp = save_trained(folder / "student", steps=5)
    DocBin(docs=[nlp.make_doc(text) for text, _ in TRAIN_DATA]).to_disk(folder / "text.spacy")
    return folder / "student", folder / "text.spacy"


@pytest.mark.parametrize("flag, backend, kernel_in_use", [("--kernel", "kernel", True), ("--no-kernel", "torch", False)])
def test_speed_records_the_crf_backend_and_restores_the_kernel(student_and_text, tmp_path, monkeypatch, flag, backend,
                                                               kernel_in_use):
    student, text = student_and_text
    built = ops._kernel
    used = []
    search = ops._kbest_search
    monkeypatch.setattr(ops, "_kbest_search", lambda *args: used.append(ops._kernel is not None) or search(*args))
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(app, ["speed", str(student), "--data", str(text), "--output", str(out), "--threads",
                                      str(torch.get_num_threads()), "--repeats", "1", flag])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())
    assert row["crf_backend"] == backend and row["words_per_second"] > 0 and row["words"] > 0
    assert used and set(used) == {kernel_in_use}
    assert ops._kernel is built
