"""Bragg peak finding for serial crystallography: peakfinder8 and a PeakNet-style network.

* :mod:`.peakfinder8` — peakfinder8 (Cheetah/OM/CrystFEL) in numpy/scipy; :mod:`.peakfinder8_torch`
  its torch backend for GPUs.
* :mod:`.peaknet` — the residual attention U-Net finder (imports torch); :mod:`.training` trains it.
* :mod:`.peaklist` — :class:`PeakList` and one-to-one matching against a true list.
"""

from .peakfinder8 import AsicGrid, Peakfinder8, Peakfinder8Params, peakfinder8
from .peaklist import MatchScore, PeakList, match_peaks

__all__ = [
    "AsicGrid",
    "MatchScore",
    "PeakList",
    "PeakNetFinder",
    "Peakfinder8",
    "Peakfinder8Params",
    "match_peaks",
    "peakfinder8",
]


def __getattr__(name):
    if name == "PeakNetFinder":  # lazily: torch is a heavy import
        from .peaknet import PeakNetFinder

        return PeakNetFinder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
