"""The CRF head as a thinc layer: pads emissions into torch tensors and owns the CRF parameters."""
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Optional, Tuple

import torch
from thinc.api import Model, torch2xp, xp2torch
from thinc.types import Floats2d
from spacy.util import registry

from .crf import Constraints, build_constraints, constrain

InT = List[Floats2d]
LOSS_TERMS = ("hard", "kbest", "fuzzy", "token_em", "token_pos")


@dataclass
class CRFBatch:
    """A padded batch of CRF inputs as torch tensors, the output of ``mgkd.CRF.v1``.

    emissions (torch.Tensor): (B, T, L) per-token tag scores, zero-padded.
    lengths (torch.Tensor): (B,) int64 sentence lengths.
    transitions, start, end (torch.Tensor): (L, L), (L,), (L,) raw (unconstrained) CRF parameters.
    loss_log_weights (torch.Tensor): (len(LOSS_TERMS),) learned log-weights for uncertainty weighting.
    constraints (Constraints): allowed moves of the tag scheme.
    """

    emissions: torch.Tensor
    lengths: torch.Tensor
    transitions: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    loss_log_weights: torch.Tensor
    constraints: Constraints

    def potentials(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions, start, end) with forbidden moves set to -inf."""
        return constrain(self.transitions, self.start, self.end, self.constraints)

    def gradients(self) -> "CRFBatch":
        """A CRFBatch holding the ``.grad`` of each leaf tensor (zeros where none was computed)."""

        def grad(value: torch.Tensor) -> torch.Tensor:
            return value.grad if value.grad is not None else torch.zeros_like(value)

        return CRFBatch(
            emissions=grad(self.emissions),
            lengths=self.lengths,
            transitions=grad(self.transitions),
            start=grad(self.start),
            end=grad(self.end),
            loss_log_weights=grad(self.loss_log_weights),
            constraints=self.constraints,
        )


@registry.layers("mgkd.CRF.v1")
def CRF(nO: Optional[int] = None) -> Model[InT, CRFBatch]:
    """Linear-chain CRF head: pads per-doc emissions into a torch ``CRFBatch`` and owns the CRF parameters.

    nO (Optional[int]): number of tags L; set by the component from its labels when None.
    Parameters: ``transitions`` (L, L), ``start`` (L,), ``end`` (L,), initialised to 0, and ``loss_log_weights``
    (one per loss term in ``LOSS_TERMS``, 0 = weight 1), used only by uncertainty weighting. The tag list and
    scheme live in ``attrs["tags"]`` / ``attrs["scheme"]`` (set by the component) and serialise with the model.
    """
    return Model(
        "crf",
        forward,
        init=init,
        dims={"nO": nO},
        params={"transitions": None, "start": None, "end": None, "loss_log_weights": None},
        attrs={"tags": [], "scheme": "BILUO"},
    )


def init(model: Model[InT, CRFBatch], X: Optional[InT] = None, Y: Optional[CRFBatch] = None) -> None:
    """Allocate zero parameters for nO tags (nO must be set, by the component or from X)."""
    if not model.has_dim("nO") and X:
        model.set_dim("nO", X[0].shape[1])
    n_tags = model.get_dim("nO")
    for name, shape in (("transitions", (n_tags, n_tags)), ("start", (n_tags,)), ("end", (n_tags,))):
        if not model.has_param(name):
            model.set_param(name, model.ops.alloc(shape, dtype="f"))
    if not model.has_param("loss_log_weights"):
        model.set_param("loss_log_weights", model.ops.alloc1f(len(LOSS_TERMS)))


@lru_cache(maxsize=32)
def _constraints(tags: Tuple[str, ...], scheme: str) -> Constraints:
    return build_constraints(list(tags), scheme)


def get_constraints(model: Model) -> Constraints:
    """The scheme constraints for the CRF layer's tags (cached per tag list and scheme)."""
    tags = tuple(model.attrs["tags"])
    if len(tags) != model.get_dim("nO"):
        raise ValueError(f"CRF layer has nO={model.get_dim('nO')} but {len(tags)} tags; initialize the component first.")
    return _constraints(tags, model.attrs["scheme"])


def forward(model: Model[InT, CRFBatch], Xs: InT, is_train: bool) -> Tuple[CRFBatch, Callable]:
    n_tags = model.get_dim("nO")
    lengths = [len(X) for X in Xs]
    n_tokens = max(lengths, default=0)
    # shape: (B, T, L)
    padded = model.ops.alloc3f(len(Xs), n_tokens, n_tags)
    for i, X in enumerate(Xs):
        padded[i, : len(X)] = X
    emissions = xp2torch(padded, requires_grad=is_train)
    params = {
        name: xp2torch(model.get_param(name), requires_grad=is_train)
        for name in ("transitions", "start", "end", "loss_log_weights")
    }
    batch = CRFBatch(
        emissions=emissions,
        lengths=torch.tensor(lengths, dtype=torch.long, device=emissions.device),
        constraints=get_constraints(model),
        **params,
    )

    def backprop(d_batch: CRFBatch) -> InT:
        for name in ("transitions", "start", "end", "loss_log_weights"):
            model.inc_grad(name, torch2xp(getattr(d_batch, name).detach()))
        d_padded = torch2xp(d_batch.emissions.detach())
        return [d_padded[i, :length] for i, length in enumerate(lengths)]

    return batch, backprop
