"""The live monitor: a web page that shows what running (and finished) flows are finding.

Reading side (:mod:`photonflow.monitor.runs`): finds runs under output roots (a run is a directory
with ``run.json``, or an older run's ``summary.json``), reads their record, table rows and
science outputs into JSON-able dicts, cached by file modification time; every file it opens or
serves must resolve inside an output root. Plots (:mod:`photonflow.monitor.plots`): small PNGs
drawn on the server with matplotlib. Web app (:mod:`photonflow.monitor.app`): starlette, one
page polling a JSON data endpoint. No Prefect or Dask import here: the monitor only reads files.
"""

from .runs import MonitorError, RunStore

__all__ = ["MonitorError", "RunStore"]
