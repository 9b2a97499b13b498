"""A checkpoint torch can walk and write again: no module cycle, nothing nested or shared without end.

A pickle can rebuild any object graph, including a layer that holds one of its own parents or a list nested 30,000
deep. Loading such a file works; then every torch walk of the model (``.float()``, ``.to()``, ``deepcopy``,
``state_dict``) or ``torch.save`` of its data recursed until Python's limit: a bare ``RecursionError`` in ``YOLO(p)``,
``yolo predict`` and ``ibra-yolo deploy`` (battery 21, H14/H26). Its memo can also share one tuple at every level, so
that ``deepcopy`` and printing expand 1 KB into 2**39 values (battery 26, K31/H85). These checks walk without
recursion, each object once, before anything else walks the file.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ibra_yolo.errors import CheckpointError

__all__ = ("MAX_DEPTH", "MAX_EXPANDED", "check_expanded_size", "check_module_tree", "check_nesting")

MAX_DEPTH = 64  # our module trees nest <= 6 deep and checkpoint data <= 5; torch and pickle recurse once per level
# Values a checkpoint holds when each shared reference is counted each time it is met (`check_expanded_size`): stock
# yolov8n 8,900, our trained n-scale checkpoints 16,000-21,000, a mid-run last.pt with its optimizer state 24,000
# (counted in 25-80 ms on a busy 2-core machine; reading the file takes seconds). The same bound as the YAML reader's
# aliases (``ibra_yolo.yaml_files.MAX_YAML_VALUES``); a pickle's memo makes 1 KB expand to 2**39 values.
MAX_EXPANDED = 1_000_000


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

    Then `check_expanded_size`: data that expands without end through shared references.

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
    check_expanded_size(ckpt, path)


def _parts(value) -> list:
    """What a value holds, as ``(step, item)`` (``step`` extends the key path): a dict's keys and values, a list's,
    tuple's or set's items, an object's attributes (a layer's settings, its ``yaml`` and ``args`` dicts, its
    children; a tensor's Python attributes). A string, bytes or a number holds nothing."""
    if isinstance(value, _LEAVES):
        return []
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in ((f"[{key!r:.40}]", key), (f"[{key!r:.40}]", item))]
    if isinstance(value, (list, tuple)):
        return [(f"[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [("{}", item) for item in value]
    attrs = getattr(value, "__dict__", None)  # a class's is a mappingproxy: not walked
    return [(f".{key:.40}", item) for key, item in attrs.items()] if type(attrs) is dict else []


_LEAVES = (str, bytes, bytearray, int, float, complex, type(None))


def check_expanded_size(ckpt: dict, path: str | Path) -> None:
    """Refuse a checkpoint that holds more than `MAX_EXPANDED` values when every shared reference is counted each time
    it is met, as ``copy.deepcopy`` (which copies a tuple of unchanged items again at each use), ``str`` and
    Ultralytics' ``print_args`` expand it: a pickle's memo builds ``t = (t, t)`` 39 levels deep in 1 KB, 2**39 values
    (battery 26: resume and every loader ran until killed). Counted are dicts (keys and values), lists, tuples, sets
    and the attributes of objects (layers included, so a model's ``yaml`` dict is counted); a tensor is one value
    plus its Python attributes (none in a saved model), a string, bytes or a number one value. Each distinct
    object's count is computed once, without recursion (linear in the objects); a value met again while it is being
    counted (a cycle, where ``deepcopy`` and ``repr`` stop) adds nothing.

    Raises:
        CheckpointError: Naming the smallest entry (key path) whose values exceed the bound, and their count.
    """
    sizes: dict[int, int] = {}
    keep = []  # the objects whose ids are in ``sizes``: no id is reused while they live
    stack = [(k if isinstance(k, str) else repr(k), v, None) for k, v in reversed(ckpt.items()) if _parts(v)]
    while stack:
        where, value, parts = stack[-1]
        if parts is None:  # first visit: its parts are counted first
            if id(value) in sizes:  # met again through another path before its first visit came up
                stack.pop()
                continue
            sizes[id(value)], parts = 0, _parts(value)  # 0 while open: a cycle adds nothing
            keep.append(value)
            stack[-1] = (where, value, parts)
            stack.extend(
                (f"{where}{step}", item, None)
                for step, item in reversed(parts)
                if not isinstance(item, _LEAVES) and id(item) not in sizes
            )
            continue
        stack.pop()
        size = 1 + sum(sizes.get(id(item), 1) for _, item in parts)
        sizes[id(value)] = size
        if size > MAX_EXPANDED:
            raise CheckpointError(
                f"{path}: its {where[:200]} data expands to {size:,} values through shared references (over "
                f"{MAX_EXPANDED:,}: copying or printing it would never end); the file was altered"
            )
