"""measure() and ``ibra-yolo energy`` on bad input: non-finite images or weights (one NonFiniteError naming the image,
layer or tensor), images of the wrong dtype, range or shape, and sizes no image can have."""

import copy
import re

import cv2
import numpy as np
import pytest
import torch
from conftest import detection_model

from ibra_yolo.cli import energy as energy_cli
from ibra_yolo.energy import measure
from ibra_yolo.errors import IbraYoloError, NonFiniteError

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def model():
    return detection_model("ibra")


@pytest.mark.parametrize("spike_driven", [False, True])
@pytest.mark.parametrize("value, kind", [(NAN, "NaN"), (INF, "inf"), (-INF, "inf")])
def test_non_finite_image_is_named(model, spike_driven, value, kind):
    # before: NaN gave "RuntimeError: bincount only supports 1-d non-negative integral inputs" (integer counting) and
    # inf was counted silently; image 1 of the tensor is the bad one
    x = torch.rand(3, 3, 64, 64, dtype=torch.float64).float()
    x[1, 2, 5, 7] = value
    with pytest.raises(NonFiniteError) as e:
        measure(model, x, progress=False, spike_driven=spike_driven)
    assert (
        str(e.value)
        == f"image 1 of tensor (3, 3, 64, 64) holds {kind}: images must be uint8 (0..255) or floats in [0, 1]"
    )


def test_non_finite_image_in_a_later_batch(model):
    # batches of 2: the bad image is the 2nd of the 2nd batch, image 3 of the source
    x = torch.rand(4, 3, 64, 64)
    x[3, 0, 0, 0] = NAN
    x[3, 1, 0, 0] = INF
    with pytest.raises(NonFiniteError, match=r"^image 3 of tensor \(4, 3, 64, 64\) holds NaN and inf: "):
        measure(model, x, batch=2, progress=False)
    with pytest.raises(NonFiniteError, match=r"^image 3 of 2 tensor batches holds NaN and inf: "):
        measure(model, list(x.split(2)), progress=False)


def _nan_weights():
    m = detection_model("ibra")
    conv = next(p for p in m.parameters() if p.dim() == 4)
    with torch.no_grad():
        conv[0, 0, 0, 0] = NAN  # a diverged weight: every neuron downstream of it sees NaN
    return m


def test_nan_weights_are_named():
    # Integer counting reads codes from the outputs, spike-driven counting the codes the planes are cut from (NaN
    # membranes marked NAN_CODE): either way a NaN is named with its layer, not a bincount error.
    for spike_driven in (False, True):
        with pytest.raises(
            NonFiniteError, match=r"^layer \d+ \(model\.\S+\): neuron outputs hold NaN and have no code"
        ):
            measure(_nan_weights(), torch.rand(1, 3, 64, 64), progress=False, spike_driven=spike_driven)


def test_energy_cli_nan_weights_one_line(tmp_path, capsys):
    torch.save({"model": _nan_weights(), "train_args": {}}, tmp_path / "nan.pt")
    cv2.imwrite(str(tmp_path / "img.png"), np.full((48, 48, 3), 127, np.uint8))
    argv = ["--weights", tmp_path / "nan.pt", "--source", tmp_path / "img.png", "--imgsz", 64, "--out", tmp_path / "e"]
    assert energy_cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    # refused when the checkpoint is read, naming the tensor (_nan_weights puts one NaN in model.1's conv weight)
    expected = "model.1.conv.op.weight holds 1 NaN or infinite value(s) of 7056: the weights are broken"
    assert err == f"error: {tmp_path / 'nan.pt'}: {expected}\n", err
    assert not (tmp_path / "e").exists()  # nothing written


@pytest.mark.parametrize(
    "make, says",
    [
        # floats 0..255 were counted as images 255x brighter: 2.5x the SOPs and energy of the same uint8 image
        (lambda u8: u8.float(), "image 0 of tensor (2, 3, 64, 64) holds floats in [0.0, 255.0]: images must be "
         "uint8 (0..255) or floats in [0, 1] (divide by 255)"),
        # a value just past 1 is named exactly ({:g} printed 1), without the 0..255 advice
        (lambda u8: (u8.double() / 255).index_fill_(0, torch.tensor([0]), 1.0000001), "holds floats in [1.0000001, "
         "1.0000001]: images must be uint8 (0..255) or floats in [0, 1]"),
        (lambda u8: u8.long(), "tensor (2, 3, 64, 64): images must be uint8 (0..255) or floats in [0, 1], got "
         "torch.int64"),
        (lambda u8: torch.complex(u8.float() / 255, u8.float()), "got torch.complex64"),  # the j part was dropped
        (lambda u8: u8[:, :1], "tensor (2, 1, 64, 64): a batch must be [N, 3, H, W], N >= 1, got shape (2, 1, 64, 64)"),
    ],
)  # fmt: skip
def test_images_of_the_wrong_kind_are_refused(model, make, says):
    u8 = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    u8[:, :, 10:20, 10:20] = 255
    with pytest.raises(IbraYoloError) as e:
        measure(model, make(u8), progress=False)
    assert type(e.value) is IbraYoloError and says in str(e.value), str(e.value)
    # the two valid forms of the same image count the same
    a = measure(model, u8, progress=False).summary()
    b = measure(model, u8.float() / 255, progress=False).summary()
    assert a["SOPs"] == b["SOPs"] and a["energy_mJ"] == b["energy_mJ"]


def test_image_tensor_sizes_and_dtypes(model):
    # 40x40 (not a multiple of the model's stride 32) and 8224 px failed deep in a Concat; float8 in isfinite
    for shape in ((1, 3, 40, 40), (1, 3, 8224, 32)):
        with pytest.raises(
            IbraYoloError, match=r"must be multiples of 32 \(the model's largest stride\), at most 8192"
        ):
            measure(model, torch.zeros(shape, dtype=torch.uint8), progress=False)
    with pytest.raises(
        IbraYoloError, match=r"images must be uint8 \(0\.\.255\) or floats in \[0, 1\], got torch.float8"
    ):
        measure(model, torch.zeros(1, 3, 32, 32).to(torch.float8_e4m3fn), progress=False)


def test_numpy_images_and_empty_batches_are_named(model):
    # a numpy image was a pathlib TypeError (taken for a file list), an empty tensor an IndexError in the meter
    with pytest.raises(IbraYoloError, match=r"^images are a numpy array \(64, 64, 3\): pass a torch tensor"):
        measure(model, np.zeros((64, 64, 3), np.uint8), progress=False)
    with pytest.raises(IbraYoloError, match=r"must be \[N, 3, H, W\] with N >= 1, got shape \(0, 3, 32, 32\)"):
        measure(model, torch.zeros(0, 3, 32, 32), progress=False)
    with pytest.raises(IbraYoloError, match=r"N >= 1, got shape \(0, 3, 32, 32\)"):
        measure(model, [torch.zeros(1, 3, 32, 32), torch.zeros(0, 3, 32, 32)], progress=False)


def test_image_sizes_no_image_can_have(model, tmp_path, capsys):
    # --imgsz 100000 asked cv2 for 30 GB and failed with its traceback; 8192 is the largest size our tools take
    with pytest.raises(IbraYoloError, match=r"^imgsz=100000 is invalid: it must be at most 8192$"):
        measure(model, [str(tmp_path / "x.png")], imgsz=100000, progress=False)
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    argv = ["--weights", "spike-yolo-ibra-n.yaml", "--source", str(tmp_path / "x.png"), "--imgsz", "100000"]
    assert energy_cli.main([*argv, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: argument --imgsz: 100000 is invalid: it must be >= 32 and a multiple of 32 and <= 8192"
    )


def test_image_that_claims_too_many_pixels(model, tmp_path):
    # a valid PNG whose header claims 60000 x 60000 pixels: cv2 refuses to decode it; that is one line naming the file
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100)
    (tmp_path / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    with pytest.raises(IbraYoloError, match=rf"^cannot decode an image of {tmp_path / 'bomb.png'}: "):
        measure(model, [str(tmp_path / "bomb.png")], imgsz=64, progress=False)


def test_measure_refuses_a_string_mode_and_meta_tensors(model):
    # spike_driven="no" ran spike-driven (bool("no") is True); a meta tensor has no values (Tensor.item() traceback)
    with pytest.raises(IbraYoloError, match=r"^spike_driven='no' is invalid: pass True, False or None"):
        measure(model, torch.rand(1, 3, 64, 64), spike_driven="no", progress=False)
    with pytest.raises(IbraYoloError, match=r"images must be dense tensors with values, got a torch\.strided meta"):
        measure(model, torch.rand(1, 3, 64, 64, device="meta"), progress=False)


def test_measure_names_odd_image_lists_and_sparse_tensors(model):
    # a list of numpy arrays was taken as file names (an 859-character "does not exist" line); a sparse COO tensor
    # was torch's NotImplementedError from slicing it; a numpy max_images was refused as "not an integer"
    with pytest.raises(IbraYoloError, match=r"^a list of images must hold file paths .*, got a ndarray$"):
        measure(model, [np.zeros((64, 64, 3), np.uint8)], progress=False)
    with pytest.raises(IbraYoloError, match=r"^images must be dense tensors with values, got a torch\.sparse_coo cpu"):
        measure(model, torch.rand(1, 3, 64, 64).to_sparse(), progress=False)
    report = measure(model, torch.rand(3, 3, 64, 64), max_images=np.int64(2), progress=False)
    assert report.meta["images"] == 2
    # a generator of paths (or any other object) was pathlib's "argument should be a str or an os.PathLike object"
    with pytest.raises(IbraYoloError, match=r"^images of type generator cannot be measured: pass a tensor"):
        measure(model, (p for p in ["a.jpg"]), progress=False)
    with pytest.raises(IbraYoloError, match=r"^images of type int cannot be measured"):
        measure(model, 3, progress=False)
    # a numpy batch size: torch's split() raised TypeError
    assert measure(model, torch.rand(3, 3, 64, 64), batch=np.int64(2), progress=False).meta["images"] == 3
    # an altered stride of 0: ZeroDivisionError from "h % stride"
    altered = copy.deepcopy(model)
    altered.stride = torch.zeros(3)
    with pytest.raises(IbraYoloError, match=r"^the model's stride \[0\.0, 0\.0, 0\.0\] is invalid: strides are >= 1"):
        measure(altered, torch.rand(1, 3, 64, 64), progress=False)


def test_out_may_not_be_the_folder_of_the_measured_images(tmp_path, capsys):
    # --out <the image folder> --overwrite wrote energy.png beside the images: the next run measured 5 images, not 4
    # (battery 12, H05); refused before any work, with or without --overwrite
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), np.zeros((32, 32, 3), np.uint8))
    argv = ["--weights", "spike-yolo-ibra-n.yaml", "--source", str(images), "--imgsz", "32"]
    for extra in ([], ["--overwrite"]):
        assert energy_cli.main([*argv, "--out", str(images), *extra]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --out {images} is a folder of the measured images: energy.png would be measured as an " \
            "image by the next run on it; choose another --out\n", err  # fmt: skip
    assert sorted(p.name for p in images.iterdir()) == ["0.png", "1.png"]


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--e-ac", "1e-7"], r"e_ac=1e-07 is invalid: it must be a positive number of picojoules in \[1e-06, 1e\+06\]"),
        (["--device", "cuda:99"], r"device='cuda:99' is not available: "),
    ],
)
def test_constants_and_device_are_checked_before_the_model_is_read(tmp_path, capsys, extra, says):
    # battery 13, N04/N16: both were refused only after ~25 s of loading and measuring; the weights and the source
    # here do not exist, so an error about them would mean the model or the images were read first
    argv = ["--weights", str(tmp_path / "none.pt"), "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o")]
    assert energy_cli.main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"^error: {says}", err) and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_images_that_cannot_be_decoded_are_named(model, tmp_path):
    # a 0-byte and a truncated PNG: each is skipped with Ultralytics' warning, and the error said only "no images were
    # measured" (battery 14, EN03/AM11/AM12); it names the source and how many images failed
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    ok, png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    (folder / "cut.png").write_bytes(png.tobytes()[:40])  # the header and part of the first chunk
    with pytest.raises(IbraYoloError, match=rf"^none of the 2 images of {re.escape(str(folder))} could be decoded"):
        measure(model, folder, imgsz=32, progress=False)
    # ... and given as a list of files, the first is named (it said "2 image files")
    with pytest.raises(IbraYoloError, match=rf"^none of the 2 images of 2 image files \({re.escape(str(folder))}/"):
        measure(model, sorted(str(p) for p in folder.iterdir()), imgsz=32, progress=False)
