"""``distilled_ner``: a CRF named-entity component that learns from gold entities and from a teacher's k-best."""
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
import torch
from spacy.attrs import ORTH
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, set_dropout_rate

from .. import losses as L
from ..crf import PAD, check_scheme, entity_log_probs, kbest_viterbi, tags_for_labels, viterbi
from ..layers import LOSS_TERMS, CRFBatch, get_constraints
from ..surrogates import Surrogate, align_to_student, get_surrogate
from ..tagging import MISSING, biluo_to_scheme, tags_to_spans

KBEST_EXTENSION = "kbest"
WEIGHTINGS = ("fixed", "equal", "uncertainty")

default_model_config = """
[model]
@architectures = "mgkd.CRFTagger.v1"

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "spacy.MultiHashEmbed.v2"
width = 100
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
include_static_vectors = false

[model.tok2vec.encode]
@architectures = "mgkd.BiLSTMEncoder.v3"
input_width = 100
width = 600
depth = 1
dropout = 0.0
"""
DEFAULT_MODEL = Config().from_str(default_model_config)["model"]

if not Doc.has_extension(KBEST_EXTENSION):
    Doc.set_extension(KBEST_EXTENSION, default=None)


@dataclass
class DistilledPrediction:
    """What ``predict`` returns and ``set_annotations`` writes, per doc.

    tags (List[List[int]]): best tag sequence (indices into the component's tags).
    entities (List[List[Tuple[int, int, str]]]): the entities of the best sequence, (start, end exclusive, label).
    entity_scores (List[List[float]]): exact CRF probability of each of those entities, in the same order
        (empty when ``entity_scores`` is off).
    kbest (List[List[Tuple[List[int], float]]]): top-K sequences with their probabilities (empty when disabled).
    """

    tags: List[List[int]]
    entities: List[List[Tuple[int, int, str]]]
    entity_scores: List[List[float]]
    kbest: List[List[Tuple[List[int], float]]]


@Language.factory(
    "distilled_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "scheme": "BILUO",
        "losses": {"hard": 1.0},
        "weighting": "fixed",
        "temperature": 1.0,
        "teacher_k": 0,
        "spans_key": "mgkd_ents",
        "entity_scores": False,
        "kbest": 0,
        "crf_lr_scale": 1.0,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_distilled_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], CRFBatch],
    scheme: str,
    losses: Dict[str, float],
    weighting: str,
    temperature: float,
    teacher_k: int,
    spans_key: str,
    entity_scores: bool,
    kbest: int,
    crf_lr_scale: float,
    scorer: Optional[Callable],
) -> "DistilledNER":
    """Create a ``distilled_ner`` component.

    model (Model[List[Doc], CRFBatch]): a ``mgkd.CRFTagger.v1`` (tok2vec -> emissions -> CRF).
    scheme (str): tag scheme the CRF decodes with: BILUO (default), BIO, BIOES, BMES or IOB1.
    losses (Dict[str, float]): loss terms and their fixed weights, from "hard", "kbest", "fuzzy", "token_em",
        "token_pos". Terms other than "hard" need teacher surrogates on the training docs.
    weighting (str): "fixed" (the weights above), "equal" (every listed term weight 1) or "uncertainty" (learned
        weights lambda_i: sum_i lambda_i L_i - 1/2 sum_i log lambda_i).
    temperature (float): softmax temperature of TOKEN-EM.
    teacher_k (int): use only the teacher's best ``teacher_k`` sequences (0 = all it stored); the rest is residual.
    spans_key (str): ``doc.spans`` key of the span group holding the predicted entities and their probabilities.
    entity_scores (bool): compute the exact CRF probability of each predicted entity (a forward-backward pass,
        about a quarter of a BiLSTM student's tagging time) and write the entities with their probabilities to
        ``doc.spans[spans_key]`` (``attrs["scores"]``). Off by default, like confidences in spaCy's own ``ner``;
        a setting, not a weight, so ``spacy.load(path, config={"components": {name: {"entity_scores": True}}})``
        turns it on for a trained pipeline.
    kbest (int): if > 0, write the top-``kbest`` analyses with probabilities to ``doc._.kbest``.
    crf_lr_scale (float): learning-rate multiplier for the CRF parameters; the paper trains the teacher's CRF with
        a higher rate than its transformer (e.g. 100 x 5e-5).
    scorer (Optional[Callable]): scoring method; spaCy's entity scorer by default.
    """
    return DistilledNER(
        nlp.vocab, model, name, scheme=scheme, losses=losses, weighting=weighting, temperature=temperature,
        teacher_k=teacher_k, spans_key=spans_key, entity_scores=entity_scores, kbest=kbest,
        crf_lr_scale=crf_lr_scale, scorer=scorer,
    )


class DistilledNER(TrainablePipe):
    """Named-entity recognizer with a linear-chain CRF, trained by gold NLL and multi-grained distillation."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "distilled_ner",
        *,
        scheme: str = "BILUO",
        losses: Optional[Dict[str, float]] = None,
        weighting: str = "fixed",
        temperature: float = 1.0,
        teacher_k: int = 0,
        spans_key: str = "mgkd_ents",
        entity_scores: bool = False,
        kbest: int = 0,
        crf_lr_scale: float = 1.0,
        scorer: Optional[Callable] = None,
    ) -> None:
        losses = dict(losses if losses is not None else {"hard": 1.0})
        unknown = sorted(set(losses) - set(LOSS_TERMS))
        if unknown or not losses:
            raise ValueError(f"[{name}] unknown or no loss terms {unknown}; choose from {list(LOSS_TERMS)}.")
        if any(weight < 0 for weight in losses.values()):
            raise ValueError(f"[{name}] loss weights must be >= 0; got {losses}.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"[{name}] weighting must be one of {WEIGHTINGS}; got {weighting!r}.")
        if temperature <= 0 or crf_lr_scale <= 0 or teacher_k < 0 or kbest < 0:
            raise ValueError(f"[{name}] temperature and crf_lr_scale must be > 0, teacher_k and kbest >= 0.")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        # Kept out of ``cfg`` (which is saved with the weights and restored over the config on load), so that a
        # config override at load time switches it.
        self.entity_scores = entity_scores
        self.cfg = {
            "labels": [],
            "scheme": check_scheme(scheme),
            "losses": losses,
            "weighting": weighting,
            "temperature": temperature,
            "teacher_k": teacher_k,
            "spans_key": spans_key,
            "kbest": kbest,
            "crf_lr_scale": crf_lr_scale,
        }

    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity types, sorted."""
        return tuple(self.cfg["labels"])

    @property
    def tags(self) -> List[str]:
        """The CRF's tag set: "O" then each scheme prefix for each label."""
        return tags_for_labels(self.labels, self.cfg["scheme"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    def add_label(self, label: str) -> int:
        """Add an entity type; refused once the output layer has a size."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"[{self.name}] entity labels must be non-empty strings; got {label!r}.")
        if label in self.labels:
            return 0
        if self.model.get_ref("output_layer").has_dim("nO"):
            raise ValueError(f"[{self.name}] cannot add label {label!r} after initialization; re-initialize instead.")
        self.cfg["labels"] = sorted(self.labels + (label,))
        self.vocab.strings.add(label)
        return 1

    def initialize(
        self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Take labels from ``labels``, or else those added so far plus those of the examples (gold entities and
        teacher tags), then size and initialize the model on up to 10 examples."""
        validate_get_examples(get_examples, "DistilledNER.initialize")
        found = set(labels) if labels is not None else set(self.labels)
        sample: List[Doc] = []
        for example in get_examples():
            if len(sample) < 10:
                sample.append(example.x)
            if labels is None:
                found.update(ent.label_ for ent in example.reference.ents)
                surrogate = get_surrogate(example.reference)
                if surrogate is not None:
                    found.update(tag.split("-", 1)[1] for tag in surrogate.tags if tag != "O")
        self.cfg["labels"] = sorted(found)
        for label in self.cfg["labels"]:
            self.vocab.strings.add(label)
        self._size_model()
        self.model.initialize(X=sample or None)

    def _size_model(self) -> None:
        n_tags = len(self.tags)
        for ref in ("output_layer", "crf"):
            layer = self.model.get_ref(ref)
            if layer.has_dim("nO") and layer.get_dim("nO") != n_tags:
                raise ValueError(f"[{self.name}] model has {layer.get_dim('nO')} outputs but {n_tags} tags.")
            layer.set_dim("nO", n_tags)
        crf = self.model.get_ref("crf")
        crf.attrs["tags"] = self.tags
        crf.attrs["scheme"] = self.cfg["scheme"]

    def predict(self, docs: Iterable[Doc]) -> DistilledPrediction:
        """Constrained Viterbi paths and, when enabled, each predicted entity's probability and the k-best."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return DistilledPrediction(*([[] for _ in docs] for _ in range(4)))
        batch = self.model.predict(docs)
        transitions, start, end = batch.potentials()
        args = (batch.emissions, batch.lengths, transitions, start, end)
        with torch.no_grad():
            paths, _ = viterbi(*args)
            lengths = batch.lengths.tolist()
            tags = [paths[i, :n].tolist() for i, n in enumerate(lengths)]
            tag_names = self.tags
            entities = [tags_to_spans([tag_names[t] for t in seq], self.cfg["scheme"]) for seq in tags]
            scores: List[List[float]] = [[] for _ in docs]
            if self.entity_scores:
                spans = [(i, s, e, label) for i, doc_entities in enumerate(entities) for s, e, label in doc_entities]
                probs = entity_log_probs(*args, tag_names, self.cfg["scheme"], spans).exp().tolist()
                for (i, *_), prob in zip(spans, probs):
                    scores[i].append(prob)
            kbest: List[List[Tuple[List[int], float]]] = [[] for _ in docs]
            if self.cfg["kbest"]:
                found = kbest_viterbi(*args, self.cfg["kbest"])
                for i, n in enumerate(lengths):
                    for k in range(found.valid.shape[1]):
                        if found.valid[i, k]:
                            kbest[i].append((found.tags[i, k, :n].tolist(), float(found.log_probs[i, k].exp())))
        return DistilledPrediction(tags, entities, scores, kbest)

    def set_annotations(self, docs: Iterable[Doc], predictions: DistilledPrediction) -> None:
        """Write ``doc.ents`` and, when enabled, the scored span group ``doc.spans[spans_key]`` and ``doc._.kbest``."""
        tag_names = self.tags
        key = self.cfg["spans_key"]
        for doc, entities, scores, kbest in zip(docs, predictions.entities, predictions.entity_scores, predictions.kbest):
            spans = [Span(doc, s, e, label=label) for s, e, label in entities]
            doc.set_ents(spans, default="outside")
            if self.entity_scores:
                group = SpanGroup(doc, name=key, spans=spans)
                group.attrs["scores"] = numpy.asarray(scores, dtype="float32")
                doc.spans[key] = group
            if self.cfg["kbest"]:
                doc._.set(KBEST_EXTENSION, [{"tags": [tag_names[t] for t in path], "prob": p} for path, p in kbest])

    def update(
        self, examples: Iterable[Example], *, drop: float = 0.0, sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch: forward, the weighted losses, backprop, then an optimizer step if ``sgd`` is given."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "DistilledNER.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        batch, backprop = self.model.begin_update([eg.predicted for eg in examples])
        total, terms, skipped = self._loss(examples, batch)
        total.backward()
        backprop(batch.gradients())
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += float(total.detach())
        for term, value in terms.items():
            losses[f"{self.name}_{term}"] = losses.get(f"{self.name}_{term}", 0.0) + value
        losses[f"{self.name}_no_target"] = losses.get(f"{self.name}_no_target", 0.0) + skipped
        return losses

    def finish_update(self, sgd: Optimizer) -> None:
        """Optimizer step for every parameter, the CRF's scaled by ``crf_lr_scale`` (thinc's loop plus lr_scale)."""
        crf = self.model.get_ref("crf")
        for node in self.model.walk():
            for shim in node.shims:
                shim.finish_update(sgd)
        for node in self.model.walk():
            scale = self.cfg["crf_lr_scale"] if node is crf else 1.0
            for name in node.param_names:
                if node.has_grad(name):
                    param, grad = sgd((node.id, name), node.get_param(name), node.get_grad(name), lr_scale=scale)
                    node.set_param(name, param)

    def get_loss(self, examples: Iterable[Example], scores: CRFBatch) -> Tuple[float, CRFBatch]:
        """The weighted loss of a batch and its gradient with respect to ``scores`` (a CRFBatch of grads)."""
        leaves = replace(
            scores,
            **{
                name: getattr(scores, name).detach().requires_grad_()
                for name in ("emissions", "transitions", "start", "end", "loss_log_weights")
            },
        )
        total, _, _ = self._loss(list(examples), leaves)
        total.backward()
        return float(total.detach()), leaves.gradients()

    def _loss(self, examples: List[Example], batch: CRFBatch) -> Tuple[torch.Tensor, Dict[str, float], int]:
        """Total weighted loss, the per-term values, and the number of sentences with no target at all."""
        targets = _Targets.build(self, examples, batch)
        transitions, start, end = batch.potentials()
        args = (batch.emissions, batch.lengths, transitions, start, end)
        per_term: Dict[str, torch.Tensor] = {}
        wanted = self.cfg["losses"]
        if "hard" in wanted and targets.has_hard.any():
            per_term["hard"] = _mean(L.partial_nll(*args, targets.allowed), targets.has_hard)
        if targets.has_teacher.any():
            if "kbest" in wanted or "fuzzy" in wanted:
                student = L.sequence_log_probs(*args, targets.sequences)
                if "kbest" in wanted:
                    loss = L.kbest_cross_entropy(student, targets.log_probs, targets.valid)
                    per_term["kbest"] = _mean(loss, targets.has_teacher)
                if "fuzzy" in wanted:
                    per_term["fuzzy"] = _mean(L.fuzzy_loss(student, targets.log_probs, targets.valid), targets.has_teacher)
            if "token_em" in wanted:
                loss = L.token_em_loss(batch.emissions, targets.emission_log_probs, batch.lengths, self.cfg["temperature"])
                per_term["token_em"] = _mean(loss, targets.has_teacher)
            if "token_pos" in wanted:
                per_term["token_pos"] = _mean(L.token_pos_loss(*args, targets.marginals), targets.has_teacher)
        total = batch.emissions.new_zeros(())
        for term, value in per_term.items():
            if self.cfg["weighting"] == "uncertainty":
                log_weight = batch.loss_log_weights[LOSS_TERMS.index(term)]
                total = total + log_weight.exp() * value - 0.5 * log_weight
            elif self.cfg["weighting"] == "equal":
                total = total + value
            else:
                total = total + wanted[term] * value
        return total, {term: float(value.detach()) for term, value in per_term.items()}, targets.skipped


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the sentences in ``mask`` (masked-out values may be inf and are ignored)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


@dataclass
class _Targets:
    """Padded training targets of a batch (B sentences, T tokens, L tags, K teacher sequences)."""

    allowed: torch.Tensor  # (B, T, L) bool, tags consistent with gold (or teacher top-1)
    has_hard: torch.Tensor  # (B,) bool
    has_teacher: torch.Tensor  # (B,) bool
    sequences: torch.Tensor  # (B, K, T) int64
    log_probs: torch.Tensor  # (B, K)
    valid: torch.Tensor  # (B, K) bool
    emission_log_probs: Optional[torch.Tensor]  # (B, T, L)
    marginals: Optional[torch.Tensor]  # (B, T, L)
    skipped: int

    @classmethod
    def build(cls, pipe: DistilledNER, examples: List[Example], batch: CRFBatch) -> "_Targets":
        tag_names = pipe.tags
        index = {tag: i for i, tag in enumerate(tag_names)}
        n_batch, n_tokens, n_tags = batch.emissions.shape
        wanted = pipe.cfg["losses"]
        allowed = numpy.ones((n_batch, n_tokens, n_tags), dtype=bool)
        has_hard = numpy.zeros(n_batch, dtype=bool)
        surrogates: List[Optional[Surrogate]] = []
        skipped = 0
        for i, eg in enumerate(examples):
            surrogate = _student_surrogate(pipe, eg, i, wanted)
            surrogates.append(surrogate)
            if eg.reference.has_annotation("ENT_IOB"):
                gold = biluo_to_scheme(eg.get_aligned_ner(), pipe.cfg["scheme"])
                for t, tag in enumerate(gold):
                    if tag == MISSING:
                        continue
                    if tag not in index:
                        raise ValueError(
                            f"[{pipe.name}] example {i}: gold tag {tag!r} uses a label that is not among "
                            f"{list(pipe.labels)}; initialize the component on data with every label (or pass labels)."
                        )
                    allowed[i, t] = False
                    allowed[i, t, index[tag]] = True
                has_hard[i] = True
            elif surrogate is not None:
                allowed[i, : len(eg.predicted)] = False
                allowed[i, numpy.arange(len(eg.predicted)), surrogate.sequences[0]] = True
                has_hard[i] = True
            elif len(eg.predicted):
                skipped += 1
        teacher = [s for s in surrogates if s is not None]
        n_k = max((len(s.log_probs) for s in teacher), default=1)
        sequences = numpy.full((n_batch, n_k, n_tokens), PAD, dtype="int64")
        log_probs = numpy.full((n_batch, n_k), -numpy.inf, dtype="float32")
        emission = numpy.zeros((n_batch, n_tokens, n_tags), dtype="float32") if "token_em" in wanted else None
        marginal = numpy.zeros((n_batch, n_tokens, n_tags), dtype="float32") if "token_pos" in wanted else None
        for i, s in enumerate(surrogates):
            if s is None:
                continue
            n = s.sequences.shape[1]
            sequences[i, : len(s.log_probs), :n] = s.sequences
            log_probs[i, : len(s.log_probs)] = s.log_probs
            if emission is not None:
                emission[i, :n] = s.emission_log_probs
            if marginal is not None:
                marginal[i, :n] = s.marginals
        device = batch.emissions.device
        dtype = batch.emissions.dtype

        def tensor(array: Optional[numpy.ndarray]) -> Optional[torch.Tensor]:
            if array is None:
                return None
            out = torch.as_tensor(array, device=device)
            return out.to(dtype) if out.is_floating_point() else out

        log_probs_t = tensor(log_probs)
        return cls(
            allowed=tensor(allowed),
            has_hard=tensor(has_hard),
            has_teacher=torch.tensor([s is not None for s in surrogates], device=device),
            sequences=tensor(sequences),
            log_probs=log_probs_t,
            valid=torch.isfinite(log_probs_t),
            emission_log_probs=tensor(emission),
            marginals=tensor(marginal),
            skipped=skipped,
        )


def _student_surrogate(pipe: DistilledNER, eg: Example, i: int, wanted: Dict[str, float]) -> Optional[Surrogate]:
    """The teacher surrogate of example i in the student's tag order, truncated to ``teacher_k``, or None."""
    surrogate = get_surrogate(eg.reference, doc_index=i)
    if surrogate is None:
        return None
    if not numpy.array_equal(eg.predicted.to_array(ORTH), eg.reference.to_array(ORTH)):
        raise ValueError(
            f"[{pipe.name}] example {i}: the teacher surrogate is stored on a reference doc whose tokens differ from "
            "the predicted doc; read annotated corpora with 'mgkd.PooledCorpus.v1' (or gold_preproc) so tokens match."
        )
    surrogate = align_to_student(surrogate, pipe.tags, doc_index=i, student_scheme=pipe.cfg["scheme"])
    _check_allowed(pipe, surrogate, i)
    for term, field in (("token_em", "emission_log_probs"), ("token_pos", "marginals")):
        if term in wanted and getattr(surrogate, field) is None:
            raise ValueError(
                f"[{pipe.name}] example {i}: loss {term!r} needs teacher {field}, but the surrogate has none; "
                "re-run annotation with emissions and marginals stored."
            )
    k = pipe.cfg["teacher_k"]
    if k and len(surrogate.log_probs) > k:
        surrogate = replace(surrogate, sequences=surrogate.sequences[:k], log_probs=surrogate.log_probs[:k])
    return surrogate


def _check_allowed(pipe: DistilledNER, surrogate: Surrogate, i: int) -> None:
    """Raise if a teacher sequence makes a move the student's scheme forbids (it would have probability 0)."""
    seqs = surrogate.sequences
    if not seqs.shape[1]:
        return
    constraints = get_constraints(pipe.model.get_ref("crf"))
    transitions, start, end = (m.cpu().numpy() for m in (constraints.transitions, constraints.start, constraints.end))
    ok = start[seqs[:, 0]].all() and end[seqs[:, -1]].all() and transitions[seqs[:, :-1], seqs[:, 1:]].all()
    if not ok:
        raise ValueError(
            f"[{pipe.name}] example {i}: a teacher sequence breaks the {pipe.cfg['scheme']} constraints the student "
            "decodes with; annotate with a teacher that uses the same scheme and constraints."
        )
