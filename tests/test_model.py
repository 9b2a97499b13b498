"""Architecture, YAMLs, the builder's errors and the Ultralytics plugin (in-process, fast)."""

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CFG, ROOT, randomize_, run
from conftest import model_dict as load

from ibra_yolo.errors import ModelConfigError
from ibra_yolo.neurons import IBLIF, IBRALIF, ILIF, Activation, IntegerLIF
from ibra_yolo.nn import AllConvBlock, ConvBlock, NeuronConv, RepConv, SConv, SepConv, SpikeDetect, build_spiking_model

FAMILIES = {"ibra": IBRALIF, "ilif": ILIF, "iblif": IBLIF, "ann": Activation}

# Built parameter counts (nc=80, before fusion), within 0.25% of the 13.3M / 23.2M / 47.8M / 68.5M that SpikeYOLO's
# YAML comments quote for its architecture. SpikeYOLO's own code builds exactly these counts (SPEC §7, issue 13).
PARAMS = {"n": 13_271_632, "s": 23_153_024, "m": 47_841_856, "l": 68_478_400}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("scale", "nsml")
def test_parameter_counts(scale):
    layers, _ = build_spiking_model(load(scale=scale), verbose=False)
    assert n_params(layers) == PARAMS[scale]


def test_block_parameter_counts_by_hand():
    # SPEC §3, counted by hand for c = 48 (the n scale's first stage); a BN has 2 parameters per channel.
    # SepConv(48), expansion 2, kernel 7: 1x1 48->96 (4608) + BN 96 (192) + depthwise 7x7 on 96 (4704) + BN (192)
    #   + SepRep(96->48): BNPad 96 (192) + 1x1 96->48 (4608) + depthwise 3x3 on 48 (432); + BN 48 (96) = 15024.
    assert n_params(SepConv(48)) == 4608 + 192 + 4704 + 192 + 192 + 4608 + 432 + 96 == 15024
    # RepConv(48, 96): 1x1 48->48 (2304) + BNPad 48 (96) + depthwise 3x3 (432) + 1x1 48->96 (4608) + BN 96 (192).
    assert n_params(RepConv(48, 96)) == 2304 + 96 + 432 + 4608 + 192 == 7632
    # AllConvBlock(48, r=4): SepConv (15024) + SConv 3x3 48->192 (82944 + BN 384) + SConv 3x3 192->48 (82944 + 96).
    assert n_params(AllConvBlock(48)) == 15024 + 82944 + 384 + 82944 + 96 == 181392
    # ConvBlock(48, r=3): SepConv (15024) + RepConv(48, 144) (2304 + 96 + 432 + 6912 + 288) + BN 144 (288)
    #   + RepConv(144, 48) (20736 + 288 + 1296 + 6912 + 96) + BN 48 (96).
    assert n_params(ConvBlock(48, r=3)) == 15024 + 10032 + 288 + 29328 + 96 == 54768


def test_blocks_build_with_the_default_neuron():
    # Blocks take a neuron factory; without one they use the paper's neuron (IBRA-LIF, D = 5.11, N = 100, T = 1).
    # SConv(3, 8) on a [T=1, B=2, 3, 4, 4] input of 0.5: the neuron sends code 50 (S = 0.5) to a 1x1 conv whose weights
    # are all 1, so every output is 3 * 0.5 = 1.5 before the BN; an eval-mode fresh BN divides by sqrt(1 + 1e-5).
    block = SConv(3, 8).eval()
    assert type(block.conv.neuron) is IBRALIF and block.conv.neuron.max_code == 511
    torch.nn.init.ones_(block.conv.op.weight)
    y = block(torch.full((1, 2, 3, 4, 4), 0.5))
    assert y.shape == (1, 2, 8, 4, 4) and torch.allclose(y, torch.full_like(y, 1.5 / (1 + 1e-5) ** 0.5))


def test_repeats_follow_ultralytics_rounding():
    # max(round(n * depth), 1) with round-half-to-even: depth 0.5 -> 3 -> 2 (1.5), 9 -> 4 (4.5), 6 -> 3
    layers, _ = build_spiking_model(load(scale="m"), verbose=False)
    assert [len(layers[i]) for i in (2, 4, 6, 8)] == [2, 3, 4, 2]
    layers, _ = build_spiking_model(load(scale="n"), verbose=False)  # depth 0.33 -> 1, 2, 3, 1
    assert [len(layers[i]) if isinstance(layers[i], torch.nn.Sequential) else 1 for i in (2, 4, 6, 8)] == [1, 2, 3, 1]


def test_layer_table_channels_s_scale():
    # SPEC §3 layer table, "out (s scale)" column
    layers, _ = build_spiking_model(load(scale="s"), verbose=False)
    x = torch.zeros(1, 3, 640, 640)
    outs = []
    for m in layers[:-1]:  # Ultralytics' forward: -1 is the previous layer's output, other indices are absolute
        x = m([x if j == -1 else outs[j] for j in m.f] if isinstance(m.f, list) else x if m.f == -1 else outs[m.f])
        outs.append(x)
    shapes = [tuple(o.shape[2:]) for o in outs]
    expected = {
        1: (64, 160),
        3: (128, 80),
        5: (256, 40),
        7: (512, 20),
        9: (512, 20),
        10: (256, 20),
        12: (256, 40),
        13: (512, 40),
        14: (128, 40),
        17: (256, 80),
        19: (128, 80),
        22: (256, 40),
        25: (512, 20),
    }
    for i, (c, hw) in expected.items():
        assert shapes[i] == (c, hw, hw), f"layer {i}"


def test_all_families_share_the_architecture():
    rows = {f: (load(f)["backbone"], load(f)["head"]) for f in FAMILIES}
    assert all(r == rows["ibra"] for r in rows.values())
    for family, cls in FAMILIES.items():
        layers, _ = build_spiking_model(load(family, scale="n"), verbose=False)
        neurons = [m.neuron for m in layers.modules() if isinstance(m, NeuronConv) and m.neuron is not None]
        assert neurons and all(type(n) is cls for n in neurons)
        assert n_params(layers) == PARAMS["n"]  # the ANN twin is the identical architecture


def test_first_layer_is_the_only_real_valued_input():
    layers, _ = build_spiking_model(load(scale="n"), verbose=False)
    units = [m for m in layers.modules() if isinstance(m, NeuronConv)]
    assert units[0].neuron is None and all(u.spiking for u in units[1:])


def test_neuron_and_T_from_yaml():
    d = load(T=2, neuron={"kind": "IBRALIF", "D": 2.55, "N": 100, "beta": 0.5}, scale="n")
    layers, _ = build_spiking_model(d, verbose=False)
    n = next(m for m in layers.modules() if isinstance(m, IntegerLIF))
    assert (n.max_code, n.T, n.beta) == (255, 2, 0.5)
    assert layers[0].T == 2


# ---------------------------------------------------------------------------------------------------- bad YAMLs
def row_error(d, match):
    with pytest.raises(ModelConfigError, match=match) as e:
        build_spiking_model(d, verbose=False)
    assert "\n" not in str(e.value)  # one line
    return str(e.value)


def test_bad_neuron_kind():
    row_error(load(neuron={"kind": "LIF9"}), r"^neuron: neuron kind='LIF9' is unknown")


def test_bad_neuron_parameter():
    row_error(load(neuron={"kind": "IBRALIF", "N": -1}), r"^neuron: N=-1 is invalid")
    row_error(load(neuron={"kind": "ILIF", "D": 4.5}), r"^neuron: D=4.5 is invalid")
    row_error(load(T=0), r"^T=0 is invalid")


def test_bad_from_index():
    d = load(scale="n")
    d["head"][3] = [[-1, 30], 1, "Concat", []]
    msg = row_error(d, r"head row 3 \(layer 13\)")
    assert "from index 30 does not name an earlier layer" in msg


def test_concat_of_mismatched_strides():
    d = load(scale="n")
    d["head"][3] = [[-1, 4], 1, "Concat", []]  # layer 12 is /16, layer 4 is /8
    row_error(d, r"head row 3 \(layer 13\).*different spatial sizes at a 256-px input \(-1: /16 \(16 px\), 4: /8")


def test_spiking_block_before_time_repeat():
    d = load(scale="n")
    d["backbone"] = [[-1, 1, "Downsample", [128, 7, 4, 2, True]]] + d["backbone"][1:]
    row_error(d, r"backbone row 0 \(layer 0\).*needs \[T, B, C, H, W\] input")


def test_bad_block_arguments():
    d = load(scale="n")
    d["head"][0] = [-1, 1, "SConv", [512, 1, 1, None, 7]]  # groups=7 divides neither 384 input nor 192 output channels
    row_error(d, r"head row 0 \(layer 10\).*SConv g=7 must divide its 384 input and 192 output channels")
    d = load(scale="n")
    d["backbone"][2] = [-1, 3, "AllConvBlok", [4]]
    row_error(d, r"backbone row 2 .*module 'AllConvBlok' is unknown")
    d = load(scale="n")
    d["head"][-1] = [[19, 22, 25], 1, "SpikeDetect", ["ncc"]]
    row_error(d, r"unknown name 'ncc' for SpikeDetect nc")


def test_unknown_scale():
    row_error(load(scale="x"), r"scale='x' is not in this model's scales")


# ---------------------------------------------------------------------------------------------------- plugin
def test_stock_yolo_and_scale_names():
    from ultralytics import YOLO

    assert YOLO("spike-yolo-ibra.yaml").model.yaml["scale"] == "m"  # default: the paper's headline model
    for s in "nsml":
        y = YOLO(f"spike-yolo-ibra-{s}.yaml")
        assert y.task == "detect" and y.model.yaml["scale"] == s
        assert n_params(y.model) == PARAMS[s]
    assert YOLO(str(CFG / "spike-yolo-ilif.yaml")).model.yaml["neuron"]["kind"] == "ILIF"  # by path
    assert isinstance(YOLO("spike-yolo-ann-n.yaml").model.model[-1], SpikeDetect)


def test_stock_yamls_unchanged():
    # yolov8n.yaml goes to the stock parser: 3,157,200 params for nc=80 (Ultralytics' published YOLOv8n count)
    from ultralytics.nn.tasks import DetectionModel

    m = DetectionModel("yolov8n.yaml", verbose=False)
    assert n_params(m) == 3_157_200
    assert not any(isinstance(x, NeuronConv) for x in m.modules())


def test_fuse_keeps_neurons_and_outputs():
    from ultralytics import YOLO

    # fuse() (predict, val and export call it) folds the BNs into the convs and keeps every neuron: in float64 the
    # outputs equal the unfused model's to rounding (the folds are exact; float32 rounding could flip a code).
    model = randomize_(YOLO("spike-yolo-ibra-n.yaml").model).eval().double()
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)[0]
        count = sum(isinstance(m, IntegerLIF) for m in model.modules())
        model.fuse(verbose=False)
        assert sum(isinstance(m, IntegerLIF) for m in model.modules()) == count > 0
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert float((model(x)[0] - before).abs().max()) <= 1e-9 * float(before.abs().max())


def test_deepcopy_after_training_step():
    # Ultralytics' EMA and checkpoints deep-copy the model right after training steps. A module that kept a tensor of
    # the last forward (a membrane, a cached code) would either make deepcopy fail (non-leaf tensors refuse it) or
    # leak one call into the next. Expected: none of our modules holds a tensor outside its parameters and buffers
    # (the head's anchors/strides are Ultralytics' Detect's own shape caches), and the copy and two consecutive calls
    # of the original give bit-identical outputs.
    from ultralytics import YOLO

    model = randomize_(YOLO("spike-yolo-ibra-n.yaml").model).train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = model(x)
    (out["boxes"].sum() + out["scores"].sum()).backward()
    ours = [(n, m) for n, m in model.named_modules() if type(m).__module__.startswith("ibra_yolo")]
    stray = [
        (n, k) for n, m in ours if not isinstance(m, SpikeDetect) for k, v in vars(m).items() if torch.is_tensor(v)
    ]
    assert len(ours) > 300 and stray == []
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        first, again, copied = model.eval()(x)[0], model(x)[0], clone(x)[0]
    assert torch.equal(first, again) and torch.equal(first, copied)


def test_checkpoint_carries_neuron_settings(tmp_path, python):
    # A checkpoint saved here loads in a fresh process (autoload only, no ibra_yolo import), also with
    # ULTRALYTICS_SAFE_LOAD=1 (weights_only loading with our classes allow-listed), and keeps neuron and T.
    from ultralytics import YOLO

    y = YOLO("spike-yolo-iblif-n.yaml")
    y.model.yaml["T"] = 1
    ckpt = {"model": y.model, "train_args": {}}
    torch.save(ckpt, tmp_path / "m.pt")
    code = (
        "from ultralytics import YOLO; import sys, torch; m = YOLO(sys.argv[1]).model;"
        "n = [x for x in m.modules() if type(x).__name__ == 'IBLIF'];"
        "print(len(n), n[0].bits, m.yaml['neuron']['kind'], m.yaml['scale'], m(torch.zeros(1, 3, 64, 64))[0].shape[1])"
    )
    for env in ({}, {"ULTRALYTICS_SAFE_LOAD": "1"}):
        out = run([python, "-c", code, str(tmp_path / "m.pt")], env=env).stdout.strip().splitlines()[-1].split()
        assert out == [str(sum(isinstance(m, IBLIF) for m in y.model.modules())), "9", "IBLIF", "n", "84"]


def test_autoload_is_lazy_and_can_be_disabled(python):
    # With the autoload off the finder is armed only for the hint that the plugin is not registered
    # (test_model_yaml.py::test_plugin_off_says_so_and_stock_models_still_load)
    code = (
        "import sys; print('torch' in sys.modules, 'ultralytics' in sys.modules, "
        "[(f.target, f.callback.args) for f in sys.meta_path if type(f).__name__ == '_Finder'])"
    )
    # one finder, for ultralytics.nn.tasks; its callback registers the plugin (hint_only=False) or only the hint
    armed = "False False [('ultralytics.nn.tasks', ({}))]"
    assert run([python, "-c", code]).stdout.strip() == armed.format("False,")
    assert run([python, "-c", code], env={"IBRA_YOLO_AUTOLOAD": "0"}).stdout.strip() == armed.format("True,")
    build = "from ultralytics import YOLO; YOLO('spike-yolo-ibra-n.yaml')"
    p = run([python, "-c", build], env={"IBRA_YOLO_AUTOLOAD": "0"}, check=False)
    assert p.returncode != 0  # the stock loader does not know our models
    run([python, "-c", "import ibra_yolo; ibra_yolo.register(); " + build], env={"IBRA_YOLO_AUTOLOAD": "0"})


def test_autoload_line_is_silent_when_package_is_gone(tmp_path, python):
    # A .pth left behind by a moved or half-removed install must not print an error at every interpreter start:
    # with the package not importable the line does nothing; with it importable it arms the finder.
    line = (ROOT / "ibra_yolo.pth").read_text().strip()
    code = (
        f"import sys; sys.path[:0] = sys.argv[1:]; exec({line!r}); "
        "print(any(type(f).__name__ == '_Finder' for f in sys.meta_path))"
    )
    # -I -S: no site-packages and no PYTHONPATH, so no ibra_yolo on sys.path
    gone = run([python, "-I", "-S", "-c", code], cwd=tmp_path)
    assert (gone.stdout.strip(), gone.stderr.strip()) == ("False", "")
    here = run([python, "-I", "-S", "-c", code, str(ROOT)], cwd=tmp_path)
    assert (here.stdout.strip(), here.stderr.strip()) == ("True", "")


def test_errors_one_line_in_yolo_cli_normal_exceptions_elsewhere(tmp_path, python):
    # A bad YAML through the stock `yolo` console script: our error is printed as its one line (exit status 1), no
    # traceback. In any other program (here `python -c`) it is a normal exception: a traceback whose last line is
    # the same message, qualified with its module as Python prints every exception.
    d = load(scale="n", neuron={"kind": "IBRALIF", "N": 0})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    rule = "N must be a number in [1.175e-38, 3.403e+38] (float32 holds it)"
    message = f"ModelConfigError: {bad}: neuron: N=0 is invalid: {rule}"
    yolo_bin = shutil.which("yolo", path=str(Path(python).parent)) or shutil.which("yolo")
    p = run([yolo_bin, "predict", f"model={bad}", "source=x.jpg"], cwd=tmp_path, check=False)
    assert (p.returncode, p.stderr.strip().splitlines()[-1]) == (1, message) and "Traceback" not in p.stderr
    p = run([python, "-c", f"from ultralytics import YOLO; YOLO({str(bad)!r})"], check=False)
    assert (p.returncode, p.stderr.strip().splitlines()[-1]) == (1, f"ibra_yolo.errors.{message}")
    assert "Traceback" in p.stderr


def test_importing_ultralytics_leaves_excepthook_alone(python):
    # With the autoload armed, importing Ultralytics registers the plugin in this program too (its YAML names work),
    # and sys.excepthook is the very object it was before.
    code = (
        "import sys; hook = sys.excepthook; from ultralytics import YOLO; import ultralytics.nn.tasks as t;"
        "print(sys.excepthook is hook, hasattr(t.parse_model, '__ibra_yolo_original__'))"
    )
    assert run([python, "-c", code]).stdout.split()[-2:] == ["True", "True"]


@pytest.mark.parametrize("first", ["ultralytics.engine.trainer", "ultralytics.data.utils", "ultralytics"])
def test_any_ultralytics_module_may_be_imported_first(python, first):
    # `from ultralytics.engine.trainer import BaseTrainer` as a program's first import (a custom trainer) crashed with
    # the plugin armed: the trainer module imports ultralytics.nn.tasks, which registered the plugin while the trainer
    # module had not yet defined BaseTrainer ("partially initialized module"). A module still executing gets its
    # hooks once it has finished: at the next import, or when a model is built.
    code = (
        f"import importlib; importlib.import_module({first!r}); from ultralytics import YOLO;"
        "from ultralytics.engine.trainer import BaseTrainer; import ultralytics.data.utils as du;"
        "YOLO('spike-yolo-ibra-n.yaml');"  # our YAML builds: the plugin is registered
        "print(hasattr(BaseTrainer.check_resume, '__ibra_yolo_original__'),"
        "     hasattr(du.check_det_dataset, '__ibra_yolo_original__'))"
    )
    assert run([python, "-c", code]).stdout.split()[-2:] == ["True", "True"]


WRAPPED = ("parse_model", "yaml_model_load")
ULTRALYTICS_MODULES = (  # the modules the stock CLI, training, validation, prediction and export run through
    "ultralytics", "ultralytics.cfg", "ultralytics.engine.model", "ultralytics.engine.trainer",
    "ultralytics.engine.validator", "ultralytics.engine.predictor", "ultralytics.engine.exporter",
    "ultralytics.models.yolo.detect", "ultralytics.nn.autobackend", "ultralytics.utils.torch_utils",
)  # fmt: skip


@pytest.mark.parametrize("autoload", ["1", "0"])
def test_no_ultralytics_module_keeps_the_unwrapped_functions(python, autoload):
    # Whether registration runs at the first import of ultralytics.nn.tasks (autoload) or after Ultralytics is fully
    # imported (register() by hand), afterwards no ultralytics.* module may still hold the stock parse_model or
    # yaml_model_load: a future Ultralytics that binds them elsewhere must not bypass the plugin.
    code = (
        f"import importlib, sys; mods = {ULTRALYTICS_MODULES!r};"
        "[importlib.import_module(m) for m in mods]; import ultralytics.nn.tasks as t;"
        f"orig = {{n: getattr(getattr(t, n), '__ibra_yolo_original__', getattr(t, n)) for n in {WRAPPED!r}}};"
        "import types; probe = types.ModuleType('ultralytics.probe'); vars(probe).update(vars(t));"
        "sys.modules['ultralytics.probe'] = probe;"  # a module no list names, bound like tasks' own names
        "import ibra_yolo; ibra_yolo.register();"
        "left = [(k, n) for k, m in list(sys.modules.items()) if k.split('.')[0] == 'ultralytics' and m is not None"
        "        for n, f in orig.items() if vars(m).get(n) is f];"
        "bound = sum(vars(m).get(n) is getattr(t, n) for k, m in list(sys.modules.items())"
        "            if k.split('.')[0] == 'ultralytics' and m is not None for n in orig);"
        "print(left, bound)"
    )
    out = run([python, "-c", code], env={"IBRA_YOLO_AUTOLOAD": autoload}).stdout.strip().splitlines()[-1]
    # nothing unwrapped is left; the wrappers sit in ultralytics.nn.tasks and the probe (both names) and in
    # ultralytics.engine.model (yaml_model_load, which it imports by name) at least
    left, bound = out.rsplit(" ", 1)
    assert left == "[]" and int(bound) >= 5


def test_old_checkpoint_without_tap_loads(tmp_path):
    # NeuronConv gained a parameter-free `tap`; a model pickled before that (no `tap` attribute) must load, get its
    # tap back and compute the same outputs, with plain torch.load and with weights_only loading.
    from ibra_yolo.neurons import IBRALIF

    unit = NeuronConv(IBRALIF(), torch.nn.Conv2d(3, 4, 3, padding=1)).eval()
    x = torch.rand(1, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = unit(x)
    del unit._modules["tap"]
    torch.save(unit, tmp_path / "old.pt")
    loaded = torch.load(tmp_path / "old.pt", weights_only=False)
    assert isinstance(loaded.tap, torch.nn.Module) and torch.equal(loaded(x), expected)
    with torch.serialization.safe_globals([torch.nn.Conv2d]):  # ours are allow-listed by ibra_yolo.nn
        loaded = torch.load(tmp_path / "old.pt", weights_only=True)
    assert isinstance(loaded.tap, torch.nn.Module) and torch.equal(loaded(x), expected)


def test_yamls_resolve_in_a_checkout():
    # In a checkout the YAMLs are in cfg/ beside the package (a wheel puts them in ibra_yolo/cfg: the slow
    # non-editable install test covers that); every family comes with its four scale names.
    import ibra_yolo
    from ibra_yolo.plugin import available_models, cfg_dir, model_yaml_path

    assert cfg_dir() == Path(ibra_yolo.__file__).resolve().parents[1] / "cfg" == CFG
    assert model_yaml_path("spike-yolo-ibra-l.yaml") == (CFG / "spike-yolo-ibra.yaml", "l")
    assert model_yaml_path("yolov8n.yaml") is None
    for bad in (None, 123):  # pathlib's TypeError named neither (battery 12, A07/A08)
        with pytest.raises(TypeError, match=rf"^name={bad} is invalid: a model name or YAML path \(str or Path\)"):
            model_yaml_path(bad)
    families = ("ann", "iblif", "ibra", "ilif")
    assert available_models() == [n for f in families for n in (f"spike-yolo-{f}.yaml",
                                  *(f"spike-yolo-{f}-{s}.yaml" for s in "nsml"))]  # fmt: skip


def test_training_recipe_is_valid_ultralytics_cfg():
    # SPEC §6 (SpikeYOLO's COCO recipe); get_cfg rejects unknown keys and wrong types.
    from ultralytics.cfg import get_cfg

    recipe = yaml.safe_load((CFG / "train-coco-recipe.yaml").read_text())
    cfg = get_cfg(overrides=recipe)
    assert (cfg.epochs, cfg.optimizer, cfg.lr0, cfg.lrf, cfg.momentum, cfg.weight_decay) == (
        300,
        "SGD",
        0.01,
        0.004,
        0.937,
        0.0005,
    )
    assert (cfg.warmup_epochs, cfg.batch, cfg.imgsz, cfg.close_mosaic, cfg.amp, cfg.pretrained) == (
        10,
        40,
        640,
        10,
        True,
        False,
    )


def test_ctrl_c_in_the_yolo_cli_is_one_line(capsys, monkeypatch):
    # Ctrl-C in the stock `yolo val`/`predict` printed a 35-frame traceback from wherever torch was (battery 19, I02,
    # I04); the plugin's excepthook for the yolo console script prints one line (IBRA_YOLO_TRACEBACK=1 shows it all)
    from ibra_yolo import plugin

    handed_on = []
    hook = plugin._one_line_errors(lambda *exc: handed_on.append(exc[0]))
    monkeypatch.delenv("IBRA_YOLO_TRACEBACK", raising=False)
    hook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert capsys.readouterr().err == "KeyboardInterrupt: interrupted (Ctrl-C)\n" and handed_on == []
    monkeypatch.setenv("IBRA_YOLO_TRACEBACK", "1")
    hook(KeyboardInterrupt, KeyboardInterrupt(), None)
    hook(ValueError, ValueError("x"), None)
    assert handed_on == [KeyboardInterrupt, ValueError]


def test_our_error_wrapped_by_ultralytics_is_one_line_in_the_yolo_cli(capsys, monkeypatch):
    # The stock trainer re-raises a dataset error as `RuntimeError("Dataset ... error ❌ ...") from e`: a resumed run
    # whose checkpoint named a dataset that may not download printed two tracebacks around our one line (battery 19,
    # R12). The hook follows `__cause__` to our error; an unrelated cause is handed on untouched.
    from ibra_yolo import plugin
    from ibra_yolo.errors import MissingFileError

    handed_on = []
    hook = plugin._one_line_errors(lambda *exc: handed_on.append(exc[1]))
    monkeypatch.delenv("IBRA_YOLO_TRACEBACK", raising=False)
    wrapped = RuntimeError("Dataset 'evil.yaml' error ❌ dataset evil.yaml comes from the checkpoint")
    wrapped.__cause__ = MissingFileError("dataset evil.yaml comes from the checkpoint")
    hook(RuntimeError, wrapped, None)
    assert capsys.readouterr().err == "MissingFileError: dataset evil.yaml comes from the checkpoint\n"
    other = RuntimeError("Dataset 'x.yaml' error ❌ 'x.yaml' does not exist")
    other.__cause__ = FileNotFoundError("'x.yaml' does not exist")
    hook(RuntimeError, other, None)
    assert handed_on == [other] and capsys.readouterr().err == ""


def test_a_callback_whose_module_failed_to_import_waits_for_its_next_import(tmp_path, monkeypatch):
    # battery 32: Ctrl-C while a module that had a pending after_import callback was executing removed the module from
    # sys.modules; at the next import anywhere (torch's atexit handler) the callback ran and wrap_methods raised
    # KeyError: 'ultralytics.data.base'. Expected: nothing is called until the module is imported again, then once.
    import importlib
    import sys
    import types
    from importlib.machinery import ModuleSpec

    from ibra_yolo import _autoload

    monkeypatch.setattr(_autoload, "_PENDING", [])
    calls = []
    half = types.ModuleType("ibra_pending_probe")
    half.__spec__ = ModuleSpec("ibra_pending_probe", None)
    half.__spec__._initializing = True  # as importlib marks a module whose code is still running
    monkeypatch.setitem(sys.modules, "ibra_pending_probe", half)
    _autoload.after_import("ibra_pending_probe", lambda: calls.append(sys.modules["ibra_pending_probe"].VALUE))
    del sys.modules["ibra_pending_probe"]  # its import failed (interrupted): importlib removes it
    _autoload.run_pending()
    assert calls == []
    (tmp_path / "ibra_pending_probe.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("ibra_pending_probe")
    assert calls == [7]  # the callback ran once, after the module's code
    sys.modules.pop("ibra_pending_probe", None)
