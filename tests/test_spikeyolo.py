"""SpikeYOLO's checkpoints: parity with its own forward, the name map and its checks, neuron swap, the CLI.

The test data (``tests/data/spikeyolo``, see its README) was made by SpikeYOLO's own code: a checkpoint of its model
at depth 0.33, width 0.125 with random weights and BN statistics, and the outputs of its own eval-mode forward.
"""

import copy
import logging

import pytest
import torch
import yaml
from conftest import CFG, ROOT, run

from ibra_yolo import load_spikeyolo
from ibra_yolo.cli.convert_spikeyolo import main as convert_main
from ibra_yolo.errors import CheckpointError, IbraYoloError
from ibra_yolo.neurons import IBRALIF, ILIF, IntegerLIF
from ibra_yolo.nn import build_spiking_model
from ibra_yolo.spikeyolo import read_checkpoint
from ibra_yolo.spikeyolo.architecture import to_our_model_dict
from ibra_yolo.spikeyolo.convert import model_from_checkpoint, resolve_neuron
from ibra_yolo.spikeyolo.names import module_pairs

DATA = ROOT / "tests" / "data" / "spikeyolo"
TINY = DATA / "spikeyolo-tiny.pt"


@pytest.fixture(scope="module")
def io():
    return torch.load(DATA / "spikeyolo-tiny-io.pt", weights_only=True)  # plain tensors: the safe loader reads it


@pytest.fixture(scope="module")
def tiny():
    return load_spikeyolo(TINY, verbose=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The checkpoint converted by the CLI (I-LIF, as trained)."""
    dst = tmp_path_factory.mktemp("converted") / "tiny-ilif.pt"
    assert convert_main([str(TINY), str(dst)]) == 0
    return dst


@pytest.fixture
def ckpt():
    """A fresh read of the checkpoint, to be altered by a test."""
    return read_checkpoint(TINY)


def node(ckpt, path):
    """The stand-in module at ``path`` (dotted) of the checkpoint's model."""
    m = ckpt["model"]
    for key in path.split("."):
        m = m.children()[key]
    return m


def nms(pred, conf):
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(pred.clone(), conf_thres=conf, iou_thres=0.7, max_det=300)


# ----------------------------------------------------------------------------------------------------------------------
# Parity with SpikeYOLO's own forward
# ----------------------------------------------------------------------------------------------------------------------
def test_float64_outputs_equal_spikeyolos(tiny, io):
    # The issue's bound: 1e-6 relative to the output's scale (boxes in pixels, up to ~500 here). Measured: max abs
    # difference 1.1e-13 (2.3e-16 of the scale), i.e. float64 rounding of the box decode; the 80 class scores are
    # bit-identical. Any architectural difference (an op order, a pad value, a missing neuron) would show at >= 1e-3.
    model = copy.deepcopy(tiny).double()
    with torch.no_grad():
        out = model(io["input"].double())[0]
    ref = io["output_fp64"]
    assert out.shape == ref.shape == (2, 84, 1344)  # 4 box + 80 classes; 32^2 + 16^2 + 8^2 = 1344 anchors at 256 px
    assert (out - ref).abs().max() <= 1e-6 * ref.abs().max()


def test_float32_detections_equal_spikeyolos(tiny, io):
    # After NMS: same count and classes, boxes within 0.5 px. The random weights give class scores of at most ~4.4e-4,
    # so conf 1e-4 keeps the top few dozen anchors per image (46 and 42); a conf above 4.4e-4 would compare nothing.
    with torch.no_grad():
        out = tiny(io["input"])[0]
    ours, theirs = nms(out, 1e-4), nms(io["output_fp32"], 1e-4)
    assert [len(d) for d in ours] == [len(d) for d in theirs] and min(len(d) for d in theirs) >= 10
    for a, b in zip(ours, theirs):
        assert torch.equal(a[:, 5], b[:, 5])  # classes, in score order
        assert (a[:, :4] - b[:, :4]).abs().max() <= 0.5
    # float32 vs float32 outputs: within a few float32 ulps of ~500 px (measured 6.1e-5 with 1 thread, 0 with 2: the
    # summation order); a spike code flipped by rounding would show as >= 1e-2
    assert (out - io["output_fp32"]).abs().max() <= 1e-3


def test_loaded_model_is_the_checkpoints(tiny):
    # README of the test data: 2,011,184 parameters and 755 state-dict entries; I-LIF D = 4 (MultiSpike4), T = 1,
    # scale n set to [0.33, 0.125, 1024]; row 25 of its YAML is ConvBlock ratio 1 (args [1, 7])
    assert sum(p.numel() for p in tiny.parameters()) == 2_011_184
    assert len(tiny.state_dict()) == 755
    neurons = [m for m in tiny.modules() if isinstance(m, IntegerLIF)]
    assert neurons and all(type(m) is ILIF and m.max_code == 4 and m.T == 1 and m.beta == 0.25 for m in neurons)
    assert tiny.yaml["scales"] == {"n": [0.33, 0.125, 1024]} and tiny.yaml["T"] == 1
    assert tiny.yaml["head"][15] == [-1, 1, "ConvBlock", [1, 7]]
    assert tiny.yaml["head"][16] == [[19, 22, 25], 1, "SpikeDetect", ["nc"]]  # Ultralytics' nc= can override it
    assert tiny.stride.tolist() == [8, 16, 32] and not tiny.training
    assert all(m.eps == 1e-3 for m in tiny.modules() if isinstance(m, torch.nn.BatchNorm2d))  # as SpikeYOLO's


# ----------------------------------------------------------------------------------------------------------------------
# The name map and its checks
# ----------------------------------------------------------------------------------------------------------------------
def test_name_map_by_block(ckpt):
    # One example per SpikeYOLO block, derived by hand from its module definitions and ours
    pairs = {p.theirs: p.ours for p in module_pairs(ckpt["model"])}
    assert pairs["model.1.encode_conv"] == "model.1.conv.op"  # MS_DownSampling -> Downsample
    assert pairs["model.2.Conv.pwconv1"] == "model.2.sep.pw1.op"  # SPEC §7's example
    assert pairs["model.4.1.Conv.pwconv3.body.0.bn"] == "model.4.1.sep.pw2.op.bn"  # SepRepConv's BNAndPad -> BNPad
    assert pairs["model.4.1.Conv.pwconv3.body.1.1"] == "model.4.1.sep.pw2.op.dw"
    assert pairs["model.4.1.conv2.conv"] == "model.4.1.conv2.conv.op"  # MS_StandardConv -> SConv
    assert pairs["model.6.2.conv1.body.1.bn"] == "model.6.2.conv1.op.bn1"  # RepConv -> RepConv, inside ConvBlock
    assert pairs["model.6.2.conv1.body.2.2"] == "model.6.2.conv1.op.bn2"
    assert pairs["model.6.2.bn1"] == "model.6.2.bn1"
    assert pairs["model.9.cv2.conv"] == "model.9.cv2.conv.op"  # SpikeSPPF's SpikeConv
    assert pairs["model.26.cv3.2.1.bn"] == "model.26.cv3.2.conv2.bn"  # head branch
    assert pairs["model.26.cv2.0.2.conv"] == "model.26.cv2.0.pred.op"  # SpikeConvWithoutBN
    assert pairs["model.26.dfl.conv"] == "model.26.dfl.conv"


@pytest.mark.parametrize("scale, ratio", [("n", 1), ("s", 1), ("m", 2), ("l", 2)])
def test_spikeyolo_layer_table_builds_our_models(ckpt, scale, ratio):
    # SpikeYOLO's YAML (the rows stored in the checkpoint) at its own scales, with row 25 at the ratio that gives its
    # published sizes (13.2M / 23.1M / 48M / 69M: ratio 2 for m and l, as its 69M model): the translated model has the
    # state-dict keys and shapes of our shipped YAML at that scale, so `pretrained=` transfers every tensor.
    spikeyolo_scales = {
        "n": [0.33, 0.375, 1024],
        "s": [0.33, 0.5, 1024],
        "m": [0.5, 0.625, 7024],
        "l": [0.5, 0.75, 1024],
    }
    d = copy.deepcopy(ckpt["model"].attrs["yaml"])
    d["scales"], d["scale"] = {scale: spikeyolo_scales[scale]}, scale  # its m has max_channels 7024: no cap is reached
    d["head"][15][3] = [ratio, 7]
    ckpt["model"].attrs["yaml"] = d
    shipped = yaml.safe_load((CFG / "spike-yolo-ilif.yaml").read_text()) | {"scale": scale}
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        ours, _ = build_spiking_model(to_our_model_dict(ckpt["model"]), verbose=False)
        ref, _ = build_spiking_model(shipped, verbose=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_wrong_ratio_names_the_first_tensor_that_does_not_fit(ckpt):
    # Row 25 claimed ratio 2 where the weights have ratio 1. Row 25 reads concat(row 23, row 10), SConvs of
    # int(512 * 0.125) = 64 channels each: c = 128. The first tensor whose shape depends on the ratio is the RepConv's
    # 1x1 c -> r*c (before it: the SepConv, and the RepConv's c -> c 1x1, BNPad and depthwise 3x3): 128 out, not 256.
    ckpt["model"].attrs["yaml"]["head"][15][3] = [2, 7]
    with pytest.raises(CheckpointError) as e:
        model_from_checkpoint(ckpt, verbose=False)
    assert str(e.value) == (
        "SpikeYOLO tensor model.25.conv1.body.2.1.weight has shape [128, 128, 1, 1] but our "
        "model.25.conv1.op.pw2.weight has [256, 128, 1, 1]: the checkpoint's layer table does not match the model "
        "built from it"
    )


def test_every_tensor_used_once_and_every_one_of_ours_filled(ckpt):
    conv = node(ckpt, "model.1.encode_conv")
    conv.attrs["_parameters"]["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"tensor model\.1\.encode_conv\.extra maps to model\.1\.conv\.op\.extra"):
        model_from_checkpoint(ckpt, verbose=False)
    del conv.attrs["_parameters"]["extra"]
    del node(ckpt, "model.26.dfl.conv").attrs["_parameters"]["weight"]
    with pytest.raises(
        CheckpointError, match=r"^our tensor model\.26\.dfl\.conv\.weight gets no weight .*\(1 in all\)"
    ):
        model_from_checkpoint(ckpt, verbose=False)


def test_conv_geometry_bn_eps_and_non_finite_values_are_checked(ckpt):
    node(ckpt, "model.5.encode_bn").attrs["eps"] = 1e-5  # taken as is: it changes the forward
    model, _ = model_from_checkpoint(ckpt, verbose=False)
    assert model.model[5].bn.eps == 1e-5 and model.model[3].bn.eps == 1e-3
    node(ckpt, "model.3.encode_conv").attrs["stride"] = (1, 1)
    with pytest.raises(CheckpointError, match=r"conv model\.3\.encode_conv has stride=\(1, 1\) but our model\.3\.conv"):
        model_from_checkpoint(ckpt, verbose=False)
    node(ckpt, "model.3.encode_conv").attrs["stride"] = (2, 2)
    node(ckpt, "model.8.Conv.bn2").attrs["_parameters"]["bias"][3] = float("nan")
    with pytest.raises(CheckpointError, match=r"tensor model\.8\.Conv\.bn2\.bias holds non-finite values"):
        model_from_checkpoint(ckpt, verbose=False)


def test_unknown_blocks_and_neurons_are_named(ckpt):
    ckpt["model"].attrs["yaml"]["backbone"][9][2] = "MS_Block"
    with pytest.raises(CheckpointError, match=r"backbone row 9 .*module 'MS_Block' has no counterpart in ibra-yolo"):
        model_from_checkpoint(ckpt, verbose=False)
    ckpt["model"].attrs["yaml"]["backbone"][9][2] = "SpikeSPPF"
    stand_in = type(node(ckpt, "model.9"))  # a stand-in class of another name, created as the unpickler does
    other = type(stand_in)("MS_Block", (stand_in.__mro__[1],), {"qualname": "yolo_spikformer.MS_Block"})
    node(ckpt, "model.9").__class__ = other
    with pytest.raises(CheckpointError, match=r"^module model\.9 is a yolo_spikformer\.MS_Block, which has no counter"):
        model_from_checkpoint(ckpt, verbose=False)


def test_mixed_neurons_are_refused(ckpt):
    quantiser = node(ckpt, "model.2.Conv.lif1.qtrick")
    other = type(type(quantiser))("MultiSpike8", (type(quantiser).__mro__[1],), {"qualname": "x.MultiSpike8"})
    quantiser.__class__ = other
    with pytest.raises(CheckpointError, match=r"one neuron kind .* found \['MultiSpike4', 'MultiSpike8'\]"):
        model_from_checkpoint(ckpt, verbose=False)


# ----------------------------------------------------------------------------------------------------------------------
# Neuron swap
# ----------------------------------------------------------------------------------------------------------------------
def test_neuron_swap_keeps_the_weights(tiny):
    model = load_spikeyolo(TINY, neuron="ibra", verbose=False)
    neurons = [m for m in model.modules() if isinstance(m, IntegerLIF)]
    assert len(neurons) == sum(isinstance(m, ILIF) for m in tiny.modules())
    assert all(type(m) is IBRALIF and m.max_code == 511 and m.scale == 100 for m in neurons)  # M = round(100 * 5.11)
    a, b = model.state_dict(), tiny.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the other spellings of the same neuron: our shipped YAML's mapping, a dict, YAML text
    ibra = {"kind": "IBRALIF", "D": 5.11, "N": 100, "beta": 0.25}
    assert resolve_neuron("ibra") == resolve_neuron(ibra) == resolve_neuron(str(ibra)) == ibra
    assert resolve_neuron("ilif") == {"kind": "ILIF", "D": 4, "beta": 0.25} and resolve_neuron(None) is None


def test_our_own_checkpoint_is_not_a_spikeyolo_one(converted):
    # an Ultralytics checkpoint given as the SpikeYOLO source was "expected one neuron kind ..., found []"
    with pytest.raises(IbraYoloError, match=r"not a SpikeYOLO checkpoint: its model has no mem_update neurons"):
        load_spikeyolo(converted, verbose=False)


@pytest.mark.parametrize(
    "neuron, message",
    [
        ("lif", "--neuron must be one of ibra, ilif, iblif or a mapping"),
        ({"kind": "IBRALIF", "D": -1}, "neuron: D=-1 is invalid: D must be a finite number > 0"),
        ("{kind: Foo}", "neuron: neuron kind='Foo' is unknown"),
        # PyYAML keeps the last of two equal keys: D 2.0 was used without a word
        ("{kind: IBRALIF, D: 5.11, D: 2.0}", "--neuron repeats the key 'D' at line 1: keep one"),
        # YAML 1.1 reads 1:30 as the base-60 number 90: D 90 was used without a word (battery 16, CV-neuron-yaml)
        ("{kind: IBRALIF, D: 1:30}", "--neuron: '1:30' at line 1 is read by YAML 1.1 as the base-60 number 90"),
        ("{kind: IntegerLIF}", "neuron: neuron kind='IntegerLIF' needs max_code"),  # was a TypeError traceback
    ],
)
def test_bad_neuron_is_one_line(neuron, message):
    with pytest.raises(IbraYoloError, match=message):
        load_spikeyolo(TINY, neuron=neuron, verbose=False)


# ----------------------------------------------------------------------------------------------------------------------
# Conversion and the CLI
# ----------------------------------------------------------------------------------------------------------------------
def test_convert_writes_a_checkpoint_that_loads_like_the_source(tiny, io, converted):
    from ultralytics import YOLO

    raw = torch.load(converted, map_location="cpu", weights_only=False)  # our own file
    assert raw["epoch"] == -1 and raw["spikeyolo"]["trained_neuron"] == {"kind": "ILIF", "D": 4, "beta": 0.25}
    assert raw["spikeyolo"]["version"] == "8.0.197" and raw["train_args"]["imgsz"] == 640  # SpikeYOLO's 23M run
    model = YOLO(converted).model.eval()
    a, b = model.state_dict(), tiny.state_dict()
    assert all(torch.equal(a[k].float(), b[k]) for k in b)  # float16 on disk, as SpikeYOLO's: nothing rounded
    with torch.no_grad():
        assert torch.equal(model(io["input"])[0], tiny(io["input"])[0])
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]  # no temporary file left


def test_cli_never_overwrites_and_checks_the_output_first(tmp_path, capsys):
    dst = tmp_path / "exists.pt"
    dst.write_bytes(b"mine")
    # the output is checked before any work: a missing source is not even looked at
    assert convert_main([str(tmp_path / "missing.pt"), str(dst)]) == 2
    assert capsys.readouterr().err == f"error: {dst} exists: choose another file name or pass --overwrite\n"
    assert dst.read_bytes() == b"mine"
    for args, message in [
        ([str(TINY), str(tmp_path / "x.pth")], f"error: output {tmp_path / 'x.pth'} must end in .pt"),
        ([str(TINY), str(tmp_path)], f"error: output {tmp_path} must end in .pt"),
        ([str(TINY), str(TINY), "--overwrite"], f"error: file name {TINY} is an input of this command"),
        ([str(tmp_path / "missing.pt"), str(tmp_path / "y.pt")], f"error: checkpoint {tmp_path / 'missing.pt'} does"),
        ([str(dst), str(tmp_path / "y.pt"), "--overwrite"], f"error: {dst} is not a torch zip checkpoint"),
    ]:
        assert convert_main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    assert convert_main([str(TINY), str(dst), "--overwrite", "--neuron", "ibra"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {dst}; e.g. yolo val model={dst} data=coco.yaml")
    assert torch.load(dst, weights_only=False)["model"].yaml["neuron"]["kind"] == "IBRALIF"


def test_pretrained_transfers_every_tensor_to_our_yaml(converted):
    # What `yolo train model=<our yaml> pretrained=<converted>` does: BaseModel.load logs the transfer count
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    d = yaml.safe_load((CFG / "spike-yolo-ibra.yaml").read_text())
    d["scales"], d["scale"] = {"n": [0.33, 0.125, 1024]}, "n"  # the checkpoint's scale; p5_ratio n is 1, as its row 25
    model = DetectionModel(d, verbose=False)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        model.load(load_checkpoint(converted)[0])
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)
    assert "Transferred 755/755 items from pretrained weights" in lines
    # `yolo train model=<converted> data=<other classes>` rebuilds the model from the checkpoint's YAML with the
    # data's class count (Ultralytics' nc=): the head follows it
    other = DetectionModel(copy.deepcopy(load_checkpoint(converted)[0].yaml), nc=3, verbose=False)
    assert other.model[-1].nc == 3 and [b.pred.op.out_channels for b in other.model[-1].cv3] == [3, 3, 3]


def test_spike_driven_mode_on_converted_weights(tiny, io):
    # Same weights, codes sent as unary {0, 1} planes: equal detections (float32 rounding only)
    from ibra_yolo import spike_driven

    x = io["input"]
    with torch.no_grad():
        integer = tiny(x)[0]
        with spike_driven(tiny):
            planes = tiny(x)[0]
    assert (planes[:, 4:] - integer[:, 4:]).abs().max() <= 1e-5 and (planes[:, :4] - integer[:, :4]).abs().max() <= 0.5
    assert [len(d) for d in nms(planes, 1e-4)] == [len(d) for d in nms(integer, 1e-4)]


def test_safe_load_in_a_fresh_process(python, converted):
    # ULTRALYTICS_SAFE_LOAD=1: weights_only loading, with our classes allow-listed by the autoloaded plugin
    code = (
        "import sys, torch; from ultralytics import YOLO; m = YOLO(sys.argv[1]).model;"
        "print(type(m).__name__, m.yaml['neuron']['kind'], len(m.state_dict()))"
    )
    out = run([python, "-c", code, str(converted)], env={"ULTRALYTICS_SAFE_LOAD": "1"}).stdout
    assert out.split()[-3:] == ["DetectionModel", "ILIF", "755"]


def test_spikeyolo_data_that_expands_without_end_is_refused(ckpt):
    # battery 26, K31: a tuple shared at every level (t = (t, t), 1 KB in a file) expands to 2**(k+1) - 1 values;
    # `_plain` walked SpikeYOLO's train_args once per use (2**39 times for 39 levels). Refused by name over a million
    # values, as our own checkpoints are; t(19) = 1,048,575 is the first over it.
    value = "leaf"
    for _ in range(20):
        value = (value, value)
    ckpt["train_args"] = {"classes": value}
    says = r"^tiny\.pt: its train_args\['classes'\]\[0\] data expands to 1,048,575 values through shared references"
    with pytest.raises(CheckpointError, match=says):
        model_from_checkpoint(ckpt, source="tiny.pt", verbose=False)
