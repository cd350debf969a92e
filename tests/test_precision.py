"""``mgkd precision`` and its loader: a student copy that tags in bfloat16 or int8, refused where there is no BiLSTM
or no int8 support."""
from types import SimpleNamespace

import numpy
import pytest
import spacy
import torch
from spacy.lang.en import English

from mgkd_spacy.cli.precision import precision_cli
from mgkd_spacy.precision import encoder_sections, inference_dtypes, load_with_inference_dtype

from .pipeline.test_distilled_ner import TRAIN_DATA, save_trained


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "student"
    save_trained(path, steps=20)
    return path


def vectors(nlp, texts):
    """The BiLSTM's output vectors for each text."""
    return nlp.get_pipe("distilled_ner").model.get_ref("tok2vec").predict([nlp.make_doc(text) for text in texts])


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_copy_tags_in_a_lower_precision_with_the_same_weights(student, tmp_path, dtype):
    copy = tmp_path / dtype / "model-best"  # parent folders are created, as for project outputs
    precision_cli(student, copy, inference_dtype=dtype)
    exact, lowered = spacy.load(student), spacy.load(copy)
    assert inference_dtypes(exact) == ["float32"] and inference_dtypes(lowered) == [dtype]
    assert (copy / "distilled_ner" / "model").read_bytes() == (student / "distilled_ner" / "model").read_bytes()
    texts = [text for text, _ in TRAIN_DATA]
    a, b = vectors(exact, texts), vectors(lowered, texts)
    assert all(numpy.allclose(x, y, atol=0.05) for x, y in zip(a, b)) and not all(numpy.array_equal(x, y) for x, y in zip(a, b))
    assert [[(e.text, e.label_) for e in doc.ents] for doc in lowered.pipe(texts)] == [
        [(e.text, e.label_) for e in doc.ents] for doc in exact.pipe(texts)
    ]


def test_every_encoder_block_is_found():
    config = {"components": {"a": {"model": {"encode": {"@architectures": "mgkd.BiLSTMEncoder.v2", "inference_dtype": "bfloat16"}}},
                             "b": {"model": {"tok2vec": {"encode": {"@architectures": "mgkd.BiLSTMEncoder.v3"}}}},
                             "c": {"model": {"@architectures": "spacy.TransitionBasedParser.v2"}}}}
    assert list(encoder_sections(config)) == ["components.a.model.encode", "components.b.model.tok2vec.encode"]


def test_pipeline_without_a_bilstm_encoder_is_refused(tmp_path):
    nlp = English()
    nlp.add_pipe("ner")
    nlp.initialize()
    nlp.to_disk(tmp_path / "cnn")
    with pytest.raises(ValueError, match="no mgkd.BiLSTMEncoder.v2 or mgkd.BiLSTMEncoder.v3 block"):
        load_with_inference_dtype(tmp_path / "cnn", "bfloat16")
    with pytest.raises(SystemExit):
        precision_cli(tmp_path / "cnn", tmp_path / "out", inference_dtype="bfloat16")
    assert not (tmp_path / "out").exists()


def test_unknown_precision_is_refused(student, tmp_path):
    with pytest.raises(ValueError, match="inference_dtype must be one of"):
        load_with_inference_dtype(student, "float16")


@pytest.mark.parametrize("native, warned", [(False, True), (True, False)])
def test_bfloat16_copy_warns_on_cpus_without_native_bfloat16(student, tmp_path, monkeypatch, capsys, native, warned):
    monkeypatch.setattr("mgkd_spacy.cli.precision.native_bfloat16", lambda: native)
    precision_cli(student, tmp_path / "bf16", inference_dtype="bfloat16")
    assert ("no native bfloat16" in capsys.readouterr().out) is warned
    assert (tmp_path / "bf16" / "config.cfg").exists()


def test_int8_copy_is_refused_with_the_fix_where_torch_has_no_quantized_engine(student, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends, "quantized", SimpleNamespace(engine="none", supported_engines=[]))
    with pytest.raises(SystemExit):
        precision_cli(student, tmp_path / "int8", inference_dtype="int8")
    out = " ".join(capsys.readouterr().out.split())  # msg.fail wraps lines
    assert "has none" in out and 'Tag in "float32" instead' in out
    assert not (tmp_path / "int8").exists()
