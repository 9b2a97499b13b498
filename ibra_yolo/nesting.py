"""A checkpoint torch can walk and write again: no module cycle, nothing nested without end.

A pickle can rebuild any object graph, including a layer that holds one of its own parents or a list nested 30,000
deep. Loading such a file works; then every torch walk of the model (``.float()``, ``.to()``, ``deepcopy``,
``state_dict``) or ``torch.save`` of its data recursed until Python's limit: a bare ``RecursionError`` in ``YOLO(p)``,
``yolo predict`` and ``ibra-yolo deploy`` (battery 21, H14/H26). These checks walk without recursion, each object once,
before anything else walks the file.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ibra_yolo.errors import CheckpointError

__all__ = ("MAX_DEPTH", "check_module_tree", "check_nesting")

MAX_DEPTH = 64  # our module trees nest <= 6 deep and checkpoint data <= 5; torch and pickle recurse once per level


def check_module_tree(model: nn.Module, path: str | Path, root: str = "model") -> None:
    """Refuse a module tree torch cannot walk: a layer holding one of its own parents (a cycle: ``.float()``,
    ``.to()`` and ``deepcopy`` recursed without end) or layers nested deeper than `MAX_DEPTH`. Walked without
    recursion, each module once."""
    stack, open_, done = [(root, model, 0, iter(model._modules.items()))], {id(model)}, set()
    while stack:
        name, module, depth, children = stack[-1]
        step = next(children, None)
        if step is None:
            open_.discard(id(module))
            done.add(id(module))
            stack.pop()
            continue
        key, child = step
        where = f"{name}.{key}"
        if child is None or id(child) in done:
            continue
        if id(child) in open_:
            raise CheckpointError(
                f"{path}: layer {where[:120]} holds {type(child).__name__} {_find(stack, child)}, one of its own "
                "parents (a module cycle, which no model builds; the file was altered)"
            )
        if depth + 1 > MAX_DEPTH:
            raise CheckpointError(
                f"{path}: layer {where[:120]}... is nested over {MAX_DEPTH} deep (the file was altered)"
            )
        if not isinstance(child, nn.Module):
            what = type(child).__name__
            raise CheckpointError(f"{path}: layer {where[:120]} is a {what}, not a layer (the file was altered)")
        open_.add(id(child))
        stack.append((where, child, depth + 1, iter(child._modules.items())))


def _find(stack: list, module: nn.Module) -> str:
    return next((name[:120] for name, m, *_ in stack if m is module), "?")


def check_nesting(ckpt: dict, path: str | Path) -> None:
    """Refuse a checkpoint torch cannot walk or write again, before anything walks it: a model (``model``, ``ema``)
    with a module cycle or nested too deep (`check_module_tree`), or data (``train_args``, ``git``, the optimizer
    state) nested deeper than `MAX_DEPTH`: Ultralytics and ``ibra-yolo deploy`` write the file's data again with
    ``torch.save``, whose pickler recursed once per level (a list nested 30,000 deep: RecursionError).

    Raises:
        CheckpointError: Naming the layer or the entry.
    """
    if not isinstance(ckpt, dict):
        return
    for key, value in ckpt.items():
        if isinstance(value, nn.Module):
            check_module_tree(value, path, str(key))
    stack, seen = [(key, value, 1) for key, value in ckpt.items() if not isinstance(value, nn.Module)], set()
    while stack:
        where, value, depth = stack.pop()
        if not isinstance(value, (dict, list, tuple, set, frozenset)) or id(value) in seen:
            continue
        if depth > MAX_DEPTH:
            raise CheckpointError(
                f"{path}: its {where!r:.40} data is nested over {MAX_DEPTH} deep (the file was altered)"
            )
        seen.add(id(value))
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((where, item, depth + 1) for item in items)
