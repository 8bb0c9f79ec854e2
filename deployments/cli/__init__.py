"""The ``photonflow`` command line (entry point ``photonflow = "photonflow.deployments.cli:main"``).

- :mod:`.main`: the parser, ``main()`` and the tools (demo, cluster, validate, watch, serve, submit);
- :mod:`.common`: what every command shares (usage errors, run files, inputs, running a flow on a
  cluster profile, the one summary printer);
- :mod:`.options`: options made from an operation's run-file schema, and the command of an operation
  that brings no module of its own;
- one module per operation that has a command of its own (:mod:`.saxs`, :mod:`.sfx`, :mod:`.laue`,
  :mod:`.tomo`, :mod:`.classify`) and :mod:`.monitor`.

Imports go one way: the operation modules import :mod:`.common` and :mod:`.options`, and :mod:`.main`
imports them; nothing imports :mod:`.main` back.
"""

from photonflow.config import DATA_ENV, shared_data_dir
from photonflow.deployments.cli.main import build_parser, main

__all__ = ["main", "build_parser", "shared_data_dir", "DATA_ENV"]
