"""Counting the torch tensors a process keeps alive, to catch updates that leak old weights."""
import gc

import torch


def live_tensors() -> int:
    """The number of torch tensors reachable by the garbage collector, after a collection."""
    gc.collect()
    return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())
