"""int8 tagging of the student's BiLSTM: close to float32, training untouched, the copy follows the weights, and
clear errors where it cannot run."""
from types import SimpleNamespace

import numpy
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

from mgkd_spacy.architectures import build_bilstm_encoder, build_bilstm_encoder_v2
from mgkd_spacy.int8 import Int8LSTM

PACKED_ENCODERS = pytest.mark.parametrize("build", [build_bilstm_encoder, build_bilstm_encoder_v2], ids=["v3", "v2"])


def _docs(seed, lengths, width=16):
    rng = numpy.random.default_rng(seed)
    return [rng.normal(size=(n, width)).astype("float32") for n in lengths]


def _pair(build, X, seed=0):
    """A float32 and an int8 encoder holding the same weights."""
    exact = build(input_width=16, width=32)
    exact.initialize(X=X)
    lowered = build(input_width=16, width=32, inference_dtype="int8")
    lowered.initialize(X=X)
    lowered.from_bytes(exact.to_bytes())
    return exact, lowered


@PACKED_ENCODERS
def test_int8_tags_close_to_float32_and_leaves_training_and_the_saved_weights_in_float32(build):
    X = _docs(2, (7, 0, 3, 12))
    exact, lowered = _pair(build, X)
    for y, z in zip(exact.predict(X), lowered.predict(X)):
        assert z.dtype == numpy.float32 and z.shape == y.shape
        # int8 weights and activations: close to float32, but not equal (so the setting is really applied)
        assert numpy.allclose(y, z, atol=0.05) and (y.size == 0 or not numpy.array_equal(y, z))
    (y, _), (z, _) = exact.begin_update(X), lowered.begin_update(X)
    assert all(numpy.array_equal(a, b) for a, b in zip(y, z))
    # the int8 copy is not part of the model: both save the same float32 weights
    assert lowered.to_bytes() == exact.to_bytes()


@PACKED_ENCODERS
def test_the_int8_copy_is_rebuilt_when_the_float32_weights_change(build):
    X = _docs(3, (5, 9))
    exact, lowered = _pair(build, X)
    lowered.predict(X)
    other = build(input_width=16, width=32)
    other.initialize(X=_docs(4, (6,)))  # other random weights
    lowered.from_bytes(other.to_bytes())
    for y, z, old in zip(other.predict(X), lowered.predict(X), exact.predict(X)):
        assert numpy.allclose(y, z, atol=0.05) and not numpy.allclose(old, z, atol=0.05)


def test_the_int8_copy_follows_weights_changed_in_place():
    lstm = torch.nn.LSTM(4, 3, bidirectional=True)
    packed = PackedSequence(torch.randn(5, 4), torch.tensor([2, 2, 1]))
    int8 = Int8LSTM()
    before = int8(lstm, packed)
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(-1.0)  # as an optimizer step does, same tensor object and storage
    with torch.no_grad():
        expected = lstm(packed)[0].data
    after = int8(lstm, packed)
    assert not torch.allclose(before, after, atol=0.02) and torch.allclose(after, expected, atol=0.05)


def test_int8_off_the_cpu_is_refused_with_the_fix():
    lstm = torch.nn.LSTM(4, 3, bidirectional=True, device="meta")
    packed = PackedSequence(torch.empty(5, 4, device="meta"), torch.tensor([2, 2, 1]))
    with pytest.raises(ValueError, match="CPU only.*float32"):
        Int8LSTM()(lstm, packed)


def test_a_torch_without_a_quantized_engine_is_refused_when_the_encoder_is_built(monkeypatch):
    monkeypatch.setattr(torch.backends, "quantized", SimpleNamespace(engine="none", supported_engines=[]))
    with pytest.raises(RuntimeError, match="no quantized engine|has none.*float32"):
        build_bilstm_encoder(input_width=16, width=32, inference_dtype="int8")
