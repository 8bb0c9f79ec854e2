"""The frame-classification commands of ``photonflow`` (after PADT): ``classify train|sort|sheet|ids``.

Usable without writing code: label lists in, a trained model and its evaluation out; a model and a
folder in, good/bad CrystFEL lists out; contact sheets to check labels by eye, and a command that
turns the ids read off a sheet into a label list.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from photonflow.config import validate_config
from photonflow.deployments.cli.common import print_run_summary
from photonflow.deployments.cli.options import add_schema_options, flow_kwargs, run_from_args
from photonflow.operations import get as get_operation


def add_parsers(sub) -> None:
    """Register ``classify`` and its actions on the ``photonflow`` sub-command parser."""
    p = sub.add_parser(
        "classify",
        description=textwrap.dedent(
            """\
            Good/bad detector frame classification with scikit-learn, after PADT. Label frames
            (PADT/CrystFEL lists 'path //event', or automatically by profile fitting), check the
            labels on contact sheets, train and evaluate models on a region of interest (a panel of
            a CrystFEL .geom or a pixel box), and sort whole experiments into good.lst / bad.lst."""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="classify_command", metavar="ACTION", title="actions")

    t = csub.add_parser(
        "train",
        help="train and evaluate classifiers",
        description="Train good/bad classifiers on labelled frames; writes model_<name>.joblib, "
        "evaluation_<name>.json/.txt/.png (confusion matrix, classification report, accuracy) and "
        "training_summary.json.",
    )
    t.set_defaults(func=cmd_train, option_specs=add_schema_options(t, "classify_train_run"))

    s = csub.add_parser(
        "sort",
        help="sort frames with a trained model",
        description="Sort frames into good.lst and bad.lst (CrystFEL lists) with a model from "
        "'photonflow classify train'; also frames.csv and per_file.csv (good/bad per file). Frames "
        "whose shape or ROI does not fit the model are refused, naming the file.",
    )
    s.set_defaults(func=cmd_sort, option_specs=add_schema_options(s, "classify_sort_run"))

    h = csub.add_parser(
        "sheet",
        help="contact sheets to check labels by eye",
        description="PNG contact sheets: numbered thumbnails of frames (log scale) with the ROI box "
        "and the ROI's column profile with its polynomial fit; coloured by label when lists are "
        "given (green good, red bad). ids.lst beside the sheets maps each number to its event, for "
        "'photonflow classify ids'.",
    )
    h.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or file.cxi:START-STOP")
    _add_roi_options(h)
    h.add_argument("--good", action="append", default=[], metavar="LIST", help="good list to colour by")
    h.add_argument("--bad", action="append", default=[], metavar="LIST", help="bad list to colour by")
    h.add_argument("--order", type=int, default=4, metavar="N", help="profile polynomial order (default 4)")
    h.add_argument("--max-frames", type=int, default=200, metavar="N", help="frames on the sheets (default 200)")
    h.add_argument("--out", required=True, metavar="DIR", help="output directory")
    h.set_defaults(func=cmd_sheet)

    i = csub.add_parser(
        "ids",
        help="write a label list from ids read off a contact sheet",
        description="Write a label list (path //event per line) from the ids shown on contact sheets "
        "(numbers into ids.lst), or from 'path //event' strings.",
    )
    i.add_argument("ids", nargs="+", metavar="ID", help="ids (e.g. 3 17 42, or 3,17,42, or ranges 10-20)")
    i.add_argument(
        "--from", dest="candidates", required=True, metavar="IDS.lst", help="ids.lst written by 'classify sheet'"
    )
    i.add_argument("--out", required=True, metavar="LIST", help="label list to write")
    i.add_argument("--append", action="store_true", help="add to an existing list instead of replacing it")
    i.set_defaults(func=cmd_ids)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_roi_options(p) -> None:
    p.add_argument("--geometry", metavar="GEOM", help="CrystFEL geometry naming the ROI panel")
    p.add_argument("--panel", metavar="NAME", help="ROI: this panel of --geometry")
    p.add_argument(
        "--box",
        type=int,
        nargs=4,
        metavar=("SS0", "SS1", "FS0", "FS1"),
        help="ROI: slab pixel box, half-open [SS0, SS1) x [FS0, FS1)",
    )


def _check_roi(run: dict) -> None:
    from photonflow.deployments.cli.common import UsageError

    if (run.get("panel") is None) == (run.get("box") is None):
        raise UsageError("give the ROI as --geometry G --panel NAME or as --box SS0 SS1 FS0 FS1")
    if run.get("panel") is not None and not run.get("geometry"):
        raise UsageError(f"--panel {run['panel']} needs --geometry (the .geom file that names it)")
    if run.get("geometry") and not Path(run["geometry"]).is_file():
        raise FileNotFoundError(f"{run['geometry']}: geometry file not found")


def _run(flow_fn, kwargs: dict, cluster: str):
    from photonflow.deployments.cli.common import run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile

    return run_on_profile(flow_fn, kwargs, load_cluster_profile(cluster))


def _print_failures(failures) -> None:
    from photonflow.deployments.cli.common import print_failures

    print_failures(failures, "the summary JSON")


def cmd_train(args: argparse.Namespace) -> int:
    from photonflow.classify.models import MODELS, parse_split
    from photonflow.deployments.cli.common import UsageError
    from photonflow.flows.classify import classify_train_flow

    run, source = run_from_args("classify train", "classify_train_run", args, args.option_specs)
    run = validate_config(run, "classify_train_run", source=source)
    _check_roi(run)
    good, bad, auto = run.get("good_lists") or [], run.get("bad_lists") or [], run.get("auto_label_inputs")
    if auto and (good or bad):
        raise UsageError("give --good/--bad lists or --auto, not both")
    if not auto and not (good and bad):
        raise UsageError("training needs --good and --bad lists (or --auto FILES)")
    for path in good + bad:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: label list not found")
    try:
        parse_split(run["split"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    models = run.get("models") or ["random_forest"]
    unknown = [m for m in models if m not in MODELS and m != "all"]
    if unknown:
        raise UsageError(f"--model {unknown[0]}: unknown model; choose from {', '.join([*MODELS, 'all'])}")
    kwargs = flow_kwargs(
        get_operation("classify-train"),
        run,
        models="all" if "all" in models else models,
        auto_label_inputs=[str(Path(p).resolve()) for p in auto] if auto else None,
    )
    summary = _run(classify_train_flow, kwargs, run["cluster"])
    print(
        f"\n{summary['events_with_features']} frames ({summary['good']} good, {summary['bad']} bad), split "
        f"{summary['split']}:"
    )
    for name, r in summary["models"].items():
        print(
            f"  {name:24s} accuracy {r['accuracy']:.3f}  good kept {r['good_kept']:.3f}  bad rejected "
            f"{r['bad_rejected']:.3f}  ({r['n_test']} test frames)  model: {r['model']}"
        )
    print_run_summary(summary)
    return 1 if summary["failures"] else 0


def cmd_sort(args: argparse.Namespace) -> int:
    from photonflow.deployments.cli.common import expand_inputs
    from photonflow.flows.classify import classify_sort_flow

    run, source = run_from_args("classify sort", "classify_sort_run", args, args.option_specs)
    run = validate_config(run, "classify_sort_run", source=source)
    if not Path(run["model"]).is_file():
        raise FileNotFoundError(f"{run['model']}: model file not found")
    kwargs = flow_kwargs(get_operation("classify-sort"), run, inputs=expand_inputs(run["inputs"]))
    return print_run_summary(_run(classify_sort_flow, kwargs, run["cluster"]))


def cmd_sheet(args: argparse.Namespace) -> int:
    import numpy as np

    from photonflow.classify.autolabel import column_profile, fit_profiles
    from photonflow.classify.features import read_roi
    from photonflow.classify.labels import load_labels, write_label_list
    from photonflow.classify.sheets import contact_sheet
    from photonflow.flows.classify import make_recipe
    from photonflow.io import iter_frame_refs, read_frame

    _check_roi(vars(args))
    recipe = make_recipe(args.geometry, args.panel, args.box, 1, False)
    refs = [(r.path, r.event) for r in iter_frame_refs(list(args.inputs))][: args.max_frames]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, rois = [], []
    for path, event in refs:
        frames.append(read_frame(path, event))
        rois.append(read_roi(path, None if event is None else [event], recipe.roi)[0])
    labels = None
    if args.good or args.bad:
        ls = load_labels(args.good, args.bad)
        known = {r: int(lab) for r, lab in zip(ls.refs, ls.labels)}
        labels = [known.get(r) for r in refs]
    fits = fit_profiles(column_profile(np.stack(rois)), order=args.order)
    paths = contact_sheet(
        np.stack(frames), out / "sheet.png", roi=recipe.roi, labels=labels, fits=fits, ids=list(range(len(refs)))
    )
    write_label_list(out / "ids.lst", refs)
    for p in paths if isinstance(paths, list) else [paths]:
        print(p)
    print(f"ids: {out / 'ids.lst'} (line N = id N)")
    return 0


def cmd_ids(args: argparse.Namespace) -> int:
    from photonflow.classify.labels import labels_from_ids, read_label_list, write_label_list
    from photonflow.deployments.cli.common import UsageError

    ids: list = []
    for item in args.ids:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part and part.replace("-", "").isdigit():
                lo, hi = (int(v) for v in part.split("-"))
                ids += list(range(lo, hi + 1))
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise UsageError(f"{part!r} is not an id (a number or a range like 10-20)")
    candidates = read_label_list(args.candidates)
    refs = labels_from_ids(ids, candidates)
    if args.append and Path(args.out).is_file():
        refs = read_label_list(args.out) + [r for r in refs if r not in set(read_label_list(args.out))]
    write_label_list(args.out, refs)
    print(f"{len(refs)} event(s) in {args.out}")
    return 0
