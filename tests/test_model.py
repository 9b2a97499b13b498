"""Architecture, YAMLs, the builder's errors and the Ultralytics plugin (in-process, fast)."""

import copy
import sys

import pytest
import torch
import yaml
from conftest import CFG, ROOT, randomize_, run

from ibra_yolo.errors import ModelConfigError
from ibra_yolo.neurons import IBLIF, IBRALIF, ILIF, Activation, IntegerLIF
from ibra_yolo.nn import NeuronConv, SpikeDetect, build_spiking_model

FAMILIES = {"ibra": IBRALIF, "ilif": ILIF, "iblif": IBLIF, "ann": Activation}

# Built parameter counts (nc=80, before fusion). SpikeYOLO's architecture quotes 13.3M / 23.2M / 47.8M / 68.5M
# (its YAML comments), so these are within 0.25% of it (the issue asks for 0.5%).
PARAMS = {"n": 13_271_632, "s": 23_153_024, "m": 47_841_856, "l": 68_478_400}
SPIKEYOLO = {"n": 13.3e6, "s": 23.2e6, "m": 47.8e6, "l": 68.5e6}


def load(family="ibra", **overrides):
    d = yaml.safe_load((CFG / f"spike-yolo-{family}.yaml").read_text())
    d.update(overrides)
    return d


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("scale", "nsml")
def test_parameter_counts(scale):
    layers, _ = build_spiking_model(load(scale=scale), verbose=False)
    assert n_params(layers) == PARAMS[scale]
    assert abs(PARAMS[scale] / SPIKEYOLO[scale] - 1) < 0.005


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
    row_error(d, r"head row 3 \(layer 13\).*different spatial strides")


def test_spiking_block_before_time_repeat():
    d = load(scale="n")
    d["backbone"] = [[-1, 1, "Downsample", [128, 7, 4, 2, True]]] + d["backbone"][1:]
    row_error(d, r"backbone row 0 \(layer 0\).*needs \[T, B, C, H, W\] input")


def test_bad_block_arguments():
    d = load(scale="n")
    d["head"][0] = [-1, 1, "SConv", [512, 1, 1, None, 7]]  # groups=7 does not divide 192 input channels
    row_error(d, r"head row 0 \(layer 10\).*ValueError: in_channels must be divisible by groups")
    d = load(scale="n")
    d["backbone"][2] = [-1, 3, "AllConvBlok", [4]]
    row_error(d, r"backbone row 2 .*module 'AllConvBlok' is unknown")
    d = load(scale="n")
    d["head"][-1] = [[19, 22, 25], 1, "SpikeDetect", ["ncc"]]
    row_error(d, r"unknown name\(s\) \['ncc'\]")


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

    model = randomize_(YOLO("spike-yolo-ibra-n.yaml").model).eval()
    x = torch.rand(1, 3, 128, 128)
    before = model(x)[0]
    count = sum(isinstance(m, IntegerLIF) for m in model.modules())
    model.fuse(verbose=False)
    assert sum(isinstance(m, IntegerLIF) for m in model.modules()) == count > 0
    assert torch.equal(model(x)[0], before)


def test_deepcopy_after_training_step():
    from ultralytics import YOLO

    model = YOLO("spike-yolo-ibra-n.yaml").model.train()
    out = model(torch.rand(2, 3, 64, 64))
    (out["boxes"].sum() + out["scores"].sum()).backward()
    clone = copy.deepcopy(model)  # Ultralytics' EMA and checkpoints deep-copy the model
    assert n_params(clone) == n_params(model)


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
    code = (
        "import sys; print('torch' in sys.modules, 'ultralytics' in sys.modules, "
        "any(type(f).__name__ == '_Finder' for f in sys.meta_path))"
    )
    assert run([python, "-c", code]).stdout.split() == ["False", "False", "True"]
    assert run([python, "-c", code], env={"IBRA_YOLO_AUTOLOAD": "0"}).stdout.split() == ["False", "False", "False"]
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


def test_cli_error_is_one_line(tmp_path, python):
    d = load(scale="n", neuron={"kind": "IBRALIF", "N": 0})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    p = run([python, "-c", f"from ultralytics import YOLO; YOLO({str(bad)!r})"], check=False)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        "ModelConfigError: neuron: N=0 is invalid: N must be a finite number > 0"
    )
    assert "Traceback" not in p.stderr


def test_yamls_resolve_after_install():
    from ibra_yolo.plugin import available_models, cfg_dir, model_yaml_path

    assert cfg_dir() in (ROOT / "cfg", ROOT / "ibra_yolo" / "cfg") or (cfg_dir() / "spike-yolo-ibra.yaml").is_file()
    assert model_yaml_path("spike-yolo-ibra-l.yaml") == (cfg_dir() / "spike-yolo-ibra.yaml", "l")
    assert model_yaml_path("yolov8n.yaml") is None
    assert {"spike-yolo-ibra.yaml", "spike-yolo-ibra-n.yaml", "spike-yolo-ann-l.yaml"} <= set(available_models())
    assert sys.modules["ibra_yolo.plugin"]._registered


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
