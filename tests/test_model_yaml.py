"""Malformed model YAMLs: each fails as one ModelConfigError (or MissingFileError) line naming the bad key, row, value.

Files go through ``YOLO(...)`` as a user's would (the plugin checks them before Ultralytics guesses the task from the
last row); dicts go through the builder. Valid shipped YAMLs building at every scale is tested in test_model.py.
"""

import copy
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CFG, run
from conftest import model_dict as load
from ultralytics.nn.tasks import DetectionModel

from ibra_yolo.errors import MissingFileError, ModelConfigError
from ibra_yolo.nn import build_spiking_model
from ibra_yolo.nn.rows import SCHEMAS, plan_model


def yolo_error(path, cls=ModelConfigError) -> str:
    from ultralytics import YOLO

    with pytest.raises(cls) as e:
        YOLO(str(path))
    assert type(e.value) is cls and "\n" not in str(e.value)  # exactly this class, one line
    return str(e.value)


def write(tmp_path, d=None, text=None, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(d, sort_keys=False))
    return path


def with_row(section: str, j: int, row) -> dict:
    d = load(scale="n")
    d[section][j] = row
    return d


# ---------------------------------------------------------------------------------------------------- file level
def test_not_a_model_yaml(tmp_path):
    msg = yolo_error(write(tmp_path, text=""))
    assert msg == f"{tmp_path / 'bad.yaml'} is empty: a model YAML needs nc, backbone and head (and neuron)"
    msg = yolo_error(write(tmp_path, text="- TimeRepeat\n- SpikeDetect\n"))
    assert msg.endswith("bad.yaml: a model YAML must be a mapping (nc, backbone, head, ...), got a list")
    # an unclosed flow mapping: PyYAML stops at line 3, column 9 (1-based), where "backbone:" meets ':'
    msg = yolo_error(write(tmp_path, text="nc: 80\nneuron: {kind: IBRALIF\nbackbone: [\n"))
    assert msg.endswith("bad.yaml is not valid YAML at line 3, column 9: expected ',' or '}', but got ':'")


def test_missing_file_names_the_file_and_our_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = yolo_error("spike-yolo-ibrra-n.yaml", MissingFileError)  # a typo in the family
    assert msg.startswith("'spike-yolo-ibrra-n.yaml' does not exist") and "spike-yolo-ibra" in msg
    assert isinstance(MissingFileError(), FileNotFoundError)  # `except FileNotFoundError` still catches it


def test_scale_suffix_that_the_file_lacks():
    msg = yolo_error("spike-yolo-ibra-q.yaml")
    assert (
        msg == f"spike-yolo-ibra-q.yaml: scale 'q' is not one of ['l', 'm', 'n', 's'] in {CFG / 'spike-yolo-ibra.yaml'}"
    )


def test_spiking_modules_without_neuron_key(tmp_path):
    d = load(scale="n")
    del d["neuron"]
    assert "has no 'neuron' key" in yolo_error(write(tmp_path, d))


@pytest.mark.parametrize("key", ["backbone", "head"])
@pytest.mark.parametrize("value", [None, []])
def test_empty_backbone_or_head(tmp_path, key, value):
    msg = yolo_error(write(tmp_path, load(scale="n", **{key: value})))
    rule = "it must be a non-empty list of rows [from, n, module, args]"
    assert msg == f"{tmp_path / 'bad.yaml'}: {key}={value!r} is invalid: {rule}"
    # the same as a dict handed to the stock constructor: an IndexError in its code before (battery 12, A05)
    with pytest.raises(ModelConfigError) as e:
        DetectionModel(load(scale="n", **{key: value}), verbose=False)
    assert str(e.value) == f"{key}={value!r} is invalid: {rule}"


def test_input_channels_are_checked():
    # ch=0 was torch's conv error, which does not name ch (battery 12, A02)
    with pytest.raises(ModelConfigError, match=r"^spike-yolo-ibra-n\.yaml: ch=0 is invalid: input image channels "):
        DetectionModel("spike-yolo-ibra-n.yaml", ch=0, nc=3, verbose=False)
    for ch in (True, 2.0, "3"):  # a bool, a float and a string are no channel counts
        with pytest.raises(ModelConfigError, match=rf"^spike-yolo-ibra-n\.yaml: ch={re.escape(repr(ch))} is invalid"):
            DetectionModel("spike-yolo-ibra-n.yaml", ch=ch, nc=3, verbose=False)
    # a numpy integer is the integer it holds (np.int64(3) was refused, battery 14, AY30): a 1-channel model's first
    # conv takes 1 channel, as with ch=1
    import numpy as np

    gray = DetectionModel("spike-yolo-ibra-n.yaml", ch=np.int64(1), nc=3, verbose=False)
    first = next(m for m in gray.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1 and type(first.in_channels) is int
    # likewise nc and T in a model dict, and nc as the keyword (battery 15, AY06): the head is built with the Python
    # int (a numpy scalar would be pickled into the checkpoint as one)
    for d, nc in ((load(scale="n", nc=np.int64(3), T=np.int64(1)), None), (load(scale="n"), np.int64(4))):
        m = DetectionModel(d, nc=nc, verbose=False)
        assert m.model[-1].nc == (nc or 3) and type(m.model[-1].nc) is int and len(m.names) == (nc or 3)


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("nc", True, "nc=True is invalid"),  # a bool is not a class count
        ("scales", {"n": [0.33, 0.25]}, "scales.n=[0.33, 0.25] is invalid"),
        ("scale_args", [1], "scale_args=[1] is invalid"),
        # silently wrong before: scale 0 built the first scale, max_channels 0.5 capped every layer at 0 channels
        # (blamed on a row), and stock keys the stock parser honours were ignored (reg_max 32 built 16)
        ("scale", 0, "scale=0 is not in this model's scales ['l', 'm', 'n', 's']"),
        ("scales", {"n": [0.33, 0.375, 0.5]}, "scales.n=[0.33, 0.375, 0.5] is invalid: max_channels=0.5 must be"),
        ("reg_max", 32, "reg_max=32 is not read by spiking YAMLs: SpikeDetect's box regression uses 16 DFL bins"),
        ("activation", "nn.SiLU()", "activation='nn.SiLU()' is not read by spiking YAMLs: the neuron: key sets"),
        ("end2end", True, "end2end=True is not read by spiking YAMLs"),
        ("kpt_shape", [17, 3], "kpt_shape=[17, 3] is not read by spiking YAMLs: spiking models detect boxes only"),
        # a misspelt key was ignored (battery 22, Y52: `t: 4` built one timestep); a key of its own (author) is not one
        ("t", 4, "t: is not a key spiking YAMLs read (it would be ignored): did you mean T:?"),
        ("neurons", {"kind": "ILIF", "D": 4}, "neurons: is not a key spiking YAMLs read (it would be ignored): did"),
    ],
)
def test_bad_top_level_keys(key, value, says):
    with pytest.raises(ModelConfigError, match=re.escape(says)):
        build_spiking_model(load(**{"scale": "n", key: value}), verbose=False)
    harmless = {"reg_max": 16, "end2end": False, "activation": None, "kpt_shape": None}  # what ours does anyway
    build_spiking_model(load(scale="n", **harmless, author="me", scaling="none"), verbose=False)


# ---------------------------------------------------------------------------------------------------- rows
def test_row_after_spike_detect(tmp_path):
    # Through YOLO(): Ultralytics guesses the task from the last row, so the check runs before that guess
    d = load(scale="n")
    d["head"].append([-1, 1, "SConv", [64, 1]])
    msg = yolo_error(write(tmp_path, d))
    assert re.search(r"head row 17 \(layer 27\) .*no row may follow SpikeDetect \(layer 26\)", msg)


def test_row_with_missing_fields_or_args():
    d = with_row("backbone", 1, [-1, 1, "Downsample"])
    with pytest.raises(ModelConfigError, match=r"backbone row 1 \(layer 1\).*a row must be \[from, repeats, module"):
        build_spiking_model(d, verbose=False)
    d = with_row("backbone", 1, [-1, 1, "Downsample", []])
    with pytest.raises(ModelConfigError, match=r"backbone row 1 .*Downsample needs argument c2 \(an integer >= 1\)"):
        build_spiking_model(d, verbose=False)


@pytest.mark.parametrize(
    "section, j, row, says",
    [
        ("backbone", 3, [-1, 1, "Downsample", [256, 0, 2, 1]], "Downsample k=0 is invalid: it must be an integer >= 1"),
        ("backbone", 3, [-1, 1, "Downsample", [256, 3, -2, 1]], "Downsample s=-2 is invalid"),
        ("head", 0, [-1, 1, "SConv", [512, 1, 0]], "SConv s=0 is invalid: it must be an integer >= 1"),
        ("head", 0, [-1, 1, "SConv", [512, -1]], "SConv k=-1 is invalid"),
        ("backbone", 9, [-1, 1, "SPPF", [1024, 0]], "SPPF k=0 is invalid: it must be an odd integer >= 1"),
        ("backbone", 9, [-1, 1, "SPPF", [1024, 4]], "SPPF k=4 is invalid"),  # even: would change the map size
        ("backbone", 2, [-1, 3, "AllConvBlock", [4, 0]], "AllConvBlock k=0 is invalid"),
        ("backbone", 2, [-1, 3, "AllConvBlock", [0]], "AllConvBlock r=0 is invalid: it must be a number > 0"),
        ("backbone", 6, [-1, 9, "ConvBlock", [3, 6]], "ConvBlock k=6 is invalid"),
        ("head", 0, [-1, 1, "SConv", [512, 1, 1, None, 7]], "SConv g=7 must divide its 384 input and 192 output"),
        ("head", 0, [-1, 1, "SConv", [512, 1, 1, -1]], "SConv p=-1 is invalid: it must be an integer or null >= 0"),
        ("head", -1, [[19, 22, 25], 1, "SpikeDetect", [0]], "SpikeDetect nc=0 is invalid"),
        ("backbone", 1, [-1, 1, "Downsample", [128, 7, 4, 2, "yes"]], "unknown name 'yes' for Downsample first"),
        ("backbone", 1, [-1, 1, "Downsample", [128.5, 7, 4]], "Downsample c2=128.5 is invalid"),
        # a one-layer module given a list: Ultralytics hands it a list, and the neuron failed deep inside the trainer
        ("head", 0, [[-1], 1, "SConv", [512, 1]], "SConv reads one layer: write from=-1, not from=[-1]"),
        (
            "backbone",
            1,
            [-1, 1, "Downsample", ["1e2", 7, 4]],
            "c2='1e2' is a string, not a number: YAML 1.1 reads an exponent as text unless it is written like 1.0e+2",
        ),
    ],
)
def test_bad_row_argument_names_its_row_and_value(section, j, row, says):
    # the n-scale IBRA YAML has 10 backbone rows, so head row j is layer 10 + j (the last is layer 26). At the n scale
    # (width 0.375) SPPF outputs make_divisible(1024 * 0.375, 8) = 384 channels and SConv 512 makes 192.
    layer = j if section == "backbone" else (10 + j if j >= 0 else 26)
    with pytest.raises(ModelConfigError) as e:
        build_spiking_model(with_row(section, j, row), verbose=False)
    assert f"{section} row {j if j >= 0 else 16} (layer {layer}) {row}: " in str(e.value) and says in str(e.value)


@pytest.mark.parametrize(
    "edit, says",
    [
        # sizes that are typos, not models: each exhausted memory in Ultralytics' 256-px probe, or failed there with a
        # torch error about an unrelated layer
        ({"T": 10**6}, "T=1000000 is invalid: the number of timesteps must be an integer in [1, 64]"),
        ({"scale": ["n"]}, "scale=['n'] is not in this model's scales"),  # a list was an unhashable-type TypeError
        # a scale_args name 'nc' silently replaced the model's nc in the head only
        ({"scale_args": {"nc": dict.fromkeys("nsml", 5)}}, "scale_args.nc is not a usable name"),
        ({"neuron": {"kind": "IntegerLIF"}}, "neuron: neuron kind='IntegerLIF' needs max_code (no default)"),
        ({"neuron": {"kind": "IBRALIF", "D": 1e-38, "N": 1e39}}, "neuron: N=1e+39 is invalid"),
        (("head", -1, [-1, 1, "SpikeDetect", ["nc"]]), "SpikeDetect reads a list of layers: write from=[-1]"),
        (("head", 3, [6, 1, "Concat", []]), "Concat reads a list of layers: write from=[6]"),
        # nc: 3 with SpikeDetect [80] predicted class ids up to 78 for 3 names (a KeyError in Results.verbose)
        (("head", -1, [[19, 22, 25], 1, "SpikeDetect", [7]]), "SpikeDetect nc=7 differs from the model's nc=80: write"),
        (("backbone", 7, [-1, 500, "ConvBlock", [3]]), "repeats=500 must be an integer in [1, 100]"),
        (
            ("backbone", 3, [-1, 1, "Downsample", [256, 3, 2, 100000]]),
            "Downsample p=100000 is invalid: padding must be <= k // 2 = 1",
        ),
        (
            ("backbone", 3, [-1, 1, "Downsample", [256, 65, 2, 32]]),
            "Downsample k=65 is invalid: kernels larger than 63",
        ),
        (
            ("backbone", 3, [-1, 1, "Downsample", [10**9, 3, 2, 1]]),
            "Downsample c2=1000000000 scales to 375000000 channels (width 0.375): it must be in [1, 65536]",
        ),
        # layer 12 has 192 channels at n (512 * 0.375) and layer 6 also 192: 401 inputs make 76,992 > 65,536
        (("head", 3, [[-1] + [6] * 400, 1, "Concat", []]), "Concat outputs 76992 channels: it must be in [1, 65536]"),
        # layer 9 (SPPF) is 8x8 at the 256-px probe (strides 4, 2, 2, 2): a 31x31 kernel without padding cannot fit
        (("head", 0, [-1, 1, "SConv", [512, 31, 1, 0]]), "SConv k=31 is larger than its 8x8 input (padding 0)"),
        (("head", 1, [-1, 1, "Upsample", [64]]), "Upsample scale=64 makes its 8x8 input larger than the 256x256 input"),
        # stride 10000 makes every map 1x1; the upsampled 2x2 then meets layer 6's 1x1 at the Concat (layer 13), which
        # the strides alone (both /40000) did not show: torch's "Sizes of tensors must match" came from the Concat
        (
            ("backbone", 1, [-1, 1, "Downsample", [128, 7, 10000, 2, True]]),
            "head row 3 (layer 13) [[-1, 6], 1, "
            "'Concat', []]: Concat inputs have different spatial sizes at a 256-px input (-1: /40000 (2 px), 6: /40000 "
            "(1 px))",
        ),
    ],
)
def test_sizes_and_names_that_cannot_be_a_model(edit, says):
    d = with_row(*edit) if isinstance(edit, tuple) else {**load(scale="n"), **edit}
    with pytest.raises(ModelConfigError) as e:
        build_spiking_model(d, verbose=False)
    assert says in str(e.value), str(e.value)


@pytest.mark.parametrize("key, value", [("nc", 7), ("neuron", "{kind: ILIF, D: 4}")])
def test_repeated_yaml_keys_are_refused(tmp_path, key, value):
    # PyYAML keeps the last of two equal keys: a second 'nc' or 'neuron' silently replaced the first
    text = (CFG / "spike-yolo-ibra.yaml").read_text()
    first = next(i for i, line in enumerate(text.splitlines()) if line.startswith(f"{key}:"))
    lines = text.splitlines()
    lines.insert(first + 1, f"{key}: {value}")
    msg = yolo_error(write(tmp_path, text="\n".join(lines)))
    path = tmp_path / "bad.yaml"
    assert msg == f"{path} repeats the key {key!r} at line {first + 2}: keep one (YAML keeps the last)"


def test_a_number_written_with_a_colon_is_refused(tmp_path):
    # YAML 1.1 (PyYAML) reads `D: 1:30` as the base-60 number 90 and `1:30.5` as 90.5: the model was built with D = 90
    # without a word (battery 16, Y12). Such a value is named with its line and what YAML made of it (quoted: text).
    text = (CFG / "spike-yolo-ibra.yaml").read_text()
    line = next(i for i, row in enumerate(text.splitlines()) if row.startswith("neuron:")) + 1
    for written, read in (("1:30", "90"), ("1:30.5", "90.5")):
        bad = re.sub(r"(?m)^neuron:.*$", f"neuron: {{kind: IBRALIF, D: {written}, N: 100, beta: 0.25}}", text)
        msg = yolo_error(write(tmp_path, text=bad))
        path = tmp_path / "bad.yaml"
        assert msg == (
            f"{path}: {written!r} at line {line} is read by YAML 1.1 as the base-60 number {read}: write the number "
            f"you mean (or quote it if it is text)"
        )


def test_a_number_written_with_a_leading_zero_is_refused(tmp_path):
    # YAML 1.1 reads `T: 010` as the octal number 8: the model was built with 8 timesteps (and `nc: 010` with 8
    # classes, N 0100 as 64) without a word (battery 32, Y01-Y15). Named like the base-60 case; 07 and 00 mean the
    # same number either way and are kept.
    text = (CFG / "spike-yolo-ibra.yaml").read_text()
    rows = text.splitlines()
    for key, written, read in (("T", "010", "8"), ("nc", "0100", "64"), ("T", "-010", "-8")):
        line = next(i for i, row in enumerate(rows) if row.startswith(f"{key}:")) + 1
        bad = re.sub(rf"(?m)^{key}:.*$", f"{key}: {written}", text)
        msg = yolo_error(write(tmp_path, text=bad))
        assert msg == (
            f"{tmp_path / 'bad.yaml'}: {written!r} at line {line} is read by YAML 1.1 as the octal number {read}: "
            f"write the number you mean (or quote it if it is text)"
        )
    from ultralytics import YOLO

    assert YOLO(write(tmp_path, text=re.sub(r"(?m)^T:.*$", "T: 04", text))).model.yaml["T"] == 4


def test_files_whose_text_cannot_be_a_model(tmp_path):
    # Each hung, exhausted memory, or escaped as a multi-line or unnamed error before.
    good = (CFG / "spike-yolo-ibra.yaml").read_text()
    os.mkfifo(tmp_path / "fifo.yaml")  # reading it blocked forever
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")  # reading it never ended (MemoryError after 19 s)
    cases = {
        "fifo.yaml": "is not a regular file (a FIFO or a device): a model YAML must be a file",
        "zero.yaml": "is not a regular file (a FIFO or a device)",
        "nul.yaml": ("is not valid YAML", good.replace("nc: 80", "nc: 80\x00")),  # PyYAML's 2-line ReaderError
        "latin1.yaml": ("is not UTF-8 text", None),  # a UnicodeDecodeError naming no file
        "digits.yaml": ("holds a value YAML cannot read", good.replace("nc: 80", "nc: " + "9" * 5000)),
        "deep.yaml": ("nests its YAML too deeply", good.replace("T: 1", "T: " + "[" * 20000 + "]" * 20000)),
        # 9 ** 7 = 4.8 million values from 8 short lines: printing the value never ended
        "laughs.yaml": (
            "expands to more than 1,000,000 values through YAML aliases",
            good.replace("T: 1", "T: 1\nx0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                         + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]\n" for i in range(1, 7))),
        ),
    }  # fmt: skip
    for name, case in cases.items():
        if isinstance(case, tuple):
            says, text = case
            path = tmp_path / name
            if text is None:
                path.write_bytes(good.replace("# number of classes", "# clases n\u00famero").encode("latin-1"))
            else:
                path.write_text(text)
        else:
            says = case
        assert says in yolo_error(tmp_path / name), name


def test_class_count_is_bounded():
    # nc: 1000000 asked for 4.1 GB in the head's stride probe
    with pytest.raises(
        ModelConfigError, match=r"nc=1000000 is invalid: the number of classes must be an integer in \[1, 65536\]"
    ):
        build_spiking_model(load(scale="n", nc=10**6), verbose=False)


def test_yaml_merge_keys_are_not_repeats(tmp_path):
    # `<<: *base` overrides on purpose (YAML 1.1 merge keys): it is read as PyYAML reads it, not refused
    text = (CFG / "spike-yolo-ibra.yaml").read_text().replace("neuron:", "base: &base {kind: ILIF, D: 4}\nneuron:", 1)
    text = re.sub(r"(?m)^neuron: .*$", "neuron: {<<: *base, D: 2}", text)
    from ultralytics import YOLO

    model = YOLO(str(write(tmp_path, text=text, name="merge.yaml"))).model
    assert model.yaml["neuron"] == {"kind": "ILIF", "D": 2}


def test_upsample_is_blamed_not_the_next_concat(tmp_path):
    # Upsample [-2] would give the next Concat a /32 and a /16 input; the error belongs to the Upsample row
    msg = yolo_error(write(tmp_path, with_row("head", 1, [-1, 1, "Upsample", [-2]])))
    rule = "Upsample scale=-2 is invalid: it must be an integer >= 1"
    assert msg.endswith(f"head row 1 (layer 11) [-1, 1, 'Upsample', [-2]]: {rule}")


def bad_values(spec) -> list:
    """Values outside an argument's schema: wrong kind, and below its range."""
    out = ["no_such_name", [1]]
    out += [1] if spec.kind == "bool" else [True]  # an int is not a bool, a bool is not a number
    if spec.kind in ("int", "int?"):
        out += [2.5]
    if spec.minimum is not None:
        out += [spec.minimum - 1 if spec.kind != "number" else spec.minimum]
    if spec.odd:
        out += [spec.minimum + 1]
    return out


SHIPPED_ROWS = {}  # module -> (section, j, row) of its first use in the shipped YAML
for _section in ("backbone", "head"):
    for _j, _row in enumerate(load()[_section]):
        SHIPPED_ROWS.setdefault(_row[2], (_section, _j, _row))


@pytest.mark.parametrize("module", sorted(SCHEMAS))
def test_every_schema_rule_fails_at_its_row(module):
    # For each argument of each module: every value outside its schema, put into the first shipped row using the
    # module, fails at that row, naming the argument and the value (or the unknown name); one extra argument too.
    section, j, row = SHIPPED_ROWS[module]
    schema = SCHEMAS[module]
    defaults = [row[3][k] if k < len(row[3]) else a.default for k, a in enumerate(schema)]
    for k, spec in enumerate(schema):
        for bad in bad_values(spec):
            args = [*defaults[:k], bad, *defaults[k + 1 :]]
            with pytest.raises(ModelConfigError) as e:
                build_spiking_model(with_row(section, j, [row[0], row[1], module, args]), verbose=False)
            msg = str(e.value)
            named = f"{spec.name}={bad!r}" in msg or f"unknown name {bad!r} for {module} {spec.name}" in msg
            assert f"{section} row {j} " in msg and named, (module, spec.name, bad, msg)
    with pytest.raises(ModelConfigError, match=rf"{section} row {j} .*{module} takes at most {len(schema)} arg"):
        build_spiking_model(with_row(section, j, [row[0], row[1], module, [*defaults, 1]]), verbose=False)


def test_plan_matches_the_built_model():
    # plan_model predicts every layer's output channels, stride and size at Ultralytics' 256-px probe without
    # building; the built layers must agree
    import torch

    d = load(scale="s")
    plan = plan_model(copy.deepcopy(d))
    layers, _ = build_spiking_model(d, verbose=False)
    x, outs = torch.zeros(1, 3, 256, 256), []
    for m, (_, _, p) in zip(layers, plan.rows):
        f = m.f
        x = m(x if f == -1 else [outs[i] for i in f]) if m.type != "SpikeDetect" else None
        if x is None:
            break
        outs.append(x)
        assert x.shape[2] == p.out.c and 256 / x.shape[-1] == p.out.stride, (m.i, m.type)
        assert x.shape[-2:] == (p.out.size, p.out.size), (m.i, m.type)


def test_a_checkpoints_model_dict_is_not_blamed_on_its_file():
    # A file is checked when read, so a dict that fails later was changed after loading or comes from a checkpoint
    # (the trainer builds from ckpt["model"].yaml): "spike-yolo-ibra-n.yaml: T=65 is invalid" blamed the shipped file,
    # where T is 1
    from ultralytics.nn.tasks import DetectionModel

    d = DetectionModel("spike-yolo-ibra-n.yaml", verbose=False).yaml
    assert d["yaml_file"] == "spike-yolo-ibra-n.yaml" and d["T"] == 1
    dict_of = r"^the model dict of spike-yolo-ibra-n\.yaml \(a checkpoint's copy, or changed after loading\)"
    with pytest.raises(ModelConfigError, match=dict_of + r": T=65 is invalid"):
        DetectionModel({**d, "T": 65}, verbose=False)
    row = [*d["head"][-1][:3], [0]]  # SpikeDetect with nc 0
    where = rf" head row {len(d['head']) - 1} \(layer .*: SpikeDetect nc=0 is invalid"
    with pytest.raises(ModelConfigError, match=dict_of + where):
        DetectionModel({**d, "head": [*d["head"][:-1], row]}, verbose=False)


def test_a_model_cfg_that_is_neither_path_nor_dict_is_named():
    # battery 13, A09: a read-only mapping (and None, a number) reached pathlib: "TypeError: expected str, bytes or
    # os.PathLike object, not mappingproxy", which names neither cfg nor what to pass
    from types import MappingProxyType

    d = load(scale="n")
    with pytest.raises(TypeError, match=r"^cfg=mappingproxy\(.* is invalid: a model YAML path or a model dict, not a "
                       r"mappingproxy: pass dict\(cfg\)$"):  # fmt: skip
        DetectionModel(MappingProxyType(d), verbose=False)
    for cfg in (None, 3, ["spike-yolo-ibra-n.yaml"]):
        with pytest.raises(
            TypeError, match=rf"^cfg={re.escape(repr(cfg))} is invalid: .*, not a {type(cfg).__name__}$"
        ):
            DetectionModel(cfg=cfg, verbose=False)
    assert len(DetectionModel(dict(MappingProxyType(d)), verbose=False).model) == len(d["backbone"]) + len(d["head"])
    assert DetectionModel(Path("spike-yolo-ibra-n.yaml"), verbose=False).yaml["scale"] == "n"  # a Path still loads


# ---------------------------------------------------------------------------------------------------- plugin off
def test_plugin_off_says_so_and_stock_models_still_load(python, tmp_path):
    code = (
        "import sys; from ultralytics import YOLO\n"
        "try:\n    YOLO(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, '|', e)\n"
        "print(sum(p.numel() for p in YOLO('yolov8n.yaml').model.parameters()))"
    )
    for name in ("spike-yolo-ibra-n.yaml", str(CFG / "spike-yolo-ilif.yaml")):
        out = run([python, "-c", code, name], cwd=tmp_path, env={"IBRA_YOLO_AUTOLOAD": "0"}).stdout.splitlines()
        error, params = out[-2], out[-1]
        kind = "MissingFileError" if name.endswith("-n.yaml") else "ModelConfigError"
        assert error.startswith(f"{kind} | {name}") and "plugin is not registered" in error
        assert "import ibra_yolo; ibra_yolo.register()" in error and "unset IBRA_YOLO_AUTOLOAD" in error
        assert params == "3157200"  # the stock YOLOv8n, untouched (Ultralytics' published count for nc=80)


def test_stock_yaml_files_still_load_with_the_plugin(tmp_path):
    # A copy of Ultralytics' own yolov8.yaml (it uses SPPF, Concat and nn.Upsample, names our builder also knows) is a
    # stock model: the plugin must hand it to the stock parser. yolov8n has 3,157,200 parameters (Ultralytics' table).
    import ultralytics
    from ultralytics import YOLO

    stock = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    shutil.copy(stock, tmp_path / "my_v8n.yaml")
    model = YOLO(str(tmp_path / "my_v8n.yaml")).model
    assert sum(p.numel() for p in model.parameters()) == 3_157_200


def test_stock_multiples_and_other_tasks_are_refused(tmp_path):
    # depth_multiple/width_multiple were ignored (a 172 M-parameter model at depth 1, width 1); task=segment built a
    # segmentation model whose masks were None, task=pose failed on a missing kpt_shape
    from ultralytics import YOLO

    d = yaml.safe_load((CFG / "spike-yolo-ibra.yaml").read_text())
    del d["scales"]
    d.update(depth_multiple=0.33, width_multiple=0.25)
    with pytest.raises(ModelConfigError, match=r"depth_multiple: spiking YAMLs read their multiples from scales only"):
        YOLO(write(tmp_path, d))
    for task in ("segment", "pose", "obb", "classify"):
        with pytest.raises(ModelConfigError, match=rf"^task='{task}' is invalid: ibra-yolo models are detectors"):
            YOLO("spike-yolo-ibra-n.yaml", task=task)
    assert YOLO("yolov8n-seg.yaml").task == "segment"  # stock models of other tasks build as before


def test_a_copy_named_for_another_scale_says_which_scale_it_builds(tmp_path):
    # A copy of cfg/spike-yolo-ibra.yaml saved as my-ibra-n.yaml keeps its `scale: m`, and the key decides: it built
    # the 47.8 M-parameter m model without a word (battery 19, Y27). It warns, naming both; a copy whose key matches
    # its name, and the shipped names with a scale suffix, stay silent.
    import warnings

    from ultralytics.nn.tasks import yaml_model_load

    text = (CFG / "spike-yolo-ibra.yaml").read_text()
    (tmp_path / "my-ibra-n.yaml").write_text(text)
    says = r"my-ibra-n\.yaml: its name ends in -n, but its scale: key says 'm', and the key decides: scale m is built"
    with pytest.warns(UserWarning, match=says):
        assert yaml_model_load(str(tmp_path / "my-ibra-n.yaml"))["scale"] == "m"
    # named for a scale letter the file lacks (battery 23, Y14: my-ibra-x.yaml built m without a word)
    (tmp_path / "my-ibra-x.yaml").write_text(text)
    says = r"my-ibra-x\.yaml: its name ends in -x, a scale this file does not have \(n, s, m, l\): its scale: key"
    with pytest.warns(UserWarning, match=says + " decides, scale m is built"):
        assert yaml_model_load(str(tmp_path / "my-ibra-x.yaml"))["scale"] == "m"
    (tmp_path / "my-ibra-s.yaml").write_text(text.replace("\nscale: m", "\nscale: s"))
    for name in ("my-ibra-v2.yaml", "my-ibra-sl.yaml"):  # not a scale letter
        (tmp_path / name).write_text(text.replace("\nscale: m", "\nscale: s"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert yaml_model_load(str(tmp_path / "my-ibra-s.yaml"))["scale"] == "s"
        assert yaml_model_load(str(tmp_path / "my-ibra-v2.yaml"))["scale"] == "s"
        assert yaml_model_load(str(tmp_path / "my-ibra-sl.yaml"))["scale"] == "s"
        assert yaml_model_load("spike-yolo-ibra-n.yaml")["scale"] == "n"
