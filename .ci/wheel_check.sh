#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it (not editable) into a clean venv
# outside the checkout, and run photonflow from another directory, where the checkout's folders
# cannot be imported by accident. Fails if the wheel lacks a resource, installs a stray top-level
# package (tasks, flows, deployments, config), or behaves differently from the checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3.11}"
work="$(mktemp -d /tmp/photonflow-wheel.XXXXXX)"
trap 'rm -rf "$work"' EXIT

rm -rf build  # setuptools reuses build/lib: a stale module there would ship in the wheel
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation . -w "$work/dist" 2>/dev/null \
    || "$PYTHON" -m pip wheel --quiet --no-deps . -w "$work/dist"
wheel="$(ls "$work"/dist/photonflow-*.whl)"
echo "wheel: $(basename "$wheel")"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet ${PIP_FLAGS:-} "$wheel"

mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
export PREFECT_HOME="$work/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
unset PREFECT_API_URL PREFECT_API_KEY PHOTONFLOW_DATA
bin="$work/venv/bin"

# Only photonflow is installed at the top level, and every resource ships inside it.
"$bin/python" - <<'PY'
import importlib.util, json, pathlib, sys
import photonflow
site = pathlib.Path(photonflow.__file__).parent.parent
assert "site-packages" in str(site), f"photonflow imported from {site}, not the venv"
for stray in ("tasks", "flows", "deployments", "config", "benchmarks", "tests"):
    assert importlib.util.find_spec(stray) is None, f"the wheel installs a top-level package {stray!r}"
from photonflow.config import CONFIG_DIR, available_schemas, load_schema
from photonflow.operations import OPERATIONS
assert str(CONFIG_DIR).startswith(str(site)), CONFIG_DIR
for name in available_schemas():
    load_schema(name)
for sub in ("clusters", "examples", "geometry"):
    assert any((CONFIG_DIR / sub).iterdir()), f"{sub}/ missing from the wheel"
for op in OPERATIONS.values():
    op.load_flow()
import photonflow.peaks.peaknet as pn, photonflow.laue.cnn as lc, photonflow.monitor as mon
assert pathlib.Path(pn.DEFAULT_CHECKPOINT).is_file() and pathlib.Path(lc.DEFAULT_CHECKPOINT).is_file()
assert (pathlib.Path(mon.__file__).parent / "static" / "index.html").is_file()
assert (pathlib.Path(photonflow.__file__).parent / "deployments" / "slurm" / "single_node.sh").is_file()
print(f"installed: {len(available_schemas())} schemas, {len(OPERATIONS)} operations, models and pages")
PY
"$bin/photonflow" --version
"$bin/photonflow" cluster show slurm > cluster_show.txt
grep -q "#SBATCH" cluster_show.txt || { echo "cluster show slurm printed no batch script"; exit 1; }
"$bin/photonflow" validate "$("$bin/python" -c 'from photonflow.config import CONFIG_DIR; print(CONFIG_DIR / "examples" / "saxs_run_CeO2.json")')" \
    --schema saxs_run
"$bin/photonflow" demo --synthetic --frames 20 --out demo-output
test -s demo-output/integral_parameters.csv && test -s demo-output/summary.json
"$bin/python" -c "import json; s = json.load(open('demo-output/summary.json')); assert s['done'] == 20 and s['failed'] == 0, s"
echo "wheel check: OK"
