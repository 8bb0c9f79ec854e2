"""Command-line options made from an operation's run-file JSON Schema, the one place its parameters
are declared (names, types, units, defaults and help).

Every top-level field of the schema becomes an option named after it (``batch_size`` ->
``--batch-size``) with the schema's type, ``enum`` as choices, its description and default as the
help. A field's ``"x-cli"`` annotation adjusts that: ``{"flag": "--out", "metavar": "DIR"}``,
``{"positional": true}`` (``inputs`` takes ``nargs="*"``), ``{"help": "…"}``, or ``false`` (only
through ``--config RUN.json``). A field inside an object (``peakfinder8.minimum_snr``) becomes an
option only where it carries ``"x-cli"``. Fields marked ``"x-path": true`` are file paths: relative
ones are resolved against the run file that names them, or against the working directory for the
command line.

:func:`run_from_args` merges ``--config RUN.json`` with the command line (which wins, field by field,
nested ones too) and names what is missing the way the user would type it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from photonflow.config import load_schema, resolve_path_fields
from photonflow.deployments.cli.common import UsageError, absolute, absolute_input, load_run_file

__all__ = ["OptionSpec", "add_schema_options", "run_from_args", "resolve_schema_paths", "flow_kwargs"]

_TYPES = {"integer": int, "number": float, "string": str}


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option (or positional) and the run-file field it sets."""

    path: tuple[str, ...]
    dest: str
    flags: tuple[str, ...]
    metavar: Any = None

    @property
    def shown(self) -> str:
        """How the user types it: ``INPUT...`` or ``--out DIR``."""
        if not self.flags:
            return str(self.metavar)
        return f"{self.flags[0]} {self.metavar}" if isinstance(self.metavar, str) else self.flags[0]


def _type_of(prop: dict) -> tuple[str | None, bool]:
    """(JSON type, nullable) of a property."""
    kind = prop.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        return (rest[0] if len(rest) == 1 else None), "null" in kind
    return kind, False


def _help(prop: dict, cli: dict) -> str:
    text = cli.get("help") or prop.get("description", "")
    default = prop.get("default")
    if default is not None and "default" not in text.lower():
        shown = {True: "yes", False: "no"}.get(default, default) if isinstance(default, bool) else default
        text = f"{text.rstrip('.')} (default {shown})" if text else f"default {shown}"
    return text.replace("%", "%%")


def _add(parser, name: str, path: tuple[str, ...], prop: dict, cli: dict) -> OptionSpec | None:
    kind, _ = _type_of(prop)
    if kind is None and "enum" in prop and all(isinstance(v, str) or v is None for v in prop["enum"]):
        kind = "string"
    dest = "__".join(path)
    positional = bool(cli.get("positional"))
    flags = () if positional else tuple(cli.get("flags") or [cli.get("flag") or "--" + name.replace("_", "-")])
    kwargs: dict[str, Any] = {"help": _help(prop, cli)}
    metavar = cli.get("metavar")
    if kind == "boolean":
        kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        metavar = None
    elif kind in _TYPES:
        kwargs["type"] = _TYPES[kind]
        if "enum" in prop:
            kwargs["choices"] = [v for v in prop["enum"] if v is not None]
        metavar = metavar or (None if "choices" in kwargs else name.upper())
    elif kind == "array":
        item_kind, _ = _type_of(prop.get("items", {}))
        if item_kind not in _TYPES:
            return None  # arrays of objects: only through --config
        kwargs["type"] = _TYPES[item_kind]
        n = prop.get("minItems") if prop.get("minItems") == prop.get("maxItems") else None
        if cli.get("append"):  # repeatable: --good a.lst --good b.lst
            kwargs["action"] = "append"
        else:
            kwargs["nargs"] = n or ("*" if positional else "+")
        if isinstance(metavar, list):
            metavar = tuple(metavar)
        metavar = metavar or name.upper()
    else:
        return None  # objects and mixed types: their x-cli fields, or --config
    if metavar is not None:
        kwargs["metavar"] = metavar
    if positional:
        if kwargs.get("nargs") is None:
            kwargs["nargs"] = "?"
        parser.add_argument(dest, **kwargs)
        shown = f"{metavar}..." if kwargs["nargs"] in ("*", "+") else metavar
        return OptionSpec(path, dest, (), shown)
    parser.add_argument(*flags, dest=dest, **kwargs)
    return OptionSpec(path, dest, flags, metavar)


def add_schema_options(parser: argparse.ArgumentParser, schema_name: str) -> list[OptionSpec]:
    """Add the schema's options to ``parser`` (positionals first, in the schema's order); return them."""
    schema = load_schema(schema_name)
    props = {k: v for k, v in schema.get("properties", {}).items() if k != "$schema" and isinstance(v, dict)}
    specs: list[OptionSpec] = []
    ordered = sorted(
        props.items(), key=lambda kv: not (isinstance(kv[1].get("x-cli"), dict) and kv[1]["x-cli"].get("positional"))
    )
    for name, prop in ordered:
        cli = prop.get("x-cli", {})
        if cli is False:
            continue
        spec = _add(parser, name, (name,), prop, cli if isinstance(cli, dict) else {})
        if spec is not None:
            specs.append(spec)
        for sub, sub_prop in (prop.get("properties") or {}).items():  # nested fields that ask for an option
            sub_cli = sub_prop.get("x-cli") if isinstance(sub_prop, dict) else None
            if isinstance(sub_cli, dict):
                spec = _add(parser, sub, (name, sub), sub_prop, sub_cli)
                if spec is not None:
                    specs.append(spec)
    parser.add_argument(
        "--config",
        metavar="RUN.json",
        help=f"run file ({schema_name} schema, config/schemas/{schema_name}.schema.json); the "
        "options given here override its fields",
    )
    return specs


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = data.get(key)
        if not isinstance(node, dict):
            node = data[key] = {}
        data = node
    data[path[-1]] = value


def _get(data: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def resolve_schema_paths(data: dict, base: Path, schema_name: str) -> dict:
    """Relative paths of a run dict made absolute against ``base``: the schema's ``x-path`` fields
    (nested ones too), ``inputs`` (keeping a ``:START-STOP`` event range) and a cluster profile
    given as a file (a profile given by name stays a name)."""
    out = resolve_path_fields(data, schema_name, lambda p: str(absolute(p, base)))
    if isinstance(out.get("inputs"), list):
        out["inputs"] = [absolute_input(i, base) if isinstance(i, str) and i else i for i in out["inputs"]]
    cluster = out.get("cluster")
    if isinstance(cluster, str) and (cluster.endswith(".json") or "/" in cluster):
        out["cluster"] = str(absolute(cluster, base))
    return out


def cli_values(args: argparse.Namespace, specs: list[OptionSpec]) -> dict:
    """The fields given on the command line, as a (nested) run dict."""
    given: dict = {}
    for spec in specs:
        value = getattr(args, spec.dest, None)
        if value is None or (isinstance(value, list) and not value and not spec.flags):
            continue
        _set(given, spec.path, list(value) if isinstance(value, (list, tuple)) else value)
    return given


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_from_args(
    command: str, schema_name: str, args: argparse.Namespace, specs: list[OptionSpec], extra: dict | None = None
) -> tuple[dict, str]:
    """Merge ``--config RUN.json`` (paths relative to the file) with the command line (paths
    relative to the working directory; it wins). ``extra``: fields the command sets itself.
    Returns (run dict, source name for error messages); a UsageError names what is missing."""
    run, source = load_run_file(
        getattr(args, "config", None), lambda data, base: resolve_schema_paths(data, base, schema_name)
    )
    given = _merge(cli_values(args, specs), extra or {})
    if getattr(args, "config", None) and given:
        source = f"{args.config} + command line"
    run = _merge(run, resolve_schema_paths(given, Path.cwd(), schema_name))
    required = load_schema(schema_name).get("required", [])
    by_path = {spec.path: spec for spec in specs}
    missing = [by_path[(key,)].shown if (key,) in by_path else key for key in required if not _get(run, (key,))]
    if missing:
        raise UsageError(
            f"{command} needs {', '.join(missing)} (on the command line or in --config RUN.json); "
            f"see 'photonflow {command} --help'"
        )
    return run, source


def flow_kwargs(op, run: dict, **overrides) -> dict:
    """The flow's keyword arguments from a validated run dict: every run-file field that is a
    parameter of the operation's flow (the registry names the flow), ``overrides`` on top."""
    import inspect

    params = inspect.signature(getattr(op.load_flow(), "fn", op.load_flow())).parameters
    kwargs = {k: v for k, v in run.items() if k in params}
    kwargs.update(overrides)
    return kwargs


def add_operation_command(sub, op) -> argparse.ArgumentParser:
    """The command of an operation that brings no command-line module of its own: its options are
    its run-file fields, and it runs its flow on a cluster profile and prints the run summary."""
    import textwrap

    p = sub.add_parser(
        op.name,
        description="\n".join(textwrap.wrap(op.summary, 88))
        + (
            f"\n\nEvery option is a field of the run file (config/schemas/{op.schema}.schema.json); given here, it "
            "overrides the same field of --config RUN.json."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda args: run_operation_command(op, args), option_specs=add_schema_options(p, op.schema))
    return p


def run_operation_command(op, args: argparse.Namespace) -> int:
    """Merge, validate, run on the profile, print: the whole command of a registry operation."""
    from photonflow.config import validate_config
    from photonflow.deployments.cli.common import expand_inputs, run_and_report
    from photonflow.deployments.clusters import load_cluster_profile

    run, source = run_from_args(op.name, op.schema, args, args.option_specs)
    run = validate_config(run, op.schema, source=source)
    extra = {"inputs": expand_inputs(run["inputs"])} if run.get("inputs") else {}
    profile = load_cluster_profile(run.get("cluster", "local"))
    return run_and_report(op.load_flow(), flow_kwargs(op, run, **extra), profile, op.name)
