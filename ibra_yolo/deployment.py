"""Deployment: fold a trained spiking model into the network that runs (SPEC §2.5).

Two re-parameterisations, both exact up to float rounding (every fold is computed in float64, by
``ibra_yolo.folding``; all folds of a model are computed before any is applied, so an error changes nothing):

- ``fuse_bn(model)`` folds every BatchNorm into a conv next to it. A BN after a conv scales that conv's output
  channels. The border-padding ``BNPad`` inside ``RepConv``/``SepRep`` folds into the conv after it, which then
  zero-pads its input and adds the BN's zero-input value through its bias (the reason ``BNPad`` pads with that
  value). Ultralytics' ``fuse()``, which predict, val and export call, runs this (see ``ibra_yolo.plugin``).
- ``deploy(model)`` runs ``fuse_bn``, then merges each ``RepConv`` (1x1 -> depthwise kxk -> 1x1) and ``SepRep``
  (1x1 -> depthwise kxk) into one dense kxk conv with bias. Afterwards every layer is ``neuron -> one Conv2d (bias)``
  and between neurons only residual adds, pooling, upsampling and concat remain: in spike-driven mode every conv but
  the first (the real image) receives only ``{0, 1}``.

Folded modules keep the block classes: a BN becomes ``nn.Identity`` and a merged op a plain ``nn.Conv2d`` inside its
``NeuronConv``, so checkpoints, spike-driven mode and the energy meter work on the folded network unchanged. A folded
model is for inference only: its YAML dict records the fold (``folded: bn`` or ``folded: all``) and the model builder
refuses to build it, which stops ``yolo train model=<folded.pt>`` and ``resume`` with one line.

Examples:
    >>> from ultralytics import YOLO
    >>> from ibra_yolo import deploy, spike_driven  # the functions of ibra_yolo.deployment
    >>> model = deploy(YOLO("best.pt"))   # in place; returns the model
    >>> results = spike_driven(model)("bus.jpg")
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ibra_yolo.errors import IbraYoloError, NonFiniteError
from ibra_yolo.files import as_path, check_output, write_atomic
from ibra_yolo.folding import check_bn, fold_bn_after, fold_bn_before, merge_convs
from ibra_yolo.nn.blocks import ConvBlock, Downsample, NeuronConv, RepConv, SConv, SepConv, SepRep
from ibra_yolo.nn.builder import FOLDED_KEY
from ibra_yolo.spike_mode import set_spike_driven, torch_model

__all__ = (
    "deploy",
    "deploy_checkpoint",
    "bn_after_units",
    "fuse_bn",
    "fuse_for_inference",
    "folded_state",
    "fold_bn_after",
    "fold_bn_before",
    "merge_convs",
)

LOGGER = logging.getLogger("ultralytics")  # warn where Ultralytics warns

# Block class -> (NeuronConv attribute, BN attribute) pairs: that BN directly follows that conv in the block's forward.
BN_AFTER: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    Downsample: (("conv", "bn"),),
    SConv: (("conv", "bn"),),
    SepConv: (("pw1", "bn1"), ("dw", "bn2"), ("pw2", "bn3")),
    ConvBlock: (("conv1", "bn1"), ("conv2", "bn2")),
}
# Re-parameterisable op -> its convs in forward order once its BNs are folded (merged into one conv by ``deploy``).
MERGED_CONVS: dict[type[nn.Module], tuple[str, ...]] = {RepConv: ("pw1", "dw", "pw2"), SepRep: ("pw", "dw")}


# ----------------------------------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------------------------------
def _models(model) -> list[nn.Module]:
    """The torch models of ``model``: a YOLO object's model plus its cached predictor's copy, if any."""
    models = [torch_model(model)]
    predictor = model.__dict__.get("predictor")  # YOLO objects only
    if getattr(predictor, "model", None) is not None:
        models.append(torch_model(predictor.model))
    if not any(isinstance(m, NeuronConv) for m in models[0].modules()):
        raise IbraYoloError(f"{type(models[0]).__name__} has no ibra-yolo spiking layers: nothing to fold")
    for root in models:  # a model built on the meta device: torch's "Tensor.item() cannot be called on meta tensors"
        meta = next((n for n, t in [*root.named_parameters(), *root.named_buffers()] if t.is_meta), None)
        if meta is not None:
            raise IbraYoloError(f"{meta} is a meta tensor (no values): load the weights before folding the model")
    return models


def _fold_plan(root: nn.Module) -> list[tuple[NeuronConv, nn.Module | None, str | None]]:
    """Every ``NeuronConv`` with the block (and attribute name) of the BN after it, if any; checked before any change.

    Raises:
        IbraYoloError: An op other than Conv2d/RepConv/SepRep, or a BN that no known block pairs with a conv (e.g. in
            a custom block), named by its module path.
        NonFiniteError: A NaN or infinite weight or buffer, or a BN whose statistics give a NaN or infinite scale
            (``check_bn``), named by its module path.
    """
    from ibra_yolo.checkpoints import check_finite_weights

    plan, folded = [], set()
    for block in root.modules():
        for conv_name, bn_name in next((v for k, v in BN_AFTER.items() if isinstance(block, k)), ()):
            plan.append((getattr(block, conv_name), block, bn_name))
            folded.add(id(getattr(block, bn_name)))
    paired = {id(unit) for unit, _, _ in plan}
    plan += [(m, None, None) for m in root.modules() if isinstance(m, NeuronConv) and id(m) not in paired]
    for unit, _, _ in plan:
        if not isinstance(unit.op, (nn.Conv2d, RepConv, SepRep)):
            op = type(unit.op).__name__
            raise IbraYoloError(f"cannot fold {op}: the op of a NeuronConv must be Conv2d, RepConv or SepRep")
        folded |= {id(m) for m in unit.op.modules() if isinstance(m, nn.BatchNorm2d)}  # folded by _unit_fold
    for name, m in root.named_modules():
        if isinstance(m, nn.BatchNorm2d) and id(m) not in folded:
            raise IbraYoloError(f"cannot fold {name} ({type(m).__name__}): no conv next to it is known to deploy")
        if isinstance(m, nn.BatchNorm2d):
            check_bn(m, name)
    check_finite_weights(root, type(root).__name__)  # the convs: a NaN weight would be blamed on the fold
    return plan


def bn_after_units(root: nn.Module) -> dict[int, nn.Module]:
    """``id(unit) -> the BN (or the Identity it was folded into) that directly follows that NeuronConv's output``."""
    pairs = {}
    for block in root.modules():
        for conv_name, bn_name in next((v for k, v in BN_AFTER.items() if isinstance(block, k)), ()):
            pairs[id(getattr(block, conv_name))] = getattr(block, bn_name)
    return pairs


Change = tuple[nn.Module, str, nn.Module]  # (owner, attribute, new module): computed first, applied all at once


def _fold_changes(root: nn.Module) -> list[Change]:
    """Every BN of one torch model folded into a conv next to it, as changes to apply (nothing is changed here).

    Raises:
        IbraYoloError, NonFiniteError: As ``_fold_plan``; or a fold whose result overflows the conv's dtype, named by
            the module path of its NeuronConv.
    """
    names = {id(m): name for name, m in root.named_modules()}
    changes = []
    for unit, block, bn_name in _fold_plan(root):
        try:
            changes += _unit_fold(unit, block, bn_name)
        except NonFiniteError as e:
            raise NonFiniteError(f"cannot fold the BNs of {names[id(unit)]}: {e}") from None
    return changes


def _unit_fold(unit: NeuronConv, block: nn.Module | None, bn_name: str | None) -> list[Change]:
    """The BNs inside ``unit.op`` and the one after it in ``block`` (if any) folded, as changes."""
    op, changes = unit.op, []
    if isinstance(op, RepConv):
        changes += [(op, "dw", fold_bn_before(op.bn1, op.dw)), (op, "bn1", nn.Identity()), (op, "bn2", nn.Identity())]
        owner, attr, last = op, "pw2", fold_bn_after(op.pw2, op.bn2)
    elif isinstance(op, SepRep):
        changes += [(op, "pw", fold_bn_before(op.bn, op.pw)), (op, "bn", nn.Identity())]
        owner, attr, last = op, "dw", op.dw
    else:  # a Conv2d (_fold_plan checked)
        owner, attr, last = unit, "op", op
    if block is not None:
        last = fold_bn_after(last, getattr(block, bn_name))
        changes.append((block, bn_name, nn.Identity()))
    return [*changes, (owner, attr, last)]


def _merge_changes(root: nn.Module, pending: list[Change]) -> list[Change]:
    """Each RepConv and SepRep of one torch model merged into one conv (from its convs as ``pending`` leaves them)."""
    new = {(id(owner), attr): module for owner, attr, module in pending}
    names = {id(m): name for name, m in root.named_modules()}
    changes = []
    for unit in [m for m in root.modules() if isinstance(m, NeuronConv)]:
        convs = next((v for k, v in MERGED_CONVS.items() if isinstance(unit.op, k)), None)
        if convs is not None:
            try:
                merged = merge_convs([new.get((id(unit.op), n), getattr(unit.op, n)) for n in convs])
            except NonFiniteError as e:
                raise NonFiniteError(f"cannot merge the convs of {names[id(unit)]}: {e}") from None
            changes.append((unit, "op", merged))
    return changes


def _apply(root: nn.Module, changes: list[Change]) -> None:
    for owner, attr, module in changes:
        setattr(owner, attr, module)
    if isinstance(getattr(root, "yaml", None), dict):
        root.yaml[FOLDED_KEY] = folded_state(root)


def _fuse_bn_root(root: nn.Module) -> int:
    """Fold the BNs of one torch model (all or, on an error, none); returns how many were folded."""
    changes = _fold_changes(root)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in root.modules())
    _apply(root, changes)
    return before


def _deploy_root(root: nn.Module) -> None:
    """Fold the BNs of one torch model and merge its RepConvs and SepReps (all or, on an error, nothing)."""
    fold = _fold_changes(root)
    _apply(root, fold + _merge_changes(root, fold))


@torch.no_grad()
def fuse_bn(model):
    """Fold every BatchNorm of a spiking model into a conv next to it, in place (exact; see module docstring).

    ``RepConv`` and ``SepRep`` keep their three and two convs (their dense MACs stay low); only their BNs fold.

    Args:
        model (YOLO | nn.Module): A spiking model or its ANN twin (YOLO object incl. its predictor's copy,
            DetectionModel, or a module holding our blocks).

    Returns:
        The same ``model``.

    Raises:
        IbraYoloError: The model has no spiking layers, or a layer that cannot be folded (nothing is changed then).
    """
    for root in _models(model):
        _fuse_bn_root(root)
    return model


@torch.no_grad()
def deploy(model):
    """Re-parameterise a spiking model into its deployable form, in place: every layer ``neuron -> one conv (bias)``.

    Folds every BN (``fuse_bn``), then merges each ``RepConv`` and ``SepRep`` into one dense kxk conv with bias. The
    outputs equal the training graph's to float rounding; idempotent. The model can no longer be trained.

    Args:
        model (YOLO | nn.Module): A spiking model or its ANN twin (YOLO object incl. its predictor's copy,
            DetectionModel, or a module holding our blocks).

    Returns:
        The same ``model``.

    Raises:
        IbraYoloError: The model has no spiking layers, or a layer that cannot be folded (nothing is changed then).
    """
    for root in _models(model):
        _deploy_root(root)
    return model


@torch.no_grad()
def fuse_for_inference(root: nn.Module) -> bool:
    """The fold Ultralytics' ``fuse()`` runs on a torch model (see ``ibra_yolo.plugin``): its BNs, in place.

    Returns:
        (bool): Whether anything was folded. False for a model without our layers, and for one holding a BN no known
            block pairs with a conv (a custom block): fusing is a speed-up, so such a model stays as it is (warned).
    """
    if not any(isinstance(m, NeuronConv) for m in root.modules()):
        return False
    try:
        return _fuse_bn_root(root) > 0
    except NonFiniteError:  # broken BN statistics: the unfused model would predict from them just as wrongly
        raise
    except IbraYoloError as e:
        LOGGER.warning(f"fuse(): BNs left unfolded ({e})")
        return False


def folded_state(model) -> str:
    """How far ``model`` is folded: ``"none"`` (BNs remain), ``"bn"`` (``fuse_bn``) or ``"all"`` (``deploy``)."""
    modules = list(torch_model(model).modules())
    if any(isinstance(m, nn.BatchNorm2d) for m in modules):
        return "none"
    return "bn" if any(isinstance(m, (RepConv, SepRep)) for m in modules) else "all"


def deploy_checkpoint(src: str | Path, dst: str | Path, spike_driven: bool = False, overwrite: bool = False) -> Path:
    """Write the deployed form of checkpoint ``src`` to ``dst``, for the stock ``yolo predict / val / export``.

    ``src`` is read with Ultralytics' restricted loader (``weights_only`` and the allow-list, as with
    ``ULTRALYTICS_SAFE_LOAD=1``), so it never runs code. Its EMA model (the one Ultralytics evaluates) is deployed in
    float32 and saved in float32 (a fold of fp16 weights rounded back to fp16 would not be exact); the optimizer state
    is dropped: a deployed model cannot be trained. ``dst`` is checked before any work and written atomically.

    Args:
        src (str | Path): Ultralytics checkpoint of a spiking model (``best.pt``).
        dst (str | Path): Output checkpoint.
        spike_driven (bool): Store the model in spike-driven mode (every conv but the first gets ``{0, 1}``).
        overwrite (bool): Replace an existing ``dst``.

    Returns:
        (Path): ``dst``.

    Raises:
        MissingFileError: ``src`` does not exist.
        OutputExistsError: ``dst`` exists and ``overwrite`` is False.
        CheckpointError: ``src`` is not an Ultralytics checkpoint of an ibra-yolo model, or cannot be read safely.
    """
    from ibra_yolo.checkpoints import checkpoint_model, load_checkpoint

    src, dst = as_path(src, "src"), as_path(dst, "dst")
    if not isinstance(spike_driven, bool):  # checked before the work, which set_spike_driven would refuse after it
        raise IbraYoloError(f"spike_driven={spike_driven!r} is invalid: pass True (spike-driven) or False (integer)")
    if dst.suffix.lower() != ".pt":
        raise IbraYoloError(f"output {dst} must end in .pt (Ultralytics loads checkpoints by that suffix)")
    check_output(dst, overwrite, flag="output file name", inputs=(src,))
    ckpt = load_checkpoint(src)  # weights_only and the allow-list: nothing in the file can run
    model = checkpoint_model(ckpt, src, need="spiking" if spike_driven else "ibra-yolo")  # before the work
    model = deploy(model.float()).eval()
    set_spike_driven(model, spike_driven)
    out = {**ckpt, "model": model, "ema": None, "optimizer": None, "scaler": None, "updates": None}
    return write_atomic(dst, lambda tmp: torch.save(out, tmp), overwrite)
