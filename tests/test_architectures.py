"""The student's BiLSTM: packed (batch-independent, exact gradients), saved as safetensors and reloaded exactly;
v3 gives exactly v2's vectors without building a padded batch."""
import numpy
import pytest
import srsly
import torch
from safetensors.torch import load as load_tensors
from thinc.api import Model
from torch.nn.utils.rnn import pack_padded_sequence

from mgkd_spacy.architectures import (
    build_bilstm_encoder, build_bilstm_encoder_v2, build_padded_bilstm_encoder, load_weights, packed_order, save_weights,
)

PACKED_ENCODERS = pytest.mark.parametrize("build", [build_bilstm_encoder, build_bilstm_encoder_v2], ids=["v3", "v2"])


def states(model: Model):
    return [srsly.msgpack_loads(shim.to_bytes())["state"] for node in model.walk() for shim in node.shims]


@PACKED_ENCODERS
def test_bilstm_weights_round_trip_as_safetensors(build):
    X = [numpy.random.default_rng(0).normal(size=(5, 8)).astype("float32")]
    encoder = build(input_width=8, width=6)
    encoder.initialize(X=X)
    (state,) = states(encoder)
    assert not state.startswith(b"PK") and "weight_ih_l0" in " ".join(load_tensors(state))
    fresh = build(input_width=8, width=6)
    fresh.initialize(X=X)
    fresh.from_bytes(encoder.to_bytes())
    assert numpy.allclose(fresh.predict(X)[0], encoder.predict(X)[0])


@PACKED_ENCODERS
def test_torch_format_states_still_load_without_unpickling_code(build, tmp_path):
    import io

    import torch

    encoder = build(input_width=4, width=4)
    encoder.initialize(X=[numpy.zeros((2, 4), dtype="float32")])
    module = [shim for node in encoder.walk() for shim in node.shims][0]._model
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    reloaded = load_weights(module, buffer.getvalue(), torch.device("cpu"))
    assert save_weights(reloaded) == save_weights(module)


def _docs(rng, lengths, width):
    return [rng.normal(size=(n, width)).astype("float32") for n in lengths]


@PACKED_ENCODERS
def test_packed_encoder_gives_each_doc_the_vectors_it_gets_alone(build):
    rng = numpy.random.default_rng(1)
    X = _docs(rng, (3, 0, 9, 1, 9, 4), 5)
    encoder = build(input_width=5, width=8)
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


@PACKED_ENCODERS
def test_packed_encoder_gradient_matches_finite_differences(build):
    rng = numpy.random.default_rng(2)
    X = [x.astype("float64") for x in _docs(rng, (4, 2, 0), 3)]
    encoder = build(input_width=3, width=4)
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
@PACKED_ENCODERS
def test_packed_encoder_handles_batches_without_tokens(build, lengths):
    encoder = build(input_width=5, width=8)
    encoder.initialize(X=_docs(numpy.random.default_rng(0), (3,), 5))
    X = _docs(numpy.random.default_rng(0), lengths, 5)
    Y, backprop = encoder.begin_update(X)
    assert [y.shape for y in Y] == [(0, 8)] * len(lengths)
    assert [d.shape for d in backprop(Y)] == [(0, 5)] * len(lengths)


@pytest.mark.parametrize("train", [False, True])
@PACKED_ENCODERS
def test_token_vectors_of_another_width_are_refused_with_the_setting_to_change(build, train):
    encoder = build(input_width=5, width=8)
    encoder.initialize(X=_docs(numpy.random.default_rng(0), (3,), 5))
    X = _docs(numpy.random.default_rng(1), (4, 0), 7)
    with pytest.raises(ValueError, match=r"reads 5-wide token vectors .* gives 7-wide .* input_width = 7"):
        encoder.begin_update(X) if train else encoder.predict(X)


@PACKED_ENCODERS
def test_odd_width_is_refused(build):
    with pytest.raises(ValueError, match="even"):
        build(input_width=5, width=7)


@PACKED_ENCODERS
def test_bfloat16_inference_tags_close_to_float32_and_leaves_training_in_float32(build):
    rng = numpy.random.default_rng(2)
    X = _docs(rng, (7, 0, 3, 12), 16)
    exact = build(input_width=16, width=32)
    exact.initialize(X=X)
    lowered = build(input_width=16, width=32, inference_dtype="bfloat16")
    lowered.initialize(X=X)
    lowered.from_bytes(exact.to_bytes())
    for y, z in zip(exact.predict(X), lowered.predict(X)):
        assert z.dtype == numpy.float32 and z.shape == y.shape
        # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal (so the setting is really applied)
        assert numpy.allclose(y, z, atol=0.03) and (y.size == 0 or not numpy.array_equal(y, z))
    (y, _), (z, _) = exact.begin_update(X), lowered.begin_update(X)
    assert all(numpy.array_equal(a, b) for a, b in zip(y, z))


@PACKED_ENCODERS
def test_unknown_inference_dtype_is_refused(build):
    with pytest.raises(ValueError, match="inference_dtype must be one of"):
        build(input_width=5, width=8, inference_dtype="float16")


@pytest.mark.parametrize("lengths", [(3, 0, 7, 1, 5), (9,), (0, 2, 0, 6)])
def test_packed_order_is_the_layout_of_torchs_packed_sequence(lengths):
    lengths = numpy.asarray(lengths)
    tokens = torch.arange(int(lengths.sum()), dtype=torch.float32)
    docs = [doc for doc in torch.split(tokens, lengths.tolist()) if len(doc)]
    padded = torch.nn.utils.rnn.pad_sequence(docs)
    expected = pack_padded_sequence(padded, torch.as_tensor([len(doc) for doc in docs]), enforce_sorted=False)
    index, batch_sizes = packed_order(lengths)
    assert index.tolist() == expected.data.long().tolist()
    assert batch_sizes.tolist() == expected.batch_sizes.tolist()


def test_packed_order_breaks_length_ties_by_batch_order():
    index, batch_sizes = packed_order(numpy.asarray([2, 3, 2]))
    # docs 1 (3 tokens), then 0 and 2 (2 tokens each, in batch order); tokens numbered 0-1, 2-4, 5-6
    assert index.tolist() == [2, 0, 5, 3, 1, 6, 4] and batch_sizes.tolist() == [3, 3, 1]


def _v2_and_v3_with_the_same_weights(X):
    """A v2 and a v3 encoder (input 5, width 8) initialized on ``X``, v3 holding v2's LSTM weights; with their shims."""
    v2, v3 = build_bilstm_encoder_v2(input_width=5, width=8), build_bilstm_encoder(input_width=5, width=8)
    v2.initialize(X=X)
    v3.initialize(X=X)
    ((shim2,), (shim3,)) = ([shim for node in model.walk() for shim in node.shims] for model in (v2, v3))
    shim3.from_bytes(shim2.to_bytes())  # the LSTM weights of a v2 student load into v3 unchanged
    return v2, v3, shim2, shim3


def test_v3_encoder_gives_exactly_the_vectors_and_gradients_of_v2_with_its_weights():
    X = _docs(numpy.random.default_rng(3), (3, 0, 9, 1, 9, 4, 9), 5)
    v2, v3, shim2, shim3 = _v2_and_v3_with_the_same_weights(X)
    assert all(numpy.array_equal(a, b) for a, b in zip(v2.predict(X), v3.predict(X)))
    (Y2, backprop2), (Y3, backprop3) = v2.begin_update(X), v3.begin_update(X)
    assert all(numpy.array_equal(a, b) for a, b in zip(Y2, Y3))
    dY = _docs(numpy.random.default_rng(4), [len(x) for x in X], 8)
    assert all(numpy.allclose(a, b, atol=1e-6) for a, b in zip(backprop2(dY), backprop3(dY)))
    for (name, p2), (_, p3) in zip(shim2._model.named_parameters(), shim3._model.named_parameters()):
        assert p3.grad is not None and torch.allclose(p2.grad, p3.grad, atol=1e-6), name


def test_v3_encoder_trains_as_v2_does():
    # Same weights, same batches, Adam: the two stay together up to float rounding (v3 only changes the layout).
    from thinc.api import Adam

    rng = numpy.random.default_rng(5)
    batches = [_docs(rng, rng.integers(0, 9, size=6), 5) for _ in range(5)]
    v2, v3, shim2, shim3 = _v2_and_v3_with_the_same_weights(batches[0])
    initial = {name: p.detach().clone() for name, p in shim2._model.named_parameters()}
    optimizers = Adam(0.01), Adam(0.01)
    for X in batches:
        for model, optimizer in zip((v2, v3), optimizers):
            Y, backprop = model.begin_update(X)
            backprop([y - 1.0 for y in Y])  # gradient of 0.5 * sum((y - 1)^2)
            model.finish_update(optimizer)
    for (name, p2), (_, p3) in zip(shim2._model.named_parameters(), shim3._model.named_parameters()):
        assert not torch.allclose(p2, initial[name], atol=1e-3), name  # the steps really moved the weights
        assert torch.allclose(p2, p3, atol=1e-5), name
