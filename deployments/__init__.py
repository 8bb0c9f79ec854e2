"""How photonflow runs start: the ``photonflow`` command line (:mod:`photonflow.deployments.cli`) and
cluster profiles -> Prefect task runners (:mod:`photonflow.deployments.clusters`).

Imports go one way: deployments -> flows -> tasks -> photonflow. Nothing heavy is imported
here, so ``photonflow --help`` stays fast.
"""
