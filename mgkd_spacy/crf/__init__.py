"""Exact, batched, constrained linear-chain CRF operations (torch) and the tag-scheme constraints they use."""
from .constraints import SCHEMES, Constraints, build_constraints, check_scheme, parse_tag, tags_for_labels
from .ops import (
    PAD,
    KBest,
    backward_scores,
    check_inputs,
    constrain,
    forward_scores,
    kbest_viterbi,
    log1mexp,
    log_partition,
    log_residual,
    marginals,
    nll,
    sequence_score,
    viterbi,
    window_log_probs,
)
from .spans import entity_log_probs

__all__ = [
    "SCHEMES", "Constraints", "build_constraints", "check_scheme", "parse_tag", "tags_for_labels", "PAD", "KBest",
    "backward_scores", "check_inputs", "constrain", "forward_scores", "kbest_viterbi", "log1mexp", "log_partition",
    "log_residual", "marginals", "nll", "sequence_score", "viterbi", "window_log_probs", "entity_log_probs",
]
