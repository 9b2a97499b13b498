"""The dataset of a stock ``train``/``val`` call (``ibra_yolo.dataset_guard``): checked before the run folder is made,
every failure one error of ours naming the dataset, and a checkpoint's own dataset never replaced by coco8."""

import re

import pytest
import torch
from conftest import yolo_model

from ibra_yolo.errors import DatasetError, MissingFileError

RUN = {"imgsz": 32, "batch": 2, "device": "cpu", "plots": False, "name": "run"}


@pytest.fixture
def offline(monkeypatch):
    """Every download fails as it does offline; the list records what was asked for."""
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import downloads

    fetched = []

    def no_network(url="", *args, **kwargs):
        fetched.append(str(url))
        raise ConnectionError(f"Download failure for {url}. Environment may be offline.")

    monkeypatch.setattr(downloads, "safe_download", no_network)
    monkeypatch.setattr(data_utils, "safe_download", no_network)
    return fetched


@pytest.fixture
def checkpoint(tmp_path):
    """A saved tiny spiking model whose train_args the test sets."""

    def save(train_args: dict):
        path = tmp_path / "ck.pt"
        model = yolo_model("ibra")
        torch.save({"model": model.model, "train_args": {"imgsz": 32, "task": "detect", **train_args}}, path)
        return path

    return save


def test_a_checkpoint_naming_no_dataset_is_refused_not_scored_on_coco8(tmp_path, checkpoint, offline):
    # battery 27, U09: train_args data=None (or no data key): stock Model.val warned "'data' argument is missing" and
    # validated on coco8.yaml, downloading it (offline: five chained tracebacks and an empty run folder; online: a
    # score on a dataset the model never saw). Expected: one MissingFileError naming the file, no folder, no fetch.
    from ultralytics import YOLO

    for stored in ({"data": None}, {}):
        path = checkpoint(stored)
        says = rf"^{re.escape(str(path))} names no dataset \(its train_args data= is None\) and your command gives "
        with pytest.raises(MissingFileError, match=says + "none: pass data= with the dataset YAML to validate on"):
            YOLO(path).val(project=str(tmp_path / "runs"), **RUN)
    assert offline == [] and not (tmp_path / "runs").exists()


def test_a_checkpoint_dataset_with_missing_images_leaves_no_run_folder(tmp_path, checkpoint, offline):
    # battery 27, U06: the checkpoint's dataset YAML is here but its images are not (and it names a download URL): the
    # one-line refusal came only after the validator had made runs/<name>/, left empty. Expected: the same refusal
    # (nothing downloaded, no script run) before any folder.
    from ultralytics import YOLO

    yaml = tmp_path / "d.yaml"
    yaml.write_text(f"path: {tmp_path / 'gone'}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n"
                    "download: https://example.com/evil.zip\n")  # fmt: skip
    path = checkpoint({"data": str(yaml)})
    says = rf"^dataset {re.escape(str(yaml))} comes from the checkpoint \(its train_args data=, not your command\) "
    says += rf"and is not here \(Dataset '{re.escape(str(yaml))}' images not found, missing path "
    with pytest.raises(MissingFileError, match=says):
        YOLO(path).val(project=str(tmp_path / "runs"), **RUN)
    assert offline == [] and not (tmp_path / "runs").exists()


def test_a_checkpoint_dataset_that_is_an_archive_is_not_unpacked(tmp_path, checkpoint, monkeypatch):
    # battery 31, K09-K11: train_args data= naming a local .tar.gz (or .zip) made `yolo val model=p` unpack it into
    # Ultralytics' datasets folder, replacing a user's label file of the same name, before refusing the dataset.
    # Expected: CheckpointError naming it, nothing unpacked, no run folder. (Unpacking a local file needs no network.)
    import tarfile
    import zipfile

    from ultralytics import YOLO
    from ultralytics.data import utils as data_utils

    from ibra_yolo.errors import CheckpointError

    datasets = tmp_path / "datasets"
    (datasets / "mydata" / "labels").mkdir(parents=True)
    mine = datasets / "mydata" / "labels" / "x.txt"
    mine.write_text("0 0.5 0.5 0.1 0.1\n")
    monkeypatch.setattr(data_utils, "DATASETS_DIR", datasets)
    (tmp_path / "src" / "mydata" / "labels").mkdir(parents=True)
    (tmp_path / "src" / "mydata" / "labels" / "x.txt").write_text("2 0.9 0.9 0.01 0.01\n")
    with tarfile.open(tmp_path / "ow.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "mydata", arcname="mydata")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        z.write(tmp_path / "src" / "mydata" / "labels" / "x.txt", "mydata/labels/x.txt")
    for archive in (tmp_path / "ow.tar.gz", tmp_path / "z.zip"):
        path = checkpoint({"data": str(archive)})
        says = rf"^dataset {re.escape(str(archive))} comes from the checkpoint \(its train_args data=, not your "
        with pytest.raises(CheckpointError, match=says + r"command\) and is an archive: a checkpoint does not get to"):
            YOLO(path).val(project=str(tmp_path / "runs"), **RUN)
        assert mine.read_text() == "0 0.5 0.5 0.1 0.1\n" and sorted(p.name for p in datasets.iterdir()) == ["mydata"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("call", ["val", "train"])
def test_a_dataset_the_user_names_is_checked_before_the_run_folder(tmp_path, call, offline):
    # `yolo val/train data=<missing or broken YAML>` was a raw traceback (FileNotFoundError, SyntaxError, or the
    # trainer's RuntimeError around them) after the run folder (and for train args.yaml and weights/) was made.
    # Expected: one error of ours naming the dataset and Ultralytics' own reason, before any folder.

    model = yolo_model("ibra")
    gone = tmp_path / "gone.yaml"
    no_images = tmp_path / "no_images.yaml"
    no_images.write_text(f"path: {tmp_path / 'nowhere'}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n")
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(f"path: {tmp_path}\ntrain: images/train\nnames: {{0: a}}\n")
    mismatch = tmp_path / "mismatch.yaml"
    mismatch.write_text(f"path: {tmp_path}\ntrain: a\nval: a\nnc: 2\nnames: {{0: a}}\n")
    cases = [
        (gone, MissingFileError, f"is not usable: '{gone}' does not exist; name a dataset YAML whose"),
        (no_images, MissingFileError, f"is not usable: Dataset '{no_images}' images not found, missing path "),
        (no_val, DatasetError, f"cannot be used: {no_val} 'val:' key missing"),
        (mismatch, DatasetError, f"cannot be used: {mismatch} 'names' length 1 and 'nc: 2' must match"),
    ]
    extra = {"epochs": 1} if call == "train" else {}
    for data, error, says in cases:
        with pytest.raises(error, match=re.escape(f"dataset {data} {says}")):
            getattr(model, call)(data=str(data), project=str(tmp_path / "runs"), **RUN, **extra)
    assert offline == [] and not (tmp_path / "runs").exists()


def test_a_default_dataset_that_cannot_be_downloaded_is_one_line(tmp_path, offline):
    # `yolo val model=x.yaml` without data= makes Ultralytics take coco8.yaml and download it; offline that was the
    # ConnectionError traceback of safe_download. Expected: MissingFileError naming coco8.yaml and the failed download
    # (the download itself is still attempted, as in stock Ultralytics), before any run folder.
    from ultralytics import YOLO

    says = r"^dataset coco8\.yaml is not on this machine and downloading it failed \(Download failure for https://"
    with pytest.raises(MissingFileError, match=says):
        YOLO("spike-yolo-ibra-n.yaml").val(project=str(tmp_path / "runs"), **RUN)
    assert len(offline) == 1 and offline[0].endswith("/coco8.zip") and not (tmp_path / "runs").exists()


def test_a_good_dataset_still_validates(tmp_path, shapes_data, checkpoint):
    # the early check runs the function the validator runs: a complete dataset named by the checkpoint validates
    # without an error, into its run folder (16 val images of the shapes dataset, one class list of 3 names)
    from ultralytics import YOLO

    path = checkpoint({"data": str(shapes_data)})
    metrics = YOLO(path).val(project=str(tmp_path / "runs"), **RUN)
    assert 0.0 <= metrics.box.map <= 1.0 and (tmp_path / "runs" / "run").is_dir()


def test_a_dataset_path_that_is_no_yaml_file_is_one_line(tmp_path, offline):
    # battery 28, D04/D05: data= a FIFO named like a YAML blocked `yolo val` forever (Ultralytics opens it and waits
    # for a writer); a folder named like one was AssertionError "No YAML file found" from inside Ultralytics. Expected:
    # PathError for the FIFO (never opened), DatasetError for the folder, both naming it, before any run folder.
    import os

    from ibra_yolo.errors import PathError

    model = yolo_model("ibra")
    fifo, folder = tmp_path / "fifo.yaml", tmp_path / "dir.yaml"
    os.mkfifo(fifo)
    folder.mkdir()
    with pytest.raises(PathError, match=rf"^dataset {re.escape(str(fifo))} is not a regular file or folder \(a FIFO"):
        model.val(data=str(fifo), project=str(tmp_path / "runs"), **RUN)
    with pytest.raises(DatasetError, match=rf"^dataset {re.escape(str(folder))} cannot be used: No YAML file found"):
        model.val(data=str(folder), project=str(tmp_path / "runs"), **RUN)
    assert not (tmp_path / "runs").exists()


def test_an_archive_that_is_none_and_a_split_without_images_are_one_line(tmp_path, offline):
    # battery 28, D11: data= a .zip holding text was AssertionError "Not a YAML file" after the validator made its run
    # folder; D14: a split that is a file listing no image paths (train/val: /etc/passwd) was two chained tracebacks
    # from the dataset builder. Expected: DatasetError before any folder; MissingFileError naming the split.
    model = yolo_model("ibra")
    fake = tmp_path / "bad.zip"
    fake.write_text("not a zip")
    with pytest.raises(DatasetError, match=rf"^dataset {re.escape(str(fake))} is not a zip or tar archive"):
        model.val(data=str(fake), project=str(tmp_path / "runs"), **RUN)
    assert not (tmp_path / "runs").exists()
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\nno image paths here\n")
    yaml = tmp_path / "d.yaml"
    yaml.write_text(f"path: {tmp_path}\ntrain: notes.md\nval: notes.md\nnames: {{0: a}}\n")
    says = rf"^dataset images {re.escape(str(notes))}: No images found in {re.escape(str(notes))} \(the val split of "
    with pytest.raises(MissingFileError, match=says + rf"{re.escape(str(yaml))}\); a split must be a folder of images"):
        model.val(data=str(yaml), project=str(tmp_path / "runs"), **RUN)
    with pytest.raises(MissingFileError, match=says.replace("val split", "train split")):  # battery 29, RE-D14
        model.train(data=str(yaml), epochs=1, project=str(tmp_path / "runs"), **RUN)
    assert not (tmp_path / "runs").exists()  # the trainer had written args.yaml and weights/
    # what the dataset builder itself says, for the forms checked only as it reads them (a glob pattern)
    from types import SimpleNamespace

    from ultralytics.data.base import BaseDataset

    says = rf"^dataset images {re.escape(str(notes))}: No images found in {re.escape(str(notes))}; a split must be "
    with pytest.raises(MissingFileError, match=says):
        BaseDataset.get_img_files(SimpleNamespace(prefix="val: ", fraction=1.0), str(notes))


def test_a_split_list_naming_missing_images_or_a_fifo_is_refused_before_the_run(tmp_path, offline):
    # battery 29, DS-txtmiss: a .txt split listing two images that are not there was "RuntimeError: No valid images
    # found" from the dataset builder after the run folder; DS-listfifo: a FIFO named fifo.png in a split list was
    # "does not exist". Expected: MissingFileError / PathError naming them, no run folder.
    import os

    from ibra_yolo.errors import PathError

    model = yolo_model("ibra")
    (tmp_path / "list.txt").write_text("./images/a.png\n./images/b.png\n")
    yaml = tmp_path / "d.yaml"
    yaml.write_text(f"path: {tmp_path}\ntrain: list.txt\nval: list.txt\nnames: {{0: a}}\n")
    says = rf"^dataset images {re.escape(str(tmp_path / 'list.txt'))}: No images found in .* \(the val split of "
    with pytest.raises(MissingFileError, match=says):
        model.val(data=str(yaml), project=str(tmp_path / "runs"), **RUN)
    (tmp_path / "images").mkdir()
    os.mkfifo(tmp_path / "images" / "fifo.png")
    yaml.write_text(f"path: {tmp_path}\ntrain: [images/fifo.png]\nval: [images/fifo.png]\nnames: {{0: a}}\n")
    with pytest.raises(PathError, match=rf"^dataset {re.escape(str(tmp_path / 'images' / 'fifo.png'))} is not a "):
        model.val(data=str(yaml), project=str(tmp_path / "runs"), **RUN)
    assert not (tmp_path / "runs").exists()


def test_a_last_training_batch_of_one_image_is_one_line(tmp_path, shapes_data):
    # The stock trainer refuses a last batch of one image at a size below two strides (BatchNorm would see one value
    # per channel) with a ValueError traceback that names neither the image count nor the fraction (battery 29, Q08:
    # train_args fraction=1e-9 in a resumed run). 48 training images in batches of 47 leave one; expected: one
    # DatasetError with Ultralytics' reason and the count.
    model = yolo_model("ibra")
    says = r"^final batch=1 training at imgsz=32 gives BatchNorm a single value per channel; .* \(the training split "
    with pytest.raises(DatasetError, match=says + r"gives 48 image\(s\) at fraction=1\.0, in batches of 47\)$"):
        model.train(data=str(shapes_data), epochs=1, imgsz=32, batch=47, device="cpu", workers=0, plots=False,
                    project=str(tmp_path / "runs"), name="run")  # fmt: skip


@pytest.mark.timeout(180)  # without the check the label cache opens the FIFO and waits forever: the timeout fails it
def test_a_fifo_among_a_splits_images_is_refused_before_the_run(tmp_path, shapes_data):
    # battery 31, D01/D03: a FIFO named x.png in the val (or train) images folder hung `yolo val`/`yolo train`, our
    # models and stock ones alike. Expected: PathError naming it, before the run folder.
    import os
    import shutil

    from ibra_yolo.errors import PathError

    data = tmp_path / "shapes"
    shutil.copytree(shapes_data.parent, data)
    yaml = data / "data.yaml"
    yaml.write_text(shapes_data.read_text().replace(str(shapes_data.parent), str(data)))
    model = yolo_model("ibra")
    for split in ("val", "train"):
        fifo = data / "images" / split / "sub" / "x.png"  # at any depth: the stock reader walks the folder
        fifo.parent.mkdir()
        os.mkfifo(fifo)
        says = rf"^dataset image {re.escape(str(fifo))} is not a regular file \(a FIFO, socket or device"
        with pytest.raises(PathError, match=says):
            if split == "val":
                model.val(data=str(yaml), project=str(tmp_path / "runs"), **RUN)
            else:
                model.train(data=str(yaml), epochs=1, workers=0, project=str(tmp_path / "runs"), **RUN)
        assert not (tmp_path / "runs").exists()
        shutil.rmtree(fifo.parent)
    model.val(data=str(yaml), project=str(tmp_path / "runs"), **RUN)  # the same dataset without it validates


def test_a_project_that_is_not_a_folder_is_one_line(tmp_path, shapes_data):
    # battery 32, DS02: `yolo train project=<a file>` was NotADirectoryError from the trainer's mkdir (a traceback).
    # Expected: PathError naming the project and the file in its way, before anything is written.
    from ibra_yolo.errors import PathError

    (tmp_path / "afile").write_text("mine\n")
    model = yolo_model("ibra")
    for project in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        says = rf"^project={re.escape(str(project))}: {re.escape(str(tmp_path / 'afile'))} is not a folder"
        with pytest.raises(PathError, match=says):
            model.train(data=str(shapes_data), epochs=1, workers=0, project=str(project), **RUN)
        with pytest.raises(PathError, match=says):
            model.val(data=str(shapes_data), project=str(project), **RUN)
    assert (tmp_path / "afile").read_text() == "mine\n"
