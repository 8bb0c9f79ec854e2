"""Helpers of the live monitor's tests: a small SAXS dataset, the monitor served in a thread, and a
headless Chromium driven over the DevTools protocol (no webdriver: the chromium binary and the
``websockets`` package, a Prefect dependency)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

SHAPE = (120, 100)
REPO = Path(__file__).resolve().parents[1]


def write_saxs_dataset(root: Path, n_frames: int, bad: bool = True) -> tuple[Path, Path]:
    """A SAXSDOG calibration (one integration) and ``n_frames`` Guinier frames (radius of gyration
    growing over the series) in ``root/data``; with ``bad``, one garbage file too. Returns
    (calibration, data directory)."""
    import tifffile

    from photonflow.calibration import load_calibration

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "mask.tif", np.zeros(SHAPE, np.uint8))
    cal = {
        "Geometry": {
            "BeamCenter": [70.5, 40.25],
            "DedectorDistanceMM": 1000.0,
            "PixelSizeMicroM": [172.0, 172.0],
            "Imagesize": list(SHAPE),
            "Tilt": {"TiltRotDeg": 0.0, "TiltAngleDeg": 0.0},
        },
        "Wavelength": 1.0,
        "Masks": [
            {
                "Name": "full",
                "MaskFile": "mask.tif",
                "Oversampling": 1,
                "PixelPerRadialElement": 1.0,
                "qStart": 0.05,
                "qStop": 0.8,
            }
        ],
        "OverwriteFiles": True,
    }
    (root / "cal.json").write_text(json.dumps(cal))
    q = load_calibration(root / "cal.json").geometry.q_array(1)
    rng = np.random.default_rng(1)
    for i, rg in enumerate(np.linspace(3.0, 6.0, n_frames)):
        frame = rng.poisson(1000.0 * np.exp(-((q * rg) ** 2) / 3.0) + 5.0).astype(np.int32)
        tifffile.imwrite(data / f"frame_{i:04d}.tif", frame)
    if bad:
        (data / "frame_9999_garbage.tif").write_bytes(b"not a tiff at all")
    return root / "cal.json", data


def run_saxs_flow(cal: Path, data: Path, out: Path, batch_size: int = 4, workers: int = 2):
    """The SAXS flow on Prefect's thread pool (the 'threads' cluster profile); returns its state."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from photonflow.flows.saxs import saxs_flow

    flow = saxs_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    return flow(calibration=str(cal), inputs=[str(data)], output_dir=str(out), batch_size=batch_size, return_state=True)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a child process; kill it if it has not ended within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class MonitorServer:
    """``photonflow monitor ROOT... --port 0`` in its own process (as it runs beside a beamline's
    flows; matplotlib's text layout is not thread-safe, so a monitor sharing the flow's process could
    disturb the flow's own plots); its URL is read from what it prints."""

    def __init__(self, roots, token=None, interval_s=0.5, log: Path | None = None):
        self.cmd = [
            sys.executable,
            "-m",
            "photonflow.deployments.cli",
            "monitor",
            *[str(r) for r in roots],
            "--port",
            "0",
            "--interval",
            str(interval_s),
        ] + (["--token", token] if token else [])
        self.log_path = log
        self.url = None

    def __enter__(self):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (http://\S+)", line)
            if m:
                self.url = m.group(1).split("?")[0]
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("photonflow monitor did not start:\n" + "".join(lines) + self.proc.stdout.read())
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get_json("api/runs")
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"photonflow monitor at {self.url} does not answer")

    def __exit__(self, *exc):
        stop(self.proc)

    def get_json(self, path: str):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url + path.lstrip("/"), timeout=10) as r:
            return json.loads(r.read())


def chromium_binary() -> str:
    """The headless browser, or skip (fail under CI=true, where .ci/run installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "chromium not found (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class Chromium:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, binary: str, profile_dir: Path, width: int = 1400, height: int = 1000):
        from websockets.sync.client import connect

        profile_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(profile_dir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--mute-audio",
                f"--user-data-dir={profile_dir}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        port_file = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}); see {profile_dir / 'chromium.log'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        pages = []
        while time.monotonic() < deadline and not pages:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if not pages:
                time.sleep(0.1)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._id = 0
        self.console: list[str] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, timeout: float = 30.0, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(msg["params"].get("exceptionDetails", {}))[:500])
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = ""):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or expression} (last value {value!r}); "
            f"page errors: {self.console}"
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop(self.proc)
            self.log.close()
