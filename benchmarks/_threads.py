"""Imported first by a benchmark script: the thread counts of OpenMP, BLAS and numba are set before
numpy loads — 1 (one core, the figures' convention) unless the command line says ``--threads N``."""

import os
import sys

THREADS = "1"
for _i, _arg in enumerate(sys.argv):
    if _arg == "--threads" and _i + 1 < len(sys.argv):
        THREADS = sys.argv[_i + 1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, THREADS)
