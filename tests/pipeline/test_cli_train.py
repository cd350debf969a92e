"""``spacy train`` and ``spacy evaluate`` run a distilled_ner config end to end (in subprocesses, as a user would)."""
import json
import subprocess
import sys
from pathlib import Path

import spacy
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


def test_default_config_works_on_a_blank_pipeline():
    nlp = English()
    nlp.add_pipe("distilled_ner", config={"entity_scores": True})
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN_DATA]
    optimizer = nlp.initialize(get_examples=lambda: examples)
    nlp.update(examples, sgd=optimizer)
    doc = nlp("Bob lives in New York City .")
    assert len(doc.spans["mgkd_ents"]) == len(doc.ents)


def test_spacy_package_builds_the_pipeline_directory(tmp_path):
    nlp = English()
    nlp.add_pipe("distilled_ner")
    examples = [Example.from_dict(nlp.make_doc(text), {"entities": ents}) for text, ents in TRAIN_DATA]
    nlp.initialize(get_examples=lambda: examples)
    nlp.to_disk(tmp_path / "model")
    (tmp_path / "pkg").mkdir()
    subprocess.run(
        [sys.executable, "-m", "spacy", "package", str(tmp_path / "model"), str(tmp_path / "pkg"), "--name", "mgkd_test",
         "--version", "0.0.1", "--build", "none", "--force"],
        check=True,
    )
    package_dir = tmp_path / "pkg" / "en_mgkd_test-0.0.1" / "en_mgkd_test" / "en_mgkd_test-0.0.1"
    reloaded = spacy.load(package_dir)
    assert "distilled_ner" in reloaded.pipe_names
