"""Sources of the stock predictor with the plugin registered (ibra_yolo/source_guard.py): one line naming the bad
source, never a traceback from inside Ultralytics' loaders, never a wait on a FIFO (battery 31)."""

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run, yolo_model

from ibra_yolo.errors import IbraYoloError, MissingFileError, PathError, SourceError, StreamError


@pytest.fixture(scope="module")
def model():
    return yolo_model("ibra")


@pytest.fixture
def folder(tmp_path):
    """A folder with one readable image, and its path."""
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.full((32, 32, 3), 127, np.uint8))
    return tmp_path / "imgs"


def _refused(model, source, error, says):
    with pytest.raises(error, match=says) as e:
        model.predict(source, imgsz=32, verbose=False, save=False)
    assert isinstance(e.value, IbraYoloError) and "\n" not in str(e.value)


@pytest.mark.timeout(120)  # without the check, reading the FIFO waits forever: the timeout fails the test
def test_a_fifo_in_any_source_is_refused_before_it_is_read(model, folder):
    # a FIFO among a folder's images, given itself, or in a list: the stock loader opened it and waited (S08)
    os.mkfifo(folder / "b.png")
    fifo = str(folder / "b.png")
    says = "is not a regular file \\(a device, FIFO or socket, or a link to one\\): reading it would wait forever"
    _refused(model, str(folder), PathError, f"image {fifo} of {folder} {says}; remove it from the source")
    _refused(model, fifo, PathError, f"source {fifo} {says}")
    _refused(model, [fifo], PathError, f"image {fifo} {says}")
    os.mkfifo(folder.parent / "v.mp4")  # a video is opened by OpenCV as the loader is made
    _refused(model, str(folder.parent / "v.mp4"), PathError, f"source {folder.parent / 'v.mp4'} {says}")
    os.remove(fifo)
    assert len(model.predict(str(folder), imgsz=32, verbose=False)) == 1  # the folder's real image is read


def test_sources_that_cannot_be_read_are_one_line(model, folder, tmp_path):
    # each was a traceback from inside Ultralytics' loaders (battery 31, S02/S03/S07); the error classes keep the
    # stock ones (FileNotFoundError, ConnectionError, TypeError) so that code catching those still does
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(bytes(range(256)) * 8)
    for name in ("empty.mp4", "junk.mp4"):
        says = f"video {tmp_path / name} cannot be opened by OpenCV: it is empty, damaged or in a codec"
        _refused(model, str(tmp_path / name), MissingFileError, says)
    _refused(model, str(tmp_path / "nothere.png"), MissingFileError, "nothere.png does not exist")
    _refused(model, str(tmp_path / "none*.png"), MissingFileError, r"No images or videos found in .*none\*\.png\.")
    _refused(model, [str(tmp_path / "nothere.png")], MissingFileError, r"image .*nothere\.png of the source list")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    _refused(model, [str(tmp_path / "junk.png")], PathError, r"image .*junk\.png of the source list is not an image")
    (tmp_path / "list.txt").write_bytes(b"\xff\xfe\x00 not text")
    _refused(model, str(tmp_path / "list.txt"), PathError, r"list\.txt is not a text list of sources \(Unicode")
    _refused(model, [folder / "a.png", 3], SourceError, "type int is not a supported Ultralytics prediction source")
    _refused(model, object(), SourceError, "source of type object is not one Ultralytics reads")
    # a stream nobody serves (port 9: discard, closed here) and a camera index this machine lacks
    _refused(model, "rtsp://127.0.0.1:9/none", StreamError, r"stream source rtsp://127\.0\.0\.1:9/none: Failed to open")
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(StreamError, ConnectionError)
    assert issubclass(SourceError, TypeError) and issubclass(PathError, OSError)


def test_the_yolo_command_prints_the_one_line(python, folder, tmp_path, model):
    # the stock `yolo` command prints our errors as their one line (ibra_yolo.plugin)
    yolo = shutil.which("yolo", path=str(Path(python).parent)) or shutil.which("yolo")
    model.save(tmp_path / "m.pt")
    os.mkfifo(folder / "b.png")
    args = ["predict", f"model={tmp_path / 'm.pt'}", f"source={folder}", "imgsz=32", f"project={tmp_path / 'runs'}"]
    out = run([yolo, *args], check=False, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text, text[-2000:]
    assert f"PathError: image {folder / 'b.png'} of {folder} is not a regular file" in text


def test_an_image_whose_name_reads_as_a_pattern_is_that_image(model, folder):
    # battery 32, S02g: `yolo predict source='img[1]*.png'` (an image of that name) was "No images or videos found":
    # the loader reads a name holding * as a glob, whose [1] matches only "1". A pattern matching nothing that names
    # an existing image is that image, as ibra-yolo energy reads it; a real pattern still globs.
    odd = folder / "img[1]*.png"
    odd.write_bytes((folder / "a.png").read_bytes())
    results = model.predict(str(odd), imgsz=32, verbose=False, save=False)
    assert [r.path for r in results] == [str(odd)]
    assert len(model.predict(str(folder / "*.png"), imgsz=32, verbose=False, save=False)) == 2
