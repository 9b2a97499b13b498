"""measure() and ``ibra-yolo energy`` on non-finite input: one NonFiniteError naming the image or the layer."""

import cv2
import numpy as np
import pytest
import torch
from conftest import detection_model

from ibra_yolo.cli import energy as energy_cli
from ibra_yolo.energy import measure
from ibra_yolo.errors import NonFiniteError

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
        == f"image 1 of tensor (3, 3, 64, 64) holds {kind}: images must be finite (uint8, or floats in [0, 1])"
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
    assert err.startswith("error: layer ") and "neuron outputs hold NaN" in err and err.count("\n") == 1, err
    assert not (tmp_path / "e").exists()  # nothing written
