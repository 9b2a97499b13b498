"""Deployment: fold a trained spiking model into the network that runs (SPEC §2.5).

Two re-parameterisations, both exact up to float rounding (every fold is computed in float64):

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
from ibra_yolo.files import check_output, write_atomic
from ibra_yolo.nn.blocks import BNPad, ConvBlock, Downsample, NeuronConv, RepConv, SConv, SepConv, SepRep
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
# Folding maths on single layers (float64, the result in the layer's dtype)
# ----------------------------------------------------------------------------------------------------------------------
def check_bn(bn: nn.BatchNorm2d, name: str) -> None:
    """Refuse a BN whose eval-mode scale ``weight / sqrt(running_var + eps)`` or shift is not a finite number.

    Raises:
        NonFiniteError: Naming the BN (``name``), the first broken channel and its statistics.
    """
    var = bn.running_var.double() + bn.eps
    broken = ~(var > 0) | ~var.isfinite()  # ~(NaN > 0) is True too
    for t in (bn.weight, bn.bias, bn.running_mean):
        broken |= ~t.isfinite()
    if bool(broken.any()):
        c = int(broken.nonzero()[0])
        values = (
            f"weight {float(bn.weight[c]):g}, bias {float(bn.bias[c]):g}, running_mean {float(bn.running_mean[c]):g}"
        )
        raise NonFiniteError(
            f"cannot fold {name}: channel {c} has {values}, running_var + eps {float(var[c]):g} (all must be finite, "
            "running_var + eps > 0): the BN statistics are broken"
        )


def _bn_affine64(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``a * x + b`` per channel, in float64 (``check_bn`` first: never a NaN or inf scale)."""
    check_bn(bn, repr(bn))
    a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return a, bn.bias.double() - bn.running_mean.double() * a


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, padding=None) -> nn.Conv2d:
    """A new ``Conv2d`` with ``conv``'s geometry, dtype and device and the given float64 weight and bias."""
    out = nn.utils.skip_init(  # no random initialisation: every value is overwritten
        nn.Conv2d,
        weight.shape[1] * conv.groups,
        weight.shape[0],
        weight.shape[2:],
        stride=conv.stride,
        padding=conv.padding if padding is None else padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    out.requires_grad_(conv.weight.requires_grad)
    return out


def _bias64(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        return torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
    return conv.bias.double()


def _check_plain(conv: nn.Conv2d, what: str) -> None:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise IbraYoloError(f"cannot fold {what}: {conv} must use numeric zero padding")


def fold_bn_after(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """``conv`` followed by BN as one conv with bias: ``BN(conv(x)) == new(x)`` (eval mode).

    Args:
        conv (nn.Conv2d): The conv.
        bn (nn.Module): A ``BatchNorm2d`` (not a ``BNPad``: its border is not a conv output), or ``nn.Identity``
            (already folded; ``conv`` is returned).

    Returns:
        (nn.Conv2d): The folded conv.
    """
    if isinstance(bn, nn.Identity):
        return conv
    if isinstance(bn, BNPad) and bn.pad:
        raise IbraYoloError(f"cannot fold {bn} into the conv before it: its padded border is not that conv's output")
    a, b = _bn_affine64(bn)
    return _conv_like(conv, conv.weight.double() * a.view(-1, 1, 1, 1), _bias64(conv) * a + b)


def fold_bn_before(bn: nn.Module, conv: nn.Conv2d) -> nn.Conv2d:
    """``BNPad`` (or BN) followed by ``conv`` as one conv: ``conv(BNPad(x)) == new(x)`` (eval mode).

    ``BNPad(x) == BN(zero_pad(x))``, so the BN scales the conv's input channels, its shift enters the bias, and the new
    conv zero-pads its input by the BNPad border. ``conv`` must not pad (its padding would use zeros, not BN(0)).

    Args:
        bn (nn.Module): ``BNPad``/``BatchNorm2d``, or ``nn.Identity`` (already folded; ``conv`` is returned).
        conv (nn.Conv2d): The conv after it, any groups.

    Returns:
        (nn.Conv2d): The folded conv.
    """
    if isinstance(bn, nn.Identity):
        return conv
    _check_plain(conv, f"{bn} into the conv after it")
    if any(conv.padding):
        raise IbraYoloError(f"cannot fold {bn} into {conv}: the conv pads its input with zeros, not with BN(0)")
    a, b = _bn_affine64(bn)
    w = conv.weight.double()
    g, (co, cig) = conv.groups, w.shape[:2]
    wg = w.view(g, co // g, cig, *w.shape[2:])  # input channel of wg[i, :, j] is i * cig + j
    w_new = (wg * a.view(g, 1, cig, 1, 1)).view_as(w)
    bias = _bias64(conv) + (wg * b.view(g, 1, cig, 1, 1)).sum((2, 3, 4)).reshape(co)
    pad = getattr(bn, "pad", 0)
    return _conv_like(conv, w_new, bias, padding=(pad, pad))


def _dense(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped conv weight ``[co, ci/g, k, k]`` as the dense ``[co, ci, k, k]`` weight of the same conv."""
    if groups == 1:
        return w
    co, cig = w.shape[:2]
    out = w.new_zeros(co, cig * groups, *w.shape[2:])
    for i in range(groups):
        rows = slice(i * co // groups, (i + 1) * co // groups)
        out[rows, i * cig : (i + 1) * cig] = w[rows]
    return out


def _compose(wa: torch.Tensor, ba: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense unpadded conv ``(wa, ba)`` followed by unpadded ``conv``, as one dense kernel and bias (float64).

    ``K[o, i, u + v] = sum_m B[o, m, v] * A[m, i, u]`` (a full 2-D convolution of the kernels) and
    ``b[o] = b_B[o] + sum_{m, v} B[o, m, v] * b_A[m]``; a depthwise ``conv`` (``m == o``) is used as it is.
    """
    wb, (kh, kw) = conv.weight.double(), conv.kernel_size
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    if not depthwise:
        wb = _dense(wb, conv.groups)
    ka = wa.shape[2:]
    out = wa.new_zeros(wb.shape[0], wa.shape[1], ka[0] + kh - 1, ka[1] + kw - 1)
    for v in range(kh):
        for u in range(kw):
            b_vu = wb[:, :, v, u]  # [o, 1] (depthwise) or [o, m]
            term = b_vu.view(-1, 1, 1, 1) * wa if depthwise else torch.einsum("om,mikl->oikl", b_vu, wa)
            out[:, :, v : v + ka[0], u : u + ka[1]] += term
    shift = wb.sum((1, 2, 3)) * ba if depthwise else wb.sum((2, 3)) @ ba
    return out, _bias64(conv) + shift


def merge_convs(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """A chain of stride-1 convs as one dense conv with bias: ``convs[-1](...convs[0](x)) == new(x)``.

    At most one conv of the chain may pad, and every conv before it must be a bias-free 1x1 (these commute with zero
    padding), so the chain is a chain of unpadded convs on the zero-padded input, which compose pairwise (``_compose``).

    Args:
        convs (list[nn.Conv2d]): The chain, in forward order.

    Returns:
        (nn.Conv2d): One conv with ``groups=1``, stride 1 and the chain's padding.
    """
    padded = [i for i, c in enumerate(convs) if any(c.padding)]
    for c in convs:
        _check_plain(c, "a conv chain")
        if c.stride != (1, 1) or c.dilation != (1, 1):
            raise IbraYoloError(f"cannot merge {c}: only stride-1, undilated convs merge")
    if len(padded) > 1:
        raise IbraYoloError(f"cannot merge {len(padded)} padded convs of one chain exactly")
    pad = convs[padded[0]].padding if padded else (0, 0)
    for c in convs[: padded[0] if padded else 0]:
        if c.kernel_size != (1, 1) or c.bias is not None:
            raise IbraYoloError(f"cannot merge {c}: only a bias-free 1x1 conv may come before the padded conv")
    w, b = _dense(convs[0].weight.double(), convs[0].groups), _bias64(convs[0])
    for c in convs[1:]:
        w, b = _compose(w, b, c)
    first = convs[0]
    out = nn.utils.skip_init(
        nn.Conv2d, w.shape[1], w.shape[0], w.shape[2:], padding=pad, device=w.device, dtype=first.weight.dtype
    )
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    out.requires_grad_(first.weight.requires_grad)
    return out


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
    return models


def _fold_plan(root: nn.Module) -> list[tuple[NeuronConv, nn.Module | None, str | None]]:
    """Every ``NeuronConv`` with the block (and attribute name) of the BN after it, if any; checked before any change.

    Raises:
        IbraYoloError: An op other than Conv2d/RepConv/SepRep, or a BN that no known block pairs with a conv (e.g. in
            a custom block), named by its module path.
        NonFiniteError: A BN whose statistics give a NaN or infinite scale (``check_bn``), named by its module path.
    """
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
        folded |= {id(m) for m in unit.op.modules() if isinstance(m, nn.BatchNorm2d)}  # folded by _fuse_op
    for name, m in root.named_modules():
        if isinstance(m, nn.BatchNorm2d) and id(m) not in folded:
            raise IbraYoloError(f"cannot fold {name} ({type(m).__name__}): no conv next to it is known to deploy")
        if isinstance(m, nn.BatchNorm2d):
            check_bn(m, name)
    return plan


def bn_after_units(root: nn.Module) -> dict[int, nn.Module]:
    """``id(unit) -> the BN (or the Identity it was folded into) that directly follows that NeuronConv's output``."""
    pairs = {}
    for block in root.modules():
        for conv_name, bn_name in next((v for k, v in BN_AFTER.items() if isinstance(block, k)), ()):
            pairs[id(getattr(block, conv_name))] = getattr(block, bn_name)
    return pairs


def _fuse_op(op: nn.Module) -> tuple[nn.Module, str | None]:
    """Fold the BNs inside ``op``; returns it and the attribute of its last conv (None when ``op`` is a conv)."""
    if isinstance(op, RepConv):
        op.pw2, op.bn2 = fold_bn_after(op.pw2, op.bn2), nn.Identity()
        op.dw, op.bn1 = fold_bn_before(op.bn1, op.dw), nn.Identity()
        return op, "pw2"
    if isinstance(op, SepRep):
        op.pw, op.bn = fold_bn_before(op.bn, op.pw), nn.Identity()
        return op, "dw"
    return op, None  # a Conv2d (_fold_plan checked)


def _mark(root: nn.Module) -> None:
    if isinstance(getattr(root, "yaml", None), dict):
        root.yaml[FOLDED_KEY] = folded_state(root)


def _fuse_bn_root(root: nn.Module) -> int:
    """Fold the BNs of one torch model; returns how many were folded."""
    plan = _fold_plan(root)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in root.modules())
    for unit, block, bn_name in plan:
        op, last = _fuse_op(unit.op)
        if block is not None:
            bn = getattr(block, bn_name)
            if last is None:
                unit.op = fold_bn_after(op, bn)
            else:
                setattr(op, last, fold_bn_after(getattr(op, last), bn))
            setattr(block, bn_name, nn.Identity())
    _mark(root)
    return before


def _merge_root(root: nn.Module) -> int:
    """Merge each (BN-folded) RepConv and SepRep of one torch model into one conv; returns how many were merged."""
    merged = 0
    for unit in [m for m in root.modules() if isinstance(m, NeuronConv)]:
        names = next((v for k, v in MERGED_CONVS.items() if isinstance(unit.op, k)), None)
        if names is not None:
            unit.op = merge_convs([getattr(unit.op, n) for n in names])
            merged += 1
    _mark(root)
    return merged


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
        _fuse_bn_root(root)
        _merge_root(root)
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

    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() != ".pt":
        raise IbraYoloError(f"output {dst} must end in .pt (Ultralytics loads checkpoints by that suffix)")
    check_output(dst, overwrite, flag="output file name", inputs=(src,))
    ckpt = load_checkpoint(src)  # weights_only and the allow-list: nothing in the file can run
    model = checkpoint_model(ckpt, src, need="ibra-yolo")
    model = deploy(model.float()).eval()
    set_spike_driven(model, spike_driven)
    out = {**ckpt, "model": model, "ema": None, "optimizer": None, "scaler": None, "updates": None}
    return write_atomic(dst, lambda tmp: torch.save(out, tmp), overwrite)
