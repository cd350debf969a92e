"""The student's BiLSTM saves its weights as safetensors, not pickle, and reloads them exactly."""
import numpy
import srsly
from safetensors.torch import load as load_tensors
from thinc.api import Model

from mgkd_spacy.architectures import build_bilstm_encoder, load_weights, save_weights


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
