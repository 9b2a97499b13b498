"""Ultralytics' own refusals in the exporter and the tracker as one line (installed by ``ibra_yolo.plugin.register``
via `guard_exports_and_tracking`).

Ultralytics' exporter checks its arguments with ``ValueError``/``assert`` (``half=True`` for TorchScript on the CPU,
an unknown format, a device this machine lacks) and imports a format's package where it needs it (``import openvino``
fails when the package is missing and ``YOLO_AUTOINSTALL`` is off or the machine is offline); ``track`` imports its
matcher's ``lap`` the same way: each was a traceback through Ultralytics. An error raised by Ultralytics' own code
(the innermost frame is in the ``ultralytics`` package) becomes `ExportError` (a ``ValueError``) or
`MissingPackageError` (a ``ModuleNotFoundError``) with the same message on one line; one raised anywhere else (torch's
tracer, onnx) is a failure of the export itself and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from ibra_yolo.errors import ExportError, IbraYoloError, MissingPackageError

__all__ = ("guard_exports_and_tracking",)


def _raised_by_ultralytics(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "ultralytics" in Path(tb.tb_frame.f_code.co_filename).parts


def _one_line(e: BaseException) -> str:
    text = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
    return text.replace("ERROR ❌️ ", "").strip() or type(e).__name__


def _missing_package(e: ImportError, what: str, alternative: str = "") -> MissingPackageError:
    package = getattr(e, "name", None) or "?"
    return MissingPackageError(
        f"{what} needs the Python package {package!r}, which is not installed (Ultralytics installs it only when "
        f"online with YOLO_AUTOINSTALL on): pip install {package.split('.')[0]}"
        + (f", {alternative}" * bool(alternative))
    )


@contextlib.contextmanager
def _one_line_refusals(what: str, alternative: str = "", arguments: bool = False):
    """Inside: Ultralytics' own ``ImportError`` of a missing package becomes `MissingPackageError`, and with
    ``arguments`` its ``ValueError``/``assert`` refusing an argument becomes `ExportError`, each one line naming
    ``what``. Errors raised outside Ultralytics' code pass unchanged."""
    try:
        yield
    except IbraYoloError:
        raise
    except ImportError as e:
        if not _raised_by_ultralytics(e):
            raise
        raise _missing_package(e, what, alternative) from None
    except (ValueError, AssertionError) as e:
        if not (arguments and _raised_by_ultralytics(e)):
            raise
        raise ExportError(f"{what}: {_one_line(e)}") from None


def track_checked(original, self, *args, **kwargs):
    """``Model.track``: a tracker package that is missing (``lap``) is one line."""
    with _one_line_refusals("track"):
        return original(self, *args, **kwargs)


def export_checked(original, self, *args, **kwargs):
    """``Exporter.__call__``: Ultralytics' own refusal of the export's arguments or environment is one line."""
    fmt = getattr(getattr(self, "args", None), "format", "?")
    with _one_line_refusals(f"export format={fmt}", "or choose another format", arguments=True):
        return original(self, *args, **kwargs)


def guard_exports_and_tracking() -> None:
    """Wrap ``Exporter.__call__`` and ``Model.track`` when their modules are first imported."""
    from ibra_yolo._autoload import after_import
    from ibra_yolo.stock_hooks import wrap_methods

    exporter, model = "ultralytics.engine.exporter", "ultralytics.engine.model"
    after_import(exporter, functools.partial(wrap_methods, exporter, "Exporter", {"__call__": export_checked}))
    after_import(model, functools.partial(wrap_methods, model, "Model", {"track": track_checked}))
