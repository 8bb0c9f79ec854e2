"""photonflow: X-ray data reduction operations (science core, no Prefect or Dask imports)."""

__version__ = "0.1.0"
