"""A simulated CrystFEL detector: a slab of square ASICs with physical gaps between them
(the geometry of ``config/geometry/sim*.geom`` and of the SFX simulations)."""

from __future__ import annotations

from collections.abc import Sequence

from .geom_model import BadRegion, DetectorGeometry, Panel

__all__ = ["simulated_detector"]


def simulated_detector(
    n_asics_fs: int = 8,
    n_asics_ss: int = 8,
    asic_size: int = 240,
    pixel_size_um: float = 75.0,
    clen_mm: float = 100.0,
    gap_px: float = 4.0,
    photon_energy_eV: float = 9500.0,
    *,
    beam_fs_ss: tuple[float, float] | None = None,
    data: str = "/entry_1/data_1/data",
    dim_structure: Sequence = ("%", "ss", "fs"),
    adu_per_photon: float = 1.0,
    bad_regions: Sequence[BadRegion] = (),
    peak_list: str | None = "/entry_1/result_1",
) -> DetectorGeometry:
    """A slab of ``n_asics_ss`` × ``n_asics_fs`` square ASICs with physical gaps between them.

    ASICs are contiguous in the slab (panel ``p{k}``, k row-major) and spaced by
    ``gap_px`` pixels in the lab; fs = +x, ss = +y. The beam (lab x = y = 0) hits
    the slab at Cheetah coordinate ``beam_fs_ss``, by default
    ``(n_fs/2 + 1.3, n_ss/2 + 1.6)``: a pixel just past the middle gap, 0.3 and
    0.4 pixels off its centre.
    """
    a = int(asic_size)
    n_fs, n_ss = n_asics_fs * a, n_asics_ss * a
    if beam_fs_ss is None:
        beam_fs_ss = (n_fs / 2 + 1.3, n_ss / 2 + 1.6)
    bfs, bss = (float(v) for v in beam_fs_ss)
    if not (-0.5 <= bfs < n_fs - 0.5 and -0.5 <= bss < n_ss - 0.5):
        raise ValueError(f"beam_fs_ss {beam_fs_ss} is outside the {n_ss}x{n_fs} slab")
    col_b, row_b = int((bfs + 0.5) // a), int((bss + 0.5) // a)
    # CrystFEL panel coordinates of the beam; rounding to 1e-9 pixel keeps the file's numbers tidy
    u_b, v_b = round(bfs + 0.5 - col_b * a, 9), round(bss + 0.5 - row_b * a, 9)
    step = a + float(gap_px)
    res = 1e6 / float(pixel_size_um)
    panels = []
    for row in range(n_asics_ss):
        for col in range(n_asics_fs):
            panels.append(
                Panel(
                    name=f"p{row * n_asics_fs + col}",
                    min_fs=col * a,
                    max_fs=col * a + a - 1,
                    min_ss=row * a,
                    max_ss=row * a + a - 1,
                    corner_x=round((col - col_b) * step - u_b, 9),
                    corner_y=round((row - row_b) * step - v_b, 9),
                    fs=(1.0, 0.0, 0.0),
                    ss=(0.0, 1.0, 0.0),
                    res=res,
                    clen=clen_mm / 1000.0,
                    adu_per_photon=adu_per_photon,
                    data=data,
                    dim_structure=tuple(dim_structure),
                )
            )
    return DetectorGeometry(panels, bad_regions, photon_energy_eV, peak_list=peak_list)
