"""The frame-classification commands of ``photonflow`` (after PADT): ``classify train|sort|sheet|ids``.

Usable without writing code: label lists in, a trained model and its evaluation out; a model and a
folder in, good/bad CrystFEL lists out; contact sheets to check labels by eye, and a command that
turns the ids read off a sheet into a label list.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

MODEL_CHOICES = ("logistic_regression", "knn", "decision_tree", "random_forest", "hist_gradient_boosting", "all")

from photonflow.deployments.cli_common import print_run_summary


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

    t = csub.add_parser("train", help="train and evaluate classifiers",
                        description="Train good/bad classifiers on labelled frames; writes model_<name>.joblib, "
                        "evaluation_<name>.json/.txt/.png (confusion matrix, classification report, accuracy) and "
                        "training_summary.json.")
    t.add_argument("--good", dest="good_lists", action="append", default=[], metavar="LIST", help="list of good events (repeatable)")
    t.add_argument("--bad", dest="bad_lists", action="append", default=[], metavar="LIST", help="list of bad events (repeatable)")
    t.add_argument("--auto", dest="auto_label_inputs", nargs="+", metavar="INPUT",
                   help="label these files automatically by profile fitting (assumes most frames are good)")
    _add_roi_options(t)
    t.add_argument("--binning", type=int, default=1, metavar="N", help="bin the ROI N x N (default 1)")
    t.add_argument("--summary", action="store_true", help="add summary features (mean, spread, percentiles, ...)")
    t.add_argument("--log", action=argparse.BooleanOptionalAction, default=True,
                   help="log-scale pixel values (default yes)")
    t.add_argument("--model", dest="models", action="append", choices=MODEL_CHOICES, metavar="NAME",
                   help=f"model to train (repeatable; {', '.join(MODEL_CHOICES)}; default random_forest)")
    t.add_argument("--split", default="70/30", metavar="TRAIN/TEST", help="train/test percentages (default 70/30)")
    t.add_argument("--grid-search", action="store_true", help="cross-validated grid search of each model's parameters")
    t.add_argument("--reject-bad", dest="bad_rejected_target", type=float, metavar="FRACTION",
                   help="operating point: threshold on p(good) chosen (out-of-fold, on the training part) to reject "
                   "this fraction of bad frames, e.g. 0.98 (default: the model's own 0.5 rule)")
    t.add_argument("--autolabel-order", type=int, default=4, metavar="N",
                   help="with --auto: polynomial order of the profile fit (default 4)")
    t.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    t.add_argument("--out", dest="output_dir", required=True, metavar="DIR", help="output directory")
    _add_run_options(t)
    t.set_defaults(func=cmd_train)

    s = csub.add_parser("sort", help="sort frames with a trained model",
                        description="Sort frames into good.lst and bad.lst (CrystFEL lists) with a model from "
                        "'photonflow classify train'; also frames.csv and per_file.csv (good/bad per file). Frames "
                        "whose shape or ROI does not fit the model are refused, naming the file.")
    s.add_argument("model", metavar="MODEL", help="model_<name>.joblib from 'classify train'")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or file.cxi:START-STOP")
    s.add_argument("--out", dest="output_dir", required=True, metavar="DIR", help="output directory")
    _add_run_options(s, batch_default=2000)
    s.set_defaults(func=cmd_sort)

    h = csub.add_parser("sheet", help="contact sheets to check labels by eye",
                        description="PNG contact sheets: numbered thumbnails of frames (log scale) with the ROI box "
                        "and the ROI's column profile with its polynomial fit; coloured by label when lists are "
                        "given (green good, red bad). ids.lst beside the sheets maps each number to its event, for "
                        "'photonflow classify ids'.")
    h.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or file.cxi:START-STOP")
    _add_roi_options(h)
    h.add_argument("--good", action="append", default=[], metavar="LIST", help="good list to colour by")
    h.add_argument("--bad", action="append", default=[], metavar="LIST", help="bad list to colour by")
    h.add_argument("--order", type=int, default=4, metavar="N", help="profile polynomial order (default 4)")
    h.add_argument("--max-frames", type=int, default=200, metavar="N", help="frames on the sheets (default 200)")
    h.add_argument("--out", required=True, metavar="DIR", help="output directory")
    h.set_defaults(func=cmd_sheet)

    i = csub.add_parser("ids", help="write a label list from ids read off a contact sheet",
                        description="Write a label list (path //event per line) from the ids shown on contact sheets "
                        "(numbers into ids.lst), or from 'path //event' strings.")
    i.add_argument("ids", nargs="+", metavar="ID", help="ids (e.g. 3 17 42, or 3,17,42, or ranges 10-20)")
    i.add_argument("--from", dest="candidates", required=True, metavar="IDS.lst", help="ids.lst written by 'classify sheet'")
    i.add_argument("--out", required=True, metavar="LIST", help="label list to write")
    i.add_argument("--append", action="store_true", help="add to an existing list instead of replacing it")
    i.set_defaults(func=cmd_ids)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_roi_options(p) -> None:
    p.add_argument("--geometry", metavar="GEOM", help="CrystFEL geometry naming the ROI panel")
    p.add_argument("--panel", metavar="NAME", help="ROI: this panel of --geometry")
    p.add_argument("--box", type=int, nargs=4, metavar=("SS0", "SS1", "FS0", "FS1"),
                   help="ROI: slab pixel box, half-open [SS0, SS1) x [FS0, FS1)")


def _add_run_options(p, batch_default: int = 1000) -> None:
    p.add_argument("--batch-size", type=int, default=batch_default, metavar="N",
                   help=f"events per task (default {batch_default})")
    p.add_argument("--cluster", default="local", metavar="PROFILE",
                   help="cluster profile: local (default), threads, slurm, address, or a profile JSON path")
    p.add_argument("--dataset", metavar="PATH", help="HDF5 dataset of the frames (default: found automatically)")


def _check_roi(args) -> None:
    from photonflow.deployments.cli_common import UsageError

    if (args.panel is None) == (args.box is None):
        raise UsageError("give the ROI as --geometry G --panel NAME or as --box SS0 SS1 FS0 FS1")
    if args.panel is not None and not args.geometry:
        raise UsageError(f"--panel {args.panel} needs --geometry (the .geom file that names it)")
    if args.geometry and not Path(args.geometry).is_file():
        raise FileNotFoundError(f"{args.geometry}: geometry file not found")


def _run(flow_fn, kwargs: dict, cluster: str):
    from photonflow.deployments.cli_common import run_on_profile
    from photonflow.deployments.clusters import load_cluster_profile

    return run_on_profile(flow_fn, kwargs, load_cluster_profile(cluster))


def _print_failures(failures) -> None:
    from photonflow.deployments.cli_common import print_failures

    print_failures(failures, "the summary JSON")


def cmd_train(args: argparse.Namespace) -> int:
    from photonflow.deployments.cli_common import UsageError
    from photonflow.flows.classify import classify_train_flow
    from photonflow.classify.models import parse_split

    _check_roi(args)
    if args.auto_label_inputs and (args.good_lists or args.bad_lists):
        raise UsageError("give --good/--bad lists or --auto, not both")
    if not args.auto_label_inputs and not (args.good_lists and args.bad_lists):
        raise UsageError("training needs --good and --bad lists (or --auto FILES)")
    for path in args.good_lists + args.bad_lists:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: label list not found")
    try:
        parse_split(args.split)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    models = args.models or ["random_forest"]
    kwargs = dict(output_dir=str(Path(args.output_dir).resolve()), good_lists=[str(Path(p).resolve()) for p in args.good_lists] or None,
                  bad_lists=[str(Path(p).resolve()) for p in args.bad_lists] or None,
                  auto_label_inputs=[str(Path(p).resolve()) for p in args.auto_label_inputs] if args.auto_label_inputs else None,
                  geometry=str(Path(args.geometry).resolve()) if args.geometry else None, panel=args.panel,
                  box=list(args.box) if args.box else None, binning=args.binning, summary=args.summary, log=args.log,
                  models="all" if "all" in models else models, split=args.split, grid_search=args.grid_search,
                  seed=args.seed, batch_size=args.batch_size, dataset=args.dataset,
                  bad_rejected_target=args.bad_rejected_target, autolabel_order=args.autolabel_order)
    summary = _run(classify_train_flow, kwargs, args.cluster)
    print(f"\n{summary['events_with_features']} frames ({summary['good']} good, {summary['bad']} bad), split "
          f"{summary['split']}:")
    for name, r in summary["models"].items():
        print(f"  {name:24s} accuracy {r['accuracy']:.3f}  good kept {r['good_kept']:.3f}  bad rejected "
              f"{r['bad_rejected']:.3f}  ({r['n_test']} test frames)  model: {r['model']}")
    print_run_summary(summary)
    return 1 if summary["failures"] else 0


def cmd_sort(args: argparse.Namespace) -> int:
    from photonflow.flows.classify import classify_sort_flow

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"{args.model}: model file not found")
    from photonflow.deployments.cli_common import expand_inputs

    inputs = expand_inputs([str(Path(p).resolve()) if Path(p).exists() else p for p in args.inputs])
    summary = _run(classify_sort_flow, dict(model=str(Path(args.model).resolve()), inputs=inputs,
                                            output_dir=str(Path(args.output_dir).resolve()), batch_size=args.batch_size,
                                            dataset=args.dataset), args.cluster)
    return print_run_summary(summary)


def cmd_sheet(args: argparse.Namespace) -> int:
    from photonflow.flows.classify import make_recipe
    from photonflow.classify.autolabel import column_profile, fit_profiles
    from photonflow.classify.features import read_roi
    from photonflow.classify.labels import load_labels, write_label_list
    from photonflow.classify.sheets import contact_sheet
    import numpy as np

    from photonflow.io import iter_frame_refs, read_frame

    _check_roi(args)
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
    paths = contact_sheet(np.stack(frames), out / "sheet.png", roi=recipe.roi, labels=labels, fits=fits,
                          ids=list(range(len(refs))))
    write_label_list(out / "ids.lst", refs)
    for p in paths if isinstance(paths, list) else [paths]:
        print(p)
    print(f"ids: {out / 'ids.lst'} (line N = id N)")
    return 0


def cmd_ids(args: argparse.Namespace) -> int:
    from photonflow.deployments.cli_common import UsageError
    from photonflow.classify.labels import labels_from_ids, read_label_list, write_label_list

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
