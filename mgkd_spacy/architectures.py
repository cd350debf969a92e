"""Registered architectures: the CRF tagger (tok2vec -> emissions -> CRF), the student's BiLSTM encoder and the
teacher's transformer."""
import io
from types import MethodType
from typing import Callable, List, Optional, Tuple

import numpy
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    ArgsKwargs, Linear, Model, Optimizer, PyTorchLSTM, PyTorchRNNWrapper, PyTorchShim, chain, torch2xp, with_array,
    with_padded, xp2torch,
)
from thinc.types import Floats2d, Ints1d, Padded

from .int8 import Int8LSTM, check_int8_available
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


# Precisions the encoder can tag in (training always runs in float32): bfloat16 through torch autocast, int8 through
# a dynamically quantized copy of the LSTM (``int8.Int8LSTM``).
INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "int8": torch.qint8}


def inference_torch_dtype(name: str) -> Optional[torch.dtype]:
    """The torch dtype of an ``inference_dtype`` name (None: float32 as trained); ValueError naming the choices if
    unknown, RuntimeError naming the fix if this torch cannot tag in it."""
    if name not in INFERENCE_DTYPES:
        raise ValueError(f"inference_dtype must be one of {sorted(INFERENCE_DTYPES)}; got {name!r}.")
    if name == "int8":
        check_int8_available()
    return INFERENCE_DTYPES[name]


@registry.architectures("mgkd.BiLSTMEncoder.v3")
def build_bilstm_encoder(
    input_width: int, width: int = 600, depth: int = 1, dropout: float = 0.0, inference_dtype: str = "float32"
) -> Model[List[Floats2d], List[Floats2d]]:
    """As ``mgkd.BiLSTMEncoder.v2`` (same arguments, torch module, weights and vectors), but the docs' token vectors
    go straight into a packed sequence and back: no zero-padded (T, B, nI) batch is built, transposed and copied on
    the way in and out (a TE student tags CoNLL-2003 9-15% faster). Use v3 for new students; the LSTM weights of a
    v2 student load into it unchanged, and the two train alike up to float rounding.
    """
    module = PackedDataBiLSTM(input_width, _hidden_size(width), depth, dropout, inference_torch_dtype(inference_dtype))
    lstm = Model("packed_lstm", _packed_lstm_forward, shims=[PyTorchShim(module)], dims={"nI": input_width, "nO": width})
    return _with_patched_shims(_checked_batches(lstm, input_width, width))


@registry.architectures("mgkd.BiLSTMEncoder.v2")
def build_bilstm_encoder_v2(
    input_width: int, width: int = 600, depth: int = 1, dropout: float = 0.0, inference_dtype: str = "float32"
) -> Model[List[Floats2d], List[Floats2d]]:
    """Bidirectional LSTM over each doc's token vectors, run on packed sequences.

    input_width (int): width of the token vectors read (e.g. 416 = 384 MiniLM word-piece dims + 32 shape dims).
    width (int): output width = 2 x hidden size (600 = the paper's 300 per direction).
    depth (int): stacked layers. dropout (float): between layers (only applies when depth > 1).
    inference_dtype (str): "float32"; "bfloat16" to tag with the LSTM's matrix products in bfloat16 (torch
        autocast), faster on CPUs with native bfloat16 (AVX512-BF16, AMX), slower on others; or "int8" to tag with a
        dynamically quantized copy of the LSTM (int8 weights per output row, activations quantized per batch; CPU
        only; 1.2-1.5x faster than float32 on an AVX2-only CPU). Weights are saved and trained in float32 either
        way; a lower precision can flip a few close tagging decisions, so evaluate before shipping it.
    The batch is packed (``torch.nn.utils.rnn.pack_padded_sequence``), so the LSTM never reads padding: each doc's
    vectors are exactly those it gets alone, whatever it is batched with, and no time is spent on padded steps.
    The LSTM weights are saved as safetensors, so loading a pipeline never unpickles.
    """
    lstm = PyTorchRNNWrapper(
        PackedBiLSTM(input_width, _hidden_size(width), depth, dropout, inference_torch_dtype(inference_dtype)),
        convert_inputs=_padded_to_torch,
    )
    lstm.set_dim("nI", input_width)
    lstm.set_dim("nO", width)
    return _with_patched_shims(_checked_batches(with_padded(lstm), input_width, width))


@registry.architectures("mgkd.BiLSTMEncoder.v1")
def build_padded_bilstm_encoder(input_width: int, width: int = 600, depth: int = 1, dropout: float = 0.0) -> Model[List[Floats2d], List[Floats2d]]:
    """The first encoder: as v2, but the LSTM runs over the zero-padded batch (thinc's ``PyTorchLSTM``).

    The backward direction of a doc shorter than the longest in its batch then reads padding first, so a doc's
    vectors depend on its batch. Kept so that pipelines trained with v1 load and tag as they were trained; use v2.
    """
    _hidden_size(width)
    return _with_patched_shims(with_padded(PyTorchLSTM(width, input_width, bi=True, depth=depth, dropout=dropout)))


@registry.architectures("mgkd.TransformerModel.v1")
def build_transformer_model(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = {},
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
) -> Model:
    """``spacy-transformers.TransformerModel.v3`` (same arguments, same model) whose torch shim updates the
    weights in place, without the memory leak of thinc's ``PyTorchShim.finish_update`` (see
    ``_finish_update_in_place``; about 3 MB per step for the MiniLM teacher); the teacher's transformer."""
    from spacy_transformers.architectures import create_TransformerModel_v3

    return _update_shims_in_place(
        create_TransformerModel_v3(name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config)
    )


def _hidden_size(width: int) -> int:
    if width % 2:
        raise ValueError(f"BiLSTM width must be even (two directions); got {width}.")
    return width // 2


def _with_patched_shims(encoder: Model) -> Model:
    """The encoder with its torch shims saving weights as safetensors and updating them in place."""
    for node in encoder.walk():
        for shim in node.shims:
            shim._serialize_model = save_weights
            shim._deserialize_model = load_weights
    return _update_shims_in_place(encoder)


def _update_shims_in_place(model: Model) -> Model:
    """The model with every torch shim in it updating its weights in place (``_finish_update_in_place``)."""
    for node in model.walk():
        for shim in node.shims:
            shim.finish_update = MethodType(_finish_update_in_place, shim)
    return model


def _finish_update_in_place(shim: PyTorchShim, optimizer: Optimizer) -> None:
    """``PyTorchShim.finish_update`` without its memory leak: thinc replaces each parameter's ``.data`` by a tensor
    made (via DLPack) from the optimizer's array, which is itself a view of the previous tensor, so every step
    keeps every earlier step's tensors alive (3-4 MB per step for the MPNet student's BiLSTM, 12 GB after 3,000
    steps; about 3 MB per step for the MiniLM teacher's transformer). The optimizer's result is copied into the
    existing tensor instead."""
    for name, tensor in shim._model.named_parameters():
        if tensor.grad is None:
            continue
        if not shim._grad_scaler.found_inf:  # mixed precision: skip the step when a gradient overflowed
            param, _ = optimizer((shim.id, name), torch2xp(tensor.data), torch2xp(tensor.grad))
            updated = xp2torch(param, device=tensor.device)
            if updated.data_ptr() != tensor.data_ptr():
                tensor.data.copy_(updated)
        tensor.grad.zero_()
    shim._grad_scaler.update()


def _checked_batches(layer: Model[List[Floats2d], List[Floats2d]], input_width: int, width: int) -> Model[List[Floats2d], List[Floats2d]]:
    """``layer``, refusing token vectors that are not ``input_width`` wide; a batch with no tokens at all gets empty
    (0, width) outputs without running it."""

    def forward(model: Model, Xs: List[Floats2d], is_train: bool) -> Tuple[List[Floats2d], Callable]:
        input_width, width = model.get_dim("nI"), model.get_dim("nO")
        wrong = next((X.shape[1] for X in Xs if X.shape[1] != input_width), None)
        if wrong is not None:
            raise ValueError(
                f"The BiLSTM encoder reads {input_width}-wide token vectors (its input_width), but the layer before it "
                f"gives {wrong}-wide ones. Set [components.distilled_ner.model.tok2vec.encode] input_width = {wrong} "
                "(e.g. --components.distilled_ner.model.tok2vec.encode.input_width on the command line): a TE student "
                "reads the teacher's word-piece width plus the shape features, 384 + 32 for MiniLM, 768 + 32 for MPNet."
            )
        if sum(len(X) for X in Xs):
            return layer(Xs, is_train)
        return [model.ops.alloc2f(0, width) for _ in Xs], lambda dYs: [model.ops.alloc2f(*X.shape) for X in Xs]

    return Model("bilstm", forward, layers=[layer], dims={"nI": input_width, "nO": width})


class PackedBiLSTM(torch.nn.Module):
    """``torch.nn.LSTM`` (bidirectional) over a padded (T, B, nI) batch sorted longest first, run packed.

    With ``inference_dtype`` set, calls without gradients (tagging) run in that precision: under torch autocast for
    bfloat16, through the LSTM's int8 copy (``Int8LSTM``) for ``torch.qint8``.
    """

    def __init__(self, input_width: int, hidden_size: int, depth: int, dropout: float, inference_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_width, hidden_size, depth, bidirectional=True, dropout=dropout)
        self.inference_dtype = inference_dtype
        self.int8_lstm = Int8LSTM()

    def forward(self, X: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, None]:
        """(T, B, 2 * hidden) outputs, zero at padded steps and for empty docs (at the end of the batch)."""
        n_steps, n_docs = X.shape[:2]
        n_nonempty = int((lengths > 0).sum())
        packed = pack_padded_sequence(X[:, :n_nonempty], lengths[:n_nonempty], enforce_sorted=True)
        Y, _ = pad_packed_sequence(packed._replace(data=self.lstm_rows(packed)), total_length=n_steps)
        if n_nonempty < n_docs:
            Y = torch.cat([Y, Y.new_zeros(n_steps, n_docs - n_nonempty, Y.shape[2])], dim=1)
        return Y, None

    def lstm_rows(self, packed: PackedSequence) -> torch.Tensor:
        """The LSTM's (N, 2 * hidden) output rows for ``packed``, in its packed order and its data's dtype; calls
        without gradients (tagging) run in ``inference_dtype`` when one is set."""
        lowered = self.inference_dtype is not None and not torch.is_grad_enabled()
        if lowered and self.inference_dtype == torch.qint8:
            return self.int8_lstm(self.lstm, packed)
        with torch.autocast(packed.data.device.type, dtype=self.inference_dtype, enabled=lowered):
            rows = self.lstm(packed)[0].data
        return rows.to(packed.data.dtype)


class PackedDataBiLSTM(PackedBiLSTM):
    """``PackedBiLSTM`` on the rows of a packed sequence: the same LSTM (and state-dict keys), without padding."""

    def forward(self, data: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
        """data (N, nI) rows in packed order, batch_sizes (T,) int64 on the CPU -> (N, 2 * hidden) rows, same order."""
        return self.lstm_rows(PackedSequence(data, batch_sizes))


def packed_order(lengths: Ints1d) -> Tuple[Ints1d, Ints1d]:
    """Where each row of the packed sequence of a batch of docs comes from.

    lengths (Ints1d): (B,) tokens per doc, in batch order (zeros allowed).
    RETURNS (Ints1d, Ints1d): (N,) the index of each packed row among the docs' concatenated tokens, in the
        ``PackedSequence`` layout (step by step; at each step the docs still running, longest first), and (T,) the
        number of docs still running at each step (its ``batch_sizes``).
    """
    order = numpy.argsort(-lengths, kind="stable")
    starts = numpy.cumsum(lengths) - lengths
    # shape: (T, B) True where the order[b]-th doc has a token at step t
    running = numpy.arange(lengths.max(initial=0))[:, None] < lengths[order][None, :]
    step, rank = numpy.nonzero(running)
    return starts[order][rank] + step, running.sum(axis=1)


def _packed_lstm_forward(model: Model, Xs: List[Floats2d], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    """Xs (List[Floats2d]): one (n_i, nI) array per doc -> one (n_i, nO) array per doc, through ``PackedDataBiLSTM``."""
    xp = model.ops.xp
    lengths = numpy.asarray([len(X) for X in Xs], dtype="int64")
    index, batch_sizes = packed_order(lengths)
    to_tokens = xp.asarray(numpy.argsort(index))
    index = xp.asarray(index)
    # shape: (N, nI) the token vectors in packed order
    data = xp2torch(xp.concatenate(Xs)[index], requires_grad=is_train)
    Y_packed, backprop_torch = model.shims[0](ArgsKwargs(args=(data, torch.as_tensor(batch_sizes)), kwargs={}), is_train)

    def backprop(dYs: List[Floats2d]) -> List[Floats2d]:
        d_packed = xp2torch(xp.concatenate(dYs)[index])
        d_inputs = backprop_torch(ArgsKwargs(args=(Y_packed,), kwargs={"grad_tensors": d_packed}))
        return model.ops.unflatten(torch2xp(d_inputs.args[0])[to_tokens], lengths)

    return model.ops.unflatten(torch2xp(Y_packed)[to_tokens], lengths), backprop


def _padded_to_torch(model: Model, Xp: Padded, is_train: bool) -> Tuple[ArgsKwargs, Callable]:
    """thinc Padded -> (data, lengths) for ``PackedBiLSTM``; the gradient comes back as Padded."""

    def backprop(d_inputs: ArgsKwargs) -> Padded:
        return Padded(torch2xp(d_inputs.args[0]), Xp.size_at_t, Xp.lengths, Xp.indices)

    lengths = torch.as_tensor(Xp.lengths, dtype=torch.long, device="cpu")
    return ArgsKwargs(args=(xp2torch(Xp.data, requires_grad=True), lengths), kwargs={}), backprop


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
