"""The surrogate schema: a teacher's output for one sentence, stored as a versioned ``Doc`` extension.

Letters: T tokens (``len(doc)``), L teacher tags, K teacher sequences. ``doc._.mgkd_surrogate`` holds a plain,
msgpack-safe dict, so it survives ``DocBin(store_user_data=True)`` without pickle. Version 1::

    {"version": 1,
     "scheme": "BILUO",                  # BIO, IOB1, BILUO, BIOES or BMES
     "tags": [L tag strings],            # the teacher's tag order; the arrays below index into it
     "sequences": array (K, T) int32,    # the K best tag sequences, best first, all distinct
     "log_probs": array (K,) float,      # exact log P(sequence | x): divided by the true Z, NOT renormalised,
                                         # so logsumexp(log_probs) <= 0 and the rest is the residual mass
     "emission_log_probs": array (T, L) float16 or None,  # per-token log-softmax of the teacher's emissions
     "marginals": array (T, L) float16 or None}           # the teacher's CRF marginals P(y_t = l | x)

Each array is stored as ``{"dtype": numpy dtype string, "shape": [ints], "data": raw bytes}``: bit-exact (float16
included) and readable without numpy-specific msgpack extensions. Temperature for the token-level baseline can be
applied after loading, since ``softmax(log_softmax(x) / tau) == softmax(x / tau)``. A T = 0 doc has K = 1 empty
sequence with log-probability 0. Everything is validated on write and on read.
"""
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy
from spacy.tokens import Doc

from .crf.constraints import check_scheme, parse_tag

SURROGATE_VERSION = 1
EXTENSION = "mgkd_surrogate"
# Slack for float rounding of log-probabilities (float32 k-best scores minus log Z).
TOLERANCE = 1e-4
# Slack for float16 token-level arrays: values and per-token sums.
FLOAT16_TOLERANCE = 1e-3
ROW_SUM_TOLERANCE = 1e-2
_NUMERIC_KINDS = "iuf"


@dataclass
class Surrogate:
    """A teacher's k-best analysis of one sentence.

    tags (List[str]): (L,) the teacher's tags; every index below refers to this order.
    scheme (str): the tagging scheme of ``tags``: BIO, IOB1, BILUO, BIOES or BMES.
    sequences (numpy.ndarray): (K, T) int, the K best tag sequences, best first, distinct. K >= 1.
    log_probs (numpy.ndarray): (K,) float, exact log-probabilities (divided by the true partition function, not
        renormalised), non-increasing.
    emission_log_probs (Optional[numpy.ndarray]): (T, L) float16, per-token log-softmax of the teacher's emission
        scores (TOKEN-EM baseline), or None.
    marginals (Optional[numpy.ndarray]): (T, L) float16, the teacher's CRF marginals (TOKEN-POS baseline), or None.
    version (int): schema version, ``SURROGATE_VERSION``.
    """

    tags: List[str]
    scheme: str
    sequences: numpy.ndarray
    log_probs: numpy.ndarray
    emission_log_probs: Optional[numpy.ndarray] = None
    marginals: Optional[numpy.ndarray] = None
    version: int = SURROGATE_VERSION


def register_extension() -> None:
    """Register ``Doc._.mgkd_surrogate`` with default None. Safe to call more than once."""
    if not Doc.has_extension(EXTENSION):
        Doc.set_extension(EXTENSION, default=None)


register_extension()


def _where(doc_index: Optional[int]) -> str:
    return "surrogate" if doc_index is None else f"surrogate of doc {doc_index}"


def validate_surrogate(surrogate: Surrogate, n_tokens: int, doc_index: Optional[int] = None) -> None:
    """Check that ``surrogate`` is a well-formed version-1 surrogate of a doc with ``n_tokens`` tokens.

    surrogate (Surrogate): the teacher output to check.
    n_tokens (int): T, the number of tokens of the doc it belongs to.
    doc_index (Optional[int]): position of the doc in its corpus or batch, named in error messages.
    RAISES (ValueError): naming the doc (when ``doc_index`` is given), what is wrong and how to fix it.
    """
    where = _where(doc_index)
    fix = "re-run the teacher annotation ('mgkd annotate') on this corpus"
    if surrogate.version != SURROGATE_VERSION:
        raise ValueError(
            f"{where}: schema version {surrogate.version!r} is not supported (expected {SURROGATE_VERSION}); {fix} "
            "with this version of mgkd_spacy."
        )
    _validate_tags(surrogate, where, fix)
    n_tags = len(surrogate.tags)
    seqs = numpy.asarray(surrogate.sequences)
    log_probs = numpy.asarray(surrogate.log_probs)
    if seqs.dtype.kind not in "iu":
        raise ValueError(f"{where}: sequences must be an integer array of tag indices, got dtype {seqs.dtype}; {fix}.")
    if log_probs.dtype.kind != "f":
        raise ValueError(f"{where}: log_probs must be a float array, got dtype {log_probs.dtype}; {fix}.")
    if seqs.ndim != 2:
        raise ValueError(f"{where}: sequences must have shape (K, {n_tokens}), got {seqs.shape}; {fix}.")
    if seqs.shape[0] == 0:
        raise ValueError(f"{where}: holds no sequences (K = 0); annotate with k >= 1 and keep at least one valid path.")
    if seqs.shape[1] != n_tokens:
        raise ValueError(
            f"{where}: sequences have shape {seqs.shape}, expected ({seqs.shape[0]}, {n_tokens}) for a doc of "
            f"{n_tokens} tokens; {fix} with the same tokenization."
        )
    if log_probs.shape != (seqs.shape[0],):
        raise ValueError(
            f"{where}: log_probs have shape {log_probs.shape}, expected ({seqs.shape[0]},), one per sequence; {fix}."
        )
    if seqs.size and (seqs.min() < 0 or seqs.max() >= n_tags):
        raise ValueError(
            f"{where}: tag indices range over [{seqs.min()}, {seqs.max()}] but must lie in [0, {n_tags}) for "
            f"{n_tags} tags; drop invalid (padded) rows before storing, or {fix}."
        )
    if len({row.tobytes() for row in numpy.ascontiguousarray(seqs, dtype="int64")}) != len(seqs):
        raise ValueError(f"{where}: duplicate sequences; the k-best sequences must be distinct; {fix}.")
    if numpy.isnan(log_probs).any():
        raise ValueError(f"{where}: log_probs contain NaN; {fix}.")
    if not numpy.isfinite(log_probs).all() or (log_probs > TOLERANCE).any():
        raise ValueError(
            f"{where}: log_probs must be finite and <= 0 (probabilities in (0, 1]), got {log_probs.tolist()}; drop "
            f"invalid rows (log-probability -inf) before storing, or {fix}."
        )
    total = numpy.logaddexp.reduce(log_probs.astype("float64"))
    if total > TOLERANCE:
        raise ValueError(
            f"{where}: the sequence probabilities sum to {numpy.exp(total):.6g} > 1; log_probs must be divided by the "
            "teacher's true partition function (not renormalised)."
        )
    if (numpy.diff(log_probs) > TOLERANCE).any():
        raise ValueError(f"{where}: sequences are not sorted best first (log_probs must be non-increasing); {fix}.")
    if surrogate.emission_log_probs is not None:
        values = _token_array(surrogate.emission_log_probs, "emission_log_probs", n_tokens, n_tags, where, fix)
        if values.size and (
            values.max() > FLOAT16_TOLERANCE
            or numpy.abs(numpy.logaddexp.reduce(values, axis=1)).max() > ROW_SUM_TOLERANCE
        ):
            raise ValueError(
                f"{where}: emission_log_probs must be a per-token log-softmax (values <= 0, exp of each row summing "
                f"to 1); store log_softmax(emissions), not raw scores, or {fix}."
            )
    if surrogate.marginals is not None:
        values = _token_array(surrogate.marginals, "marginals", n_tokens, n_tags, where, fix)
        if values.size and (
            values.min() < -FLOAT16_TOLERANCE
            or values.max() > 1 + FLOAT16_TOLERANCE
            or numpy.abs(values.sum(1) - 1).max() > ROW_SUM_TOLERANCE
        ):
            raise ValueError(
                f"{where}: marginals must lie in [0, 1] and sum to 1 over the tags of each token; store the CRF "
                f"marginals P(y_t = l | x), or {fix}."
            )


def _validate_tags(surrogate: Surrogate, where: str, fix: str) -> None:
    try:
        scheme = check_scheme(surrogate.scheme)
    except (AttributeError, ValueError) as err:
        raise ValueError(f"{where}: {err} {fix}.") from None
    tags = surrogate.tags
    if not tags:
        raise ValueError(f"{where}: has no tags; {fix}.")
    if len(set(tags)) != len(tags):
        duplicates = sorted({tag for tag in tags if list(tags).count(tag) > 1})
        raise ValueError(f"{where}: duplicate tags {duplicates}; each tag must appear once; {fix}.")
    for tag in tags:
        try:
            parse_tag(tag, scheme)
        except (AttributeError, ValueError) as err:
            raise ValueError(f"{where}: {err} {fix} with a teacher trained on the {scheme} scheme.") from None


def _token_array(value: Any, name: str, n_tokens: int, n_tags: int, where: str, fix: str) -> numpy.ndarray:
    """A (T, L) token-level array as float32 after checking its dtype, shape and NaNs."""
    value = numpy.asarray(value)
    if value.dtype.kind != "f":
        raise ValueError(f"{where}: {name} must be a float array, got dtype {value.dtype}; {fix}.")
    if value.shape != (n_tokens, n_tags):
        raise ValueError(f"{where}: {name} has shape {value.shape}, expected ({n_tokens}, {n_tags}); {fix}.")
    if not numpy.isfinite(value).all():
        raise ValueError(f"{where}: {name} contains NaN or inf; {fix}.")
    return value.astype("float32")


def _pack(array: Optional[numpy.ndarray]) -> Optional[Dict[str, Any]]:
    if array is None:
        return None
    array = numpy.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _unpack(packed: Optional[Dict[str, Any]]) -> Optional[numpy.ndarray]:
    if packed is None:
        return None
    dtype = numpy.dtype(packed["dtype"])
    if dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"unsupported stored dtype {dtype}")
    shape = tuple(int(size) for size in packed["shape"])
    return numpy.frombuffer(packed["data"], dtype=dtype).reshape(shape).copy()


def set_surrogate(doc: Doc, surrogate: Surrogate, doc_index: Optional[int] = None) -> None:
    """Validate ``surrogate`` against ``doc`` and store it in ``doc._.mgkd_surrogate`` as plain data.

    doc (Doc): the sentence the teacher annotated.
    surrogate (Surrogate): its teacher output. Sequences are stored as int32; the other arrays keep their dtype.
    doc_index (Optional[int]): position of the doc, named in validation errors.
    RAISES (ValueError): if the surrogate is invalid for ``doc`` (see ``validate_surrogate``).
    """
    validate_surrogate(surrogate, len(doc), doc_index)
    doc._.set(
        EXTENSION,
        {
            "version": int(surrogate.version),
            "scheme": check_scheme(surrogate.scheme),
            "tags": [str(tag) for tag in surrogate.tags],
            "sequences": _pack(numpy.asarray(surrogate.sequences).astype("int32")),
            "log_probs": _pack(numpy.asarray(surrogate.log_probs)),
            "emission_log_probs": _pack(surrogate.emission_log_probs),
            "marginals": _pack(surrogate.marginals),
        },
    )


def get_surrogate(doc: Doc, doc_index: Optional[int] = None) -> Optional[Surrogate]:
    """Read and validate the surrogate stored on ``doc``.

    doc (Doc): a doc annotated with ``set_surrogate`` (possibly restored from a DocBin).
    doc_index (Optional[int]): position of the doc, named in error messages.
    RETURNS (Optional[Surrogate]): the surrogate with int64 sequences, or None if the doc has none.
    RAISES (ValueError): if the stored data is malformed, of another schema version, or invalid for ``doc``.
    """
    data = doc._.get(EXTENSION)
    if data is None:
        return None
    where = _where(doc_index)
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: doc._.{EXTENSION} holds a {type(data).__name__}, expected the dict written by set_surrogate; "
            "re-run the teacher annotation."
        )
    if data.get("version") != SURROGATE_VERSION:
        raise ValueError(
            f"{where}: schema version {data.get('version')!r} is not supported (expected {SURROGATE_VERSION}); "
            "re-run the teacher annotation with this version of mgkd_spacy."
        )
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
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: malformed stored data ({err!r}); re-run the teacher annotation.") from None
    validate_surrogate(surrogate, len(doc), doc_index)
    return surrogate


def align_to_student(
    surrogate: Surrogate,
    student_tags: Sequence[str],
    doc_index: Optional[int] = None,
    student_scheme: Optional[str] = None,
) -> Surrogate:
    """A copy of ``surrogate`` whose tag indices follow the student's tag order.

    Sequences are remapped, and the L columns of ``emission_log_probs`` and ``marginals`` permuted, so every
    position keeps the same tag string. The teacher and student must have the same tag set.

    surrogate (Surrogate): the teacher output, in the teacher's tag order.
    student_tags (Sequence[str]): (L,) the student's tags.
    doc_index (Optional[int]): position of the doc, named in error messages.
    student_scheme (Optional[str]): the student's scheme; if given it must equal the teacher's (BIO and IOB1 share
        a tag set but not its meaning).
    RETURNS (Surrogate): the aligned copy; the input is not modified.
    RAISES (ValueError): naming the teacher-only and student-only tags if the sets differ, or both schemes.
    """
    where = _where(doc_index)
    fix = "train the student with the teacher's labels and the same scheme, or re-annotate with a matching teacher"
    if student_scheme is not None and check_scheme(student_scheme) != check_scheme(surrogate.scheme):
        raise ValueError(
            f"{where}: the teacher tags with {surrogate.scheme} but the student with {student_scheme}; {fix}."
        )
    student = list(student_tags)
    if len(set(student)) != len(student):
        duplicates = sorted({tag for tag in student if student.count(tag) > 1})
        raise ValueError(f"{where}: the student's tags contain duplicates {duplicates}; each tag must appear once.")
    extra = sorted(set(surrogate.tags) - set(student))
    missing = sorted(set(student) - set(surrogate.tags))
    if extra or missing:
        raise ValueError(
            f"{where}: the teacher's tags differ from the student's (teacher only: {extra}, student only: "
            f"{missing}); {fix}."
        )
    position = {tag: i for i, tag in enumerate(student)}
    # shape: (L,) student index of each teacher tag
    to_student = numpy.array([position[tag] for tag in surrogate.tags], dtype="int64")
    # shape: (L,) teacher index of each student tag
    columns = numpy.argsort(to_student)

    def permute(values: Optional[numpy.ndarray]) -> Optional[numpy.ndarray]:
        # shape: (T, L)
        return None if values is None else numpy.ascontiguousarray(numpy.asarray(values)[:, columns])

    return replace(
        surrogate,
        tags=student,
        # shape: (K, T)
        sequences=to_student[numpy.asarray(surrogate.sequences)],
        log_probs=numpy.array(surrogate.log_probs, copy=True),
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
    """A Surrogate from one sentence's k-best decoder output, keeping only the valid rows.

    tags (Sequence[str]): (L,) the teacher's tags.
    scheme (str): the teacher's tagging scheme.
    sequences (array-like): (K, T) int tag indices, best first; invalid rows may hold padding.
    log_probs (array-like): (K,) float exact log-probabilities (divided by the true Z); invalid rows may be -inf.
    valid (array-like): (K,) bool, True = a real path. Sentences with fewer than K paths have invalid rows.
    emission_log_probs (Optional[numpy.ndarray]): (T, L) float16 per-token log-softmax of the emissions, or None.
    marginals (Optional[numpy.ndarray]): (T, L) float16 CRF marginals, or None.
    RETURNS (Surrogate): not yet validated against a doc; ``set_surrogate`` does that.
    RAISES (ValueError): if the inputs disagree in K or no row is valid.
    """
    keep = numpy.asarray(valid, dtype=bool).reshape(-1)
    seqs = numpy.asarray(sequences)
    scores = numpy.asarray(log_probs).reshape(-1)
    if seqs.size == 0:
        seqs = seqs.reshape(len(keep), 0)
    if seqs.ndim != 2 or len(seqs) != len(keep) or len(scores) != len(keep):
        raise ValueError(
            f"surrogate_from_kbest: sequences {seqs.shape}, log_probs {scores.shape} and valid {keep.shape} must "
            "have shapes (K, T), (K,) and (K,)."
        )
    if not keep.any():
        raise ValueError(
            "surrogate_from_kbest: no valid sequence (the teacher's constraints allow no path for this sentence); "
            "check the teacher's tag scheme and constraints."
        )
    return Surrogate(
        tags=list(tags),
        scheme=check_scheme(scheme),
        # shape: (K', T)
        sequences=seqs[keep].astype("int64"),
        log_probs=scores[keep].astype("float32"),
        emission_log_probs=emission_log_probs,
        marginals=marginals,
    )
