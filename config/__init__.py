"""photonflow's resources (installed as ``photonflow.resources``): the JSON Schemas in ``schemas/``,
the cluster profiles in ``clusters/``, the example configurations in ``examples/`` and the CrystFEL
geometries in ``geometry/``. Read them through :mod:`photonflow.config` (``importlib.resources``)."""
