"""The replacements the plugin installs in the stock pipeline (``ibra_yolo.plugin.register`` installs them).

Each takes the stock callable as its first argument (``replacement(original, self, ...)``, bound by `wrap_method`):

- `spiking_fuse` (``BaseModel.fuse``): folds the BNs of our blocks first (exact), then runs the stock method;
- `unfolded_weights` (``BaseModel.load``, the trainer's ``pretrained=``): refuses a folded model's weights;
- `unfolded_training` (``Model.train``): training or resuming a folded (deployed) model names its file;
- `spiking_dict_checked` (``DetectionModel.__init__``): a spiking model dict is checked before the stock code reads it;
- `detector_only` (``__init__`` of the model classes of other tasks): ibra-yolo models are detectors;
- `check_predictions_before_nms`: the detection predictor and validator refuse NaN/inf raw predictions of our models
  (NMS would drop them and report no detections);
- `stock_safe_load` (``tasks.torch_safe_load``): the file's calls and hooks checked first, refusals in one line;
- `checkpoint_data_guarded` (``Model.train/val/export/benchmark``) and `scriptless_dataset_check`
  (``check_det_dataset``), from `ibra_yolo.dataset_guard`: a dataset is checked before the run folder is made, one
  named by the checkpoint, not the user, is never downloaded (a URL is refused) nor runs its YAML's script;
- `resume_in_place` (``BaseTrainer.check_resume``): a resumed run writes beside its checkpoint, nowhere else.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ibra_yolo.dataset_guard import (
    add_checkpoint_named,
    check_checkpoint_dataset,
    checkpoint_data_guarded,
    images_listed,
    scriptless_dataset_check,
    wrap_check_det_dataset,
)
from ibra_yolo.training_checks import (
    check_freeze,
    check_pretrained,
    check_pretrained_file,
    check_resumable,
    checked_training_state,
    is_ours,
    one_line_batch_refusal,
    warn_if_few_fit,
)

__all__ = (
    "spiking_fuse",
    "unfolded_weights",
    "no_cls_remap_for_ours",
    "unfolded_training",
    "wrap_model_train",
    "wrap_method",
    "wrap_methods",
    "check_finite_predictions",
    "check_predictions_before_nms",
    "OTHER_TASKS",
    "detector_only",
    "spiking_dict_checked",
    "stock_safe_load",
    "checkpoint_data_guarded",
    "scriptless_dataset_check",
    "resume_in_place",
    "guard_checkpoint_named_data",
)


def spiking_fuse(original, self, *args, **kwargs):
    """``BaseModel.fuse`` that folds the BNs of our blocks first (exact), then runs the stock method."""
    from ibra_yolo.deployment import fuse_for_inference

    if fuse_for_inference(self):
        verbose, imgsz = kwargs.get("verbose", args[0] if args else True), kwargs.get("imgsz", 640)
        if verbose:
            self.info(verbose=True, imgsz=imgsz)  # as the stock fuse() does after folding its own classes
    return original(self, *args, **kwargs)


def unfolded_weights(original, self, weights, *args, **kwargs):
    """``BaseModel.load`` (how the stock trainer applies ``pretrained=``) that refuses a folded model's weights: its
    BNs and re-parameterisable branches are merged into its convs, so few tensors would transfer (74 of 755 for an
    n model), reported only in the stock "Transferred" line."""
    model = weights.get("model") if isinstance(weights, dict) else weights
    check_pretrained(self, model)
    warn_if_few_fit(self, model)
    return original(self, weights, *args, **kwargs)


def no_cls_remap_for_ours(original, self, csd, src_model, *args, **kwargs):
    """``BaseModel._remap_cls_by_names`` (Ultralytics 8.4 remaps the class rows of pretrained weights by class name
    when fine-tuning to other classes) skipped for our models: it indexes each head branch as a ``Sequential``, and a
    ``DetectBranch`` is not one, so fine-tuning a trained spiking model to another class list died with "'DetectBranch'
    object is not subscriptable" (battery 21, L07/L13). Our class convs then transfer as before 8.4: by shape."""
    if is_ours(self):
        return 0
    return original(self, csd, src_model, *args, **kwargs)


def unfolded_training(original, self, *args, **kwargs):
    """``Model.train`` (``yolo train``, ``YOLO(...).train``) that refuses a folded model before the trainer starts,
    naming the file it was loaded from (the builder, which refuses it later, knows only the model's YAML)."""
    from ibra_yolo.errors import FoldedModelError
    from ibra_yolo.nn.builder import FOLDED_KEY

    spec = getattr(getattr(self, "model", None), "yaml", None)
    if isinstance(spec, dict) and spec.get(FOLDED_KEY):
        name = getattr(self, "ckpt_path", None) or spec.get("yaml_file") or "this model"
        raise FoldedModelError(
            f"{name} is folded for inference ({FOLDED_KEY}: {spec[FOLDED_KEY]}, by fuse() or deploy): its BNs and "
            "re-parameterisable branches are gone, so it cannot be trained or resumed; train or resume from the "
            "checkpoint it was folded from"
        )
    overrides = {**(getattr(self, "overrides", None) or {}), **kwargs}
    if not (overrides.get("resume") or getattr(self, "ckpt", None)) and getattr(self, "model", None) is not None:
        check_pretrained_file(self.model, overrides.get("pretrained"))
    if overrides.get("resume") is True and isinstance(getattr(self, "ckpt", None), dict) and is_ours(self.model):
        check_resumable(self.ckpt, getattr(self, "ckpt_path", None) or "the checkpoint", overrides)
    if "freeze" in overrides and getattr(self, "model", None) is not None and is_ours(self.model):
        check_freeze(self.model, overrides["freeze"])
    return checkpoint_data_guarded(original, self, *args, **kwargs)


def resume_in_place(original, self, overrides, *args, **kwargs):
    """``BaseTrainer.check_resume``: a resumed run writes into the run folder its checkpoint lies in. Stock
    Ultralytics writes into the checkpoint's ``train_args`` ``save_dir``, wherever that is: a file that names another
    run's folder (or a run folder moved after the checkpoint was copied) would replace that run's ``weights/last.pt``,
    ``best.pt`` and ``results.csv`` without asking (or create a folder where nobody looks for the run). A
    ``save_dir=`` of the user's is taken as given. A dataset the
    resumed run takes from the checkpoint runs no download script (`scriptless_dataset_check`)."""
    from ibra_yolo.errors import OutputExistsError

    given = getattr(self.args, "data", None)
    result = original(self, overrides, *args, **kwargs)
    if getattr(self.args, "resume", None) and not given and isinstance(self.args.data, (str, Path)):
        check_checkpoint_dataset(self.args.data)  # a URL: before the trainer writes args.yaml
        add_checkpoint_named(self.args.data)
    last, stored = getattr(self.args, "resume", None), getattr(self.args, "save_dir", None)
    if last and isinstance(last, (str, Path)) and "save_dir" not in (overrides or {}):
        here = Path(last).resolve().parent  # a run saves save_dir/weights/last.pt
        here = here.parent if here.name == "weights" else here
        if not stored:  # no save_dir: Ultralytics would make project/name, a folder the file chose (or name-2)
            self.args.save_dir = str(here)
            return result
        there = Path(str(stored)).resolve()
        if there != here:  # an existing folder would lose files; a new one would hide the run where none looks
            raise OutputExistsError(
                f"checkpoint {last} says its run folder is {there} (train_args save_dir), not the folder it lies in "
                f"({here}): resuming would write its weights and results.csv there; pass "
                f"save_dir={here} to resume beside the checkpoint, or save_dir={there} if that is the run to continue"
            )
    return result


def wrap_model_train() -> None:
    """Wrap ``Model.train`` with `unfolded_training`, and ``train``/``val``/``export``/``benchmark`` with
    `checkpoint_data_guarded`, once Ultralytics' ``Model`` class exists. ``register()`` runs right after
    ``ultralytics.nn.tasks`` is imported, often from inside the import of ``ultralytics.engine.model`` (not yet holding
    ``Model``), so `stock_safe_load` (a folded model comes from a file) and `spiking_dict_checked` (``YOLO("x.yaml")``
    with ``pretrained=``) call it again."""
    from ibra_yolo._autoload import run_pending

    run_pending()  # hooks of a module that was still executing when the plugin registered (e.g. the trainer's)
    module = sys.modules.get("ultralytics.engine.model")
    if module is not None and hasattr(module, "Model"):
        guarded = dict.fromkeys(("val", "export", "benchmark"), checkpoint_data_guarded)
        wrap_methods("ultralytics.engine.model", "Model", {"train": unfolded_training, **guarded})


def wrap_method(original, replacement):
    @functools.wraps(original)
    def method(self, *args, **kwargs):
        return replacement(original, self, *args, **kwargs)

    method.__ibra_yolo_original__ = original
    return method


def check_finite_predictions(preds) -> None:
    """Raise ``NonFiniteError`` when a model's raw boxes or scores hold NaN or inf (NMS would drop them silently).

    One reduction on the device and one host sync per batch, right before NMS, which syncs anyway.
    """
    import torch

    from ibra_yolo.errors import NonFiniteError

    p = preds[0] if isinstance(preds, (list, tuple)) else preds
    if isinstance(p, torch.Tensor) and p.is_floating_point() and not bool(torch.isfinite(p).all()):
        bad = int((~torch.isfinite(p)).sum())
        raise NonFiniteError(
            f"the model's raw predictions hold {bad} NaN or infinite value(s) of {p.numel()}: NMS would drop them and "
            "report no detections; check the input image and the weights"
        )


def _predictor_postprocess(original, self, preds, *args, **kwargs):
    if is_ours(self.model):
        check_finite_predictions(preds)
    return original(self, preds, *args, **kwargs)


def _validator_init_metrics(original, self, model, *args, **kwargs):
    self.__ibra_yolo_checks__ = not self.training and is_ours(model)  # training: the trainer handles NaN itself
    return original(self, model, *args, **kwargs)


def _validator_postprocess(original, self, preds, *args, **kwargs):
    if getattr(self, "__ibra_yolo_checks__", False):
        check_finite_predictions(preds)
    return original(self, preds, *args, **kwargs)


def wrap_methods(module: str, cls: str, replacements: dict) -> None:
    """Wrap methods of ``module.cls`` (once): ``{method name: replacement(original, self, ...)}``."""
    klass = getattr(sys.modules[module], cls)
    for name, replacement in replacements.items():
        if not hasattr(getattr(klass, name), "__ibra_yolo_original__"):
            setattr(klass, name, wrap_method(getattr(klass, name), replacement))


_PREDICTOR = {"postprocess": _predictor_postprocess}
_VALIDATOR = {"init_metrics": _validator_init_metrics, "postprocess": _validator_postprocess}


# Ultralytics' model classes of other tasks -> their task: built from our YAML (YOLO(..., task=...)), a segmentation
# model gave masks None and a classification model class scores from a detection head, without a word
OTHER_TASKS = {
    "SegmentationModel": "segment",
    "PoseModel": "pose",
    "OBBModel": "obb",
    "ClassificationModel": "classify",
}


def detector_only(original, self, *args, **kwargs):
    """A model class of another task: refuse our YAMLs before its own build (PoseModel reads keys ours lack) and our
    models after it (a detection model given as ``cfg``)."""
    from ultralytics.nn import tasks

    from ibra_yolo.errors import ModelConfigError
    from ibra_yolo.nn.builder import is_spiking_yaml

    task = OTHER_TASKS.get(type(self).__name__, type(self).__name__)
    refusal = ModelConfigError(f"task={task!r} is invalid: ibra-yolo models are detectors (task=detect)")
    cfg = args[0] if args else kwargs.get("cfg")
    if isinstance(cfg, (str, Path)) and Path(cfg).suffix.lower() in (".yaml", ".yml"):
        cfg = tasks.yaml_model_load(cfg)  # ours is hooked in: a spiking YAML is checked and read here
    if is_spiking_yaml(cfg):
        raise refusal
    original(self, *args, **kwargs)
    if is_ours(self):
        raise refusal


def spiking_dict_checked(original, self, *args, **kwargs):
    """``DetectionModel.__init__`` that checks a spiking model *dict* completely before the stock code reads it (a
    file is checked when it is loaded; a dict with an empty ``backbone`` was an IndexError in the stock constructor)."""
    from ibra_yolo.nn.builder import dict_name, is_spiking_yaml
    from ibra_yolo.nn.rows import plan_model

    cfg = args[0] if args else kwargs.get("cfg")
    if (args or "cfg" in kwargs) and not isinstance(cfg, (dict, str, os.PathLike)):  # pathlib's TypeError, unnamed
        hint = ": pass dict(cfg)" if isinstance(cfg, Mapping) else ""
        raise TypeError(
            f"cfg={cfg!r:.80} is invalid: a model YAML path or a model dict, not a {type(cfg).__name__}{hint}"
        )
    if isinstance(cfg, dict) and is_spiking_yaml(cfg):
        nc = args[2] if len(args) > 2 else kwargs.get("nc")
        ch = cfg.get("channels", args[1] if len(args) > 1 else kwargs.get("ch", 3))  # as the stock constructor
        plan_model({**cfg, **({"nc": nc} if nc else {})}, ch, dict_name(cfg))
        wrap_model_train()  # YOLO("x.yaml") loads no file: its train() must check pretrained= all the same
    return original(self, *args, **kwargs)


def check_predictions_before_nms() -> None:
    """Make the stock detection predictor and validator refuse NaN/inf raw predictions of our models.

    Their modules import ``ultralytics.nn.tasks`` themselves, so they are wrapped when they are first imported.
    """
    from ibra_yolo._autoload import after_import

    predict, val = "ultralytics.models.yolo.detect.predict", "ultralytics.models.yolo.detect.val"
    after_import(predict, functools.partial(wrap_methods, predict, "DetectionPredictor", _PREDICTOR))
    after_import(val, functools.partial(wrap_methods, val, "DetectionValidator", _VALIDATOR))


def guard_checkpoint_named_data() -> None:
    """Install `scriptless_dataset_check` (in ``ultralytics.data.utils`` and the modules that import it) and
    `resume_in_place` (``BaseTrainer.check_resume``) as their modules are imported."""
    from ibra_yolo._autoload import after_import

    for name in ("ultralytics.data.utils", "ultralytics.engine.trainer", "ultralytics.engine.validator",
                 "ultralytics.engine.exporter", "ultralytics.utils.benchmarks",
                 "ultralytics.models.yolo.world.train_world", "ultralytics.models.yolo.world.val",
                 "ultralytics.models.yolo.yoloe.val"):  # fmt: skip
        after_import(name, wrap_check_det_dataset)
    base = "ultralytics.data.base"
    after_import(base, functools.partial(wrap_methods, base, "BaseDataset", {"get_img_files": images_listed}))
    trainer = "ultralytics.engine.trainer"
    trainer_hooks = {
        "check_resume": resume_in_place,
        "_load_checkpoint_state": checked_training_state,
        "_build_train_pipeline": one_line_batch_refusal,
    }
    after_import(trainer, functools.partial(wrap_methods, trainer, "BaseTrainer", trainer_hooks))


def _check_before_stock_load(weight, safe_only):
    """What the stock loader is about to read: its CRC-32 checked and, for a restricted load (``safe_only``, or None
    with ``tasks.SAFE_LOAD`` on), its calls (`check_calls`); an official asset name the loader would download
    (``yolo11n.pt``) is fetched first, as the loader would, and that file is checked. Returns the name to load."""
    from ultralytics.nn import tasks

    from ibra_yolo.pickle_checks import check_calls, check_zip_crc

    local = Path(str(weight))
    restricted = bool(safe_only or (safe_only is None and tasks.SAFE_LOAD))
    if restricted and not local.is_file():
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

        if local.name in GITHUB_ASSETS_NAMES:
            try:
                fetched = Path(str(attempt_download_asset(weight)))
            except Exception:  # noqa: BLE001 - not downloaded (offline): the loader says so itself
                fetched = local
            if fetched.is_file():
                local, weight = fetched, str(fetched)
    if local.is_file():
        check_zip_crc(local)
        if restricted:
            check_calls(local, "; ULTRALYTICS_SAFE_LOAD=0 loads a file you trust")
    return weight


def stock_safe_load(original, weight, *args, **kwargs):
    """Ultralytics' ``torch_safe_load`` (``original``, wrapped by ``ibra_yolo.plugin``) whose refusals are our one-line
    errors, not chained tracebacks: an unsafe pickle (``UnsafePickleError``), a FIFO, a folder, a damaged file, a
    missing module, or a file that holds no Ultralytics model (``CheckpointError``)."""
    from torch import nn
    from ultralytics.nn import tasks

    from ibra_yolo.checkpoints import (
        advice_error,
        check_ema_matches,
        damaged_file_error,
        failed_read_error,
        foreign_module_error,
        held_model,
        is_damaged,
        no_model_error,
        refusal_error,
    )
    from ibra_yolo.errors import CheckpointError, IbraYoloError
    from ibra_yolo.model_state import check_model_state
    from ibra_yolo.nesting import check_expanded_size, check_nesting

    wrap_model_train()  # Model exists by now: a model loaded from a file refuses training if it is folded
    local = Path(str(weight))
    if local.suffix.lower() != ".pt":  # the stock suffix check's AssertionError read as a damaged file
        yaml = local.suffix.lower() in (".yaml", ".yml")
        hint = ": a model YAML builds an untrained model, pass it as model=" if yaml else ""
        raise CheckpointError(f"weights {weight} must be a .pt checkpoint (Ultralytics loads no other suffix){hint}")
    if local.exists() and not local.is_file() and not local.is_dir():  # a FIFO blocked the stock loader forever
        raise CheckpointError(f"checkpoint {weight} is not a regular file (a FIFO or a device): name a .pt file")
    weight = _check_before_stock_load(weight, kwargs.get("safe_only", args[0] if args else None))
    try:
        loaded = original(weight, *args, **kwargs)
    except Exception as e:
        refusal = refusal_error(weight, e, "; ULTRALYTICS_SAFE_LOAD=0 loads a file you trust")
        if refusal:
            raise refusal from None
        if is_damaged(e):
            raise damaged_file_error(weight, e) from None
        foreign = foreign_module_error(weight, e)
        if foreign:
            raise foreign from None
        if isinstance(e, OSError):  # a folder named x.pt, no permission
            raise CheckpointError(f"cannot read checkpoint {weight}: {e.strerror or e}") from None
        advice = advice_error(e)  # Ultralytics' own (a TorchScript archive, a YOLOv5 checkpoint) in one line
        if advice:
            raise advice from None
        if isinstance(e, IbraYoloError):
            raise
        raise failed_read_error(weight, e) from None  # e.g. a class's __setstate__ refusing its state: one line
    model = held_model(loaded[0])
    if model is None:  # a state_dict or a foreign dict: Ultralytics' own TypeError was a traceback
        raise no_model_error(weight, loaded[0])
    from ibra_yolo.nn.blocks import NeuronConv

    # ours: stock models load as they always did
    ours = isinstance(model, nn.Module) and any(isinstance(m, NeuronConv) for m in model.modules())
    if ours:
        check_nesting(loaded[0], weight)  # before anything walks the model with torch (a module cycle: no end)
    elif isinstance(loaded[0], dict):  # stock files too: a shared tuple bomb, deep-copied by the EMA, never ends
        check_expanded_size(loaded[0], weight)
    check_ema_matches(loaded[0], weight)  # YOLO() would load the ema without a word
    if not isinstance(model, tasks.BaseModel):  # e.g. a bare nn.Linear: it failed deep inside the predictor
        raise CheckpointError(
            f"{weight} holds a {type(model).__name__}, not an Ultralytics model (DetectionModel, ...)"
        )
    if ours:
        check_model_state(model, weight, loaded[0])
    return loaded
