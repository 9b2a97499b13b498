"""``ibra-yolo eval``: COCO box mAP (pycocotools COCOeval) of a spiking YOLO checkpoint or of a predictions file.

Model mode (``--weights``, ``--data``) predicts with the stock Ultralytics validator; file mode (``--pred``, ``--ann``)
scores an existing ``predictions.json``. Everything goes into a results JSON (never overwritten without
``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ibra_yolo.cli.parser import ArgumentParser, run_command, unit_interval
from ibra_yolo.errors import IbraYoloError, one_line
from ibra_yolo.limits import MAX_IMGSZ

__all__ = ("build_parser", "parse_args", "main", "energy_summary")

EPILOG = """\
annotations (model mode):
  --ann FILE if given; else <path>/annotations/instances_<split source>.json of the dataset YAML
  (stock coco.yaml: instances_val2017.json; the demo dataset: instances_val.json); else one is built
  from the YOLO labels of the validated images (ibra_yolo.coco.coco_from_yolo_labels: box or polygon
  labels, image id = numeric file stem as Ultralytics writes it, category id = class index + 1, area =
  box area) and saved as instances_<split>_from_labels.json in the run folder, so any dataset can be
  scored. Model classes are matched to the file's categories by name (COCO's 80 classes -> its 91 ids),
  else by order; image ids by file name.

examples:
  ibra-yolo eval --weights best.pt --data coco.yaml
  ibra-yolo eval --weights best.pt --data demo_out/data/data.yaml --imgsz 64 --spike-driven
  ibra-yolo eval --pred predictions.json --ann instances_val2017.json --out scores.json

(python tools/eval_coco.py ... is the same command.) Errors are one line ("error: ...", exit status 2).
"""


def build_parser() -> ArgumentParser:
    """The command line of ``ibra-yolo eval``."""
    p = ArgumentParser(
        prog="ibra-yolo eval",
        description="COCO mAP@50:95 and mAP@50 (and the other 10 COCO box metrics) with pycocotools. Model mode "
        "(--weights, --data) predicts with the stock Ultralytics validator; file mode (--pred, --ann) scores an "
        "existing predictions.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint to evaluate (model mode), e.g. runs/detect/train/weights/best.pt")
    src.add_argument("--pred", help="COCO results JSON to score without a model (file mode); needs --ann")
    p.add_argument("--data", help="dataset YAML (model mode), e.g. coco.yaml or demo_out/data/data.yaml")
    p.add_argument("--ann", help="COCO annotation JSON (required with --pred; overrides the lookup in model mode)")
    p.add_argument("--split", default="val", help="dataset split to evaluate (default: val)")
    p.add_argument("--imgsz", type=int, default=640, help="inference image size in pixels (default: 640)")
    p.add_argument("--batch", type=int, default=16, help="inference batch size (default: 16)")
    p.add_argument("--conf", type=unit_interval, default=0.001, help="confidence threshold in [0, 1] (default: 0.001)")
    p.add_argument("--iou", type=unit_interval, default=0.7, help="NMS IoU threshold in [0, 1] (default: 0.7, as val)")
    p.add_argument("--device", default="", help="Ultralytics device: '' auto, 'cpu', '0', ... (default: auto)")
    p.add_argument(
        "--spike-driven",
        action="store_true",
        help="run the model spike-driven (every spike-fed conv sees only {0,1} planes) and verify it with hooks",
    )
    p.add_argument(
        "--energy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the energy / spike summary of ibra_yolo.energy in model mode (default: on)",
    )
    p.add_argument("--energy-images", type=int, default=32, help="images for the energy summary (default: 32)")
    p.add_argument(
        "--remap",
        choices=("coco80to91", "coco91to80"),
        help="file mode: convert predicted category ids between COCO's contiguous 1..80 and original 91-id schemes",
    )
    p.add_argument(
        "--project",
        help="model mode: folder for the validator's run (Ultralytics' project=: a relative "
        "one lies under Ultralytics' runs_dir/detect, as for yolo val project=)",
    )
    p.add_argument(
        "--name",
        help="model mode: run name inside --project (an existing run folder is reused when it holds none of the files "
        "this command writes; else pass --overwrite)",
    )
    p.add_argument(
        "--out",
        help="results JSON (default: coco_eval.json in the validator's run folder, or beside the --pred file)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (--out, the run's files)")
    return p


def check_args(p: ArgumentParser, args: argparse.Namespace) -> None:
    """The rules between arguments that argparse cannot state; a violation is a ``UsageError``."""
    if args.pred and not args.ann:
        p.error("--pred needs --ann (the COCO annotation file to score against)")
    if args.pred and (args.data or args.spike_driven or args.energy):
        p.error("--data, --spike-driven and --energy need a model (--weights), not --pred")
    if args.weights and not args.data:
        p.error("--weights needs --data (the dataset YAML)")
    if args.data and Path(args.data).is_dir():  # Ultralytics took it as an image source and listed video formats
        found = sorted(Path(args.data).glob("*.y*ml"))
        hint = f", e.g. --data {found[0]}" if found else ""
        p.error(f"--data {args.data} is a folder: name the dataset YAML (path, train/val and names){hint}")
    if args.weights and args.remap:
        p.error("--remap is for --pred files; in model mode category ids are matched automatically")
    for k in ("imgsz", "batch", "energy_images"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.imgsz > MAX_IMGSZ:
        p.error(f"--imgsz {args.imgsz} is invalid: at most {MAX_IMGSZ}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; raises ``UsageError`` on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def energy_summary(args: argparse.Namespace, run) -> dict | None:
    """The energy / spike summary of the evaluated model on a few validation images, or None when skipped.

    A model the energy report cannot measure (e.g. a stock Ultralytics model: no ``NeuronConv`` layers) or images it
    cannot read give a warning and ``{"error": ...}``, never the loss of the COCO metrics; any other failure is a bug
    and is raised.
    """
    if args.energy is False:  # --no-energy
        return None
    from ibra_yolo.energy import measure

    images = run.im_files[: args.energy_images]
    device = {"device": args.device} if args.device else {}
    try:
        report = measure(run.model, images, imgsz=args.imgsz, batch=args.batch, spike_driven=args.spike_driven,
                         progress=False, **device)  # fmt: skip
    except IbraYoloError as e:
        print(f"warning: energy summary skipped: {e}", file=sys.stderr)
        return {"error": str(e)}
    return report.summary()


def _evaluate_file(args: argparse.Namespace) -> dict:
    """File mode: check and score ``--pred`` against ``--ann``."""
    from ibra_yolo import coco
    from ibra_yolo.files import check_output

    out = check_output(args.out or Path(args.pred).with_name("coco_eval.json"), args.overwrite,
                       inputs=(args.pred, args.ann))  # fmt: skip
    gt = coco.load_annotations(args.ann)
    dets, notes = coco.check_predictions(coco.load_predictions(args.pred), gt, remap=args.remap)
    metrics = coco.score(gt, dets)
    return {"out": out, "metrics": metrics, "notes": notes, "predictions": str(args.pred), "annotations": str(args.ann),
            "annotations_source": "file", "images": len(gt["images"]), "detections": len(dets)}  # fmt: skip


def _annotations_for(args: argparse.Namespace, data: dict, run) -> tuple[dict, Path, str]:
    """The annotation dict, its file and where it came from (file / dataset / built from labels)."""
    from ibra_yolo import coco
    from ibra_yolo.files import write_json

    ann = Path(args.ann) if args.ann else coco.find_annotations(data, args.split)
    if ann is not None:
        return coco.load_annotations(ann), ann, "file" if args.ann else "dataset"
    gt = coco.coco_from_yolo_labels(run.im_files, data["names"])
    ann = write_json(run.save_dir / f"instances_{args.split}_from_labels.json", gt, overwrite=args.overwrite)
    return gt, ann, "built from YOLO labels"


def _check_model_path(path: Path) -> None:
    """``--weights`` that Ultralytics can load: a file or an export folder whose name ends as one of its formats
    (``best.pt``, ``best.onnx``, ``best_openvino_model/``). A run's ``weights/`` folder, a FIFO or ``best.weights`` was
    Ultralytics' "not a supported model format" traceback after the run folder was made (battery 30, Z04/Z08/Z09)."""
    from ultralytics.engine.exporter import export_formats

    from ibra_yolo.errors import CheckpointError

    loads = any(path.name.endswith(suffix) for suffix in export_formats()["Suffix"])
    if path.is_file() and loads or path.is_dir() and loads and path.suffix != ".pt":
        return
    what = "a folder" if path.is_dir() else "a file" if path.is_file() else "not a regular file (a FIFO or device)"
    raise CheckpointError(
        f"--weights {path} is {what} Ultralytics does not load as a model: pass the .pt checkpoint (a run keeps it as "
        f"weights/best.pt) or an export such as best.onnx"
    )


def _dataset_inputs(args: argparse.Namespace, data: dict) -> list:
    """What model mode reads from the dataset: the annotation file it finds itself (``--out`` naming it with
    ``--overwrite`` replaced it, battery 14), the split's images and their YOLO label files."""
    from ultralytics.data.utils import img2label_paths

    from ibra_yolo import coco
    from ibra_yolo.sources import list_images

    images = list_images(args.data, args.split)
    return [None if args.ann else coco.find_annotations(data, args.split), *images, *img2label_paths(images)]


def _evaluate_model(args: argparse.Namespace) -> dict:
    """Model mode: predict with the stock validator, then check and score."""
    from ibra_yolo import coco
    from ibra_yolo.errors import MissingFileError
    from ibra_yolo.files import check_output, check_outputs
    from ibra_yolo.sources import load_dataset

    # every file this run writes is checked before any work: the validator's folder is known before it runs
    folder = coco.validation_folder(args.project, args.name)
    out = check_output(args.out or folder / "coco_eval.json", args.overwrite,
                       inputs=(args.ann, args.weights, args.data))  # fmt: skip
    made = ("predictions.json", "predictions_coco.json", f"instances_{args.split}_from_labels.json")
    check_outputs([folder / f for f in made], args.overwrite, flag="--project/--name")
    if args.ann and not Path(args.ann).is_file():
        raise MissingFileError(f"annotation file {args.ann} does not exist")
    is_yaml = Path(args.weights).suffix.lower() in (".yaml", ".yml")  # a shipped model name resolves without a file
    if not is_yaml and not Path(args.weights).exists():
        raise MissingFileError(f"weights file {args.weights} does not exist")
    if not is_yaml:
        _check_model_path(Path(args.weights))
    if args.device:
        from ibra_yolo.sources import select_device

        select_device(args.device)  # one line now, not Ultralytics' traceback after the model loaded
    data = load_dataset(args.data, args.split)
    check_output(out, args.overwrite, inputs=_dataset_inputs(args, data))  # --out may not be one of them either
    before = {f for f in made if (folder / f).exists()} if folder.is_dir() else None
    try:
        run = coco.predict_split(
            args.weights, args.data, imgsz=args.imgsz, batch=args.batch, conf=args.conf, iou=args.iou,
            device=args.device, spike_driven=args.spike_driven, split=args.split, project=folder.parent,
            name=folder.name,
        )  # fmt: skip
        return _score_run(args, data, run, out)
    except (IbraYoloError, KeyboardInterrupt):  # refused or stopped: no half-written run blocks the corrected rerun
        _remove_made(folder, made, before)
        raise


def _remove_made(folder: Path, made: tuple[str, ...], before: set[str] | None) -> None:
    """Remove what a refused run wrote into its run folder (``before``: the files it held, None: it did not exist)."""
    for name in made:
        if name not in (before or ()) and (folder / name).is_file():
            (folder / name).unlink()
    if before is None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _score_run(args: argparse.Namespace, data, run, out: Path) -> dict:
    """Model mode after prediction: the annotations, matching, scoring and the energy summary."""
    from ibra_yolo import coco
    from ibra_yolo.files import write_json

    gt, ann, source = _annotations_for(args, data, run)
    matched = coco.run_detections(run, gt)
    dets, notes = matched.detections, matched.notes
    pred_file = run.save_dir / "predictions.json" if run.detections else None
    if dets and any(a != b for a, b in zip(dets, run.detections)):  # ids changed: keep what was scored
        pred_file = write_json(run.save_dir / "predictions_coco.json", dets, overwrite=args.overwrite)
        notes.append(one_line(f"predictions in the annotation file's ids saved to {pred_file}"))
    if not dets:
        notes.append("the model made no detections above --conf: every metric is 0")
    metrics = coco.score(gt, dets, matched.image_ids)
    model = {k: getattr(args, k) for k in ("weights", "data", "split", "imgsz", "batch", "conf", "iou", "device")}
    return {"out": out, "metrics": metrics, "notes": notes, "predictions": pred_file and str(pred_file),
            "annotations": str(ann), "annotations_source": source, "images": len(matched.image_ids),
            "detections": len(dets), "categories": matched.categories, "model": model, "execution": run.execution,
            "ultralytics_metrics": run.stats, "energy": energy_summary(args, run)}  # fmt: skip


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ibra-yolo", "ultralytics", "torch", "pycocotools"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _report(result: dict) -> None:
    from ibra_yolo.coco import format_metrics

    print()
    for note in result["notes"]:
        print(f"note: {note}")
    if "execution" in result:
        e = result["execution"]
        print(f"execution: {e['mode']} ({e['spike_driven_calls']}/{e['spike_fed_conv_calls']} spike-fed conv calls "
              f"spike-driven, {e['binary_plane_convolutions']} binary plane convolutions)")  # fmt: skip
    if result.get("energy"):
        items = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result["energy"].items()]
        print("energy (ibra_yolo.energy, per image): " + ", ".join(items))
    print(f"COCO box metrics, pycocotools ({result['images']} images, {result['detections']} detections, "
          f"annotations: {result['annotations']}):")  # fmt: skip
    print(format_metrics(result["metrics"]))
    print(one_line(f"results written to {result['out']}"))


def main(argv: list[str] | None = None) -> int:
    """Run ``ibra-yolo eval``: print the metrics and write the results JSON. Returns the exit status."""
    parser = build_parser()

    def body(args: argparse.Namespace) -> int:
        from ibra_yolo.files import write_json

        check_args(parser, args)
        t0 = time.time()
        result = _evaluate_file(args) if args.pred else _evaluate_model(args)
        out = result.pop("out")
        m = result["metrics"]
        payload = {"mAP50-95": m["AP"], "mAP50": m["AP50"], **result, "seconds": round(time.time() - t0, 1),
                   "versions": _versions()}  # fmt: skip
        write_json(out, payload, overwrite=args.overwrite)
        _report({**result, "out": out})
        return 0

    return run_command(parser, body, argv)
