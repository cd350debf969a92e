"""Registered architectures: the CRF tagger (tok2vec -> emissions -> CRF) and the student's BiLSTM encoder."""
import io
from typing import List, Optional

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Linear, Model, PyTorchLSTM, chain, with_array, with_padded
from thinc.types import Floats2d

from .layers import CRF, CRFBatch


@registry.architectures("mgkd.CRFTagger.v1")
def build_crf_tagger(tok2vec: Model[List[Doc], List[Floats2d]], nO: Optional[int] = None) -> Model[List[Doc], CRFBatch]:
    """tok2vec -> linear emission scores -> ``mgkd.CRF.v1``; the model of ``distilled_ner``.

    tok2vec (Model[List[Doc], List[Floats2d]]): any token encoder: a BiLSTM over hash embeddings (vanilla
        student), over frozen teacher word pieces (TE student), or a transformer listener (teacher).
    nO (Optional[int]): number of tags; leave None and the component sets it from its labels and scheme.
    Refs: ``tok2vec``, ``output_layer`` (the Linear) and ``crf``.
    """
    output_layer = Linear(nO=nO)
    crf = CRF(nO=nO)
    model = chain(tok2vec, with_array(output_layer), crf)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    model.set_ref("crf", crf)
    return model


@registry.architectures("mgkd.BiLSTMEncoder.v1")
def build_bilstm_encoder(input_width: int, width: int = 600, depth: int = 1, dropout: float = 0.0) -> Model[List[Floats2d], List[Floats2d]]:
    """Bidirectional LSTM over each doc's token vectors (thinc's PyTorchLSTM, as ``spacy.TorchBiLSTMEncoder.v1``).

    spaCy's encoder requires input width == output width; this one reads ``input_width``-wide vectors (e.g. 384 for
    MiniLM word-piece embeddings) and writes ``width`` = 2 x hidden size (600 = the paper's 300 per direction).
    depth (int): stacked layers. dropout (float): between layers (only applies when depth > 1).
    The LSTM weights are saved as safetensors, so loading a pipeline never unpickles.
    """
    if width % 2:
        raise ValueError(f"BiLSTM width must be even (two directions); got {width}.")
    encoder = with_padded(PyTorchLSTM(width, input_width, bi=True, depth=depth, dropout=dropout))
    for node in encoder.walk():
        for shim in node.shims:
            shim._serialize_model = save_weights
            shim._deserialize_model = load_weights
    return encoder


def save_weights(module: torch.nn.Module) -> bytes:
    """A torch module's parameters as safetensors bytes (no pickle), for thinc's PyTorchShim."""
    return save_tensors({name: value.contiguous() for name, value in module.state_dict().items()})


def load_weights(module: torch.nn.Module, state: bytes, device: torch.device) -> torch.nn.Module:
    """Inverse of ``save_weights``; older torch-format states are read with ``weights_only=True`` (no code runs)."""
    if state[:2] == b"PK":
        weights = torch.load(io.BytesIO(state), map_location=device, weights_only=True)
    else:
        weights = load_tensors(state)
    module.load_state_dict(weights)
    return module.to(device)
