"""Bragg peak finding for serial crystallography: peakfinder8 and a PeakNet-style network."""

from .peaklist import MatchScore, PeakList, match_peaks

__all__ = ["MatchScore", "PeakList", "match_peaks"]
