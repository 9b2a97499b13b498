"""What a resumed run takes from its checkpoint's optimizer: settings the trainer itself builds, moments a run can
hold. Called by ``training_checks.checked_training_state`` (the trainer's ``_load_checkpoint_state``, ``resume=True``)
for our models, with the optimizer the trainer built from the run's arguments before the file's state replaced it.

torch's ``Optimizer.load_state_dict`` takes every group setting from the file, so a file could make the resumed run
ascend the loss (``maximize=True``), shrink every Adam step 1e10 times (``eps=1e10``), train at ``lr=1e29``
(``initial_lr`` drives the warmup), or crash the first step (``amsgrad=True`` without its moments, ``step=-5``)
(battery 28, K2b/K2e/K3a/K3b/K3d/K3e): each was silent or a torch traceback.
"""

from __future__ import annotations

import math

import torch

from ibra_yolo.errors import CheckpointError

__all__ = ("built_groups", "check_optimizer_kind", "check_loaded_optimizer")

# settings a resumed trainer may build otherwise than the run did, or a run changes, each range-checked instead: the
# learning rate (warmup and scheduler move it; bounded below), the weight decay (scaled by the batch size, which
# resume=True may override), the momentum and betas (optimizer=auto builds AdamW with momentum 0.9 but records only
# its choice and lr0, so the resumed trainer builds train_args' momentum; both lie in [0, 1] by
# ``training_checks._check_param_groups``), and how torch runs the step on this device
FREE = frozenset({"params", "lr", "initial_lr", "weight_decay", "momentum", "betas", "fused", "foreach"})
KIND = ("betas", "momentum")  # Adam's family holds betas, SGD and RMSprop a momentum: which optimizer the state is
NON_NEGATIVE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "step")  # squares, sums of squares, counts


# Ultralytics scales weight_decay by batch * accumulate / 64 (accumulate = round(64 / batch), at least 1): the file's
# and the resumed trainer's differ by their batch sizes' ratio, up to 64 for batch sizes up to 4096
DECAY_SCALE = 64


def _is_rate(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf


def built_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The settings of each parameter group of the optimizer the trainer built (copied: loading replaces them)."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    return type(a) is type(b) and a == b


def check_optimizer_kind(groups: list, built: list[dict], kind: str, name) -> None:
    """The saved parameter groups are of the optimizer the trainer built (``kind``): run before torch loads them too,
    whose Adam rebuilds an SGD state with a KeyError (battery 29, KO12), and after (battery 28, K3i: the first step)."""
    for i, (group, want) in enumerate(zip(groups, built)):
        other = next((k for k in KIND if isinstance(group, dict) and (k in group) != (k in want)), None)
        if other is not None:  # train_args name another optimizer than the state is of
            raise CheckpointError(
                f"{name}: its optimizer's parameter group {i} {'holds' if other in group else 'lacks'} {other!r}, but "
                f"the trainer builds {kind} from the run's arguments: the state is another optimizer's (the file was "
                f"altered); start a new training to change the optimizer"
            )


def check_loaded_optimizer(optimizer: torch.optim.Optimizer, built: list[dict], warmup_bias_lr, name) -> None:
    """The file's optimizer state, loaded into ``optimizer``, against ``built`` (`built_groups` before loading): every
    setting the trainer builds is the one it built (but `FREE`), ``lr`` and ``initial_lr`` lie between 0 and the larger
    of the built learning rate and the warmup bias rate, the weight decay within `DECAY_SCALE` of the built one (0
    where the trainer builds 0), and no moment that is a square or a count is negative.

    Raises:
        CheckpointError: Naming the file, the group and the setting (or the moment).
    """
    check_optimizer_kind(optimizer.param_groups, built, type(optimizer).__name__, name)
    for i, (group, want) in enumerate(zip(optimizer.param_groups, built)):
        for key, value in want.items():
            if key in FREE or key not in group or _same(group[key], value):
                continue
            raise CheckpointError(
                f"{name}: its optimizer's parameter group {i} holds {key}={group[key]!r:.60}, but the trainer builds "
                f"{key}={value!r:.60} from the run's arguments: resuming would train with the file's setting (the file "
                f"was altered); start a new training to change it"
            )
        missing = next((k for k in ("lr", "initial_lr") if k in want and k not in group), None)
        if missing is not None:  # the warmup reads initial_lr: KeyError from the trainer (battery 29, KO6)
            raise CheckpointError(
                f"{name}: its optimizer's parameter group {i} lacks {missing!r}, which every saved run holds and the "
                f"trainer reads (the file was altered)"
            )
        decay, built_decay = group.get("weight_decay", 0.0), float(want.get("weight_decay", 0.0))
        if not (_is_rate(decay) and decay <= built_decay * DECAY_SCALE * (1 + 1e-6)):
            raise CheckpointError(
                f"{name}: its optimizer's parameter group {i} holds weight_decay={decay!r:.60}, but the trainer builds "
                f"{built_decay!r} (a batch= given at resume scales it, at most {DECAY_SCALE}x): resuming would decay "
                f"the weights as the file chose (the file was altered)"
            )
        top = max(float(want.get("lr", 0.0)), float(want.get("initial_lr", 0.0)), float(warmup_bias_lr or 0.0))
        for key in ("initial_lr", "lr"):
            rate = group.get(key, 0.0)
            if not (_is_rate(rate) and rate <= top * (1 + 1e-6)):
                raise CheckpointError(
                    f"{name}: its optimizer's parameter group {i} holds {key}={rate!r:.60}, but a run's learning rate "
                    f"lies in [0, {top!r}] (the trainer's lr0 or warmup bias rate): resuming would train at the "
                    f"file's rate (the file was altered)"
                )
    for p, state in optimizer.state.items():
        for key in NON_NEGATIVE:
            v = state.get(key)
            if isinstance(v, torch.Tensor) and v.numel() and bool((v < 0).any()):
                raise CheckpointError(
                    f"{name}: its optimizer state holds a negative {key} ({float(v.min()):.4g}) for a parameter of "
                    f"shape {tuple(p.shape)}: a square or a count is never negative (the file was altered), and "
                    f"training cannot resume from it"
                )
