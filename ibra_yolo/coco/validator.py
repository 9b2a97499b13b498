"""Predictions from the stock Ultralytics validator (``YOLO(weights).val(save_json=True)``), watched by hooks.

``predict_split`` runs the stock validator and keeps what it produced (its detections, class map and image list)
in a ``ValidationRun``; a ``SpikeProbe`` records how the validator's own copy of the model executed (integer or
spike-driven), so the mode is measured, not assumed. ``run_detections`` then expresses the detections in an
annotation file's ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ibra_yolo.coco.checks import align_image_ids, annotation_image_ids, match_categories
from ibra_yolo.coco.records import check_detections
from ibra_yolo.errors import IbraYoloError, NonFiniteError

__all__ = ("SpikeProbe", "ValidationRun", "MatchedDetections", "validation_folder", "predict_split", "run_detections")


class SpikeProbe:
    """Records how the spike-fed convs of whatever model runs inside the ``with`` block actually executed.

    Uses global forward pre-hooks, so it sees the copy Ultralytics' validator makes of the model (deep copy, AutoBackend
    wrapper, fusion) and not only the object it was given. Each ``NeuronConv`` call fed by an integer neuron counts as
    spike-driven when it ran its ``{0, 1}``-plane path (``NeuronConv.runs_spike_driven``); each ``Synapse`` call (a
    plane's convolution) is checked to receive only 0s and 1s.
    """

    def __init__(self):
        self.calls = self.driven = self.synapse_calls = self.nonbinary = 0
        self._handle = None

    def _hook(self, module, args):
        from ibra_yolo.nn.blocks import NeuronConv, Synapse

        if isinstance(module, NeuronConv) and module.spiking:
            self.calls += 1
            self.driven += module.runs_spike_driven
        elif isinstance(module, Synapse):
            x = args[0]
            self.synapse_calls += 1
            self.nonbinary += bool(((x != 0) & (x != 1)).any())

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook

        self._handle = register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    @property
    def mode(self) -> str:
        """``"spike-driven"``, ``"integer"``, ``"mixed"`` or ``"non-spiking"`` (no integer neuron ran)."""
        if not self.calls:
            return "non-spiking"
        if self.driven == self.calls and not self.nonbinary:
            return "spike-driven"
        return "integer" if not self.driven else "mixed"

    def summary(self) -> dict:
        """The counts and the mode, for the results file."""
        return {
            "mode": self.mode,
            "spike_fed_conv_calls": self.calls,
            "spike_driven_calls": self.driven,
            "binary_plane_convolutions": self.synapse_calls - self.nonbinary,
            "non_binary_plane_convolutions": self.nonbinary,
        }


@dataclass
class ValidationRun:
    """What a run of the stock validator produced.

    Attributes:
        detections (list[dict]): Ultralytics' ``predictions.json`` entries (its category ids, see ``class_map``).
        class_map (list[int]): The category id Ultralytics wrote for each class index.
        names (dict[int, str]): The model's class names.
        im_files (list[str]): The images validated.
        save_dir (Path): The validator's output folder (holds ``predictions.json`` when there were detections).
        execution (dict): ``SpikeProbe.summary`` of the run.
        stats (dict): Ultralytics' own metrics (its mAP is computed differently from COCOeval's).
        model (object): The ``YOLO`` object that was validated.
    """

    detections: list[dict]
    class_map: list[int]
    names: dict[int, str]
    im_files: list[str]
    save_dir: Path
    execution: dict
    stats: dict = field(default_factory=dict)
    model: object = None


@dataclass
class MatchedDetections:
    """A validator run's detections in an annotation file's ids, ready for ``score``.

    Attributes:
        detections (list[dict]): Detections with the file's category and image ids.
        image_ids (list): The file's ids of the validated images (the images to score).
        categories (dict): ``{"how": "by name" | "by order", "ids": {class name: category id}}``.
        notes (list[str]): What was re-mapped or left out.
    """

    detections: list[dict]
    image_ids: list
    categories: dict
    notes: list[str]


def run_detections(run: ValidationRun, gt: dict) -> MatchedDetections:
    """Express a validator run's detections in an annotation file's ids, and list the images to score.

    Ultralytics writes class index + 1 as ``category_id`` (COCO's 91 ids only when it recognises the stock COCO val
    list); here each class is mapped to the file's category by name or order (``match_categories``) whatever the
    validator wrote, and image ids are resolved by file name (``align_image_ids``).

    Args:
        run (ValidationRun): From ``predict_split``.
        gt (dict): COCO annotations.

    Returns:
        (MatchedDetections): Detections, image ids, category map and notes.

    Raises:
        NonFiniteError: A detection holds NaN or inf (the first is named); never scored.
        IbraYoloError: A malformed detection, the model's classes do not fit the file's categories, or validated
            images are not in it.
    """
    try:
        check_detections(run.detections, "the model's predictions")
    except NonFiniteError as e:
        raise NonFiniteError(
            f"{e} (the model computed NaN or inf: check its weights, e.g. of a diverged run)"
        ) from None
    cat_ids, how = match_categories(run.names, gt["categories"])
    index = {cid: i for i, cid in enumerate(run.class_map)}
    dets = [{**d, "category_id": cat_ids[index[d["category_id"]]]} for d in run.detections]
    dets, notes = align_image_ids(dets, gt, "model's predictions")
    img_ids = annotation_image_ids(run.im_files, gt)
    if len(gt["images"]) > len(set(img_ids)):
        notes.append(f"{len(gt['images']) - len(set(img_ids))} images of the annotation file were not validated; "
                     "not scored")  # fmt: skip
    if how == "by order":
        notes.append("class names differ from the annotation file's category names: classes mapped by order")
    by_id = [c.get("name") for c in sorted(gt["categories"], key=lambda c: c["id"])]
    moved = [i for i in sorted(run.names) if how == "by name" and i < len(by_id) and by_id[i] != run.names[i]]
    if moved:  # a model trained on another class order, or names edited in its file: say which way it was scored
        i = moved[0]
        notes.append(
            f"the model's class order differs from the annotation file's ({len(moved)} of {len(run.names)} classes; "
            f"class {i} is {run.names[i]!r} in the model, category {i} in id order {by_id[i]!r} in the file): classes "
            f"matched by name"
        )
    categories = {"how": how, "ids": {run.names[i]: c for i, c in zip(sorted(run.names), cat_ids)}}
    return MatchedDetections(dets, img_ids, categories, notes)


def validation_folder(project: str | Path | None = None, name: str | None = None) -> Path:
    """The folder the stock validator writes into for these ``project=``/``name=``, known before it runs.

    Ultralytics' own rule (``get_save_dir``): ``<runs_dir>/detect/<project>/<name>``, an absolute ``project`` as it is;
    an existing ``name`` folder is reused, and without ``name`` a new ``val``, ``val2``, ... folder is chosen.
    ``predict_split(..., project=folder.parent, name=folder.name)`` then writes into exactly this folder.
    """
    from types import SimpleNamespace

    from ultralytics.cfg import get_save_dir

    args = SimpleNamespace(project=str(project) if project else None, name=name, task="detect", mode="val",
                           exist_ok=bool(name))  # fmt: skip
    return Path(get_save_dir(args)).resolve()


def _check_export_size(weights, imgsz: int, device: str) -> None:
    """An export with a fixed input shape (not ``dynamic``) runs at that shape whatever ``imgsz`` says: the stock
    validator takes it from the export's metadata, so ``--imgsz 64`` on a 32-px export ran at 32 while the report said
    64 (battery 31, X09). Refused before the run; a ``.pt`` checkpoint runs at any size."""
    if Path(str(weights)).suffix.lower() == ".pt":
        return
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.utils.torch_utils import select_device

    try:
        backend = AutoBackend(str(weights), device=select_device(device, verbose=False), verbose=False)
    except Exception:  # noqa: BLE001 - not loadable here: the validator's own load reports it
        return
    shape = list(getattr(backend, "imgsz", None) or [])
    if shape and not getattr(backend, "dynamic", False) and shape != [imgsz, imgsz]:
        raise IbraYoloError(
            f"--imgsz {imgsz}, but {weights} was exported for {'x'.join(map(str, shape))} inputs only (not dynamic): "
            f"pass --imgsz {shape[0]} (a square export), or export again at {imgsz} (or with dynamic=True)"
        )


def predict_split(
    weights: str | Path,
    data: str | Path,
    imgsz: int = 640,
    batch: int = 16,
    conf: float = 0.001,
    iou: float = 0.7,
    device: str = "",
    spike_driven: bool = False,
    split: str = "val",
    project: str | Path | None = None,
    name: str | None = None,
) -> ValidationRun:
    """Predict over a dataset split with the stock validator (``YOLO(weights).val(save_json=True)``).

    Args:
        weights (str | Path): Checkpoint (``best.pt``).
        data (str | Path): Dataset YAML.
        imgsz (int): Inference size.
        batch (int): Batch size.
        conf (float): Confidence threshold (0.001: COCO convention, low so the PR curve is complete).
        iou (float): NMS IoU threshold.
        device (str): Ultralytics device string ("" = auto, "cpu", "0").
        spike_driven (bool): Run the model spike-driven (``ibra_yolo.spike_driven``) and verify that it did.
        split (str): Dataset split.
        project (str | Path | None): Output project folder (Ultralytics' ``project=``).
        name (str | None): Output run name (Ultralytics' ``name=``).

    Returns:
        (ValidationRun): Detections and everything needed to score them.

    Raises:
        MissingFileError: The weights do not exist.
        UnsafePickleError: A checkpoint whose pickle names anything outside the allow-list (nothing in it was run).
        IbraYoloError: The weights cannot be loaded, or ``spike_driven`` was asked for and not every spike-fed conv
            ran on ``{0, 1}`` planes.
    """
    from ibra_yolo.checkpoints import load_yolo
    from ibra_yolo.spike_mode import set_spike_driven

    model = load_yolo(weights)
    _check_export_size(weights, imgsz, device)
    if spike_driven:
        set_spike_driven(model, True)
    seen = {}
    model.add_callback("on_val_end", lambda v: seen.setdefault("validator", v))
    kwargs = {"project": str(project) if project else None, "name": name, "exist_ok": bool(name)}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with SpikeProbe() as probe:
        metrics = model.val(
            data=str(data), split=split, imgsz=imgsz, batch=batch, conf=conf, iou=iou, device=device,
            save_json=True, plots=False, **kwargs,
        )  # fmt: skip
    v = seen["validator"]
    if spike_driven and probe.mode != "spike-driven":
        raise IbraYoloError(
            f"spike-driven mode was requested but {probe.calls - probe.driven} of {probe.calls} spike-fed conv calls "
            f"ran in integer mode and {probe.nonbinary} plane convolutions saw non-binary input: the validator's model "
            f"copy lost the setting"
        )
    return ValidationRun(
        detections=list(v.jdict),
        class_map=list(v.class_map),
        names=dict(model.names),
        im_files=list(v.dataloader.dataset.im_files),
        save_dir=Path(v.save_dir),
        execution=probe.summary(),
        stats={k: float(x) for k, x in getattr(metrics, "results_dict", {}).items()},
        model=model,
    )
