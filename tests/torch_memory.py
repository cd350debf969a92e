"""Counting the torch tensors a process keeps alive, to catch updates that leak old weights."""
import gc
import warnings

import torch


def live_tensors() -> int:
    """The number of torch tensors reachable by the garbage collector, after a collection. Asking every object
    for its type touches torch.distributed's deprecated ``reduce_op``, whose FutureWarning is not about this code."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*reduce_op.*", category=FutureWarning)
        return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())
