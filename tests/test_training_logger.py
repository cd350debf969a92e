"""mgkd.TimedConsoleLogger.v1 keeps spacy train's seconds in the pipeline meta; ``mgkd evaluate`` copies model-last's."""
import io
import json
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config

from mgkd_spacy.cli.evaluate import training_time
from mgkd_spacy.training_logger import META_KEY

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.cfg"))


def logger(nlp):
    stdout = io.StringIO()
    log_step, finalize = spacy.registry.loggers.get("mgkd.TimedConsoleLogger.v1")()(nlp, stdout, io.StringIO())
    return log_step, finalize, stdout


def info(step, seconds):
    return {"epoch": 1, "step": step, "score": 0.5, "other_scores": {"ents_f": 0.5}, "losses": {"ner": 1.0},
            "checkpoints": [(0.5, step)], "seconds": seconds, "words": 100 * step}


def test_each_evaluation_updates_the_meta_and_the_console_table_is_printed():
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    log_step, finalize, stdout = logger(nlp)
    log_step(info(200, 7))
    assert nlp.meta[META_KEY] == {"seconds": 7, "steps": 200, "words": 20000}
    log_step(None)  # a step without evaluation changes nothing
    log_step(info(400, 15))
    finalize()
    assert nlp.meta[META_KEY] == {"seconds": 15, "steps": 400, "words": 40000}
    assert "ENTS_F" in stdout.getvalue() and "400" in stdout.getvalue()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_every_training_config_uses_the_timed_logger(config):
    assert load_config(config)["training"]["logger"]["@loggers"] == "mgkd.TimedConsoleLogger.v1"


def write_meta(model: Path, **meta):
    model.mkdir(parents=True)
    (model / "meta.json").write_text(json.dumps({"lang": "en", **meta}))


def test_training_time_of_model_best_is_the_whole_run_in_model_last(tmp_path):
    write_meta(tmp_path / "model-best", **{META_KEY: {"seconds": 50, "steps": 1000, "words": 9}})
    write_meta(tmp_path / "model-last", **{META_KEY: {"seconds": 90, "steps": 3000, "words": 27}})
    assert training_time(tmp_path / "model-best")["seconds"] == 90
    assert training_time(tmp_path / "model-last")["seconds"] == 90


def test_no_training_time_without_a_model_last_or_a_record(tmp_path):
    write_meta(tmp_path / "copy" / "model-best", **{META_KEY: {"seconds": 50, "steps": 1000, "words": 9}})
    assert training_time(tmp_path / "copy" / "model-best") is None  # e.g. an mgkd precision copy: not trained
    write_meta(tmp_path / "old" / "model-best")
    write_meta(tmp_path / "old" / "model-last")
    assert training_time(tmp_path / "old" / "model-best") is None  # trained with spaCy's own logger
