"""The student's BiLSTM: packed (batch-independent, exact gradients), saved as safetensors and reloaded exactly."""
import numpy
import pytest
import srsly
from safetensors.torch import load as load_tensors
from thinc.api import Model

from mgkd_spacy.architectures import build_bilstm_encoder, build_padded_bilstm_encoder, load_weights, save_weights


def states(model: Model):
    return [srsly.msgpack_loads(shim.to_bytes())["state"] for node in model.walk() for shim in node.shims]


def test_bilstm_weights_round_trip_as_safetensors():
    X = [numpy.random.default_rng(0).normal(size=(5, 8)).astype("float32")]
    encoder = build_bilstm_encoder(input_width=8, width=6)
    encoder.initialize(X=X)
    (state,) = states(encoder)
    assert not state.startswith(b"PK") and "weight_ih_l0" in " ".join(load_tensors(state))
    fresh = build_bilstm_encoder(input_width=8, width=6)
    fresh.initialize(X=X)
    fresh.from_bytes(encoder.to_bytes())
    assert numpy.allclose(fresh.predict(X)[0], encoder.predict(X)[0])


def test_torch_format_states_still_load_without_unpickling_code(tmp_path):
    import io

    import torch

    encoder = build_bilstm_encoder(input_width=4, width=4)
    encoder.initialize(X=[numpy.zeros((2, 4), dtype="float32")])
    module = [shim for node in encoder.walk() for shim in node.shims][0]._model
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    reloaded = load_weights(module, buffer.getvalue(), torch.device("cpu"))
    assert save_weights(reloaded) == save_weights(module)


def _docs(rng, lengths, width):
    return [rng.normal(size=(n, width)).astype("float32") for n in lengths]


def test_packed_encoder_gives_each_doc_the_vectors_it_gets_alone():
    rng = numpy.random.default_rng(1)
    X = _docs(rng, (3, 0, 9, 1, 9, 4), 5)
    encoder = build_bilstm_encoder(input_width=5, width=8)
    encoder.initialize(X=X)
    batched = encoder.predict(X)
    assert [y.shape for y in batched] == [(n, 8) for n in (3, 0, 9, 1, 9, 4)]
    for x, y in zip(X, batched):
        assert numpy.allclose(encoder.predict([x])[0], y, atol=1e-6)


def test_padded_v1_encoder_depends_on_the_batch_which_is_why_v2_packs():
    rng = numpy.random.default_rng(1)
    X = _docs(rng, (2, 9), 5)
    encoder = build_padded_bilstm_encoder(input_width=5, width=8)
    encoder.initialize(X=X)
    assert not numpy.allclose(encoder.predict([X[0]])[0], encoder.predict(X)[0], atol=1e-4)


def test_packed_encoder_gradient_matches_finite_differences():
    rng = numpy.random.default_rng(2)
    X = [x.astype("float64") for x in _docs(rng, (4, 2, 0), 3)]
    encoder = build_bilstm_encoder(input_width=3, width=4)
    encoder.initialize(X=[x.astype("float32") for x in X])
    for node in encoder.walk():
        for shim in node.shims:
            shim._model.double()
    weights = [rng.normal(size=(len(x), 4)) for x in X]

    def objective(Xs):
        return sum(float((y * w).sum()) for y, w in zip(encoder.predict(Xs), weights))

    Y, backprop = encoder.begin_update(X)
    dX = backprop(weights)
    assert [d.shape for d in dX] == [x.shape for x in X]
    eps = 1e-6
    for doc, row, col in ((0, 0, 0), (0, 3, 2), (1, 1, 1)):
        plus = [x.copy() for x in X]
        minus = [x.copy() for x in X]
        plus[doc][row, col] += eps
        minus[doc][row, col] -= eps
        assert dX[doc][row, col] == pytest.approx((objective(plus) - objective(minus)) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("lengths", [(), (0,), (0, 0)])
def test_packed_encoder_handles_batches_without_tokens(lengths):
    encoder = build_bilstm_encoder(input_width=5, width=8)
    encoder.initialize(X=_docs(numpy.random.default_rng(0), (3,), 5))
    X = _docs(numpy.random.default_rng(0), lengths, 5)
    Y, backprop = encoder.begin_update(X)
    assert [y.shape for y in Y] == [(0, 8)] * len(lengths)
    assert [d.shape for d in backprop(Y)] == [(0, 5)] * len(lengths)


@pytest.mark.parametrize("train", [False, True])
def test_token_vectors_of_another_width_are_refused_with_the_setting_to_change(train):
    encoder = build_bilstm_encoder(input_width=5, width=8)
    encoder.initialize(X=_docs(numpy.random.default_rng(0), (3,), 5))
    X = _docs(numpy.random.default_rng(1), (4, 0), 7)
    with pytest.raises(ValueError, match=r"reads 5-wide token vectors .* gives 7-wide .* input_width = 7"):
        encoder.begin_update(X) if train else encoder.predict(X)


def test_odd_width_is_refused():
    with pytest.raises(ValueError, match="even"):
        build_bilstm_encoder(input_width=5, width=7)


def test_bfloat16_inference_tags_close_to_float32_and_leaves_training_in_float32():
    rng = numpy.random.default_rng(2)
    X = _docs(rng, (7, 0, 3, 12), 16)
    exact = build_bilstm_encoder(input_width=16, width=32)
    exact.initialize(X=X)
    lowered = build_bilstm_encoder(input_width=16, width=32, inference_dtype="bfloat16")
    lowered.initialize(X=X)
    lowered.from_bytes(exact.to_bytes())
    for y, z in zip(exact.predict(X), lowered.predict(X)):
        assert z.dtype == numpy.float32 and z.shape == y.shape
        # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal (so the setting is really applied)
        assert numpy.allclose(y, z, atol=0.03) and (y.size == 0 or not numpy.array_equal(y, z))
    (y, _), (z, _) = exact.begin_update(X), lowered.begin_update(X)
    assert all(numpy.array_equal(a, b) for a, b in zip(y, z))


def test_unknown_inference_dtype_is_refused():
    with pytest.raises(ValueError, match="inference_dtype must be one of"):
        build_bilstm_encoder(input_width=5, width=8, inference_dtype="float16")
