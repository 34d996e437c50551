"""Seeded train/validation(/test) splits by fractions or counts."""

from __future__ import annotations

from typing import List, Sequence, Tuple, TypeVar, Union

import numpy as np

T = TypeVar("T")


def _count(value: Union[int, float], total: int, name: str) -> int:
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return int(round(value * total))
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(f"{name} must be a fraction in [0, 1] or a non-negative count, got {value!r}")


def random_split(items: Sequence[T], sizes: Sequence[Union[int, float]], seed: int = 0) -> Tuple[List[T], ...]:
    """Splits ``items`` into ``len(sizes)`` disjoint random parts of the given counts or fractions.

    The same seed gives the same split; counts must not add up to more than ``len(items)``.
    """
    n = len(items)
    counts = [_count(s, n, f"split size {k}") for k, s in enumerate(sizes)]
    if sum(counts) > n:
        raise ValueError(f"split sizes {list(sizes)} need {sum(counts)} items but only {n} are given")
    order = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for c in counts:
        parts.append([items[int(k)] for k in order[start:start + c]])
        start += c
    return tuple(parts)
