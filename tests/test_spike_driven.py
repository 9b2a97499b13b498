"""Spike-driven execution on the same weights equals integer execution; every spike-fed conv sees only 0s and 1s."""

import cv2
import pytest
import torch
from conftest import yolo_model as make_model
from ultralytics import YOLO
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ASSETS
from ultralytics.utils.nms import non_max_suppression

from ibra_yolo import is_spike_driven, set_spike_driven, spike_driven
from ibra_yolo.errors import IbraYoloError
from ibra_yolo.neurons import ILIF, NAN_CODE, IntegerLIF, NonFiniteError
from ibra_yolo.nn import NeuronConv, Synapse
from ibra_yolo.spike_mode import convert_checkpoint, spike_driven_units

IMAGES = ("bus.jpg", "zidane.jpg")  # the two images that ship with Ultralytics
CASES = [("ibra", 1), ("ibra", 2), ("ilif", 1), ("ilif", 2)]  # binary and unary encodings, T = 1 and 2


def letterboxed(name: str, size: int = 320) -> torch.Tensor:
    img = LetterBox((size, size), auto=True, stride=32)(image=cv2.imread(str(ASSETS / name)))
    return torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].double() / 255


def assert_same_detections(a: torch.Tensor, b: torch.Tensor, box_tol: float, score_tol: float):
    """Same number of detections and a one-to-one match with the same class, box and score within tolerance.

    Matched as sets, not by position: an untrained model gives many exactly tied scores whose order NMS may break
    either way.
    """
    assert len(a) == len(b) > 0
    free = list(range(len(b)))
    for det in a:
        for k in free:
            o = b[k]
            if o[5] == det[5] and abs(o[4] - det[4]) <= score_tol and (o[:4] - det[:4]).abs().max() <= box_tol:
                free.remove(k)
                break
        else:
            raise AssertionError(f"detection {det.tolist()} has no counterpart")


class BinaryInputs:
    """Forward pre-hooks on every Synapse (a spike-fed conv): each input must be exactly 0 or 1; counts spikes."""

    def __init__(self, model):
        self.calls, self.spikes, self.handles = 0, 0, []
        for m in model.modules():
            if isinstance(m, Synapse):
                self.handles.append(m.register_forward_pre_hook(self.check))

    def check(self, module, args):
        x = args[0]
        assert ((x == 0) | (x == 1)).all(), f"non-binary input to a spike-fed conv: {x.unique()[:8].tolist()}"
        self.calls += 1
        self.spikes += int(x.sum())

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("family, T", CASES)
def test_spike_driven_equals_integer_float64(family, T):
    # In float64 the only differences are rounding of the re-ordered sums (~1e-13), far from any rounding edge of
    # a neuron, so the two modes must give the same detections to 1e-6 px / 1e-9 score.
    y = make_model(family, T)
    model = y.model.eval().double()
    units = spike_driven_units(model)
    planes = sum(u.neuron.num_planes for u in units)  # at most; empty planes above the largest code are skipped
    inputs = [letterboxed(n) for n in IMAGES] + [torch.rand(1, 3, 256, 320, dtype=torch.float64)]
    for x in inputs:
        with torch.no_grad():
            a = model(x)[0]
            with spike_driven(model):
                hooks = BinaryInputs(model)
                b = model(x)[0]
                hooks.remove()
        assert len(units) <= hooks.calls <= planes  # each spike-fed conv ran once per non-empty virtual timestep
        assert (a - b).abs().max() <= 1e-9 * a.abs().max()
        da, db = (non_max_suppression(p.float(), conf_thres=0.25, max_det=300)[0] for p in (a, b))
        assert_same_detections(da, db, box_tol=1e-6, score_tol=1e-9)


@pytest.mark.parametrize("family", ["ibra", "ilif"])
def test_every_spike_fed_layer_equal_in_float32(family):
    # Layer by layer in float32: each spike-fed layer, given the same input, computes the same output in both modes
    # to float32 rounding (|diff| <= 1e-5 * max|output|; measured ~1e-7). A whole float32 network is not compared:
    # a quantiser is discontinuous, so a 1-ulp difference at a .5 rounding edge flips a code, and in an untrained
    # random network such flips cascade (measured: up to 5% of downstream codes). The network-level proof is the
    # float64 test above, where the summation-order error (~1e-13) cannot reach a rounding edge.
    model = make_model(family, 2).model.eval()
    units = [m for m in model.modules() if isinstance(m, NeuronConv) and m.spiking]
    inputs = {}
    hooks = [u.register_forward_pre_hook(lambda mod, a: inputs.setdefault(mod, a[0])) for u in units]
    with torch.no_grad():
        model(letterboxed("bus.jpg").float())
    for h in hooks:
        h.remove()
    assert len(inputs) == len(units)
    with torch.no_grad():
        for unit, x in inputs.items():
            a = unit(x)
            unit.spike_driven = True
            b = unit(x)
            unit.spike_driven = False
            assert (a - b).abs().max() <= 1e-5 * max(a.abs().max(), 1.0), unit


def test_stock_predictor_runs_spike_driven():
    # Through YOLO.predict (which runs a deep copy of the model): the switch reaches that copy, every spike-fed conv
    # receives only 0s and 1s, and switching back restores integer execution.
    y = make_model("ibra", 1)
    y.predict(ASSETS / "bus.jpg", imgsz=320, verbose=False)  # the predictor now holds its own copy
    copy = y.predictor.model.model  # AutoBackend -> DetectionModel
    with spike_driven(y):
        hooks = BinaryInputs(copy)
        results = y.predict(ASSETS / "bus.jpg", imgsz=320, conf=0.3, verbose=False)
        hooks.remove()
    assert hooks.calls >= len(spike_driven_units(copy)) and len(results[0].boxes) > 0  # >= 1 plane per conv
    assert not is_spike_driven(y) and not is_spike_driven(copy)


@pytest.mark.parametrize("neuron", [ILIF(), None, torch.nn.ReLU()], ids=["I-LIF", "image", "ReLU"])
def test_runs_spike_driven_is_the_one_condition(neuron):
    # NeuronConv.runs_spike_driven is the condition the forward, the energy meter and the eval probe all read: a
    # {0,1}-plane forward happens exactly when spike-driven mode is set, the input is an integer neuron's and the unit
    # is in eval mode (training always uses the integer path, which defines the gradients).
    unit = NeuronConv(neuron, torch.nn.Conv2d(2, 3, 1))
    planes = []
    unit.synapse.register_forward_pre_hook(lambda m, a: planes.append(a[0]))
    x = torch.rand(1, 1, 2, 4, 4) * 3
    for mode in (False, True):
        for training in (False, True):
            unit.spike_driven = mode
            unit.train(training)
            expected = mode and isinstance(neuron, IntegerLIF) and not training
            planes.clear()
            with torch.no_grad():
                unit(x)
            assert unit.runs_spike_driven is expected and bool(planes) is expected, (mode, training)


@pytest.mark.parametrize("neuron", [IntegerLIF(511, 100.0, T=2), ILIF(T=2)], ids=["binary", "unary"])
def test_nan_membrane_makes_its_sample_nan_without_a_host_sync(neuron):
    # A NaN membrane has no code. Spike-driven mode decides on the device (no .item()): that sample's output at that
    # timestep is NaN, as the integer path's is (NaN propagates through the conv), and every other (timestep, sample)
    # is exactly the integer path's. The counting path refuses it: codes() raises NonFiniteError.
    unit = NeuronConv(neuron, torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)).eval()
    x = torch.rand(2, 3, 2, 5, 5, dtype=torch.float64) * 4  # T = 2, batch 3
    x[1, 1, 0, 2, 2] = float("nan")  # sample 1 at t = 1 only: the NaN stays in the membrane
    with torch.no_grad():
        integer = unit(x)
        unit.spike_driven = True
        spikes = unit(x)
    assert torch.isnan(spikes[1, 1]).all() and torch.isnan(integer[1, 1]).any()  # t = 1, sample 1
    ok = torch.ones(2, 3, dtype=torch.bool)
    ok[1, 1] = False  # every other (t, sample) pair, including sample 1 at t = 0, before the NaN arrived
    assert not torch.isnan(spikes[ok]).any()
    torch.testing.assert_close(spikes[ok], integer[ok], rtol=1e-12, atol=1e-12)
    assert neuron.spike_codes(x)[1, 1, 0, 2, 2] == NAN_CODE
    with pytest.raises(NonFiniteError, match="1 membrane potential"):
        neuron.codes(x)


def test_switch_on_objects_and_errors(tmp_path):
    y = make_model("ibra", 1)
    assert not is_spike_driven(y)
    assert set_spike_driven(y) is y and is_spike_driven(y)
    set_spike_driven(y, False)
    assert not is_spike_driven(y)
    with pytest.raises(IbraYoloError, match="no integer spiking neurons"):
        set_spike_driven(YOLO("spike-yolo-ann-n.yaml"))
    # training always uses the integer path (it defines the gradients): no plane reaches a Synapse
    set_spike_driven(y.model)
    y.model.train()
    hooks = BinaryInputs(y.model)
    out = y.model(torch.rand(1, 3, 64, 64))
    hooks.remove()
    assert out["scores"].requires_grad and hooks.calls == 0


def test_convert_checkpoint(tmp_path):
    y = make_model("ilif", 1)
    src = tmp_path / "best.pt"
    torch.save({"model": y.model, "train_args": {}}, src)
    dst = convert_checkpoint(src, tmp_path / "best-spike.pt")
    loaded = YOLO(dst)
    assert is_spike_driven(loaded) and not is_spike_driven(YOLO(src))
    with pytest.raises(IbraYoloError, match="exists"):
        convert_checkpoint(src, dst)  # never overwrites without being asked
    with pytest.raises(IbraYoloError, match="is an input of this command: choose another output file name"):
        convert_checkpoint(src, src, overwrite=True)
    assert sum(isinstance(m, IntegerLIF) for m in loaded.model.modules()) > 0


def test_mode_must_be_a_bool(tmp_path):
    # bool('no') is True: a string (or 0/1) for the mode is refused instead of read as truthy, before any work.
    y = make_model("ilif", 1)
    for bad in ("no", "False", 0, None):
        with pytest.raises(IbraYoloError, match=rf"enabled={bad!r} is invalid: pass True"):
            set_spike_driven(y, bad)
        with pytest.raises(IbraYoloError, match=rf"enabled={bad!r} is invalid"):
            spike_driven(y, bad)
    assert not is_spike_driven(y)
    with pytest.raises(IbraYoloError, match="enabled='no' is invalid"):
        convert_checkpoint(tmp_path / "missing.pt", tmp_path / "out.pt", enabled="no")
    assert not (tmp_path / "out.pt").exists()
