"""Pieces the detector simulators share: a per-geometry cache and the solvent (water) profile."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np


def cached_per_geometry(cache: dict[int, tuple[Any, Any]], geometry, build: Callable[[Any], Any]):
    """``build(geometry)``, computed once per geometry object and kept while it lives (at most 16)."""
    key = id(geometry)
    entry = cache.get(key)
    if entry is not None:
        ref, value = entry
        if (ref() if callable(ref) else ref) is geometry:
            return value
    value = build(geometry)
    try:
        ref = weakref.ref(geometry, lambda _r, k=key: cache.pop(k, None))
    except TypeError:  # not weak-referenceable: keep it alive with the cache
        ref = geometry
    if len(cache) > 16:
        cache.clear()
    cache[key] = (ref, value)
    return value


def water_profile(q: np.ndarray, q0_nm: float, sigma_nm: float, shoulder) -> np.ndarray:
    """Water scattering against q (nm⁻¹), in q's dtype: a Gaussian of centre ``q0_nm`` and width
    ``sigma_nm`` plus a shoulder (relative height, centre nm⁻¹, width nm⁻¹); 1 at q0 (no weights)."""
    t = q.dtype.type
    h2, q2, s2 = (t(v) for v in shoulder)
    zw = (q - t(q0_nm)) / t(sigma_nm)
    z2 = (q - q2) / s2
    return np.exp(t(-0.5) * zw * zw) + h2 * np.exp(t(-0.5) * z2 * z2)
