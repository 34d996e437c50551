"""Scatter helpers on the first axis (edges -> atoms, atoms -> structures)."""

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """out[n] = sum_{e: index[e] == n} src[e]; src [E, ...], index [E] int64 -> [dim_size, ...]."""
    shape = [dim_size] + list(src.shape[1:])
    return torch.zeros(shape, dtype=src.dtype, device=src.device).index_add_(0, index, src)
