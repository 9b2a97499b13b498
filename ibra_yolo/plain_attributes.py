"""What a loaded model's layers hold outside their ``state_dict``: plain attributes in their instance ``__dict__``.

Python finds an instance attribute before ``nn.Module.__getattr__`` looks in ``_parameters``, ``_buffers`` and
``_modules``, so a file whose layer holds ``weight`` (or ``running_var``, or a ``bias`` where the conv has none) as a
plain attribute runs with that hidden tensor, while its ``state_dict`` -- what every other check compares, what
training loads -- shows the trained one (battery 26, N14b/N15b/N26: other boxes, other energy numbers, and a deployed
copy that carried the hidden zeros openly). ``nn.Module.__setattr__`` never leaves such a pair. A tensor kept as a
plain attribute (a threshold, a mask) is as invisible to the ``state_dict``: each must be one the model dict's layer
holds too, with the same values. ``ibra_yolo.model_state.check_model_state`` runs these for both loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ibra_yolo.errors import CheckpointError

__all__ = ("check_shadowing", "check_plain_attributes", "with_saving_version")

# the head's anchor cache: ``SpikeDetect.__setstate__`` resets its ``shape`` on load, so a file's anchors and strides
# are never used (rebuilt at the first forward); its ``stride`` is checked against the layers by ``_check_structure``
HEAD_CACHES = frozenset({"anchors", "strides", "stride"})


def _what(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{value!r:.60}"


def check_shadowing(models: dict[str, nn.Module], path: str | Path) -> None:
    """Refuse a model (``{label: model}``, e.g. its ``model`` and ``ema``) with a layer whose instance ``__dict__``
    holds a name that is also one of its parameters, buffers or children (even one that is None, as a conv's absent
    bias): the layer would run with the plain attribute, not with what its ``state_dict`` holds.

    Raises:
        CheckpointError: Naming the layer and the attribute.
    """
    for label, model in models.items():
        for name, m in model.named_modules():  # memoised: a layer shared by two places is checked once
            own = vars(m)
            for kind in ("_parameters", "_buffers", "_modules"):
                held = own.get(kind)
                for key in sorted(set(own) & set(held if isinstance(held, dict) else ())):
                    what = kind.strip("_").removesuffix("s").replace("module", "child layer")
                    slot = f"{what} {key!r}" + (" (None: it has none)" if held[key] is None else "")
                    raise CheckpointError(
                        f"{path}: {label}{name or 'the model'} ({type(m).__name__}) holds a plain attribute {key!r} "
                        f"({_what(own[key])}) beside its {slot}, so it would run with that attribute while its "
                        f"state_dict shows the {what}: the file was altered after it was saved (save the model again "
                        f"with torch, or retrain)"
                    )


def _same_tensor(held: torch.Tensor, want) -> bool:
    """The same shape and values; a float tensor may be held at another float precision (an fp16 copy holds what
    the model dict builds, cast to half)."""
    if not isinstance(want, torch.Tensor) or held.shape != want.shape:
        return False
    if held.dtype != want.dtype and not (held.is_floating_point() and want.is_floating_point()):
        return False
    return torch.equal(held.detach().cpu(), want.detach().cpu().to(held.dtype))


def check_plain_attributes(layers: nn.Module, built: nn.Module, path: str | Path, run_time: frozenset) -> None:
    """Refuse a layer that holds, as a plain attribute, a tensor the model dict's layer (``built``, at the same place
    and of the same class) does not hold with the same shape and values, or a public setting it does not have at all
    (one its class gives is compared with the class's by ``check_layer_settings``; ``run_time`` names those running
    the model sets). The head's anchor cache and stride are exempt (`HEAD_CACHES`).

    Raises:
        CheckpointError: Naming the layer, the attribute and what it holds.
    """
    from ultralytics.nn.modules.head import Detect

    want = dict(built.named_modules(prefix="model", remove_duplicate=False))
    for name, m in layers.named_modules(prefix="model", remove_duplicate=False):
        ref = vars(want[name]) if name in want else {}
        for key, value in vars(m).items():
            if isinstance(value, torch.Tensor):
                if (isinstance(m, Detect) and key in HEAD_CACHES) or _same_tensor(value, ref.get(key)):
                    continue
                builds = _what(ref[key]) if key in ref else "no such attribute"
                why = "a tensor outside the state_dict, which forward may read"
            elif key.startswith("_") or key == "training" or key in run_time or key in ref:
                continue  # a setting both hold is compared by check_layer_settings
            elif hasattr(type(m), key):
                continue  # one its class gives: compared with the class's by check_layer_settings
            else:
                builds, why = "no such setting", "a setting no model dict gives"
            raise CheckpointError(
                f"{path}: {name} ({type(m).__name__}) holds the plain attribute {key!r} ({_what(value)}), but its "
                f"model dict builds {builds} there ({why}): the file was altered after it was saved"
            )


def with_saving_version(error: CheckpointError, ckpt) -> CheckpointError:
    """``error`` (a refused layer, setting or tensor), with the Ultralytics version that saved the file where it is not
    the installed one: a layer whose class set another attribute or default in that version (``Detect.__init__`` of
    another 8.4 release) reads like an altered file, and the message must not blame the user's file alone."""
    import ultralytics

    saved = ckpt.get("version") if isinstance(ckpt, dict) else None
    if not isinstance(saved, str) or saved == ultralytics.__version__:
        return error
    return type(error)(
        f"{error} (or: the file was saved by Ultralytics {saved[:20]!r} and this is {ultralytics.__version__}, whose "
        f"layers may hold other settings; load it with Ultralytics {saved[:20]}, or retrain)"
    )
