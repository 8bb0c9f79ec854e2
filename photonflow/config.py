"""Configuration files: read JSON, validate against the JSON Schemas in ``config/schemas``.

Pure module (json + jsonschema only; no Prefect, no Dask), usable from a notebook::

    from photonflow.config import load_json_config, ConfigError
    cal = load_json_config("calib.json", "saxsdog_calibration")

Every schema lives in ``config/schemas/<name>.schema.json`` (JSON Schema Draft 2020-12).
Validation reports *all* errors at once, sorted by field path, each naming the file and
the field in dotted/indexed form::

    calib.json: Geometry.Tilt.TiltAngleDeg: 'abc' is not of type 'number'
    calib.json: Masks[0].Oversampling: 0 is less than the minimum of 1

After validation the schema's ``default`` values are filled in for absent fields, so the
returned dict is complete (e.g. ``OverwriteFiles`` is always present in a calibration).
"""

from __future__ import annotations

import copy
import errno
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
from jsonschema import Draft202012Validator

from photonflow.errors import InputError

__all__ = [
    "CONFIG_DIR",
    "DATA_ENV",
    "resource_path",
    "shared_data_dir",
    "SCHEMA_DIR",
    "ConfigError",
    "available_schemas",
    "guess_schema",
    "load_json",
    "load_json_config",
    "load_schema",
    "path_fields",
    "resolve_path_fields",
    "schema_path",
    "validate_config",
]


def _resource_dir() -> Path:
    """The folder of the package ``photonflow.resources``: ``config/`` of a checkout, or its copy
    inside an installed wheel."""
    from importlib.resources import files

    return Path(str(files("photonflow.resources")))


#: photonflow's resources (schemas, examples, cluster profiles, geometries): ``config/`` of the
#: checkout, installed as the package ``photonflow.resources``.
CONFIG_DIR: Path = _resource_dir()
#: Environment variable naming where the real demo and test data live.
DATA_ENV = "PHOTONFLOW_DATA"


def shared_data_dir() -> Path:
    """Real detector data: ``$PHOTONFLOW_DATA`` if set, else ``../shared/data`` beside the checkout
    (for an installed package: beside the working directory)."""
    import os

    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout.parent / "shared" / "data"
    return Path.cwd().parent / "shared" / "data"


def resource_path(path: str | Path) -> Path:
    """A path as the user gave it, or, when it names one of photonflow's resources as
    ``config/...`` (e.g. ``config/geometry/sim1920.geom``) and is not a file here, that resource."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and p.parts and p.parts[0] == "config":
        return CONFIG_DIR.joinpath(*p.parts[1:])
    return p


SCHEMA_DIR: Path = CONFIG_DIR / "schemas"


class ConfigError(InputError):
    """A configuration file or dict is unreadable or does not match its schema.

    ``str(err)`` is ready to print: one line per problem, ``<source>: <field>: <reason>``.
    ``err.source`` is the file (or ``"<dict>"``), ``err.errors`` the list of
    ``(field_path, reason)`` pairs (field_path ``""`` for a problem with the whole file).
    """

    def __init__(self, source: str, errors: Iterable[tuple[str, str]]):
        self.source = str(source)
        self.errors = list(errors)
        lines = []
        for path, reason in self.errors:
            lines.append(f"{self.source}: {path}: {reason}" if path else f"{self.source}: {reason}")
        super().__init__("\n".join(lines) if lines else f"{self.source}: invalid configuration")


# --------------------------------------------------------------------------- schemas


def available_schemas() -> list[str]:
    """Names of the schemas in ``config/schemas`` (``saxs_run``, ``cluster_profile``, ...)."""
    return sorted(p.name[: -len(".schema.json")] for p in SCHEMA_DIR.glob("*.schema.json"))


def schema_path(schema_name: str) -> Path:
    """``config/schemas/<schema_name>.schema.json``; ConfigError if there is no such schema."""
    path = SCHEMA_DIR / f"{schema_name}.schema.json"
    if not path.is_file():
        raise ConfigError(
            str(schema_name),
            [("", f"unknown schema {schema_name!r}; available: {', '.join(available_schemas())}")],
        )
    return path


_SCHEMA_CACHE: dict[str, tuple[float, dict]] = {}


def load_schema(schema_name: str) -> dict:
    """The parsed schema ``schema_name`` (cached; re-read when the file changes)."""
    path = schema_path(schema_name)
    mtime = path.stat().st_mtime
    cached = _SCHEMA_CACHE.get(schema_name)
    if cached is None or cached[0] != mtime:
        schema = load_json(path)
        if schema.get("x-compose") == "operations":
            schema = _compose_operations(schema)
        elif schema.get("x-compose") == "live-operations":
            schema = _compose_live_operations(schema)
        Draft202012Validator.check_schema(schema)
        _SCHEMA_CACHE[schema_name] = (mtime, schema)
        return schema
    return cached[1]


#: Run-file fields a watch takes from the watch itself (its directories and output), not a section.
_WATCH_OWN = ("$schema", "inputs", "output_dir", "batch_size", "cluster")


def path_fields(schema: str | dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """The fields a schema marks ``"x-path": true`` (file paths), nested ones too, as key tuples
    (``("peaknet", "checkpoint")``); ``schema`` is a name or a parsed schema."""
    schema = load_schema(schema) if isinstance(schema, str) else schema
    out: list[tuple[str, ...]] = []
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if prop.get("x-path"):
            out.append(prefix + (key,))
        out += path_fields(prop, prefix + (key,))
    return out


def resolve_path_fields(data: dict, schema: str | dict, resolve: Callable[[str], str]) -> dict:
    """A copy of ``data`` with ``resolve`` applied to every file path the schema marks (a string, or
    each string of a list); other fields and absent ones are left as they are."""
    out = copy.deepcopy(data)
    for keys in path_fields(schema):
        holder = out
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        value = holder.get(keys[-1])
        if isinstance(value, str) and value:
            holder[keys[-1]] = resolve(value)
        elif isinstance(value, list):
            holder[keys[-1]] = [resolve(v) if isinstance(v, str) and v else v for v in value]
    return out


def _compose_live_operations(schema: dict) -> dict:
    """The watch schema: ``operation`` names a live operation of the registry; each live operation
    besides saxs (whose fields are the watch's top-level fields) gets a section of its run-file
    fields, as the run schema declares them."""
    from .operations import OPERATIONS, live_names

    schema = copy.deepcopy(schema)
    schema["properties"]["operation"]["enum"] = live_names()
    for op in OPERATIONS.values():
        if not op.live or op.name == "saxs":
            continue
        run = load_schema(op.schema)
        fields = {k: v for k, v in run.get("properties", {}).items() if k not in _WATCH_OWN}
        section = {
            "description": f"Operation '{op.name}': {op.title}, the fields of config/schemas/{op.schema}.schema.json "
            "(without inputs, output_dir, batch_size and cluster, which the watch sets).",
            "type": "object",
            "additionalProperties": False,
            "patternProperties": {"^_": {"description": "Comment."}},
            "properties": fields,
        }
        required = [k for k in run.get("required", ()) if k not in _WATCH_OWN]
        if required:
            section["required"] = required
        schema["properties"][op.serve_key] = section
    return schema


def _compose_operations(schema: dict) -> dict:
    """The serve schema: one section per operation of the registry, made of the operation's
    run-file fields (none required: a deployment's defaults may leave any out) and the deployment
    fields of ``$defs.deployment``; ``live`` for the watch."""
    from .operations import OPERATIONS

    schema = copy.deepcopy(schema)
    deployment = schema["$defs"]["deployment"]["properties"]
    for op in OPERATIONS.values():
        run = load_schema(op.schema)
        fields = {k: v for k, v in run.get("properties", {}).items() if k != "$schema"}
        schema["properties"][op.serve_key] = {
            "description": f"The '{op.name}/{op.name}' deployment ({op.flow}): {op.title}; the fields of "
            f"config/schemas/{op.schema}.schema.json and the deployment fields.",
            "type": ["object", "null"],
            "additionalProperties": False,
            "patternProperties": {"^_": {"description": "Comment."}},
            "properties": {**fields, **deployment},
        }
    schema["properties"]["live"] = schema["$defs"]["live"]
    return schema


# --------------------------------------------------------------------------- loading


def load_json(path: str | Path) -> Any:
    """Parse a JSON file. FileNotFoundError if absent; ConfigError naming file, line and
    column on a syntax error (or a file that is not UTF-8 text)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "configuration file not found", str(path)) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [("", "is a directory, not a JSON file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            str(path), [("", f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}")]
        ) from None


def load_json_config(path: str | Path, schema_name: str) -> dict:
    """Read the JSON file ``path``, validate it against ``config/schemas/<schema_name>.schema.json``
    and return it with the schema defaults filled in.

    Raises FileNotFoundError (file absent) or ConfigError (JSON syntax error with line and
    column; or every schema violation, sorted by field path, each naming the field).
    """
    data = load_json(path)
    return validate_config(data, schema_name, source=str(path))


def validate_config(data: Any, schema_name: str, source: str = "<dict>") -> dict:
    """Validate ``data`` against the schema ``schema_name``; return a deep copy with the
    schema defaults filled in. ConfigError (naming ``source`` and each field) on errors.

    Besides the schema, a few cross-field rules that JSON Schema cannot express are checked
    (q_range ordered, slice mask references existing, SLURM profile has jobs or adaptive).
    """
    schema = load_schema(schema_name)
    validator = Draft202012Validator(schema)
    errors = sorted(
        (_describe(err) for err in validator.iter_errors(data)),
        key=lambda e: (_sort_key(e[0]), e[1]),
    )
    errors = _dedupe(errors)
    if errors:
        raise ConfigError(source, errors)
    result = copy.deepcopy(data)
    _apply_defaults(result, schema, schema)
    check = _EXTRA_CHECKS.get(schema_name)
    if check is not None:
        extra = sorted(check(result), key=lambda e: (_sort_key(e[0]), e[1]))
        if extra:
            raise ConfigError(source, extra)
    return result


def guess_schema(data: Any) -> str | None:
    """Best guess of which schema a parsed config follows (for ``photonflow validate`` without
    ``--schema``): an explicit ``"$schema"`` naming one of ours wins, then tell-tale keys."""
    if not isinstance(data, dict):
        return None
    declared = data.get("$schema")
    if isinstance(declared, str):
        for name in available_schemas():
            if name in declared:
                return name
    keys = {k for k in data if isinstance(k, str) and not k.startswith("_") and k != "$schema"}
    if not keys:
        return None
    best, best_score = None, (False, 0.0)
    for name in _schema_order():
        schema = load_schema(name)
        props = set(schema.get("properties", {}))
        overlap = len(keys & props) / len(keys)
        if overlap == 0:
            continue
        score = (set(schema.get("required", ())) <= keys, overlap)
        if score > best_score:  # ties keep the earlier schema
            best, best_score = name, score
    return best


def _schema_order() -> list[str]:
    """Schemas in the order :func:`guess_schema` prefers on a tie: the calibration and cluster
    profiles, the operations' run files in the registry's order, then the rest."""
    from .operations import OPERATIONS

    first = ["saxsdog_calibration", "cluster_profile"] + [op.schema for op in OPERATIONS.values()]
    present = available_schemas()
    return [n for n in first if n in present] + [n for n in present if n not in first]


# --------------------------------------------------------------------------- error text


def format_path(parts: Iterable[Any]) -> str:
    """``['Masks', 0, 'Oversampling']`` -> ``'Masks[0].Oversampling'``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _describe(err: jsonschema.ValidationError) -> tuple[str, str]:
    """(field path, reason) for one jsonschema error, phrased for a beamline user."""
    path = format_path(err.absolute_path)
    validator = err.validator
    if validator == "required":
        # jsonschema reports a missing key at the parent; name the missing field itself.
        missing = _quoted_name(err.message)
        if missing is not None:
            return _join(path, missing), "required field is missing"
    if validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        patterns = list(err.schema.get("patternProperties", {}))
        extras = [k for k in err.instance if k not in allowed and not any(re.search(p, k) for p in patterns)]
        if extras:
            known = ", ".join(sorted(allowed))
            first = extras[0]
            more = f" (also: {', '.join(extras[1:])})" if len(extras) > 1 else ""
            return _join(path, first), f"unknown field{more}; allowed here: {known}"
    if validator in ("anyOf", "oneOf") and err.context:
        # e.g. Directory: string or array of strings -> say what was expected.
        types = []
        for sub in err.schema.get(validator, []):
            t = sub.get("type")
            if isinstance(t, str):
                types.append(
                    "array of " + sub["items"]["type"] + "s" if t == "array" and "type" in sub.get("items", {}) else t
                )
        if types:
            return path, f"{err.instance!r} is not valid: expected {' or '.join(types)}"
    if validator == "enum":
        options = ", ".join(repr(v) for v in err.validator_value)
        return path, f"{err.instance!r} is not one of {options}"
    if validator == "const":
        return path, f"{err.instance!r} must be {err.validator_value!r}"
    return path, err.message


def _quoted_name(message: str) -> str | None:
    # "'DedectorDistanceMM' is a required property"
    if message.startswith("'") and "' is a required property" in message:
        return message[1 : message.index("' is a required property")]
    return None


def _sort_key(path: str) -> list:
    """Sort 'Masks[10]' after 'Masks[2]': split into name and integer parts."""
    key: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        key.append((0, int(index), "") if index else (1, 0, name))
    return key


def _dedupe(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen = set()
    out = []
    for e in errors:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


# --------------------------------------------------------------------------- defaults


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    while isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **merged}
        ref = target.get("$ref") if "$ref" not in merged else None
    return schema


def _applicable(schema: dict, instance: Any, root: dict) -> list[dict]:
    """The subschemas whose defaults apply to ``instance``: the schema itself, its
    ``allOf`` parts, the matching ``if``/``then``/``else`` branch, and the first valid
    ``anyOf``/``oneOf`` alternative."""
    schema = _resolve(schema, root)
    out = [schema]
    for sub in schema.get("allOf", []):
        out.extend(_applicable(sub, instance, root))
    if "if" in schema:
        cond = Draft202012Validator({**_resolve(schema["if"], root), "$defs": root.get("$defs", {})})
        branch = schema.get("then") if cond.is_valid(instance) else schema.get("else")
        if branch is not None:
            out.extend(_applicable(branch, instance, root))
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            full = {**_resolve(sub, root), "$defs": root.get("$defs", {})}
            if Draft202012Validator(full).is_valid(instance):
                out.extend(_applicable(sub, instance, root))
                break
    return out


def _apply_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill absent object properties that have a ``default``, recursively (in place)."""
    for sub in _applicable(schema, instance, root):
        if isinstance(instance, dict):
            for key, prop in sub.get("properties", {}).items():
                prop_r = _resolve(prop, root)
                if key not in instance and "default" in prop_r:
                    instance[key] = copy.deepcopy(prop_r["default"])
                if key in instance:
                    _apply_defaults(instance[key], prop, root)
        elif isinstance(instance, list):
            items = sub.get("items")
            if isinstance(items, dict):
                for item in instance:
                    _apply_defaults(item, items, root)
            for item, item_schema in zip(instance, sub.get("prefixItems", [])):
                _apply_defaults(item, item_schema, root)


# --------------------------------------------------------------------------- cross-field rules


def _check_saxsdog_calibration(cal: dict) -> list[tuple[str, str]]:
    errors = []
    masks = cal.get("Masks", [])
    for i, mask in enumerate(masks):
        if "qStart" in mask and "qStop" in mask and mask["qStart"] > mask["qStop"]:
            errors.append((f"Masks[{i}].qStop", f"{mask['qStop']} is below qStart ({mask['qStart']})"))
    for i, sl in enumerate(cal.get("Slices", []) or []):
        ref = sl.get("MaskRef", 0)
        if ref >= len(masks):
            errors.append(
                (
                    f"Slices[{i}].MaskRef",
                    f"{ref} refers to no mask: Masks has {len(masks)} entr{'y' if len(masks) == 1 else 'ies'} (use -1 for no mask)",
                )
            )
    return errors


def _check_saxs_run(run: dict) -> list[tuple[str, str]]:
    errors = []
    q = run.get("q_range")
    if q is not None and not q[0] < q[1]:
        errors.append(("q_range", f"minimum {q[0]} must be below maximum {q[1]}"))
    return errors


def _check_cluster_profile(profile: dict) -> list[tuple[str, str]]:
    errors = []
    if profile.get("kind") == "slurm":
        has_jobs, has_adaptive = "jobs" in profile, "adaptive" in profile
        if has_jobs and has_adaptive:
            errors.append(("jobs", "give either 'jobs' (a fixed number of SLURM jobs) or 'adaptive', not both"))
        elif not has_jobs and not has_adaptive:
            errors.append(
                (
                    "jobs",
                    "required: 'jobs' (a fixed number of SLURM jobs) or 'adaptive' {minimum_jobs, maximum_jobs}; without either no worker would start",
                )
            )
        ad = profile.get("adaptive")
        if ad and ad["minimum_jobs"] > ad["maximum_jobs"]:
            errors.append(
                ("adaptive.minimum_jobs", f"{ad['minimum_jobs']} exceeds maximum_jobs ({ad['maximum_jobs']})")
            )
    return errors


def _check_sfx_run(run: dict) -> list[tuple[str, str]]:
    """The hit bounds in order (the sfx run file, and the watch's sfx section)."""
    lo, hi = run.get("min_peaks"), run.get("max_peaks")
    if lo is not None and hi is not None and lo > hi:
        return [("max_peaks", f"{hi} is below min_peaks ({lo})")]
    return []


def _check_laue_run(run: dict) -> list[tuple[str, str]]:
    """The rotated model is the numpy one on the sampled profile (the laue run file, the watch's section)."""
    if run.get("rotated") and (run.get("pixel_integrated") or run.get("backend") == "torch"):
        return [
            (
                "rotated",
                "the rotated model needs the numpy backend and the sampled profile "
                "(pixel_integrated and backend torch are axis-aligned only)",
            )
        ]
    return []


def watch_section_errors(cfg: dict) -> list[tuple[str, str]]:
    """A watch section for another operation than the one named (usually a missing ``"operation"``)."""
    from .operations import OPERATIONS

    operation = cfg.get("operation", "saxs") if isinstance(cfg, dict) else "saxs"
    return [
        (
            op.serve_key,
            f"parameters of operation {op.name!r}, but the operation is {operation!r} (add "
            f'"operation": "{op.name}", or remove this section)',
        )
        for op in OPERATIONS.values()
        if op.live and op.name != "saxs" and op.serve_key in cfg and op.name != operation
    ]


def _check_watch(cfg: dict) -> list[tuple[str, str]]:
    """The section of the operation the watch names (its own run file's rules) and, for SAXS, the
    fields that only a .poni calibration takes."""
    operation = cfg.get("operation", "saxs")
    errors = watch_section_errors(cfg)
    if operation == "saxs":
        if str(cfg.get("calibration", "")).lower().endswith(".json"):
            errors += [
                (
                    key,
                    "only for a pyFAI .poni calibration (a SAXSDOG calibration names its own "
                    f"{'MaskFile' if key == 'mask' else 'PolarizationCorrection'})",
                )
                for key in ("mask", "polarization_factor")
                if cfg.get(key) is not None
            ]
    else:
        from .operations import get

        check = _EXTRA_CHECKS.get(get(operation).schema)
        errors += [
            (f"{operation}.{field}", reason) for field, reason in (check(cfg.get(operation) or {}) if check else [])
        ]
    return errors


_EXTRA_CHECKS: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "saxsdog_calibration": _check_saxsdog_calibration,
    "saxs_run": _check_saxs_run,
    "sfx_run": _check_sfx_run,
    "laue_run": _check_laue_run,
    "watch": _check_watch,
    "cluster_profile": _check_cluster_profile,
}
