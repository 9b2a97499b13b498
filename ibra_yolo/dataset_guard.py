"""Datasets in the stock pipeline (installed through `ibra_yolo.stock_hooks` by ``ibra_yolo.plugin.register``).

- `checkpoint_data_guarded` (``Model.train/val/export/benchmark``): the dataset YAML of a ``train`` or ``val`` call is
  checked before the trainer or validator makes its run folder, so a missing or broken dataset is one line that
  leaves nothing behind; in ``val``, a dataset taken from the loaded checkpoint's ``train_args`` (the user gave no
  ``data=``) must be named, local and on this machine (stock Ultralytics scores its default ``coco8.yaml`` instead).
- `scriptless_dataset_check` (``check_det_dataset``): a dataset named by the checkpoint, not the user, is never
  downloaded nor runs its YAML's ``download`` script; every failure of a dataset check (a missing file or images, a
  failed download, a YAML Ultralytics refuses) is one error of ours naming the dataset.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path

__all__ = (
    "checkpoint_data_guarded",
    "scriptless_dataset_check",
    "wrap_check_det_dataset",
    "check_checkpoint_dataset",
    "check_checkpoint_dataset_here",
    "add_checkpoint_named",
    "images_listed",
)

# the dataset names (``data=``) that the running Model call took from its checkpoint's train_args, not from the user
_FROM_CHECKPOINT = threading.local()


def add_checkpoint_named(data) -> None:
    """Mark ``data`` as chosen by the checkpoint (a resumed run's train_args) for the rest of this thread's call."""
    _FROM_CHECKPOINT.names = getattr(_FROM_CHECKPOINT, "names", frozenset()) | {str(data)}


def checkpoint_data_guarded(original, self, *args, **kwargs):
    """``Model.train``/``val``/``export``/``benchmark``: the dataset is checked before the stock call makes a run
    folder (see the module docstring). A dataset taken from the checkpoint is checked without running its YAML's
    ``download`` (`scriptless_dataset_check`): the checkpoint chose that YAML, and a ``download:`` is Python or bash."""
    from ibra_yolo.errors import MissingFileError

    outer = getattr(_FROM_CHECKPOINT, "names", frozenset())
    overrides = getattr(self, "overrides", None) or {}
    _check_project({**overrides, **kwargs}.get("project"))
    call = getattr(original, "__name__", "")
    from_file = kwargs.get("data") is None and bool(getattr(self, "ckpt", None))  # Model.val's own test for a data=
    data = overrides.get("data") if from_file else kwargs.get("data")
    named = from_file and isinstance(data, (str, Path))
    if from_file and call == "val" and not named:
        name = getattr(self, "ckpt_path", None) or "the checkpoint"
        raise MissingFileError(
            f"{name} names no dataset (its train_args data= is {data!r:.60}) and your command gives none: pass data= "
            f"with the dataset YAML to validate on (Ultralytics would otherwise score its default coco8.yaml, "
            f"downloading it)"
        )
    if named and call in ("train", "val"):  # export reads it only for int8 calibration
        check_checkpoint_dataset(data)  # a URL: before the validator or trainer makes a run folder
    if named and call == "val":
        check_checkpoint_dataset_here(data)
    if call == "val" and kwargs.get("data") is None and callable(getattr(self, "_val_data", None)):
        kwargs["data"] = data = self._val_data()  # what stock Model.val picks (warning as it does), checked below
    _FROM_CHECKPOINT.names = outer | {str(data)} if named else outer
    try:
        resumed = call == "train" and {**overrides, **kwargs}.get("resume")
        if call == "val" or (call == "train" and not resumed and "data" in kwargs):
            split = kwargs.get("split") or overrides.get("split") or "val"
            _check_dataset_yaml(data, split, self, ("train", "val") if call == "train" else (split,))
        return original(self, *args, **kwargs)
    finally:
        _FROM_CHECKPOINT.names = outer


def _check_project(project) -> None:
    """The runs folder (``project=``) is a folder, or can be made: a file there (or above it) was a NotADirectoryError
    traceback from the trainer's ``mkdir`` (battery 32, DS02)."""
    from ibra_yolo.errors import PathError

    if not isinstance(project, (str, Path)) or not str(project):
        return
    for folder in (Path(project), *Path(project).parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise PathError(f"project={project}: {folder} is not a folder (a file, FIFO or device, or a broken "
                                f"link): name a folder for the runs")  # fmt: skip
            return


ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".xz", ".txz", ".bz2", ".tbz2")


def _check_dataset_yaml(data, split: str, model, reads: tuple) -> None:
    """The dataset a detector's run reads, checked as its trainer/validator will check it (the same function), and
    its splits ``reads`` to list an image each (`_lists_an_image`), before they make the run folder (battery 29,
    RE-D14: a split listing no image was refused after the trainer wrote args.yaml). An archive is only checked to be
    one (unpacking it twice would cost minutes); a URL, an ndjson file and a classification dataset are left to the
    stock code, whose failures `scriptless_dataset_check` words."""
    from ibra_yolo.errors import DatasetError

    if getattr(model, "task", None) == "classify" or not isinstance(data, (str, Path)) or "://" in str(data):
        return
    suffix = Path(str(data)).suffix.lower()
    if suffix == ".ndjson":
        return
    if suffix in ARCHIVES:
        import tarfile
        import zipfile

        path = Path(data)
        if path.is_file() and not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
            raise DatasetError(f"dataset {data} is not a zip or tar archive (its bytes are not one): pass data= with a "
                               f"dataset YAML, or the archive Ultralytics should unpack")  # fmt: skip
        return
    from ultralytics.data import utils

    from ibra_yolo.errors import MissingFileError

    found = utils.check_det_dataset(data, split=split)
    for key in reads:
        entries = found.get(key) if isinstance(found, dict) else None
        for entry in entries if isinstance(entries, list) else [entries] if entries else []:
            _check_not_special(entry)  # a FIFO named fifo.png in a split list: the reader says "does not exist"
            if not _lists_an_image(str(entry)):
                raise MissingFileError(
                    f"dataset images {str(entry)[:200]}: No images found in {str(entry)[:200]} (the {key} split of "
                    f"{data}); a split must be a folder of images, a .txt file listing image paths, or a list of those"
                )


def _lists_an_image(entry: str) -> bool:
    """Whether a split entry lists an image that is here, as ``BaseDataset.get_img_files`` reads it: a folder holding
    one (at any depth), a file with a line naming one; a glob pattern is left to it. Every image it lists that is a
    FIFO, socket or device is refused (`PathError`): the label cache opens each image and would wait on it forever
    (battery 31, D01/D03: a FIFO among the val images hung ``yolo val`` before any output)."""
    import stat

    from ultralytics.data.utils import IMG_FORMATS

    from ibra_yolo.errors import PathError

    path = Path(entry)
    if "*" in entry or not (path.is_dir() or path.is_file()):
        return True  # a pattern, or not there: the stock reader names it (check_det_dataset found the split)
    if path.is_dir():
        images = (os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
    else:  # lines naming images, read as the stock reader reads ./ and a/b
        parent = str(path.parent) + os.sep
        with open(path, errors="replace") as lines:
            named = [x.strip() for x in lines]
        images = (x.replace("./", parent) if x.startswith("./") else x for x in named)
    found = False
    for image in images:
        if image.rsplit(".", 1)[-1].lower() not in IMG_FORMATS:
            continue
        try:
            mode = os.stat(image).st_mode
        except (OSError, ValueError):
            continue  # battery 29, DS-txtmiss: listed images that are not here do not count
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PathError(
                f"dataset image {image[:200]} is not a regular file (a FIFO, socket or device, which Ultralytics "
                f"would wait on or read without end): remove it from the split {entry[:200]}"
            )
        found = found or stat.S_ISREG(mode)
    return found


def images_listed(original, self, img_path, *args, **kwargs):
    """``BaseDataset.get_img_files``: a split that lists no images (a file that is no list of image paths, an empty
    folder, a path that is not there) is one `MissingFileError` naming it (battery 28, D14: the split ``/etc/passwd``
    was two chained tracebacks)."""
    from ibra_yolo.errors import IbraYoloError, MissingFileError

    try:
        return original(self, img_path, *args, **kwargs)
    except IbraYoloError:
        raise
    except (FileNotFoundError, AssertionError) as e:
        why = _first_line(e.__cause__ or e).removeprefix(getattr(self, "prefix", "") or "")
        why = why.split(". Supported formats")[0]  # the list of suffixes follows on other lines
        raise MissingFileError(
            f"dataset images {str(img_path)[:200]}: {why}; a split must be a folder of images, a .txt file listing "
            f"image paths, or a list of those"
        ) from e


def scriptless_dataset_check(original, dataset, autodownload=True, *args, **kwargs):
    """``ultralytics.data.utils.check_det_dataset`` that does not download a dataset named by a checkpoint (not by the
    user) nor run its YAML's ``download`` script, which Ultralytics runs with ``exec`` (or ``bash``) when the images
    are missing: a file must not choose code to run. The user's own ``data=`` behaves as in stock Ultralytics, but a
    failure is one error naming the dataset: `MissingFileError` for a file, images or a download that is not there,
    `DatasetError` for a YAML Ultralytics refuses."""
    from ibra_yolo.errors import IbraYoloError, MissingFileError

    named = str(dataset) in getattr(_FROM_CHECKPOINT, "names", ())
    if named:
        check_checkpoint_dataset(dataset)  # check_file downloads a URL whatever autodownload says
    _check_not_special(dataset)
    try:
        return original(dataset, autodownload and not named, *args, **kwargs)
    except IbraYoloError:
        raise
    except FileNotFoundError as e:
        if named:
            raise MissingFileError(
                f"dataset {dataset} comes from the checkpoint (its train_args data=, not your command) and is not "
                f"here ({_first_line(e)}): a checkpoint does not get to download data or run a dataset YAML's "
                f"download script, so nothing was run; pass data={dataset} yourself to let Ultralytics fetch it, or "
                f"the dataset you mean"
            ) from None
        raise MissingFileError(
            f"dataset {dataset} is not usable: {_first_line(e)}; name a dataset YAML whose images are on this machine"
        ) from e
    except ConnectionError as e:
        raise MissingFileError(
            f"dataset {dataset} is not on this machine and downloading it failed ({_first_line(e)}); name a dataset "
            f"YAML whose images are here (or run online)"
        ) from e
    except (SyntaxError, TypeError, ValueError, KeyError, AttributeError, AssertionError) as e:
        from ibra_yolo.errors import DatasetError

        raise DatasetError(f"dataset {dataset} cannot be used: {_first_line(e)}") from e


def _check_not_special(dataset) -> None:
    """A dataset path that is here must be a file or a folder: Ultralytics opens a FIFO and waits for a writer
    forever (battery 28, D04), and reads a device until it ends."""
    import stat

    from ibra_yolo.errors import PathError

    if not isinstance(dataset, (str, Path)) or "://" in str(dataset):
        return
    try:
        mode = Path(dataset).stat().st_mode
    except (OSError, ValueError):
        return  # not here (or not a path): the stock check names it
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise PathError(
            f"dataset {dataset} is not a regular file or folder (a FIFO, socket or device, which Ultralytics would "
            f"wait on or read without end): pass data= with a dataset YAML file"
        )


def _first_line(error: BaseException) -> str:
    """The first line of Ultralytics' message (its later lines are hints about settings files), without its emoji."""
    text = str(error).splitlines()[0].replace("❌", "").strip() if str(error).strip() else ""
    return text.rstrip(" .") or type(error).__name__


def wrap_check_det_dataset() -> None:
    """Replace ``check_det_dataset`` in ``ultralytics.data.utils`` and in every Ultralytics module that imported it."""
    current = getattr(sys.modules.get("ultralytics.data.utils"), "check_det_dataset", None)
    if current is None:
        return
    stock = getattr(current, "__ibra_yolo_original__", current)
    if current is stock:
        current = functools.wraps(stock)(functools.partial(scriptless_dataset_check, stock))
        current.__ibra_yolo_original__ = stock
    for name, loaded in list(sys.modules.items()):
        if name.partition(".")[0] == "ultralytics" and getattr(loaded, "check_det_dataset", None) is stock:
            loaded.check_det_dataset = current


def check_checkpoint_dataset(data) -> None:
    """A dataset the checkpoint chose (its ``train_args`` data, not the user's ``data=``) is never fetched: Ultralytics'
    ``check_file`` downloads a name starting ``https://``, ``http://``, ``gs://``, ``ul://`` (and more) before any
    ``autodownload`` is asked, and unpacks an archive into its datasets folder (battery 26, X-N28/K37). Any
    ``scheme://`` is refused, which covers every scheme Ultralytics reads as remote; no local path holds one."""
    from ibra_yolo.errors import CheckpointError

    if "://" in str(data):
        raise CheckpointError(
            f"dataset {str(data)[:200]} comes from the checkpoint (its train_args data=, not your command) and is a "
            f"URL: a checkpoint does not get to make Ultralytics download anything, so nothing was fetched; pass "
            f"data= yourself (that URL to let Ultralytics fetch it, or the dataset you mean)"
        )
    if _is_archive(data):
        raise CheckpointError(
            f"dataset {str(data)[:200]} comes from the checkpoint (its train_args data=, not your command) and is an "
            f"archive: a checkpoint does not get to make Ultralytics unpack files into its datasets folder (they "
            f"replace files of the same names there), so nothing was unpacked; pass data= yourself (that archive to "
            f"let Ultralytics unpack it, or the dataset YAML you mean)"
        )


def _is_archive(data) -> bool:
    """Whether ``data`` is a local file Ultralytics' ``check_det_dataset`` unpacks: a zip or tar by its bytes, whatever
    its name (battery 31, K09-K11: a checkpoint's .tar.gz replaced a user's label file in the datasets folder)."""
    import tarfile
    import zipfile

    try:
        path = Path(str(data))
        return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))
    except (OSError, ValueError):  # unreadable, or not a path: the stock check names it
        return False


def check_checkpoint_dataset_here(data) -> None:
    """A dataset the checkpoint chose resolves on this machine (Ultralytics' ``check_data_portable``: a bare name such
    as ``coco8.yaml``, or a file that is here). Otherwise stock ``Model.val`` warns and validates on the task's default
    ``coco8.yaml`` instead, downloading it (battery 27, U04/U08: offline, five chained tracebacks and an empty run
    folder; online, a score on another dataset)."""
    from ultralytics.utils.checks import check_data_portable

    from ibra_yolo.errors import MissingFileError

    if not check_data_portable(data):
        raise MissingFileError(
            f"dataset {str(data)[:200]} comes from the checkpoint (its train_args data=, not your command) and is not "
            f"on this machine: pass data= with the dataset to validate on (Ultralytics would otherwise score its "
            f"default coco8.yaml, downloading it)"
        )
