"""Lazy autoload, run at interpreter start by the ``ibra_yolo.pth`` file the package installs.

It imports neither torch nor Ultralytics. It puts a finder on ``sys.meta_path`` that waits for the first import of
``ultralytics.nn.tasks`` and calls ``ibra_yolo.plugin.register()`` right after that module has executed, before any
other Ultralytics module binds its functions. So the stock ``yolo`` CLI, DDP worker processes and
``YOLO("best.pt")`` in a fresh process all see the plugin. Opt out with ``IBRA_YOLO_AUTOLOAD=0``: then the finder only
calls ``ibra_yolo.plugin.register_hint()``, so that a failed load of one of our model names says that the plugin is
not registered and how to register it; stock models load exactly as without ibra-yolo.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

__all__ = ("install", "enabled")

TARGET = "ultralytics.nn.tasks"


def enabled() -> bool:
    """False when the environment variable ``IBRA_YOLO_AUTOLOAD`` is 0/false/no/off."""
    return os.environ.get("IBRA_YOLO_AUTOLOAD", "1").strip().lower() not in {"0", "false", "no", "off"}


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then registers the plugin (or only its hint, with the autoload off)."""

    def __init__(self, loader, hint_only: bool = False):
        self.loader = loader
        self.hint_only = hint_only

    def __getattr__(self, name):  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from ibra_yolo import plugin

        plugin.register_hint() if self.hint_only else plugin.register()


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``ultralytics.nn.tasks`` with the other finders and wraps its loader."""

    def __init__(self, hint_only: bool = False):
        self.hint_only = hint_only

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing into us
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, self.hint_only)
                return spec
        return None


def install() -> None:
    """Arm the finder (or register at once if Ultralytics' tasks module is already imported)."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    hint_only = not enabled()
    if TARGET in sys.modules:
        from ibra_yolo import plugin

        plugin.register_hint() if hint_only else plugin.register()
        return
    sys.meta_path.insert(0, _Finder(hint_only))
