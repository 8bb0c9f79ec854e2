"""CrystFEL detector geometry (``.geom``): one name for the model, the parser, the writer and the
simulated detector, which live in their own modules:

* :mod:`photonflow.io.geom_model` — :class:`Panel`, :class:`BadRegion`, :class:`DetectorGeometry`
  (pixel maps, masks, 2θ / resolution / q maps, ray projection; the frames and pixel conventions
  are described there), :class:`GeometryError`, :data:`HC_EV_A`;
* :mod:`photonflow.io.geom_parser` — :func:`parse_geometry`, :func:`load_geometry`;
* :mod:`photonflow.io.geom_writer` — :func:`write_geometry`;
* :mod:`photonflow.io.geom_simulated` — :func:`simulated_detector`.
"""

from .geom_model import HC_EV_A, AsicLayout, BadRegion, DetectorGeometry, GeometryError, Panel
from .geom_parser import load_geometry, parse_geometry
from .geom_simulated import simulated_detector
from .geom_writer import write_geometry

__all__ = [
    "HC_EV_A",
    "AsicLayout",
    "BadRegion",
    "DetectorGeometry",
    "GeometryError",
    "Panel",
    "load_geometry",
    "parse_geometry",
    "simulated_detector",
    "write_geometry",
]
