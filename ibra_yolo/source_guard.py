"""Sources of the stock predictor (``yolo predict source=...``, ``YOLO(...).predict(source)``), checked as Ultralytics'
loaders open them (installed by ``ibra_yolo.plugin.register`` through `guard_predict_sources`).

A source that cannot be read fails in one line of ours naming it, never with a traceback from inside the loader, and
never blocks: a FIFO, device or socket (a folder entry, a video, the source itself) is refused before anything opens
it, because reading one waits forever. The errors keep the stock exception types (``FileNotFoundError``,
``ConnectionError``, ``OSError``), so code that catches those still does.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ibra_yolo.errors import IbraYoloError, MissingFileError, PathError, SourceError, StreamError

__all__ = ("guard_predict_sources",)

_HELP = "see https://docs.ultralytics.com/modes/predict/#inference-sources for the sources Ultralytics reads"


def _first_line(e: BaseException) -> str:
    """The stock message's first line (``No images or videos found in x.`` is followed by the list of formats)."""
    return next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)


def _special(path) -> bool:
    """Whether ``path`` exists but is neither a regular file nor a folder (a FIFO, device or socket; links followed)."""
    return os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path))


def _refuse_special(path, what: str, source=None) -> None:
    if _special(path):
        of = f" of {str(source)[:200]}" if source is not None else ""  # a list of paths is quoted in bounded size
        raise PathError(
            f"{what} {path}{of} is not a regular file (a device, FIFO or socket, or a link to one): reading it would "
            f"wait forever; {'remove it from the source' if of else 'pass images, videos or a folder of them'}"
        )


def images_and_videos(original, self, path, *args, **kwargs):
    """``LoadImagesAndVideos.__init__``: the source and every image it lists checked (a FIFO refused), and a source
    that names nothing readable one line of ours."""
    from ibra_yolo.sources import literal_path

    if isinstance(path, (str, Path)):
        _refuse_special(path, "source")  # a FIFO named x.txt is opened as a list of sources
    # a name holding * that matches nothing but is an image or folder (img[1]*.png) is that file, as ibra-yolo energy
    # reads it (battery 32, S02g: "No images or videos found")
    named = [literal_path(str(p)) for p in path] if isinstance(path, (list, tuple)) else literal_path(str(path))
    try:
        original(self, named, *args, **kwargs)
    except IbraYoloError:
        raise
    except FileNotFoundError as e:  # "x does not exist", "No images or videos found in x. <formats>"
        raise MissingFileError(f"{_first_line(e).partition(' Supported formats')[0]} ({_HELP})") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:  # a .txt/.csv list that is not text, or a folder named so
        raise PathError(f"source {path} is not a text list of sources ({type(e).__name__}: {_first_line(e)})") from None
    for f in self.files[: self.ni]:  # images are read only when iterated; videos are checked as they are opened
        _refuse_special(f, "image", path)


def video_opened(original, self, path, *args, **kwargs):
    """``LoadImagesAndVideos._new_video``: a FIFO is refused before OpenCV opens it, and a video OpenCV cannot open is
    one line."""
    _refuse_special(path, "video")
    try:
        return original(self, path, *args, **kwargs)
    except FileNotFoundError:
        raise MissingFileError(
            f"video {path} cannot be opened by OpenCV: it is empty, damaged or in a codec this OpenCV build lacks"
        ) from None


def streams_opened(original, self, sources="file.streams", *args, **kwargs):
    """``LoadStreams.__init__``: a stream or camera that cannot be opened is one line of ours."""
    if isinstance(sources, (str, Path)):
        _refuse_special(sources, "stream list")
    try:
        original(self, sources, *args, **kwargs)
    except IbraYoloError:
        raise
    except ConnectionError as e:  # "1/1: rtsp://host/x... Failed to open rtsp://host/x"
        failed = _first_line(e).rpartition("... ")[2]  # "Failed to open <source>"
        raise StreamError(
            f"stream source {sources}: {failed} (is the address right and the camera or server up?)"
        ) from None
    except FileNotFoundError as e:  # an empty .streams list
        raise MissingFileError(f"{_first_line(e)} ({_HELP})") from None


def listed_images(original, source, *args, **kwargs):
    """``autocast_list`` (a Python list of image paths given as the source, opened with PIL): a missing file, a FIFO
    or a file PIL cannot read is one line."""
    for im in source:
        if isinstance(im, (str, Path)) and not str(im).lower().startswith(("https://", "http://")):
            _refuse_special(im, "image")
            if not os.path.isfile(im):
                raise MissingFileError(f"image {im} of the source list does not exist or is a folder: list image files")
    images = []
    for im in source:  # one at a time, to name the one that fails
        try:
            images += original([im], *args, **kwargs)
        except IbraYoloError:
            raise
        except ImportError as e:  # PIL did not recognise it, and Ultralytics' HEIF reader is not installed
            raise PathError(
                f"image {im} of the source list is not an image PIL reads (nor is {e.name} installed, "
                f"Ultralytics' HEIF reader)"
            ) from None
        except OSError as e:  # PIL's UnidentifiedImageError: "cannot identify image file 'x.png'"
            raise PathError(f"image {im} of the source list cannot be read: {_first_line(e)}") from None
    return images


def source_checked(original, source, *args, **kwargs):
    """``check_source``: a source of a type Ultralytics does not read is one line of ours."""
    try:
        return original(source, *args, **kwargs)
    except IbraYoloError:
        raise
    except TypeError as e:
        if isinstance(source, (list, tuple)):  # "type int is not a supported Ultralytics prediction source type."
            raise SourceError(f"source list: {_first_line(e).rstrip('. ')} ({_HELP})") from None
        raise SourceError(f"source of type {type(source).__name__} is not one Ultralytics reads ({_HELP})") from None


def _wrap_source_readers() -> None:
    from ultralytics.data import build

    from ibra_yolo.stock_hooks import wrap_method

    if not hasattr(build.autocast_list, "__ibra_yolo_original__"):
        build.autocast_list = wrap_method(build.autocast_list, listed_images)
    if not hasattr(build.check_source, "__ibra_yolo_original__"):
        build.check_source = wrap_method(build.check_source, source_checked)


def guard_predict_sources() -> None:
    """Wrap Ultralytics' image/video and stream loaders when ``ultralytics.data.loaders`` is first imported."""
    from ibra_yolo._autoload import after_import
    from ibra_yolo.stock_hooks import wrap_methods

    loaders = "ultralytics.data.loaders"
    files = {"__init__": images_and_videos, "_new_video": video_opened}
    after_import(loaders, functools.partial(wrap_methods, loaders, "LoadImagesAndVideos", files))
    after_import(loaders, functools.partial(wrap_methods, loaders, "LoadStreams", {"__init__": streams_opened}))
    after_import("ultralytics.data.build", _wrap_source_readers)  # check_source's list reader, in build's namespace
