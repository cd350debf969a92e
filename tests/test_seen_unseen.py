"""scripts/seen_unseen.py: entity scores split by whether the (text, label) pair occurs in the training data."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

ROOT = Path(__file__).parents[1]


def docbin(path: Path, sentences) -> Path:
    vocab = spacy.blank("en").vocab
    docs = []
    for words, ents in sentences:
        doc = Doc(vocab, words=words)
        doc.ents = [Span(doc, start, end, label=label) for start, end, label in ents]
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)
    return path


def test_scores_per_bucket_from_a_rule_based_pipeline(tmp_path):
    """The pipeline tags every "Paris" as LOC. Train has Paris/LOC, so the test's Paris/LOC is seen and found,
    Berlin/LOC is unseen and missed, and "Paris Hilton"/PER is unseen while the wrong Paris/LOC guess counts
    against the seen bucket's precision."""
    train = docbin(tmp_path / "train.spacy", [(["I", "love", "Paris", "."], [(2, 3, "LOC")])])
    test = docbin(tmp_path / "test.spacy", [
        (["Paris", "is", "big", "."], [(0, 1, "LOC")]),
        (["Berlin", "is", "big", "."], [(0, 1, "LOC")]),
        (["Paris", "Hilton", "sings", "."], [(0, 2, "PER")]),
    ])
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "LOC", "pattern": "Paris"}])
    nlp.to_disk(tmp_path / "model")
    out = tmp_path / "scores.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "seen_unseen.py"), str(train), str(test),
                             str(tmp_path / "model"), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scores = json.loads(out.read_text())[str(tmp_path / "model")]
    assert scores["seen"] == {"gold": 1, "predicted": 2, "p": 50.0, "r": 100.0, "f": pytest.approx(200 / 3)}
    assert scores["unseen"] == {"gold": 2, "predicted": 0, "p": 0.0, "r": 0.0, "f": 0.0}
    assert scores["all"] == {"gold": 3, "predicted": 2, "p": 50.0, "r": pytest.approx(100 / 3), "f": pytest.approx(40.0)}
