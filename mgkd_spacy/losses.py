"""Per-sentence distillation losses over CRF potentials (torch; differentiable).

Letters: B batch, T tokens, L tags, K teacher sequences. Every function returns a (B,) tensor, one loss per
sentence; the component averages over the sentences that carry the loss's target. Student probabilities are
divided by the student's true partition function; teacher log-probabilities are the teacher's true ones, so the
mass outside the K sequences (the residual) is real and enters the k-best and fuzzy losses.
"""
import torch
from torch import Tensor

from .crf.ops import NEG_INF, _log_partition, log1mexp, marginals

# Floor for student log-probabilities of sequences it forbids, so a loss stays finite (its gradient there is 0).
LOG_FLOOR = -1e4


def partial_nll(emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, allowed: Tensor) -> Tensor:
    """-log P(y_t in allowed[t] for all t): the NLL of a (possibly partial) gold annotation.

    allowed (Tensor): (B, T, L) bool; one True per token for full annotation, all True where a token's label is
    missing. Potentials must already carry the constraints (-inf for forbidden moves).
    """
    masked = torch.where(allowed, emissions, emissions.new_tensor(NEG_INF))
    log_z = _log_partition(emissions, lengths, transitions, start, end)
    return log_z - _log_partition(masked, lengths, transitions, start, end)


def sequence_log_probs(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, sequences: Tensor
) -> Tensor:
    """Student log P(y_k | x) of K sequences per sentence, (B, K), floored at ``LOG_FLOOR``.

    sequences (Tensor): (B, K, T) tag indices; entries past the length and invalid (PAD) rows are ignored.
    """
    n_batch, n_seqs, n_tokens = sequences.shape
    log_z = _log_partition(emissions, lengths, transitions, start, end)
    if n_tokens == 0:
        return (-log_z)[:, None].expand(n_batch, n_seqs).clamp(min=LOG_FLOOR)
    zero = emissions.new_zeros(())
    # shape: (B, 1, T)
    real = (torch.arange(n_tokens, device=emissions.device)[None, :] < lengths[:, None])[:, None, :]
    seqs = torch.where(real, sequences, torch.zeros_like(sequences)).clamp(min=0)
    # shape: (B, K, T)
    emitted = emissions.gather(2, seqs.transpose(1, 2)).transpose(1, 2)
    moved = transitions[seqs[:, :, :-1], seqs[:, :, 1:]]
    last = seqs.gather(2, (lengths - 1).clamp(min=0)[:, None, None].expand(n_batch, n_seqs, 1)).squeeze(2)
    score = (
        torch.where(real, emitted, zero).sum(2)
        + torch.where(real[:, :, 1:], moved, zero).sum(2)
        + torch.where((lengths > 0)[:, None], start[seqs[:, :, 0]] + end[last], zero)
    )
    log_probs = score - log_z[:, None]
    return torch.where(torch.isfinite(log_probs), log_probs, log_probs.new_tensor(LOG_FLOOR)).clamp(min=LOG_FLOOR)


def _mass(log_probs: Tensor, valid: Tensor) -> Tensor:
    """log sum_k p_k over the valid sequences, (B,)."""
    return torch.logsumexp(torch.where(valid, log_probs, log_probs.new_tensor(NEG_INF)), dim=1)


def kbest_cross_entropy(student_log_probs: Tensor, teacher_log_probs: Tensor, valid: Tensor) -> Tensor:
    """-sum_k p_t,k log p_s(y_k) - (1 - p_t,sum) log(1 - p_s,sum), (B,).

    student_log_probs, teacher_log_probs (Tensor): (B, K) log-probabilities of the teacher's K sequences.
    valid (Tensor): (B, K) bool; rows of sentences with fewer than K sequences are False.
    """
    teacher_p = torch.where(valid, teacher_log_probs.exp(), torch.zeros_like(teacher_log_probs))
    sequence_term = -(teacher_p * student_log_probs).sum(1)
    teacher_rest = (1.0 - teacher_p.sum(1)).clamp(min=0.0)
    student_rest = log1mexp(_mass(student_log_probs, valid).clamp(max=0.0))
    return sequence_term - teacher_rest * student_rest


def fuzzy_loss(student_log_probs: Tensor, teacher_log_probs: Tensor, valid: Tensor) -> Tensor:
    """Binary cross entropy of the K sequences' total mass: -p_t,sum log p_s,sum - (1 - p_t,sum) log(1 - p_s,sum)."""
    teacher_sum = torch.where(valid, teacher_log_probs.exp(), torch.zeros_like(teacher_log_probs)).sum(1).clamp(0.0, 1.0)
    student_log_sum = _mass(student_log_probs, valid).clamp(max=0.0)
    return -teacher_sum * student_log_sum - (1.0 - teacher_sum) * log1mexp(student_log_sum)


def token_kl(teacher_log_p: Tensor, student_log_p: Tensor, lengths: Tensor) -> Tensor:
    """sum_t KL(p_t || p_s) over real tokens, (B,); teacher zeros contribute nothing.

    teacher_log_p, student_log_p (Tensor): (B, T, L) per-token log-distributions.
    """
    n_tokens = teacher_log_p.shape[1]
    real = (torch.arange(n_tokens, device=teacher_log_p.device)[None, :] < lengths[:, None])[:, :, None]
    teacher_p = teacher_log_p.exp()
    keep = real & (teacher_p > 0)
    safe_teacher = torch.where(keep, teacher_log_p, torch.zeros_like(teacher_log_p))
    safe_student = torch.where(keep, student_log_p.clamp(min=LOG_FLOOR), torch.zeros_like(student_log_p))
    return torch.where(keep, teacher_p * (safe_teacher - safe_student), torch.zeros_like(teacher_p)).sum((1, 2))


def token_em_loss(student_emissions: Tensor, teacher_log_p: Tensor, lengths: Tensor, temperature: float = 1.0) -> Tensor:
    """TOKEN-EM: KL between teacher and student per-token emission softmaxes at ``temperature``, times T^2, (B,).

    teacher_log_p (Tensor): (B, T, L) the teacher's per-token log-softmax (any temperature can be applied to it).
    """
    teacher = torch.log_softmax(teacher_log_p / temperature, dim=-1)
    student = torch.log_softmax(student_emissions / temperature, dim=-1)
    return token_kl(teacher, student, lengths) * temperature**2


def token_pos_loss(
    emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor, teacher_marginals: Tensor
) -> Tensor:
    """TOKEN-POS: KL between teacher and student CRF marginals per token, (B,)."""
    student = marginals(emissions, lengths, transitions, start, end)
    tiny = torch.finfo(student.dtype).tiny
    teacher = teacher_marginals.clamp(min=0.0)
    teacher = teacher / teacher.sum(-1, keepdim=True).clamp(min=tiny)
    return token_kl(torch.log(teacher), torch.log(student.clamp(min=tiny)), lengths)
