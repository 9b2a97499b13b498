"""A spiking model dict checked before anything is built: its top-level keys, then each row on its own.

Each module a row may name has an argument schema (``SCHEMAS``: names, types, defaults, ranges), so a bad argument is
reported at the row that holds it, e.g. ``Upsample [-2]`` at the Upsample row and not at the Concat that would later
see the wrong size. ``plan_model`` walks the rows in order with the channel and stride bookkeeping and returns, per row,
the constructor arguments the builder needs; nothing is built, so the plugin also runs it on a freshly loaded YAML
before Ultralytics reads the dict (its task guess reads the last row). Every problem is one ``ModelConfigError`` line
that names the YAML key or row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ultralytics.utils.ops import make_divisible

from ibra_yolo.coding import is_int, is_number, plain_number
from ibra_yolo.errors import ModelConfigError
from ibra_yolo.neurons import make_neuron
from ibra_yolo.yaml_files import looks_numeric, yaml_number_hint

__all__ = ("Arg", "SCHEMAS", "RowPlan", "ModelPlan", "check_top_level", "plan_model")

_REQUIRED = object()
REPEATABLE = ("AllConvBlock", "ConvBlock")
PROBE = 256  # Ultralytics builds a model by running a PROBE x PROBE image through it (its stride probe)
LIMITS = {  # sizes beyond these are typos, not models: they would exhaust memory in the probe instead of failing here
    "T": 64,  # timesteps (the paper trains T = 1 with virtual timesteps; SpikeYOLO T <= 4)
    "channels": 2**16,  # output or expanded channels of one layer
    "k": 63,  # kernel size
    "repeats": 100,  # repeats of one row, after the scale's depth multiplier
}


@dataclass(frozen=True)
class Arg:
    """One YAML argument of a module: its name, kind, default (none: required) and range.

    ``kind`` is ``"int"`` (not bool), ``"int?"`` (an int or null), ``"number"`` (finite int or float, not bool) or
    ``"bool"``; ``minimum`` bounds numbers from below (``above=True``: strictly); ``odd`` asks for an odd integer.
    """

    name: str
    kind: str
    default: object = _REQUIRED
    minimum: float | None = None
    above: bool = False
    odd: bool = False

    def describe(self) -> str:
        """What a valid value is, e.g. ``an odd integer >= 1``."""
        what = {"int": "an integer", "int?": "an integer or null", "number": "a number", "bool": "true or false"}
        text = ("an odd integer" if self.odd else what[self.kind]) if self.kind != "bool" else what["bool"]
        if self.minimum is not None:
            text += f" {'>' if self.above else '>='} {self.minimum:g}"
        return text

    def valid(self, v) -> bool:
        """True when ``v`` is of this argument's kind and in its range."""
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "int?" and v is None:
            return True
        ok = is_int(v) if self.kind in ("int", "int?") else is_number(v)  # numpy numbers too
        if ok and self.minimum is not None:
            ok = v > self.minimum if self.above else v >= self.minimum
        return ok and (not self.odd or v % 2 == 1)


_C2 = Arg("c2", "int", minimum=1)  # output channels before the scale's width multiplier
SCHEMAS: dict[str, tuple[Arg, ...]] = {
    "TimeRepeat": (),  # T is the model's T key
    "Downsample": (
        _C2,
        Arg("k", "int", 3, 1),
        Arg("s", "int", 2, 1),
        Arg("p", "int", 1, 0),
        Arg("first", "bool", False),
    ),
    "AllConvBlock": (Arg("r", "number", 4, 0, above=True), Arg("k", "int", 7, 1, odd=True)),
    "ConvBlock": (Arg("r", "number", 4, 0, above=True), Arg("k", "int", 7, 1, odd=True)),
    "SConv": (_C2, Arg("k", "int", 1, 1), Arg("s", "int", 1, 1), Arg("p", "int?", None, 0), Arg("g", "int", 1, 1)),
    "SPPF": (_C2, Arg("k", "int", 5, 1, odd=True)),
    "Upsample": (Arg("scale", "int", 2, 1),),
    "Concat": (),
    "SpikeDetect": (Arg("nc", "int", minimum=1),),
}


@dataclass
class _Out:
    """What the bookkeeping knows about a layer's output."""

    c: int  # channels
    stride: float  # spatial reduction relative to the input image
    timed: bool  # has the leading T dimension
    size: int = PROBE  # height and width for Ultralytics' PROBE x PROBE stride probe


@dataclass
class RowPlan:
    """A checked row: what to build and what it outputs."""

    f: int | list  # 'from' as written
    n: int  # repeats after the scale's depth multiplier
    module: str  # module name (a key of SCHEMAS)
    args: list  # constructor arguments after the input channels (channels already scaled), without the neuron
    c1: int  # input channels of the first input
    out: _Out


@dataclass
class ModelPlan:
    """A checked model dict: its settings and one ``RowPlan`` per row."""

    T: int
    nc: int
    neuron: dict
    rows: list = field(default_factory=list)  # [(row name for messages, row as written, RowPlan)]


def check_args(module: str, args: list, names: dict) -> dict:
    """Resolve names in a row's ``args``, check them against the module's schema and fill in defaults.

    Raises:
        ModelConfigError: Too many or too few arguments, an unknown name, or a value of the wrong kind or range.
    """
    schema = SCHEMAS[module]
    if not isinstance(args, (list, tuple)):
        raise ModelConfigError(f"args={args!r} must be a list")
    signature = ", ".join(a.name if a.default is _REQUIRED else f"{a.name}={a.default}" for a in schema)
    if len(args) > len(schema):
        raise ModelConfigError(f"{module} takes at most {len(schema)} argument(s) [{signature}], got {len(args)}")
    values = {}
    for spec, a in zip(schema, args):
        if isinstance(a, str) and a in names:
            a = names[a]
        elif isinstance(a, str):
            if looks_numeric(a):
                raise ModelConfigError(f"{module} {spec.name}={a!r} is a string, not a number: {yaml_number_hint(a)}")
            raise ModelConfigError(f"unknown name {a!r} for {module} {spec.name}: known names are {sorted(names)}")
        if not spec.valid(a):
            raise ModelConfigError(f"{module} {spec.name}={a!r} is invalid: it must be {spec.describe()}")
        values[spec.name] = plain_number(a)
    for spec in schema[len(args) :]:
        if spec.default is _REQUIRED:
            raise ModelConfigError(f"{module} needs argument {spec.name} ({spec.describe()}): args are [{signature}]")
        values[spec.name] = spec.default
    return values


def _row_name(name: str | None, i: int, n_backbone: int, row) -> str:
    section, j = ("backbone", i) if i < n_backbone else ("head", i - n_backbone)
    return f"{name or 'model YAML'} {section} row {j} (layer {i}) {row}"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_STOCK_KEYS = {  # stock model-YAML keys our builder does not read: (the one value that means what ours does, why)
    "activation": (None, "the neuron: key sets every activation, e.g. neuron: {kind: ReLU} for the ANN twin"),
    "reg_max": (16, "SpikeDetect's box regression uses 16 DFL bins, as SpikeYOLO's"),
    "end2end": (False, "SpikeDetect is not end-to-end: its boxes go through NMS"),
    "kpt_shape": (None, "spiking models detect boxes only"),
}


# every key a spiking model dict may hold: ours, what Ultralytics adds (channels, yaml_file), what deployment adds
# (folded), and the stock keys refused with advice above or below
_KNOWN_KEYS = frozenset(
    {"nc", "T", "neuron", "backbone", "head", "scales", "scale", "scale_args", "channels", "ch", "yaml_file", "folded"}
    | {"depth_multiple", "width_multiple", "max_channels", *_STOCK_KEYS}
)


def _misspelt_key(d: dict) -> tuple[str, str] | None:
    """``(key, the key it misspells)`` for a key that is a known key in another case or nearly one (``t: 4`` for
    ``T: 4`` built one timestep without a word: Ultralytics and our builder ignore keys they do not read)."""
    import difflib

    for key in d:
        if not isinstance(key, str) or key in _KNOWN_KEYS:
            continue
        same = [k for k in _KNOWN_KEYS if k.lower() == key.lower()]
        close = same or difflib.get_close_matches(key, _KNOWN_KEYS, n=1, cutoff=0.75)
        if close:
            return key, close[0]
    return None


def check_top_level(d) -> tuple[dict, float, float, float]:
    """Check the keys outside the rows; return (names usable in args, depth, width, max_channels).

    Raises:
        ModelConfigError: A bad ``neuron``, ``T``, ``nc``, ``scales``, ``scale``, ``scale_args``, ``backbone`` or
            ``head``.
    """
    if not isinstance(d, dict):
        raise ModelConfigError(f"a model YAML must be a mapping (nc, neuron, backbone, head), got a {type(d).__name__}")
    misspelt = _misspelt_key(d)
    if misspelt:
        raise ModelConfigError(
            f"{misspelt[0]}: is not a key spiking YAMLs read (it would be ignored): did you mean {misspelt[1]}:?"
        )
    T = d.get("T", 1)
    if not is_int(T) or not 1 <= T <= LIMITS["T"]:
        raise ModelConfigError(f"T={T!r} is invalid: the number of timesteps must be an integer in [1, {LIMITS['T']}]")
    try:
        make_neuron(d.get("neuron"), T)  # a throw-away neuron checks every parameter
    except ValueError as e:
        raise ModelConfigError(f"neuron: {e}") from None
    nc = d.get("nc")
    if not is_int(nc) or not 1 <= nc <= LIMITS["channels"]:  # numpy integers too (np.int64(3) was refused)
        raise ModelConfigError(
            f"nc={nc!r} is invalid: the number of classes must be an integer in [1, {LIMITS['channels']}]"
        )
    for key in ("backbone", "head"):
        rows = d.get(key)
        if not isinstance(rows, (list, tuple)) or not rows:
            raise ModelConfigError(
                f"{key}={rows!r} is invalid: it must be a non-empty list of rows [from, n, module, args]"
            )
    stock = [k for k in ("depth_multiple", "width_multiple", "max_channels") if k in d]
    if stock:  # they were ignored: the model built at depth 1, width 1, without a channel cap
        raise ModelConfigError(
            f"{stock[0]}: spiking YAMLs read their multiples from scales only: write e.g. "
            f"scales: {{n: [0.33, 0.25, 1024]}} (depth, width, max_channels)"
        )
    for key, (ours, why) in _STOCK_KEYS.items():  # the stock parser reads them; ours did not, without a word
        value = d.get(key)
        if value is not None and not (type(value) is type(ours) and value == ours):
            raise ModelConfigError(f"{key}={value!r:.40} is not read by spiking YAMLs: {why}; remove the key")
    names, depth, width, max_channels = {"nc": int(nc)}, 1.0, 1.0, float("inf")
    scales = d.get("scales")
    if scales is None:
        return names, depth, width, max_channels
    if not isinstance(scales, dict) or not scales:
        raise ModelConfigError(f"scales={scales!r} is invalid: it must map scale names to [depth, width, max_channels]")
    for name, value in scales.items():
        if not (isinstance(value, list) and len(value) == 3 and all(_number(v) and v > 0 for v in value)):
            raise ModelConfigError(f"scales.{name}={value!r} is invalid: it must be [depth, width, max_channels] > 0")
        if not (value[2] >= 1 and float(value[2]).is_integer()):  # 0.5 capped every layer at 0 channels
            raise ModelConfigError(
                f"scales.{name}={value!r} is invalid: max_channels={value[2]!r} must be a whole number >= 1"
            )
    scale = d.get("scale")
    scale = next(iter(scales)) if scale is None else scale  # scale: 0 built the first scale without a word
    if not isinstance(scale, str) or scale not in scales:
        raise ModelConfigError(f"scale={scale!r} is not in this model's scales {sorted(scales)}")
    depth, width, max_channels = scales[scale]
    scale_args = d.get("scale_args") or {}
    if not isinstance(scale_args, dict):
        raise ModelConfigError(f"scale_args={scale_args!r} is invalid: it must map names to {{scale: value}}")
    for key, per_scale in scale_args.items():
        if key in names or not isinstance(key, str) or not key.isidentifier():
            raise ModelConfigError(f"scale_args.{key} is not a usable name: names are words other than {sorted(names)}")
        if not isinstance(per_scale, dict) or scale not in per_scale:
            raise ModelConfigError(f"scale_args.{key} must map every scale to a value; missing '{scale}'")
        names[key] = per_scale[scale]
    return names, depth, width, max_channels


def plan_model(d, ch: int = 3, name: str | None = None) -> ModelPlan:
    """Check a spiking model dict completely and plan every row (nothing is built).

    Args:
        d (dict): The model dict (see ``ibra_yolo.nn.builder``); ``scale`` picks the scale (the plugin sets it).
        ch (int): Input image channels.
        name (str | None): What errors call the dict; None for its ``yaml_file`` (the file it was read from).

    Returns:
        (ModelPlan): Settings and per-row plans.

    Raises:
        ModelConfigError: The first problem, naming the YAML key or the row (file, section, row, layer and the row).
    """
    try:
        names, depth, width, max_channels = check_top_level(d)
    except ModelConfigError as e:
        name = name or (d.get("yaml_file") if isinstance(d, dict) else None)
        raise ModelConfigError(f"{name}: {e}" if name else str(e)) from None
    if not is_int(ch) or not 1 <= ch <= LIMITS["channels"]:  # numpy integers too (np.int64(3) was refused)
        bad = ModelConfigError(
            f"ch={ch!r} is invalid: input image channels must be an integer in [1, {LIMITS['channels']}]"
        )
        where = d.get("yaml_file")  # the argument is wrong, not the file
        raise ModelConfigError(f"{where}: {bad}" if where else str(bad))
    plan = ModelPlan(int(d.get("T", 1)), int(d["nc"]), dict(d["neuron"]))
    rows = [*d["backbone"], *d["head"]]
    outs = [_Out(int(ch), 1, False)]  # the input image, then each layer's output (index j + 1)
    for i, row in enumerate(rows):
        where = _row_name(name or d.get("yaml_file"), i, len(d["backbone"]), row)
        if i and plan.rows[-1][2].module == "SpikeDetect":
            raise ModelConfigError(f"{where}: no row may follow SpikeDetect (layer {i - 1}): it must be the last row")
        try:
            p = _plan_row(i, row, outs, names, depth, width, max_channels)
        except ModelConfigError as e:
            raise ModelConfigError(f"{where}: {e}") from None
        plan.rows.append((where, row, p))
        outs.append(p.out)
    if plan.rows[-1][2].module != "SpikeDetect":
        raise ModelConfigError(f"{plan.rows[-1][0]}: the last row must be SpikeDetect")
    return plan


def _plan_row(i: int, row, outs: list, names: dict, depth: float, width: float, max_channels: float) -> RowPlan:
    """Check one row against the layers before it; ``outs[j + 1]`` is layer j's output and ``outs[0]`` the image."""
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise ModelConfigError("a row must be [from, repeats, module, args]")
    f, n, name, args = row
    if not isinstance(name, str) or name not in SCHEMAS:
        raise ModelConfigError(f"module {name!r} is unknown: spiking YAMLs may use {', '.join(SCHEMAS)}")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= LIMITS["repeats"]:
        raise ModelConfigError(f"repeats={n!r} must be an integer in [1, {LIMITS['repeats']}]")
    a = check_args(name, args, names)

    sources = [f] if isinstance(f, int) else list(f) if isinstance(f, (list, tuple)) else None
    if not sources or not all(isinstance(x, int) and not isinstance(x, bool) for x in sources):
        raise ModelConfigError(f"from={f!r} must be an int or a list of ints")
    if i == 0:
        if sources != [-1]:
            raise ModelConfigError("the first row must read the input image (from=-1)")
        ins = [outs[0]]
    else:
        ins = []
        for x in sources:
            j = i + x if x < 0 else x
            if not 0 <= j < i:
                raise ModelConfigError(f"from index {x} does not name an earlier layer (valid: 0..{i - 1} or -1..-{i})")
            ins.append(outs[j + 1])
    if name == "TimeRepeat" and ins[0].timed:
        raise ModelConfigError("TimeRepeat input already has a time dimension")
    if name != "TimeRepeat" and not all(o.timed for o in ins):
        raise ModelConfigError(f"{name} needs [T, B, C, H, W] input: put TimeRepeat before the first spiking layer")
    if name not in ("Concat", "SpikeDetect") and len(ins) != 1:
        raise ModelConfigError(f"{name} takes one input, got from={f}")
    if name in ("Concat", "SpikeDetect") and not isinstance(f, (list, tuple)):
        raise ModelConfigError(f"{name} reads a list of layers: write from=[{f}] (or list several, e.g. [-1, 6])")
    if name not in ("Concat", "SpikeDetect") and not isinstance(f, int):  # Ultralytics would hand it a list
        raise ModelConfigError(f"{name} reads one layer: write from={sources[0]}, not from={list(f)}")
    c1, s1, size = ins[0].c, ins[0].stride, ins[0].size

    n_eff = max(round(n * depth), 1) if n > 1 else n
    if n_eff > 1 and name not in REPEATABLE:
        raise ModelConfigError(f"{name} cannot be repeated (repeats={n})")

    def channels(c) -> int:
        if not 1 <= int(c) <= LIMITS["channels"]:
            what = (
                f"c2={a['c2']} scales to {int(c)} channels (width {width})"
                if "c2" in a
                else f"outputs {int(c)} channels"
            )
            raise ModelConfigError(f"{name} {what}: it must be in [1, {LIMITS['channels']}]")
        return int(c)

    def conv_size(k: int, s: int, p: int) -> int:
        """Output size of a k x k, stride s, padding p conv on this layer's input at the probe."""
        if k > LIMITS["k"]:
            raise ModelConfigError(f"{name} k={k} is invalid: kernels larger than {LIMITS['k']} are not supported")
        if p > k // 2:
            raise ModelConfigError(
                f"{name} p={p} is invalid: padding must be <= k // 2 = {k // 2} (more adds only zeros)"
            )
        if size + 2 * p < k:
            raise ModelConfigError(
                f"{name} k={k} is larger than its {size}x{size} input (padding {p}) for Ultralytics' {PROBE}-px probe "
                f"image: use a smaller kernel or fewer downsamplings"
            )
        return (size + 2 * p - k) // s + 1

    if name == "TimeRepeat":
        build, out = [], _Out(c1, s1, True)
    elif name == "Downsample":
        c2 = channels(a["c2"] * width)
        out = _Out(c2, s1 * a["s"], True, conv_size(a["k"], a["s"], a["p"]))
        build = [c2, a["k"], a["s"], a["p"], a["first"]]
    elif name in REPEATABLE:
        if not 1 <= int(c1 * a["r"]) <= LIMITS["channels"]:
            raise ModelConfigError(
                f"{name} r={a['r']!r} expands {c1} channels to {int(c1 * a['r'])}: "
                f"it must be in [1, {LIMITS['channels']}]"
            )
        conv_size(a["k"], 1, a["k"] // 2)
        build, out = [a["r"], a["k"]], _Out(c1, s1, True, size)
    elif name == "SConv":
        c2 = channels(min(a["c2"] * width, max_channels * width))
        if c1 % a["g"] or c2 % a["g"]:
            raise ModelConfigError(f"SConv g={a['g']} must divide its {c1} input and {c2} output channels")
        p = a["k"] // 2 if a["p"] is None else a["p"]  # autopad
        build, out = [c2, a["k"], a["s"], a["p"], a["g"]], _Out(c2, s1 * a["s"], True, conv_size(a["k"], a["s"], p))
    elif name == "SPPF":
        if c1 < 2:
            raise ModelConfigError(f"SPPF needs at least 2 input channels, got {c1}")
        c2 = channels(make_divisible(min(a["c2"], max_channels) * width, 8))  # Ultralytics' rule for SPPF widths
        conv_size(a["k"], 1, a["k"] // 2)
        build, out = [c2, a["k"]], _Out(c2, s1, True, size)
    elif name == "Upsample":
        if size * a["scale"] > PROBE:
            raise ModelConfigError(
                f"Upsample scale={a['scale']} makes its {size}x{size} input larger than the {PROBE}x{PROBE} input image"
            )
        build, out = [a["scale"]], _Out(c1, s1 / a["scale"], True, size * a["scale"])
    elif name == "Concat":
        if len({(o.stride, o.size) for o in ins}) != 1:
            sizes = ", ".join(f"{x}: /{o.stride:g} ({o.size} px)" for x, o in zip(sources, ins))
            raise ModelConfigError(f"Concat inputs have different spatial sizes at a {PROBE}-px input ({sizes})")
        build, out = [], _Out(channels(sum(o.c for o in ins)), s1, True, size)
    else:  # SpikeDetect
        if a["nc"] != names["nc"]:  # the head would predict classes the dataset's names do not have
            raise ModelConfigError(f"SpikeDetect nc={a['nc']} differs from the model's nc={names['nc']}: write [nc]")
        build, out = [a["nc"], [o.c for o in ins]], _Out(0, s1, False, size)
    return RowPlan(f, n_eff, name, build, c1, out)
