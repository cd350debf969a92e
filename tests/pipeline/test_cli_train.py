"""``spacy train`` and ``spacy evaluate`` run a distilled_ner config end to end (in subprocesses, as a user would)."""
import json
import subprocess
import sys
from pathlib import Path

from spacy.lang.en import English
from spacy.tokens import DocBin
from spacy.training import Example

from .test_distilled_ner import TRAIN_DATA

CONFIGS = Path(__file__).parents[2] / "configs"


def test_spacy_train_and_evaluate(tmp_path):
    nlp = English()
    docs = [Example.from_dict(nlp.make_doc(text), {"entities": ents}).reference for text, ents in TRAIN_DATA]
    DocBin(docs=docs * 4).to_disk(tmp_path / "train.spacy")
    DocBin(docs=docs).to_disk(tmp_path / "dev.spacy")
    small = [
        "--components.distilled_ner.model.tok2vec.embed.width", "32",
        "--components.distilled_ner.model.tok2vec.encode.input_width", "32",
        "--components.distilled_ner.model.tok2vec.encode.width", "32",
        "--training.max_steps", "60", "--training.eval_frequency", "30", "--training.dropout", "0.0",
        "--training.optimizer.learn_rate", "0.01",
    ]
    subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(CONFIGS / "student_vanilla.cfg"), "--output", str(tmp_path / "out"),
         "--paths.train", str(tmp_path / "train.spacy"), "--paths.dev", str(tmp_path / "dev.spacy"), *small],
        check=True,
    )
    metrics = tmp_path / "metrics.json"
    subprocess.run(
        [sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "out" / "model-best"), str(tmp_path / "dev.spacy"),
         "--output", str(metrics), "--gold-preproc"],
        check=True,
    )
    scores = json.loads(metrics.read_text())
    assert scores["ents_f"] > 0.5 and "LOC" in scores["ents_per_type"]
