"""The operation registry: every operation is checked the same way, from the registry alone.

For each operation in photonflow.operations.OPERATIONS: its run-file schema loads and names exactly
the flow's parameters; its command exists and offers every field of the schema (directly, or
through --config RUN.json for nested objects); it is served as a deployment of its own name; the
monitor has its panel and reads its table; a demo is offered exactly when the registry says so;
its batch processor has the registry's interface. No operation is listed by hand here.
"""

from __future__ import annotations

import argparse
import inspect

import pytest

from photonflow.config import guess_schema, load_schema, validate_config
from photonflow.operations import OPERATIONS, UnknownOperation, get, kind_of, live_names, load_object

OPS = list(OPERATIONS.values())
#: Run-file fields that choose where a run goes rather than what it computes (not flow parameters).
RUN_ONLY = {"$schema", "cluster"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_parser(op):
    from photonflow.deployments.cli import build_parser

    parser = build_parser()
    words = op.name.replace("classify-", "classify ").split()
    for word in words:
        parser = _subparsers(parser)[word]
    return parser


def _flow_parameters(op) -> set[str]:
    flow = op.load_flow()
    return set(inspect.signature(flow.fn).parameters)


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_schema_and_flow_name_the_same_parameters(op):
    schema = load_schema(op.schema)
    fields = set(schema["properties"]) - RUN_ONLY
    params = _flow_parameters(op) - {"dry_run"}  # tomography's plan-only switch is a command-line action
    assert fields == params, f"{op.name}: schema only {sorted(fields - params)}, flow only {sorted(params - fields)}"
    assert set(schema.get("required", ())) <= fields
    required = set(schema.get("required", ()))
    if sum(set(load_schema(o.schema).get("required", ())) == required for o in OPS) == 1:  # tells it apart
        assert guess_schema({k: None for k in required}) == op.schema


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_command_offers_every_field_of_the_schema(op):
    parser = _command_parser(op)
    dests = {a.dest for a in parser._actions}
    schema = load_schema(op.schema)
    has_config = "config" in dests
    for name, prop in schema["properties"].items():
        if name == "$schema":
            continue
        nested = prop.get("type") == "object" or (isinstance(prop.get("type"), list) and "object" in prop["type"])
        if name in dests:
            continue
        if nested:  # a nested object: some of its fields as options, all through --config RUN.json
            sub = set(prop.get("properties", {}))
            assert has_config or sub & dests, f"{op.name}: {name} has no option and no --config"
            continue
        assert name in dests or (name == "inputs" and "inputs" in dests), f"{op.name}: no option for {name!r}"


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_served_as_a_deployment_of_its_name(op):
    from photonflow.deployments.serve import build_deployments

    deployments = {d.name: d for d in build_deployments({})}
    assert set(deployments) == set(OPERATIONS) | {"live"}
    assert deployments[op.name].description == op.deployment_description
    # a serve section is the operation's run-file fields plus the deployment fields
    section = {k: v for k, v in {"cron": "*/10 * * * *", "on_files_arrived": True}.items()}
    validate_config({op.serve_key: section}, "serve")
    served = build_deployments({op.serve_key: section})
    mine = next(d for d in served if d.name == op.name)
    assert mine.triggers and mine.schedules


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_monitor_has_its_panel_and_tables(op):
    from photonflow.monitor.runs import KINDS, PANELS, _panel, _tables

    assert set(op.kinds) <= set(KINDS)
    assert op.panel in PANELS + ("progress",)
    assert _panel(op.name) == op.panel and kind_of(op.name) is op
    if op.table:
        assert _tables(op.name) == (f"{op.table}.csv",)
    for kind in op.kinds[1:]:  # the live kind
        assert kind_of(kind) is op and _panel(kind) == op.panel


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_demo_offered_exactly_where_the_registry_says(op):
    from photonflow.deployments.cli import build_parser

    demo = _subparsers(build_parser())["demo"]
    which = next(a for a in demo._actions if a.dest == "which")
    assert (op.name in which.choices) == op.demo
    module = load_object(f"{op.cli}:add_parsers").__module__
    assert callable(load_object(f"{module}:cmd_demo")) if op.demo else True


@pytest.mark.parametrize("op", [op for op in OPS if op.processor], ids=[op.name for op in OPS if op.processor])
def test_processor_has_the_registry_interface(op):
    cls = op.processor_class()
    assert callable(getattr(cls, "from_options")) and callable(getattr(cls, "process"))
    assert list(inspect.signature(cls.process).parameters)[1:3] == ["refs", "batch_name"]


def test_lookups():
    assert get("classify_sort") is OPERATIONS["classify-sort"]
    assert set(live_names()) <= set(OPERATIONS)
    with pytest.raises(UnknownOperation, match="unknown operation 'xpcs'; choose from saxs"):
        get("xpcs")


def test_an_operation_without_a_command_module_gets_one_from_its_schema(tmp_path, monkeypatch):
    """What a new operation gets for free: the command, its options, the run-file merge."""
    import dataclasses
    import json

    from photonflow.config import validate_config
    from photonflow.deployments.cli.options import add_operation_command, flow_kwargs, run_from_args

    op = dataclasses.replace(OPERATIONS["laue"], name="laue-like", cli="")
    parser = argparse.ArgumentParser(prog="photonflow")
    add_operation_command(parser.add_subparsers(dest="command"), op)
    image = tmp_path / "a.tif"
    image.write_bytes(b"")
    (tmp_path / "run.json").write_text(json.dumps({"output_dir": "from-file", "search": {"boxsize": 9}}))
    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(
        ["laue-like", "a.tif", "--threshold", "300", "--batch-size", "2", "--no-snake", "--config", "run.json"]
    )
    run, source = run_from_args(op.name, op.schema, args, args.option_specs)
    assert source == "run.json + command line"
    run = validate_config(run, op.schema, source=source)
    kwargs = flow_kwargs(op, run)
    assert kwargs["inputs"] == [str(image)] and kwargs["output_dir"] == str(tmp_path / "from-file")
    assert kwargs["search"] == {"boxsize": 9, "IntensityThreshold": 300.0}  # nested fields merge
    assert kwargs["batch_size"] == 2 and kwargs["snake"] is False and "cluster" not in kwargs
    with pytest.raises(Exception, match="laue-like needs INPUT..., --out DIR"):
        run_from_args(op.name, op.schema, parser.parse_args(["laue-like"]), args.option_specs)


def test_a_flag_means_the_same_field_in_every_operation():
    """--backend is the array library everywhere, --out the output directory, …: one flag, one field
    name, across every operation's command (and one flag per field name)."""
    flag_to_field: dict[str, set[str]] = {}
    field_to_flag: dict[str, set[str]] = {}
    for op in OPS:
        for spec in _command_parser(op).get_default("option_specs"):
            for flag in spec.flags:
                flag_to_field.setdefault(flag, set()).add(spec.path[-1])
            if spec.flags:
                field_to_flag.setdefault(spec.path[-1], set()).add(spec.flags[0])
    assert {f: s for f, s in flag_to_field.items() if len(s) > 1} == {}
    assert {f: s for f, s in field_to_flag.items() if len(s) > 1} == {}
    for op in OPS:  # the array library: numpy or torch, wherever an operation has one
        for action in _command_parser(op)._actions:
            if "--backend" in action.option_strings:
                assert set(action.choices) == {"numpy", "torch"}, op.name
