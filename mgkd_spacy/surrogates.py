"""The surrogate schema: a teacher's output for one sentence, stored as a versioned ``Doc`` extension.

``doc._.mgkd_surrogate`` holds a plain dict (msgpack-safe, so it survives ``DocBin(store_user_data=True)``; no
pickle), version 1::

    {"version": 1, "scheme": "BILUO", "tags": [L tag strings],
     "sequences": array (K, n_tokens) int32, best first, indices into tags,
     "log_probs": array (K,) float32, exact log-probabilities (divided by the true Z, not renormalised),
     "emission_log_probs": array (n_tokens, L) float16 or None, per-token log-softmax of the teacher's emissions,
     "marginals": array (n_tokens, L) float16 or None, the teacher's CRF marginals}

Arrays are stored as {"dtype", "shape", "data": bytes}. Everything is validated on read.
"""
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy
from spacy.tokens import Doc

from .crf.constraints import check_scheme

SURROGATE_VERSION = 1
EXTENSION = "mgkd_surrogate"
TOLERANCE = 1e-4


@dataclass
class Surrogate:
    """A teacher's k-best analysis of one sentence (n tokens, L tags, K sequences)."""

    tags: List[str]
    scheme: str
    sequences: numpy.ndarray  # (K, n) int
    log_probs: numpy.ndarray  # (K,) float
    emission_log_probs: Optional[numpy.ndarray] = None  # (n, L) float16
    marginals: Optional[numpy.ndarray] = None  # (n, L) float16
    version: int = SURROGATE_VERSION


def register_extension() -> None:
    """Register ``Doc._.mgkd_surrogate`` (idempotent)."""
    if not Doc.has_extension(EXTENSION):
        Doc.set_extension(EXTENSION, default=None)


register_extension()


def _where(doc_index: Optional[int]) -> str:
    return "surrogate" if doc_index is None else f"surrogate of doc {doc_index}"


def validate_surrogate(surrogate: Surrogate, n_tokens: int, doc_index: Optional[int] = None) -> None:
    """Raise a ValueError naming the doc and the fix if ``surrogate`` does not describe an ``n_tokens`` doc."""
    where = _where(doc_index)
    fix = "re-run the teacher annotation on this corpus"
    if surrogate.version != SURROGATE_VERSION:
        raise ValueError(f"{where}: schema version {surrogate.version} is not supported (expected {SURROGATE_VERSION}); {fix}.")
    check_scheme(surrogate.scheme)
    n_tags = len(surrogate.tags)
    seqs, log_probs = surrogate.sequences, surrogate.log_probs
    if seqs.ndim != 2 or seqs.shape[0] == 0:
        raise ValueError(f"{where}: holds no sequences (K = 0); annotate with k >= 1.")
    if seqs.shape[1] != n_tokens:
        raise ValueError(f"{where}: sequences cover {seqs.shape[1]} tokens but the doc has {n_tokens}; {fix} with the same tokenization.")
    if log_probs.shape != (seqs.shape[0],):
        raise ValueError(f"{where}: {seqs.shape[0]} sequences but {log_probs.shape} log-probabilities; {fix}.")
    if seqs.size and (seqs.min() < 0 or seqs.max() >= n_tags):
        raise ValueError(f"{where}: tag indices outside [0, {n_tags}); {fix}.")
    if len({tuple(row) for row in seqs.tolist()}) != len(seqs):
        raise ValueError(f"{where}: duplicate sequences; k-best sequences must be distinct; {fix}.")
    if not numpy.isfinite(log_probs).all() or (log_probs > TOLERANCE).any():
        raise ValueError(f"{where}: log-probabilities must be finite and <= 0 (probabilities in [0, 1]); {fix}.")
    if numpy.logaddexp.reduce(log_probs.astype("float64")) > TOLERANCE:
        raise ValueError(f"{where}: sequence probabilities sum to more than 1; they must be divided by the true Z.")
    if (numpy.diff(log_probs) > TOLERANCE).any():
        raise ValueError(f"{where}: sequences are not sorted best first; {fix}.")
    for name in ("emission_log_probs", "marginals"):
        value = getattr(surrogate, name)
        if value is None:
            continue
        if value.shape != (n_tokens, n_tags):
            raise ValueError(f"{where}: {name} has shape {value.shape}, expected ({n_tokens}, {n_tags}); {fix}.")
        if not numpy.isfinite(value).all():
            raise ValueError(f"{where}: {name} contains NaN or inf; {fix}.")
    marginals = surrogate.marginals
    if marginals is not None and marginals.size:
        values = marginals.astype("float32")
        if values.min() < -1e-3 or values.max() > 1 + 1e-3 or numpy.abs(values.sum(1) - 1).max() > 1e-2:
            raise ValueError(f"{where}: marginals must lie in [0, 1] and sum to 1 per token; {fix}.")


def _pack(array: Optional[numpy.ndarray]) -> Optional[Dict[str, Any]]:
    if array is None:
        return None
    array = numpy.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _unpack(packed: Optional[Dict[str, Any]]) -> Optional[numpy.ndarray]:
    if packed is None:
        return None
    return numpy.frombuffer(packed["data"], dtype=numpy.dtype(packed["dtype"])).reshape(packed["shape"]).copy()


def set_surrogate(doc: Doc, surrogate: Surrogate) -> None:
    """Validate ``surrogate`` against ``doc`` and store it in ``doc._.mgkd_surrogate`` as plain data."""
    validate_surrogate(surrogate, len(doc))
    doc._.set(
        EXTENSION,
        {
            "version": surrogate.version,
            "scheme": surrogate.scheme,
            "tags": list(surrogate.tags),
            "sequences": _pack(surrogate.sequences.astype("int32")),
            "log_probs": _pack(surrogate.log_probs.astype("float32")),
            "emission_log_probs": _pack(surrogate.emission_log_probs),
            "marginals": _pack(surrogate.marginals),
        },
    )


def get_surrogate(doc: Doc, doc_index: Optional[int] = None) -> Optional[Surrogate]:
    """The validated surrogate of ``doc``, or None if it has none."""
    data = doc._.get(EXTENSION)
    if data is None:
        return None
    try:
        surrogate = Surrogate(
            tags=list(data["tags"]),
            scheme=data["scheme"],
            sequences=_unpack(data["sequences"]).astype("int64"),
            log_probs=_unpack(data["log_probs"]),
            emission_log_probs=_unpack(data.get("emission_log_probs")),
            marginals=_unpack(data.get("marginals")),
            version=data["version"],
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{_where(doc_index)}: malformed stored data ({err!r}); re-run the teacher annotation.") from None
    validate_surrogate(surrogate, len(doc), doc_index)
    return surrogate


def align_to_student(surrogate: Surrogate, student_tags: Sequence[str], doc_index: Optional[int] = None) -> Surrogate:
    """The surrogate with tag indices (and token-level columns) in the student's tag order.

    The teacher and student must use the same tag set (same labels and scheme); otherwise a ValueError names the
    missing and extra tags.
    """
    if list(surrogate.tags) == list(student_tags):
        return surrogate
    extra = sorted(set(surrogate.tags) - set(student_tags))
    missing = sorted(set(student_tags) - set(surrogate.tags))
    if extra or missing:
        raise ValueError(
            f"{_where(doc_index)}: the teacher's tags differ from the student's (teacher only: {extra}, student only: "
            f"{missing}); train the student with the teacher's labels and scheme, or re-annotate with a matching teacher."
        )
    # shape: (L_teacher,) student index of each teacher tag; columns: teacher index of each student tag
    to_student = numpy.array([list(student_tags).index(tag) for tag in surrogate.tags])
    columns = numpy.array([list(surrogate.tags).index(tag) for tag in student_tags])

    def permute(values: Optional[numpy.ndarray]) -> Optional[numpy.ndarray]:
        return None if values is None else values[:, columns]

    return replace(
        surrogate,
        tags=list(student_tags),
        sequences=to_student[surrogate.sequences],
        emission_log_probs=permute(surrogate.emission_log_probs),
        marginals=permute(surrogate.marginals),
    )


def surrogate_from_kbest(
    tags: Sequence[str],
    scheme: str,
    sequences: Any,
    log_probs: Any,
    valid: Any,
    emission_log_probs: Optional[numpy.ndarray] = None,
    marginals: Optional[numpy.ndarray] = None,
) -> Surrogate:
    """A Surrogate from one sentence's k-best output, keeping only the valid rows."""
    keep = numpy.asarray(valid, dtype=bool)
    n_tokens = numpy.asarray(sequences).reshape(len(keep), -1).shape[1]
    return Surrogate(
        tags=list(tags),
        scheme=check_scheme(scheme),
        sequences=numpy.asarray(sequences, dtype="int64").reshape(len(keep), n_tokens)[keep],
        log_probs=numpy.asarray(log_probs, dtype="float32")[keep],
        emission_log_probs=emission_log_probs,
        marginals=marginals,
    )
