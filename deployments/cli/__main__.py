"""``python -m photonflow.deployments.cli``: the ``photonflow`` command."""

import sys

from photonflow.deployments.cli.main import main

sys.exit(main())
