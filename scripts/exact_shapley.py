"""Exact Shapley values by enumerating every coalition: the brute force behind the fixtures'
references (scripts/make_token_fixtures.py, scripts/make_int_tabular_fixtures.py).

The value of coalition S is given at index sum_{i in S} 2^i, so v holds all 2^M coalitions.
"""

from __future__ import annotations

from math import factorial

import numpy as np


def shapley_from_values(v: np.ndarray, players: int) -> np.ndarray:
    """Exact Shapley values [T, M] from v [2^M, T], coalition S at index sum_{i in S} 2^i."""
    masks = ((np.arange(2**players)[:, None] >> np.arange(players)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    weights = np.array([factorial(k) * factorial(players - k - 1) / factorial(players) for k in range(players)])
    phi = np.zeros((v.shape[1], players))
    for i in range(players):
        without = np.nonzero(~masks[:, i])[0]
        phi[:, i] = (weights[sizes[without]][:, None] * (v[without | (1 << i)] - v[without])).sum(axis=0)
    return phi


def check_shapley_from_values() -> None:
    """The enumeration on an additive game: phi_i must be its term, exactly up to rounding."""
    m, rng = 6, np.random.default_rng(0)
    terms = rng.normal(size=(m, 3))
    masks = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(np.float64)
    phi = shapley_from_values(masks @ terms + 0.5, m)
    assert np.abs(phi - terms.T).max() < 1e-12, np.abs(phi - terms.T).max()
