"""photonflow.config: JSON loading, schema validation, error messages, defaults."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from photonflow.config import (
    CONFIG_DIR,
    ConfigError,
    available_schemas,
    guess_schema,
    load_json_config,
    load_schema,
    validate_config,
)

EXAMPLE_CAL = CONFIG_DIR / "examples" / "saxsdog_calibration_CeO2.json"
EXAMPLE_RUN = CONFIG_DIR / "examples" / "saxs_run_CeO2.json"

# A calibration as SAXSDOG itself documents and writes it (field set of its schema docs):
# no photonflow extensions, Slices with SAXSDOG's names, Directory as a list, an extra key.
SAXSDOG_NATIVE = {
    "Title": "GISAXS test",
    "Geometry": {
        "Tilt": {"TiltRotDeg": 0, "TiltAngleDeg": 0},
        "Imagesize": [1000, 900],
        "BeamCenter": [800.0, 400.0],
        "PixelSizeMicroM": [100.0],
        "DedectorDistanceMM": 1000.0,
    },
    "Wavelength": 1.54,
    "Directory": ["data", "run1"],
    "Masks": [
        {
            "MaskFile": "AAA_integ.msk",
            "Oversampling": 3,
            "PixelPerRadialElement": 1,
            "Name": "",
            "qStart": 0,
            "qStop": 0,
        },
    ],
    "Slices": [
        {"Direction": "x", "Plane": "InPlane", "CutPosition": 120, "CutMargin": 2, "IncidentAngle": 0.2, "MaskRef": 0},
        {
            "Direction": "y",
            "Plane": "Vertical",
            "CutPosition": 400,
            "CutMargin": 1,
            "IncidentAngle": 0.2,
            "MaskRef": -1,
        },
    ],
    "PolarizationCorrection": {"Fraction": 0.95, "Angle": 0.0},
    "Threads": 2,
    "SomethingSAXSDOGAdded": {"any": "thing"},
}


def _errors(data, schema="saxsdog_calibration", source="calib.json"):
    with pytest.raises(ConfigError) as info:
        validate_config(data, schema, source=source)
    return info.value


# --------------------------------------------------------------------------- valid files


def test_example_calibration_is_valid_and_matches_the_pilatus_geometry():
    cal = load_json_config(EXAMPLE_CAL, "saxsdog_calibration")
    geo = cal["Geometry"]
    # The TIFFs in ../shared/data/saxs are 1043 rows x 981 columns.
    assert geo["Imagesize"] == [1043, 981]
    assert geo["PixelSizeMicroM"][0] == 172
    assert geo["DedectorDistanceMM"] == pytest.approx(208.65, abs=0.1)
    assert cal["Wavelength"] == pytest.approx(0.4066)
    # defaults filled in
    assert cal["OverwriteFiles"] is False
    assert cal["ErrorModel"] == "poisson"
    assert cal["SolidAngleCorrection"] is False


def test_saxsdog_native_calibration_is_accepted_with_defaults():
    cal = validate_config(SAXSDOG_NATIVE, "saxsdog_calibration")
    assert cal["SomethingSAXSDOGAdded"] == {"any": "thing"}  # top level stays permissive
    assert cal["OverwriteFiles"] is False
    assert cal["Slices"][0]["CutPosition"] == 120
    assert SAXSDOG_NATIVE["Masks"][0].get("Sector") is None
    assert "OverwriteFiles" not in SAXSDOG_NATIVE  # the input is not modified


def test_defaults_fill_nested_fields():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    del cal["Geometry"]["Tilt"]
    cal["Masks"] = [{"MaskFile": "m.msk"}]
    cal["Slices"] = [{"Direction": "x", "Plane": "InPlane", "CutPosition": 5}]
    out = validate_config(cal, "saxsdog_calibration")
    assert out["Geometry"]["Tilt"] == {"TiltRotDeg": 0, "TiltAngleDeg": 0}
    # SAXSDOG's documented defaults; no qStart/qStop default: absent means the whole q range
    assert out["Masks"][0] == {"MaskFile": "m.msk", "Oversampling": 3, "PixelPerRadialElement": 1}
    assert out["Slices"][0]["CutMargin"] == 1
    assert out["Slices"][0]["MaskRef"] == 0
    assert out["Slices"][0]["IncidentAngle"] == 0


def test_comments_and_extensions_are_accepted():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["_comment"] = "top"
    cal["Geometry"]["_comment"] = "inside a strict object"
    cal["Masks"][0]["Sector"] = {"ChiStartDeg": -30, "ChiStopDeg": 30}
    cal.update(
        Dark="dark.tif",
        Flat="flat.edf",
        SolidAngleCorrection=True,
        ErrorModel="saxsdog",
        MonitorKey="Monitor",
        OverwriteFiles=True,
        Directory="/data/run1",
    )
    out = validate_config(cal, "saxsdog_calibration")
    assert out["ErrorModel"] == "saxsdog"
    assert out["OverwriteFiles"] is True


def test_example_run_and_cluster_profiles_validate():
    run = load_json_config(EXAMPLE_RUN, "saxs_run")
    assert run["batch_size"] == 200 and run["cluster"] == "local"
    minimal = validate_config({"calibration": "c.poni", "inputs": ["a.tif"], "output_dir": "o"}, "saxs_run")
    assert minimal["batch_size"] == 200
    assert minimal["cluster"] == "local"
    assert minimal["overwrite"] is None
    for path in sorted((CONFIG_DIR / "clusters").glob("*.json")):
        assert load_json_config(path, "cluster_profile")["kind"] == path.stem


# --------------------------------------------------------------------------- errors name the field


def test_wrong_type_names_the_nested_field():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Geometry"]["Tilt"]["TiltAngleDeg"] = "abc"
    err = _errors(cal)
    assert str(err) == "calib.json: Geometry.Tilt.TiltAngleDeg: 'abc' is not of type 'number'"
    assert err.errors == [("Geometry.Tilt.TiltAngleDeg", "'abc' is not of type 'number'")]


def test_minimum_in_array_item_names_the_index():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Masks"][0]["Oversampling"] = 0
    assert str(_errors(cal)) == "calib.json: Masks[0].Oversampling: 0 is less than the minimum of 1"


def test_all_errors_are_reported_sorted_by_path():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Wavelength"] = 0
    cal["Masks"].extend({"MaskFile": f"b{i}.msk"} for i in range(10))
    cal["Masks"][10]["PixelPerRadialElement"] = -1
    cal["Masks"][2] = {"MaskFile": "c.msk", "Oversampling": 2.5}
    cal["Geometry"]["Imagesize"] = [1000]
    cal["Slices"][1]["Plane"] = "Horizontal"
    err = _errors(cal)
    paths = [p for p, _ in err.errors]
    assert paths == [
        "Geometry.Imagesize",
        "Masks[2].Oversampling",
        "Masks[10].PixelPerRadialElement",
        "Slices[1].Plane",
        "Wavelength",
    ]
    lines = str(err).splitlines()
    assert len(lines) == 5 and all(line.startswith("calib.json: ") for line in lines)
    assert "'Horizontal' is not one of 'InPlane', 'Vertical'" in lines[3]


def test_missing_required_field_names_the_missing_field():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    del cal["Geometry"]["DedectorDistanceMM"]
    del cal["Wavelength"]
    err = _errors(cal)
    assert err.errors == [
        ("Geometry.DedectorDistanceMM", "required field is missing"),
        ("Wavelength", "required field is missing"),
    ]


def test_misspelt_field_inside_geometry_is_an_unknown_field():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Geometry"]["DetectorDistanceMM"] = cal["Geometry"].pop("DedectorDistanceMM")
    err = _errors(cal)
    paths = dict(err.errors)
    assert paths["Geometry.DedectorDistanceMM"] == "required field is missing"
    assert paths["Geometry.DetectorDistanceMM"].startswith("unknown field")
    assert "DedectorDistanceMM" in paths["Geometry.DetectorDistanceMM"]  # lists the allowed names


@pytest.mark.parametrize(
    "mutate, path, fragment",
    [
        (lambda c: c.update(Masks=[]), "Masks", "should be non-empty"),
        (lambda c: c["Geometry"].update(PixelSizeMicroM=[172, 172, 172]), "Geometry.PixelSizeMicroM", "too long"),
        (lambda c: c["Geometry"].update(PixelSizeMicroM=[0]), "Geometry.PixelSizeMicroM[0]", "minimum of 0"),
        (lambda c: c["Geometry"].update(Imagesize=[1043.5, 981]), "Geometry.Imagesize[0]", "not of type 'integer'"),
        (lambda c: c["Geometry"].update(BeamCenter=["a", 1]), "Geometry.BeamCenter[0]", "not of type 'number'"),
        (lambda c: c.update(Wavelength=-0.5), "Wavelength", "minimum of 0"),
        (lambda c: c.update(ErrorModel="gauss"), "ErrorModel", "'gauss' is not one of 'poisson', 'saxsdog'"),
        (lambda c: c.update(Directory=3), "Directory", "expected string or array of strings"),
        (lambda c: c["PolarizationCorrection"].update(Fraction=1.2), "PolarizationCorrection.Fraction", "maximum of 1"),
        (lambda c: c["Slices"][0].update(Direction="z"), "Slices[0].Direction", "'z' is not one of 'x', 'y'"),
        (lambda c: c["Slices"][1].update(MaskRef=-2), "Slices[1].MaskRef", "minimum of -1"),
        (lambda c: c.update(OverwriteFiles="yes"), "OverwriteFiles", "not of type 'boolean'"),
        (lambda c: c["Masks"][0].update(Sector={"ChiStartDeg": 0}), "Masks[0].Sector.ChiStopDeg", "required"),
    ],
)
def test_invalid_calibrations_name_the_field(mutate, path, fragment):
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    mutate(cal)
    err = _errors(cal)
    assert len(err.errors) == 1, err.errors
    assert err.errors[0][0] == path
    assert fragment in err.errors[0][1]


def test_cross_field_rules():
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Masks"][0].update(qStart=3.0, qStop=1.0)
    cal["Slices"][0]["MaskRef"] = 1
    err = _errors(cal)
    assert [p for p, _ in err.errors] == ["Masks[0].qStop", "Slices[0].MaskRef"]
    assert "Masks has 1 entry" in err.errors[1][1]

    run = {"calibration": "c.poni", "inputs": ["a"], "output_dir": "o", "q_range": [5, 1]}
    assert _errors(run, "saxs_run").errors[0][0] == "q_range"


def test_run_config_rejects_unknown_keys_and_bad_values():
    run = {"calibration": "c.poni", "inputs": [], "output_dir": "o", "batchsize": 10, "npt": 0}
    err = _errors(run, "saxs_run", source="run.json")
    paths = [p for p, _ in err.errors]
    assert paths == ["batchsize", "inputs", "npt"]
    assert str(err).startswith("run.json: batchsize: unknown field")


def test_root_that_is_not_an_object():
    err = _errors([1, 2], "saxs_run", source="x.json")
    assert str(err) == "x.json: [1, 2] is not of type 'object'"


# --------------------------------------------------------------------------- files


def test_json_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "calib.json"
    bad.write_text('{\n  "Wavelength": 1.0,\n  "Masks" []\n}\n')
    with pytest.raises(ConfigError) as info:
        load_json_config(bad, "saxsdog_calibration")
    msg = str(info.value)
    assert msg.startswith(f"{bad}: line 3, column 11: invalid JSON")
    assert "Expecting ':' delimiter" in msg


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_json_config(tmp_path / "absent.json", "saxsdog_calibration")
    assert "absent.json" in str(info.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="bin.json: not UTF-8"):
        load_json_config(binary, "saxsdog_calibration")


def test_load_json_config_validates_the_file(tmp_path):
    cal = copy.deepcopy(SAXSDOG_NATIVE)
    cal["Masks"][0]["Oversampling"] = 0
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(cal))
    with pytest.raises(ConfigError) as info:
        load_json_config(path, "saxsdog_calibration")
    assert str(info.value) == f"{path}: Masks[0].Oversampling: 0 is less than the minimum of 1"
    assert info.value.source == str(path)


def test_unknown_schema_lists_the_available_ones():
    with pytest.raises(
        ConfigError,
        match="unknown schema .nope.; available: classify_sort_run, classify_train_run, cluster_profile, laue_run, saxs_run",
    ):
        validate_config({}, "nope")


def test_guess_schema():
    assert guess_schema(SAXSDOG_NATIVE) == "saxsdog_calibration"
    assert guess_schema({"kind": "local"}) == "cluster_profile"
    assert guess_schema({"calibration": "c.poni"}) == "saxs_run"
    assert guess_schema({"inputs": ["a.tif"], "search": {}}) == "laue_run"
    assert guess_schema({"$schema": "../schemas/saxs_run.schema.json", "kind": "x"}) == "saxs_run"
    assert guess_schema({"foo": 1}) is None
    assert guess_schema([]) is None


# --------------------------------------------------------------------------- the schemas themselves


def _properties(schema, where=""):
    """Yield (path, subschema) of every named property in a schema, recursively."""
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            yield f"{where}.{name}", sub
        for key, value in schema.items():
            if key == "if":  # conditions (e.g. kind == "slurm") are not documented fields
                continue
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    yield from _properties(sub, f"{where}.{name}")
            elif isinstance(value, dict):
                yield from _properties(value, where)
            elif isinstance(value, list):
                for item in value:
                    yield from _properties(item, where)


@pytest.mark.parametrize("name", ["saxsdog_calibration", "saxs_run", "cluster_profile"])
def test_schemas_are_valid_and_documented(name):
    assert name in available_schemas()
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = list(_properties(schema))
    assert props
    undocumented = [p for p, sub in props if "description" not in sub and "$ref" not in sub]
    assert undocumented == []
    # every default is itself valid for its property
    for path, sub in props:
        if "default" in sub:
            resolved = {**sub, "$defs": schema.get("$defs", {})}
            assert Draft202012Validator(resolved).is_valid(sub["default"]), path


def test_config_module_is_pure():
    code = (
        "import sys, photonflow.config as c; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'dask', 'distributed', 'prefect_dask')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_path_fields_are_resolved_nested_and_in_lists_and_nothing_else():
    """One walker for the schemas' "x-path" fields (the CLI, serve and the watch use it)."""
    from photonflow.config import path_fields, resolve_path_fields

    assert ("peaknet", "checkpoint") in path_fields("sfx_run") and ("geometry",) in path_fields("sfx_run")
    assert ("finder",) not in path_fields("sfx_run")
    run = {
        "geometry": "det.geom",
        "finder": "peaknet",
        "peaknet": {"checkpoint": "m.pt", "batch_size": 4},
        "inputs": ["a.cxi"],
    }
    out = resolve_path_fields(run, "sfx_run", lambda p: "/base/" + p)
    assert out == {
        "geometry": "/base/det.geom",
        "finder": "peaknet",
        "peaknet": {"checkpoint": "/base/m.pt", "batch_size": 4},
        "inputs": ["a.cxi"],
    }
    assert run["peaknet"]["checkpoint"] == "m.pt"  # the input is left as it was
    lists = resolve_path_fields({"good_lists": ["g.lst", ""], "panel": "p0"}, "classify_train_run", lambda p: "/b/" + p)
    assert lists == {"good_lists": ["/b/g.lst", ""], "panel": "p0"}
