"""scripts/teacher_stats.py: how peaked the teacher's k-best surrogates are and how often they hold the gold tags."""
import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from mgkd_spacy.crf import tags_for_labels
from mgkd_spacy.surrogates import Surrogate, set_surrogate

ROOT = Path(__file__).parents[1]
TAGS = tags_for_labels(["PER"], "BILUO")
WORDS = ["Ada", "Lovelace", "wrote"]


def annotated(best_first, probs, gold: bool) -> Doc:
    """A doc with "Ada Lovelace" as gold PER (if ``gold``) and a surrogate of the given tag sequences."""
    doc = Doc(spacy.blank("en").vocab, words=WORDS)
    if gold:
        doc.ents = [Span(doc, 0, 2, label="PER")]
    sequences = numpy.array([[TAGS.index(tag) for tag in seq] for seq in best_first], dtype="int64")
    set_surrogate(doc, Surrogate(tags=list(TAGS), scheme="BILUO", sequences=sequences,
                                 log_probs=numpy.log(numpy.array(probs)).astype("float32")))
    return doc


def run(tmp_path: Path, docs) -> subprocess.CompletedProcess:
    DocBin(docs=docs, store_user_data=True).to_disk(tmp_path / "in.spacy")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "teacher_stats.py"), str(tmp_path / "in.spacy"),
                           "--out", str(tmp_path / "stats.json")], capture_output=True, text=True)


GOLD = ["B-PER", "L-PER", "O"]
OTHER = ["U-PER", "O", "O"]


def test_gold_statistics_count_top1_and_rank(tmp_path):
    """Doc 1's best sequence is the gold one, at p = 0.95; doc 2 has it second, at p = 0.2."""
    result = run(tmp_path, [annotated([GOLD, OTHER], [0.95, 0.03], gold=True),
                            annotated([OTHER, GOLD], [0.6, 0.2], gold=True)])
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["sentences"] == 2
    assert stats["mean_p1"] == pytest.approx(0.775) and stats["mean_psum"] == pytest.approx(0.89)
    assert stats["share_p1_over_0.9"] == 0.5 and stats["share_top1_equals_gold"] == 0.5
    assert stats["share_gold_in_kbest"] == 1.0 and stats["mean_teacher_prob_of_gold"] == pytest.approx(0.575)


def test_unlabeled_text_gets_null_gold_statistics_in_strict_json(tmp_path):
    result = run(tmp_path, [annotated([OTHER, GOLD], [0.6, 0.2], gold=False)])
    assert result.returncode == 0, result.stderr

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    stats = json.loads((tmp_path / "stats.json").read_text(), parse_constant=refuse)
    assert stats["mean_p1"] == pytest.approx(0.6)
    assert stats["share_top1_equals_gold"] is None and stats["mean_teacher_prob_of_gold"] is None


def test_input_without_surrogates_is_refused_with_the_fix(tmp_path):
    result = run(tmp_path, [Doc(spacy.blank("en").vocab, words=WORDS)])
    assert result.returncode != 0 and not (tmp_path / "stats.json").exists()
    assert "No annotated sentences" in result.stderr and "mgkd annotate" in result.stderr
