"""Lazy autoload, run at interpreter start by the ``ibra_yolo.pth`` file the package installs.

It imports neither torch nor Ultralytics. It puts a finder on ``sys.meta_path`` that waits for the first import of
``ultralytics.nn.tasks`` and calls ``ibra_yolo.plugin.register()`` right after that module has executed, before any
other Ultralytics module binds its functions. So the stock ``yolo`` CLI, DDP worker processes and
``YOLO("best.pt")`` in a fresh process all see the plugin. Opt out with ``IBRA_YOLO_AUTOLOAD=0``: then the finder only
calls ``ibra_yolo.plugin.register_hint()``, so that a failed load of one of our model names says that the plugin is
not registered and how to register it; stock models load exactly as without ibra-yolo.
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import sys

__all__ = ("install", "enabled", "after_import", "run_pending")

TARGET = "ultralytics.nn.tasks"


def enabled() -> bool:
    """False when the environment variable ``IBRA_YOLO_AUTOLOAD`` is 0/false/no/off."""
    return os.environ.get("IBRA_YOLO_AUTOLOAD", "1").strip().lower() not in {"0", "false", "no", "off"}


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then calls ``callback()`` once the module has executed."""

    def __init__(self, loader, callback):
        self.loader = loader
        self.callback = callback

    def __getattr__(self, name):  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.callback()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds one module (``target``) with the other finders and wraps its loader to call ``callback`` after it."""

    def __init__(self, target: str, callback):
        self.target = target
        self.callback = callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing into us
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, self.callback)
                return spec
        return None


# (module, callback) pairs whose module was still executing when they were asked for (see `after_import`)
_PENDING: list[tuple[str, object]] = []


def _initializing(module: str) -> bool:
    """True while ``module`` is in ``sys.modules`` but its code is still running (importlib's flag on its spec)."""
    return bool(getattr(getattr(sys.modules.get(module), "__spec__", None), "_initializing", False))


def run_pending() -> None:
    """Call the `after_import` callbacks whose module has finished executing since they were asked for. A module whose
    import failed meanwhile (Ctrl-C, an error) is gone from ``sys.modules``: its callback waits for its next import
    (battery 32: a Ctrl-C during the first import ended in a KeyError traceback from the callback at exit)."""
    for item in list(_PENDING):
        if item in _PENDING and not _initializing(item[0]):
            _PENDING.remove(item)
            if item[0] in sys.modules:
                item[1]()
            else:
                after_import(*item)


class _PendingFinder(importlib.abc.MetaPathFinder):
    """Finds nothing; on every import it runs the pending callbacks whose module has finished (`run_pending`)."""

    def find_spec(self, fullname, path=None, target=None):
        if _PENDING:
            run_pending()
        return None


def after_import(module: str, callback) -> None:
    """Call ``callback()`` right after ``module`` is first imported (now, if it is imported already).

    A module that is being imported right now -- ``from ultralytics.engine.trainer import BaseTrainer`` as a program's
    first import executes the trainer module, which imports ``ultralytics.nn.tasks``, which registers the plugin
    before the trainer module has defined ``BaseTrainer`` -- is not ready: its callback waits until the module has
    finished, and runs at the next import anywhere, or when `run_pending` is called (the plugin's wrappers of
    ``Model.train`` and ``DetectionModel`` do, before any trainer is made).
    """
    if module in sys.modules and _initializing(module):
        if (module, callback) not in _PENDING:
            _PENDING.append((module, callback))
        if not any(isinstance(f, _PendingFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _PendingFinder())
    elif module in sys.modules:
        callback()
    elif not any(isinstance(f, _Finder) and f.target == module and f.callback == callback for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(module, callback))


def _register(hint_only: bool) -> None:
    from ibra_yolo import plugin

    plugin.register_hint() if hint_only else plugin.register()


def install() -> None:
    """Arm the finder (or register at once if Ultralytics' tasks module is already imported)."""
    if any(isinstance(f, _Finder) and f.target == TARGET for f in sys.meta_path):
        return
    after_import(TARGET, functools.partial(_register, not enabled()))
