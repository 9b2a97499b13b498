"""Deployment: folding BN, RepConv and SepRep is exact, the deployed network is spike-driven and cannot be trained."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CFG, randomize_, run
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel, torch_safe_load
from ultralytics.utils import ASSETS

from ibra_yolo.deployment import deploy, deploy_checkpoint, folded_state, fuse_bn, merge_convs
from ibra_yolo.errors import CheckpointError, FoldedModelError, IbraYoloError
from ibra_yolo.nn import BNPad, NeuronConv, RepConv, SepRep, Synapse
from ibra_yolo.nn.blocks import conv_macs_per_pixel
from ibra_yolo.spike_mode import is_spike_driven, spike_driven

FAMILIES = ("ibra", "iblif", "ilif", "ann")


def build(family: str, T: int = 1, scale: str = "n", seed: int = 0) -> DetectionModel:
    """A float64 eval-mode model with random BN statistics (tests' ``randomize_``)."""
    d = yaml.safe_load((CFG / f"spike-yolo-{family}.yaml").read_text())
    d.update(scale=scale, T=T, yaml_file=f"spike-yolo-{family}-{scale}.yaml")
    torch.manual_seed(seed)
    return randomize_(DetectionModel(d, verbose=False), seed).eval().double()


def layer_outputs(model: DetectionModel, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every layer of the model (block outputs are real-valued: membrane shortcuts) and the result."""
    outs = []
    hooks = [m.register_forward_hook(lambda mod, a, out: outs.append(out)) for m in model.model[:-1]]
    with torch.no_grad():
        y = model(x)[0]
    for h in hooks:
        h.remove()
    return [*outs, y]


def assert_close_layers(a: list[torch.Tensor], b: list[torch.Tensor], rel: float = 1e-9):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):
        scale = float(u.abs().max())
        assert scale > 0, f"layer {i} is all zeros: the comparison would prove nothing"
        assert float((u - v).abs().max()) <= rel * scale, f"layer {i}: {float((u - v).abs().max()) / scale:.1e}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", [1, 2])
def test_deploy_is_exact_layer_by_layer(family, T):
    # Every fold is linear algebra on the same numbers, computed in float64: each layer's real-valued output (a block
    # output, before the next neuron) must equal the training graph's to float64 rounding, ~1e-15 relative; 1e-9 is
    # far below the effect of any wrong fold (one misplaced BN shift moves a layer by ~0.1 of its scale) and far
    # above summation-order rounding. The neurons' codes then match exactly (no input lies within 1e-13 of a
    # rounding edge), so the comparison holds through all 26 layers and the decoded detections.
    model = build(family, T)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = layer_outputs(model, x)
    assert_close_layers(ref, layer_outputs(deploy(model), x))  # in place: the reference outputs are already taken


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["s", "m", "l"])
def test_deploy_is_exact_at_every_scale(scale):
    # As above at the bigger scales (their widths, extra depth and the ratio-2 row 25 of m and l), cheaply: 64 px,
    # T = 1 (the n scale runs in the fast suite above, every family and T).
    model = build("ibra", 1, scale)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = layer_outputs(model, x)
    deployed = deploy(model)  # in place: the reference outputs are already taken
    assert_close_layers(ref, layer_outputs(deployed, x))


def test_deployed_structure_and_idempotence():
    model = build("ibra")
    units = {n: m.macs_per_pixel() for n, m in model.named_modules() if isinstance(m, NeuronConv)}
    assert folded_state(model) == "none"
    assert folded_state(fuse_bn(copy.deepcopy(model))) == "bn"
    deploy(model)
    assert folded_state(model) == "all" and model.yaml["folded"] == "all"
    assert not any(isinstance(m, (nn.BatchNorm2d, RepConv, SepRep)) for m in model.modules())
    after = {n: m for n, m in model.named_modules() if isinstance(m, NeuronConv)}
    assert after.keys() == units.keys()
    for name, unit in after.items():
        # neuron -> one conv with bias; its dense MACs are what the energy model counts for the training graph's
        # layer (SPEC §5: RepConv/SepRep count as the kxk conv they fold into)
        assert type(unit.op) is nn.Conv2d and unit.op.bias is not None, name
        assert conv_macs_per_pixel(unit.op) == units[name], name
    state = {k: v.clone() for k, v in model.state_dict().items()}
    deploy(fuse_bn(model))  # idempotent: nothing left to fold
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.state_dict().keys() == state.keys()


def test_merge_convs_general_chain():
    # The merge rule on its own, float64: a bias-free 1x1 (4 -> 6), a padded depthwise 3x3 with bias and a 1x1 with
    # bias (6 -> 5) equal one dense 3x3 conv with padding 1 (5, 4, 3, 3) to float64 rounding. A biased conv before
    # the padding is refused: zero padding after it is not its output on a zero-padded input (the border holds bias).
    torch.manual_seed(0)
    pw1 = nn.Conv2d(4, 6, 1, bias=False).double()
    dw = nn.Conv2d(6, 6, 3, padding=1, groups=6).double()
    pw2 = nn.Conv2d(6, 5, 1).double()
    merged = merge_convs([pw1, dw, pw2])
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        ref = pw2(dw(pw1(x)))
        assert merged.weight.shape == (5, 4, 3, 3) and merged.padding == (1, 1)
        assert (merged(x) - ref).abs().max() <= 1e-12 * ref.abs().max()
    with pytest.raises(IbraYoloError, match="bias-free 1x1"):
        merge_convs([pw2, nn.Conv2d(5, 5, 3, padding=1).double()])


class ConvInputs(TorchDispatchMode):
    """Sees every convolution the model executes (``aten.convolution``, whether from a module or ``F.conv2d``)."""

    def __init__(self, exempt: dict[str, torch.Tensor]):
        super().__init__()
        self.exempt = {w.data_ptr(): name for name, w in exempt.items()}
        self.binary, self.real = 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, w = args[0], args[1]
            name = self.exempt.get(w.data_ptr())
            if name is not None:
                self.real[name] = self.real.get(name, 0) + 1
            else:
                assert ((x == 0) | (x == 1)).all(), f"conv {tuple(w.shape)} got non-binary input {x.unique()[:6]}"
                self.binary += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family, T", [("ibra", 1), ("ilif", 2)])
def test_deployed_spike_driven_feeds_every_conv_binary(family, T):
    # Deployed + spike-driven: every convolution executed, seen at the aten level (so no conv path can hide), gets
    # only 0s and 1s, except the first layer (the real image) and Ultralytics' fixed DFL conv (a softmax expectation
    # in the decoder), each run once per forward. A global module pre-hook sees the same convs as modules: every
    # Conv2d call plus every Synapse call (the spike planes, via F.conv2d) adds up to the aten count, so the module
    # view misses none. The outputs equal the training graph's integer mode (float64 rounding).
    model = build(family, T)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)[0]
    deploy(model)
    head = model.model[-1]
    first = model.model[1].conv
    assert first.neuron is None
    exempt = {"first": first.op.weight, "dfl": head.dfl.conv.weight}
    seen = {"conv2d": 0, "synapse": 0}

    def pre(module, args):
        if isinstance(module, nn.Conv2d):
            seen["conv2d"] += 1
        if isinstance(module, Synapse):
            seen["synapse"] += 1
            assert ((args[0] == 0) | (args[0] == 1)).all()

    handle = nn.modules.module.register_module_forward_pre_hook(pre)
    try:
        with spike_driven(model), ConvInputs(exempt) as convs, torch.no_grad():
            y = model(x)[0]
    finally:
        handle.remove()
    units = [m for m in model.modules() if isinstance(m, NeuronConv) and m.spiking]
    assert convs.real == {"first": 1, "dfl": 1}
    assert convs.binary == seen["synapse"] >= len(units)  # at least one plane per spike-fed layer
    assert seen["conv2d"] + seen["synapse"] == convs.binary + 2
    assert (y - ref).abs().max() <= 1e-9 * ref.abs().max()


def test_ultralytics_fuse_folds_bns_exactly():
    # DetectionModel.fuse() (predict, val and export call it) folds the BNs and keeps RepConv/SepRep (see README,
    # Deploy: merging them raises dense MACs and CPU time); the stock predictor runs on such a fused copy.
    model = build("ibra", 1)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = layer_outputs(model, x)
    fused = copy.deepcopy(model).fuse(verbose=False)
    assert folded_state(fused) == "bn" and folded_state(model) == "none"
    assert_close_layers(ref, layer_outputs(fused, x))
    assert fused.fuse(verbose=False) is fused  # a second fuse() has nothing left to do
    y = YOLO("spike-yolo-ilif-n.yaml")
    y.predict(ASSETS / "bus.jpg", imgsz=64, verbose=False)
    assert folded_state(y.predictor.model.model) == "bn" and folded_state(y) == "none"


def test_spike_driven_on_bn_fused_model():
    # SepRep's spike-driven path reads its (now folded) 1x1 conv: a BN-fused model still runs spike-driven, exactly.
    model = build("ilif", 1)
    x = torch.rand(1, 3, 32, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)[0]
        fuse_bn(model)
        with spike_driven(model):
            y = model(x)[0]
    assert (y - ref).abs().max() <= 1e-9 * ref.abs().max()


def test_deploy_on_yolo_object_checkpoint_and_copies(tmp_path):
    # deploy() takes a YOLO object (and folds its predictor's copy too); the deployed checkpoint loads with the stock
    # loader, also restricted (ULTRALYTICS_SAFE_LOAD=1: weights_only and the allow-list), and deep-copies. Each gives
    # the same outputs bit for bit (the same modules on the same weights; Ultralytics saves weights in fp16, so the
    # reference for the loaded ones is the model with fp16-rounded weights).
    y = YOLO("spike-yolo-ibra-n.yaml")
    randomize_(y.model)
    y.predict(ASSETS / "bus.jpg", imgsz=64, verbose=False)
    assert deploy(y) is y
    assert folded_state(y) == "all" and folded_state(y.predictor.model.model) == "all"
    path = tmp_path / "deployed.pt"
    y.save(path)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        model = y.model.eval()
        saved = copy.deepcopy(model).half().float()
        for loaded, ref in (
            (copy.deepcopy(model), model),
            (YOLO(path).model, saved),
            (torch_safe_load(path, safe_only=True)[0]["model"].float(), saved),
        ):
            assert folded_state(loaded) == "all"
            assert torch.equal(loaded.eval()(x)[0], ref(x)[0])


def test_folded_model_cannot_be_trained(tmp_path, shapes_data):
    # Training a folded model would rebuild the training graph from its YAML and load folded weights into it
    # (silently wrong); the builder refuses the folded YAML, which stops train and resume before any work.
    model = build("ilif")
    with pytest.raises(FoldedModelError, match="folded for inference"):
        DetectionModel(deploy(copy.deepcopy(model)).yaml, verbose=False)
    with pytest.raises(FoldedModelError, match=r"folded: bn"):
        DetectionModel(fuse_bn(copy.deepcopy(model)).yaml, verbose=False)
    y = YOLO("spike-yolo-ilif-n.yaml")
    deploy(y)
    path = tmp_path / "deployed.pt"
    y.save(path)
    # ... naming the file, not only its model's YAML (battery 13, T02: `yolo train model=d06.pt` named
    # spike-yolo-ibra-n.yaml), before the trainer makes a run folder
    folded = r" is folded for inference \(folded: all, by fuse\(\) or deploy\): .* cannot be trained or resumed"
    with pytest.raises(FoldedModelError, match=f"^{re.escape(str(path))}{folded}"):
        YOLO(path).train(data=str(shapes_data), epochs=1, imgsz=64, device="cpu", workers=0, project=str(tmp_path))
    ckpt = torch.load(path, weights_only=False)
    ckpt.update(epoch=0, optimizer={}, train_args={**(ckpt.get("train_args") or {}), "data": str(shapes_data)})
    resumable = tmp_path / "last.pt"
    torch.save(ckpt, resumable)
    with pytest.raises(FoldedModelError, match=f"^{re.escape(str(resumable))}{folded}"):
        YOLO(resumable).train(resume=True, device="cpu", workers=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deployed.pt", "last.pt"]  # no run folder was made
    # pretrained= a folded checkpoint: the stock trainer builds the YAML's model and loads the weights into it, of
    # which it took 74 of 755 tensors, said only in its "Transferred" line (battery 11, T07); refused, naming the file
    from ultralytics.nn.tasks import load_checkpoint as stock_load

    weights, _ = stock_load(path)
    says = rf"pretrained weights {re.escape(str(path))} are folded for inference \(folded: all, by fuse\(\) or deploy\)"
    with pytest.raises(FoldedModelError, match=says):
        DetectionModel("spike-yolo-ilif-n.yaml", verbose=False).load(weights)
    trained = YOLO("spike-yolo-ilif-n.yaml")
    trained.save(tmp_path / "unfolded.pt")
    weights, _ = stock_load(tmp_path / "unfolded.pt")
    target = DetectionModel("spike-yolo-ilif-n.yaml", verbose=False)
    target.load(weights)  # every tensor taken
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), weights.state_dict().values()))


def test_broken_bn_statistics_are_refused_before_any_change(tmp_path):
    # A negative running_var (or eps 0 with variance 0) gave NaN folded weights, and `ibra-yolo deploy` wrote them with
    # exit status 0. Every BN is checked first, so the model is left exactly as it was.
    from ibra_yolo.errors import NonFiniteError

    model = build("ibra")
    model.model[3].bn.running_var[7] = -0.5
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(NonFiniteError, match=r"^cannot fold model\.3\.bn: channel 7 has .*running_var \+ eps -0\.49"):
        deploy(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model = build("ibra")
    model.model[3].bn.eps, model.model[3].bn.running_var[0] = 0.0, 0.0
    with pytest.raises(NonFiniteError, match=r"channel 0 has .*running_var \+ eps 0 \(all must be finite"):
        fuse_bn(model)
    torch.save({"model": build("ibra").float()}, tmp_path / "m.pt")
    with pytest.raises(IbraYoloError, match=r"must end in \.pt"):  # `yolo predict model=<that>` then failed
        deploy_checkpoint(tmp_path / "m.pt", tmp_path / "m.deployed")


def test_a_fold_beyond_float32_is_refused_before_any_change():
    # A finite BN with a tiny running_var and a large weight folds to ~1e43 in float64, which is inf in float32: it
    # deployed to an inf weight. The folded result is checked, and every fold is computed before any is applied.
    from ibra_yolo.errors import NonFiniteError

    for fold in (fuse_bn, deploy):
        model = build("ibra").float()  # float32, as trained and deployed
        bn = model.model[3].bn
        bn.running_var[0], bn.eps, bn.weight.data[0] = 1e-30, 1e-38, 1e30  # scale 1e30 / sqrt(1e-30) = 1e45
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(NonFiniteError, match=r"^cannot fold the BNs of model\.3\.conv: the folded weight reaches "
                           r"\S+e\+4\d, beyond float32 \(max 3\.4e\+38\)"):  # fmt: skip
            fold(model)
        after = model.state_dict()
        assert after.keys() == before.keys() and all(torch.equal(before[k], v) for k, v in after.items())


def test_bns_without_statistics_or_affine_and_nan_weights():
    # a BN with track_running_stats=False has no running_var (an AttributeError on None); one with affine=False
    # (weight 1, bias 0) folds exactly; a NaN conv weight was blamed on "a BN scale too large to fold"
    from ibra_yolo.errors import NonFiniteError

    model = build("ibra")
    model.model[3].bn.running_var = model.model[3].bn.running_mean = None
    with pytest.raises(IbraYoloError, match=r"^cannot fold model\.3\.bn: it keeps no running statistics"):
        fuse_bn(model)
    model = build("ibra")
    bn = model.model[3].bn
    bn.weight, bn.bias, bn.affine = None, None, False
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    expected = model(x)[0]
    assert torch.allclose(deploy(model)(x)[0], expected, rtol=0, atol=1e-9)  # float64: the fold is exact
    model = build("ibra")
    with torch.no_grad():
        model.model[5].conv.op.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^DetectionModel: model\.5\.conv\.op\.weight holds 1 NaN or infinite"):
        deploy(model)


def test_deploy_command_takes_the_ann_twin(tmp_path):
    # battery 11: deploy switched spike-driven mode off unconditionally, which the ANN twin refused ("spike-driven
    # mode needs an IBRA-LIF..."), though deploy() folds it exactly; only --spike-driven needs spiking neurons
    from ibra_yolo.spike_mode import set_spike_driven

    model = build("ann")
    torch.save({"model": model, "train_args": {}}, tmp_path / "ann.pt")
    deploy_checkpoint(tmp_path / "ann.pt", tmp_path / "ann-deployed.pt")
    assert folded_state(torch.load(tmp_path / "ann-deployed.pt", weights_only=False)["model"]) == "all"
    assert set_spike_driven(model, False) is model  # nothing to switch off: a no-op
    with pytest.raises(CheckpointError, match=r"holds a model without integer spiking neurons \(an ANN twin\?\)"):
        deploy_checkpoint(tmp_path / "ann.pt", tmp_path / "ann-spikes.pt", spike_driven=True)
    assert not (tmp_path / "ann-spikes.pt").exists()


def test_deploy_refuses_unknown_layers():
    with pytest.raises(IbraYoloError, match="no ibra-yolo spiking layers"):
        deploy(YOLO("yolov8n.yaml"))
    model = build("ibra")
    model.model[2].extra = nn.BatchNorm2d(4)  # a BN no known block pairs with a conv
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(IbraYoloError, match=r"cannot fold model\.2\.extra"):
        deploy(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before any change
    assert any(isinstance(m, BNPad) for m in model.modules())
    assert model.fuse(verbose=False) is model and folded_state(model) == "none"  # fuse() is a speed-up: it warns
    meta = build("ibra").to("meta")  # a model without values: torch's "Tensor.item() cannot be called on meta tensors"
    with pytest.raises(IbraYoloError, match=r"^model\.1\.conv\.op\.weight is a meta tensor \(no values\): load the"):
        deploy(meta)
    with pytest.raises(IbraYoloError, match=r"is a meta tensor \(no values\)"):
        fuse_bn(meta)


class _Evil:
    """A pickle whose loading would create a marker file (a stand-in for ``os.system``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_deploy_command(tmp_path, shapes_data, python, capsys):
    # `ibra-yolo deploy SRC DST [--spike-driven]` writes deploy() of the checkpoint's model (whose exactness the tests
    # above prove in float64) in float32: the same weights bit for bit, and the stored mode. The stock predictor and
    # validator load it, also with ULTRALYTICS_SAFE_LOAD=1 (weights_only and the allow-list).
    from ibra_yolo.cli import main

    y = YOLO("spike-yolo-ibra-n.yaml")
    randomize_(y.model)
    src = tmp_path / "best.pt"
    y.save(src)
    expected = deploy(torch_safe_load(src, safe_only=True)[0]["model"].float()).state_dict()
    for flag, name in (([], "deploy.pt"), (["--spike-driven"], "spikes.pt")):
        dst = tmp_path / name
        assert main(["deploy", str(src), str(dst), *flag]) == 0
        loaded = torch_safe_load(dst, safe_only=True)[0]["model"]
        assert folded_state(loaded) == "all" and is_spike_driven(loaded) is bool(flag)
        state = loaded.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
        assert all(v.dtype != torch.float16 for v in state.values())  # saved in float32: the fold is not re-rounded
    env = {"ULTRALYTICS_SAFE_LOAD": "1"}
    yolo_bin = shutil.which("yolo", path=str(Path(python).parent)) or shutil.which("yolo")
    p = run([yolo_bin, "predict", f"model={tmp_path / 'spikes.pt'}", f"source={ASSETS / 'bus.jpg'}",
             "imgsz=64", f"project={tmp_path}", "name=pred", "save=False"], env=env)  # fmt: skip
    assert "bus.jpg" in p.stdout + p.stderr  # Ultralytics logs the image it predicted on
    metrics = YOLO(tmp_path / "deploy.pt").val(data=str(shapes_data), imgsz=64, device="cpu", plots=False,
                                                project=str(tmp_path), name="val", verbose=False)  # fmt: skip
    assert 0.0 <= metrics.box.map <= 1.0

    # never overwrites, reads nothing unsafe, refuses what is not a checkpoint of ours; one line each, exit status 2
    before = (tmp_path / "deploy.pt").read_bytes()
    assert main(["deploy", str(src), str(tmp_path / "deploy.pt")]) == 2
    assert (tmp_path / "deploy.pt").read_bytes() == before
    assert main(["deploy", str(src), str(tmp_path / "deploy.pt"), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(src), str(tmp_path / "two\nlines.pt")]) == 0  # a file name may hold a line break
    assert (
        capsys.readouterr().out
        == f"wrote {tmp_path}/two\\nlines.pt (integer mode); e.g. yolo predict model={tmp_path}/two\\nlines.pt\n"
    )
    marker = tmp_path / "pwned"
    torch.save({"model": _Evil(marker)}, tmp_path / "evil.pt")
    torch.save({"hello": 1}, tmp_path / "hello.pt")
    with pytest.raises(IbraYoloError, match=r"^spike_driven='no' is invalid"):  # was refused after the whole fold
        deploy_checkpoint(src, tmp_path / "out-no.pt", spike_driven="no")
    for bad in ("evil.pt", "hello.pt", "missing.pt"):
        with pytest.raises(IbraYoloError):
            deploy_checkpoint(tmp_path / bad, tmp_path / f"out-{bad}")
        assert not (tmp_path / f"out-{bad}").exists()
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="holds no .model. module"):
        deploy_checkpoint(tmp_path / "hello.pt", tmp_path / "x.pt")
    assert sorted(f.name for f in tmp_path.glob("*.tmp")) == []  # no temporary file left behind


@pytest.mark.parametrize("family, T", [("ibra", 1), ("ilif", 2), ("ann", 1)])
def test_deployed_executed_count_equals_training_folded_count(family, T):
    # SPEC §5 counts the training graph "folded": each RepConv/SepRep as the one k x k conv it merges into, BNs free.
    # The deployed network IS that network, so counting what it executes must give the same dense MACs, MACs, SOPs
    # and spikes, layer by layer (the float64 fold leaves every code unchanged). Counting the training graph as it
    # executes costs more: its RepConv/SepRep run depthwise and 1x1 convs on real-valued sums, and every BN multiplies.
    from ibra_yolo.energy import measure

    model = build(family, T)
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def report(m, counting=None):
        return measure(m, x, batch=2, counting=counting, progress=False)

    folded = report(model)
    executed_training = report(model, "executed")
    deployed = report(deploy(copy.deepcopy(model)))
    assert folded.counting == "folded" and deployed.counting == "executed" and executed_training.counting == "executed"
    keys = ("dense_macs", "macs", "sops", "spikes_total", "energy_pj")
    for a, b in zip(folded.layers, deployed.layers, strict=True):
        assert a.name == b.name and all(getattr(a, k) == getattr(b, k) for k in keys), (a.name, a, b)
    extra = sum(e.macs - f.macs for e, f in zip(executed_training.layers, folded.layers))
    # Spiking: the real-valued stages of the training graph add MACs. ANN twin: every stage is a MAC anyway, and the
    # factorised RepConv/SepRep (1x1 + depthwise + 1x1) execute fewer MACs than the dense k x k they merge into.
    assert extra < 0 if family == "ann" else extra > 0


def test_executed_stages_by_hand():
    # (synaptic, real-valued) MACs per output pixel as each op executes, c1 = 4 -> c2 = 6, k = 3:
    # RepConv: pw1 4*4 = 16 is fed the spikes; BNPad 4 + depthwise 4*9 = 36 + pw2 4*6 = 24 + BN 6 = 70 are real.
    # SepRep: BNPad first (4) makes every stage real: 4 + pw 4*6 = 24 + depthwise 6*9 = 54 = 82; BN-folded, the 1x1
    # (24) is fed the spikes and the depthwise (54) is real. A plain conv 4*6*9 = 216 with the block's BN after it (6).
    from ibra_yolo.energy.meter import executed_macs_per_pixel

    assert executed_macs_per_pixel(NeuronConv(None, RepConv(4, 6))) == (16, 70)
    sep = NeuronConv(None, SepRep(4, 6))
    assert executed_macs_per_pixel(sep) == (0, 82)
    fuse_bn(nn.Sequential(sep))
    assert executed_macs_per_pixel(sep) == (24, 54)
    assert executed_macs_per_pixel(NeuronConv(None, nn.Conv2d(4, 6, 3)), nn.BatchNorm2d(6)) == (216, 6)
