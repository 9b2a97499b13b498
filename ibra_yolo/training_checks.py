"""The checks the plugin's training hooks (``ibra_yolo.stock_hooks``) run before the stock trainer starts: which
models are ours, what ``pretrained=`` weights and a ``resume=True`` checkpoint must hold. Each refusal is one line."""

from __future__ import annotations

from pathlib import Path

__all__ = (
    "is_ours",
    "warn_if_few_fit",
    "check_pretrained",
    "check_pretrained_file",
    "check_dict_describes_layers",
    "check_freeze",
    "check_resumable",
    "checked_training_state",
    "one_line_batch_refusal",
)


def warn_if_few_fit(built, model) -> None:
    """A warning when pretrained weights fit under half of one of our models' tensors: stock yolov8n weights fit 6 of
    the 755 of spike-yolo-ibra-n, reported only in Ultralytics' info line "Transferred 6/755 items"."""
    from torch import nn
    from ultralytics.utils import LOGGER

    if not (is_ours(built) and isinstance(model, nn.Module)):
        return
    want = built.state_dict()
    fit = sum(k in want and want[k].shape == v.shape for k, v in model.state_dict().items())
    if fit < len(want) / 2:
        name = getattr(model, "pt_path", None) or "the pretrained weights"
        LOGGER.warning(
            f"pretrained weights {name}: only {fit} of this model's {len(want)} tensors take them (another "
            f"architecture); training starts mostly from new weights"
        )


def check_pretrained(built, model) -> None:
    """Weights ``model`` can start the training of ``built``: not folded, and their model dict describes them."""
    from ibra_yolo.errors import FoldedModelError
    from ibra_yolo.nn.builder import FOLDED_KEY

    spec = getattr(model, "yaml", None)
    if isinstance(spec, dict) and spec.get(FOLDED_KEY):
        name = getattr(model, "pt_path", None) or spec.get("yaml_file") or "the weights"
        raise FoldedModelError(
            f"pretrained weights {name} are folded for inference ({FOLDED_KEY}: {spec[FOLDED_KEY]}, by fuse() or "
            f"deploy): their BNs and branches are merged into the convs, so few of this model's tensors would take "
            f"them; pass the checkpoint they were folded from"
        )
    check_dict_describes_layers(built, model)


def check_pretrained_file(built, pretrained) -> None:
    """``pretrained=<file>`` of a training run, checked before the trainer makes its run folder: a refusal then
    leaves nothing behind (the stock trainer applies it after writing ``args.yaml`` and ``weights/``). An Ultralytics
    asset name that is not here is left to Ultralytics (it downloads it). (With ``model=x.pt`` the trainer starts from
    that file and ignores ``pretrained=``: nothing to check.)"""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    from ibra_yolo.checkpoints import checkpoint_model, load_checkpoint
    from ibra_yolo.errors import CheckpointError, MissingFileError

    if not isinstance(pretrained, (str, Path)) or str(pretrained) in ("", "True", "False"):
        return  # true/false: the stock meaning
    path = Path(pretrained)
    if path.suffix != ".pt":
        raise CheckpointError(f"pretrained={pretrained} must be a .pt checkpoint (Ultralytics loads no other suffix)")
    if not path.exists():
        if str(pretrained) == path.name and path.name in GITHUB_ASSETS_NAMES:
            return  # an Ultralytics asset name (yolo11n.pt): the stock trainer downloads it
        raise MissingFileError(
            f"pretrained={pretrained} does not exist: pass the .pt checkpoint to start from (or an Ultralytics asset "
            f"name such as yolo11n.pt)"
        )
    if not path.is_file():
        raise CheckpointError(
            f"pretrained={pretrained} is not a regular file (a folder, FIFO or device): pass a .pt file"
        )
    ckpt = load_checkpoint(pretrained)  # read safely: a hostile file is refused here, before any folder exists
    if not any(is_ours(ckpt.get(k)) for k in ("model", "ema")):
        return  # a stock model's weights: what the stock trainer does with them is unchanged
    model = checkpoint_model(ckpt, pretrained)
    model.pt_path = str(pretrained)  # as Ultralytics' loader names it
    check_pretrained(built, model)


def check_dict_describes_layers(built, source) -> None:
    """``yolo train model=x.pt`` builds the model from the file's model dict and loads the file's layers into it: a
    dict that does not describe those layers (its ``scale`` or a row's channels edited) built another network that
    took only the tensors that happened to fit ("Transferred 160/755"), and trained it without a word. When the built
    model's dict is the file's (but ``nc``, which fine-tuning on another dataset changes: the head's class branch then
    differs), every tensor outside the head must fit."""
    from torch import nn

    from ibra_yolo.errors import CheckpointError

    spec, mine = getattr(source, "yaml", None), getattr(built, "yaml", None)
    if not (isinstance(source, nn.Module) and isinstance(spec, dict) and isinstance(mine, dict) and is_ours(built)):
        return
    if {k: v for k, v in spec.items() if k != "nc"} != {k: v for k, v in mine.items() if k != "nc"}:
        return  # another model dict: a transfer between architectures, as the user asked
    head = f"model.{len(built.model) - 1}." if isinstance(getattr(built, "model", None), nn.Sequential) else None
    want = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    held = {k: tuple(v.shape) for k, v in source.state_dict().items() if not (head and k.startswith(head))}
    bad = [k for k, shape in held.items() if want.get(k) != shape]
    if bad:
        name = getattr(source, "pt_path", None) or spec.get("yaml_file") or "the weights"
        raise CheckpointError(
            f"pretrained weights {name}: the file's model dict does not describe its layers: {bad[0]!r:.80} is "
            f"{held[bad[0]]} in the file but {want.get(bad[0], 'absent')} in the model the dict builds ({len(bad)} of "
            f"{len(held)} tensors outside the head differ); training would start from a mostly new network (the file "
            f"was altered)"
        )


MAX_EPOCHS = 100_000  # more is a typo or an altered file: over a day of training even at a second per epoch


def check_resumable(ckpt: dict, name, overrides: dict) -> None:
    """``resume=True`` on one of our checkpoints: the training state it continues is one a run saves. Stock
    Ultralytics started a *new* training on its default dataset (coco8, downloading it) when the file held no
    optimizer state or a negative epoch, asserted with a traceback when the run had finished, and resumed silently
    from a NaN ``best_fitness`` (``best.pt`` was then never written) or NaN optimizer moments (NaN losses)."""
    import math
    from numbers import Real

    import torch

    from ibra_yolo.errors import CheckpointError, NonFiniteError

    epoch, optimizer, fitness = ckpt.get("epoch", -1), ckpt.get("optimizer"), ckpt.get("best_fitness")
    args = ckpt.get("train_args") if isinstance(ckpt.get("train_args"), dict) else {}
    epochs, device = args.get("epochs"), args.get("device")
    if not args.get("data") and not overrides.get("data"):  # stock: Ultralytics' default dataset, coco8, downloaded
        raise CheckpointError(
            f"{name}: its train_args name no dataset (data), which every training run saves: pass data= with the "
            f"dataset the run trained on"
        )
    gpu = isinstance(device, (str, int)) and str(device).strip().lower() not in ("", "cpu", "mps", "none")
    if gpu and "device" not in overrides and not torch.cuda.is_available():  # stock: a select_device traceback
        raise CheckpointError(
            f"{name} was trained on device={device}, which this machine does not have (no CUDA GPU): pass "
            f"device=cpu to resume it here"
        )
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < -1:
        raise CheckpointError(f"{name}: its epoch is {epoch!r:.40}, which no training run saves (the file was altered)")
    if epoch < 0 or not isinstance(optimizer, dict):
        raise CheckpointError(
            f"{name} is not a resumable checkpoint: it holds epoch {epoch} and {'an' if optimizer else 'no'} optimizer "
            f"state (a finished run strips both from best.pt and last.pt); resume=True continues an interrupted run "
            f"from its weights/last.pt: to train again from these weights, leave out resume=True"
        )
    if isinstance(epochs, int) and epochs > MAX_EPOCHS:  # a file-chosen endless run (battery 29, F10: 10**9)
        raise CheckpointError(
            f"{name}: its train_args ask for epochs={epochs}, above {MAX_EPOCHS:,}, which resuming would run without "
            f"end (the file was altered); to train on from these weights, leave out resume=True and set epochs="
        )
    if isinstance(epochs, int) and epoch + 1 >= epochs:
        raise CheckpointError(
            f"{name}: its run finished all {epochs} epochs (it saved epoch {epoch + 1}), so there is nothing to "
            f"resume: to train on from these weights, leave out resume=True (and set epochs=)"
        )
    if fitness is not None and (
        not isinstance(fitness, Real) or isinstance(fitness, bool) or not math.isfinite(fitness)
    ):
        raise CheckpointError(
            f"{name}: its best_fitness is {fitness!r:.40}, not a finite number: a resumed run would never save "
            f"best.pt (the file was altered)"
        )
    _check_run_state(ckpt, name, args, optimizer, overrides)
    for i, state in (optimizer.get("state") or {}).items() if isinstance(optimizer.get("state"), dict) else ():
        for key, t in state.items() if isinstance(state, dict) else ():
            if hasattr(t, "isfinite") and t.is_floating_point() and not bool(t.isfinite().all()):
                raise NonFiniteError(
                    f"{name}: its optimizer state holds NaN or infinite values ({key} of parameter {i}): resuming "
                    f"would train on NaN losses (the file was altered, or the run had diverged)"
                )


# the optimizer names Ultralytics 8.4's BaseTrainer.build_optimizer takes (another raised NotImplementedError there)
OPTIMIZERS = frozenset({"Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "SGD", "MuSGD", "auto"})


def _check_run_state(ckpt: dict, name, args: dict, optimizer: dict, overrides: dict) -> None:
    """What the stock trainer reads back from a resumed file and failed on with a traceback (battery 22): train_args
    it validates again (``batch='abc'``, ``lr0=-1``: Ultralytics' own check, in one line), an optimizer it cannot
    build, optimizer state for another set of parameters (a group missing: torch's ValueError), or an EMA update count
    that is not a count (NaN: every validation loss NaN, without a word)."""
    from numbers import Integral

    from torch import nn
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    from ibra_yolo.errors import CheckpointError

    try:
        check_cfg(dict(args), hard=True)  # a copy: the check converts values in place
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its train_args cannot be resumed: {str(e).splitlines()[0][:200]}") from None
    unknown = [k for k in args if k not in DEFAULT_CFG_DICT and k != "save_dir"]  # save_dir: resume_in_place
    if unknown:  # the validator's argument check would stop the resumed run with a SyntaxError (battery 29, KO10)
        raise CheckpointError(
            f"{name}: its train_args hold {unknown[0]!r:.40}, which is not an Ultralytics argument (a run saves only "
            f"those): the file was altered"
        )
    if str(args.get("optimizer", "auto")).lower() not in {o.lower() for o in OPTIMIZERS}:  # as Ultralytics matches
        raise CheckpointError(
            f"{name}: its train_args name optimizer={args['optimizer']!r:.40}, which Ultralytics does not build "
            f"(one of {', '.join(sorted(OPTIMIZERS))}): the file was altered"
        )
    updates = ckpt.get("updates")
    if ckpt.get("ema") is not None and (not isinstance(updates, Integral) or isinstance(updates, bool) or updates < 0):
        raise CheckpointError(
            f"{name}: its EMA update count is {updates!r:.40}, not a count (>= 0) a training run saves: the resumed "
            f"moving average would be NaN (the file was altered)"
        )
    model = ckpt.get("ema") if isinstance(ckpt.get("ema"), nn.Module) else ckpt.get("model")
    groups = optimizer.get("param_groups")
    if isinstance(model, nn.Module) and isinstance(groups, list):
        saved = sum(len(g.get("params", ())) if isinstance(g, dict) else 0 for g in groups)
        held = sum(1 for _ in model.parameters())
        if saved != held:
            raise CheckpointError(
                f"{name}: its optimizer state covers {saved} parameters, but its model has {held} (a group missing "
                f"or added): the file was altered, and the trainer cannot load that state"
            )
    _check_param_groups(groups if isinstance(groups, list) else [], name)
    if isinstance(model, nn.Module):
        _check_dataset_classes(model, overrides.get("data") or args.get("data"), name)
    if isinstance(model, nn.Module) and "freeze" not in overrides:  # freeze= given on resume replaces the file's
        check_freeze(model, args.get("freeze"), f"{name}: its train_args' ", CheckpointError)


def _check_dataset_classes(model, data, name) -> None:
    """A resumed run continues the same model, so its dataset must have the model's class count: a data YAML edited
    to 2 classes under a 3-class run rebuilt a 2-class head and failed to load the run's weights into it (battery 24,
    K02: torch's size-mismatch traceback). Read only when ``data`` is a local YAML file; otherwise Ultralytics'
    own dataset check decides."""
    from ibra_yolo.errors import CheckpointError
    from ibra_yolo.model_state import read_dataset_yaml

    path = Path(str(data)) if isinstance(data, (str, Path)) else None
    if path is None or path.suffix.lower() not in (".yaml", ".yml"):
        return
    spec = read_dataset_yaml(path)  # None: the dataset check names what is wrong with it
    names = spec.get("names") if spec else None
    nc = len(names) if isinstance(names, (dict, list)) else None
    held = getattr(model.model[-1], "nc", None) if len(getattr(model, "model", ())) else None
    if isinstance(nc, int) and isinstance(held, int) and nc != held:
        raise CheckpointError(
            f"{name}: its model detects {held} classes, but its dataset {path} names {nc}: resume=True continues the "
            f"same model on the same classes; to train these weights on the {nc}-class data, start a new run without "
            f"resume=True (yolo train model={name} data={path})"
        )


def _check_param_groups(groups: list, name) -> None:
    """The optimizer's parameter groups as torch's ``state_dict`` writes them: parameter ids 0, 1, 2, ... in order
    (battery 23, N41: one id repeated in place of another gave that parameter another's moments) and settings torch's
    optimizers take (N24: Adam betas (5.0, 0.999), which Adam refuses when built, were used without a word)."""
    import math
    from numbers import Real

    from ibra_yolo.errors import CheckpointError

    ids = [i for g in groups if isinstance(g, dict) for i in g.get("params", ())]
    if ids != list(range(len(ids))):
        raise CheckpointError(
            f"{name}: its optimizer's parameter ids are {ids[:6]!r:.60}..., not 0, 1, 2, ... in order as torch saves "
            f"them (one repeated or missing): the file was altered"
        )
    for g in (g for g in groups if isinstance(g, dict)):
        for key in ("lr", "initial_lr", "momentum", "weight_decay", "eps", "betas"):
            values = g.get(key, ()) if key == "betas" else [g[key]] if key in g else []
            top = 1.0 if key in ("betas", "momentum") else math.inf
            if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, Real) and not isinstance(v, bool) and 0 <= v <= top and math.isfinite(v) for v in values
            ):
                raise CheckpointError(
                    f"{name}: its optimizer holds {key}={g[key]!r:.60}, which torch's optimizers refuse (a number >= 0"
                    f"{', at most 1' if top == 1.0 else ''}): the file was altered"
                )


def check_freeze(model, freeze, where: str = "", error: type | None = None) -> None:
    """``freeze=`` that leaves something to train: an integer below the model's layer count, or layer indices that
    are not all of them (``freeze=999``: Ultralytics' "froze the entire model" RuntimeError, as a traceback)."""
    from numbers import Integral

    from ibra_yolo.errors import IbraYoloError

    error = error or IbraYoloError
    layers = len(getattr(model, "model", ()))
    if not layers:
        return
    if isinstance(freeze, Integral) and not isinstance(freeze, bool):
        frozen = set(range(min(int(freeze), layers)))
    elif isinstance(freeze, (list, tuple)):
        frozen = {int(i) for i in freeze if isinstance(i, Integral) and not isinstance(i, bool)}
    else:
        return
    if frozen >= set(range(layers)):
        raise error(
            f"{where}freeze={freeze!r:.40} freezes all {layers} layers of the model: nothing would train; freeze "
            f"fewer (freeze=N freezes layers 0..N-1, e.g. freeze=10 the backbone)"
        )


def checked_training_state(original, self, ckpt):
    """``BaseTrainer._load_checkpoint_state`` (resume) for our models: the optimizer settings are the ones the trainer
    built, the learning rates and moments ones a run can hold (`ibra_yolo.optimizer_state`), every moment has its
    parameter's shape (battery 23, N20/N40: moments of two parameters swapped, or one flattened, passed the count check
    and ended the first resumed epoch in a traceback from torch's Adam)."""
    import torch

    from ibra_yolo.errors import CheckpointError
    from ibra_yolo.optimizer_state import built_groups, check_loaded_optimizer, check_optimizer_kind

    built = built_groups(self.optimizer)
    saved = (ckpt.get("optimizer") or {}) if isinstance(ckpt, dict) else {}
    if is_ours(getattr(self, "model", None)) and isinstance(saved.get("param_groups"), list):
        check_optimizer_kind(saved["param_groups"], built, type(self.optimizer).__name__, self.args.resume)
    original(self, ckpt)
    if not is_ours(getattr(self, "model", None)):
        return
    name = self.args.resume
    check_loaded_optimizer(self.optimizer, built, getattr(self.args, "warmup_bias_lr", 0.0), name)
    for group in self.optimizer.param_groups:
        for p in group["params"]:
            for key, v in self.optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise CheckpointError(
                        f"{name}: its optimizer state holds {key} of shape {tuple(v.shape)} for a "
                        f"parameter of shape {tuple(p.shape)}: the file was altered, and training cannot resume from it"
                    )


def is_ours(model) -> bool:
    """True for one of our models, also inside Ultralytics' wrappers (AutoBackend keeps it as ``.model`` of a backend
    object, not as a submodule; torch.compile and DDP hold it as a submodule)."""
    from torch import nn

    from ibra_yolo.nn.head import SpikeDetect

    for _ in range(3):
        if isinstance(model, nn.Module) and any(isinstance(m, SpikeDetect) for m in model.modules()):
            return True
        model = getattr(model, "model", None)
    return False


def one_line_batch_refusal(original, self, *args, **kwargs):
    """``BaseTrainer._build_train_pipeline`` for our models: the stock refusal of a last training batch of one image
    at a small size (BatchNorm would see one value per channel) is a ``ValueError`` traceback; it becomes one
    `DatasetError` that also says how many images the split gave (battery 29, Q08: train_args ``fraction=1e-9`` in a
    resumed run left one image, and the message named neither the fraction nor the count)."""
    from ibra_yolo.errors import DatasetError

    try:
        return original(self, *args, **kwargs)
    except ValueError as e:
        if not (str(e).startswith("final batch=1") and is_ours(getattr(self, "model", None))):
            raise
        loader = getattr(self, "train_loader", None)
        images = len(loader.sampler) if loader is not None else "?"
        raise DatasetError(
            f"{e} (the training split gives {images} image(s) at fraction={getattr(self.args, 'fraction', 1.0)!r:.20}, "
            f"in batches of {getattr(loader, 'batch_size', '?')})"
        ) from e
