"""Showing an energy report: the per-layer text table, the CSV, the figure, and the three files together.

Every function takes a finished ``EnergyReport`` and counts nothing. Files are written atomically and never over an
existing file unless ``overwrite`` (``ibra_yolo.files``).
"""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ibra_yolo.errors import IbraYoloError
from ibra_yolo.files import check_outputs, write_atomic

__all__ = ("table", "to_csv", "plot", "save", "output_paths")

_COLUMNS = (  # header, width, alignment
    ("#", 3, ">"),
    ("layer", 26, "<"),
    ("op", 7, "<"),
    ("geometry", 24, "<"),
    ("in", 3, "<"),
    ("neuron", 8, "<"),
    ("dense MMAC", 10, ">"),
    ("MMAC", 8, ">"),
    ("MSOP", 8, ">"),
    ("uJ", 8, ">"),
    ("rate", 7, ">"),
    ("spk/n", 7, ">"),
    ("zero%", 6, ">"),
    ("clip%", 6, ">"),
    ("hi%", 6, ">"),
    ("max", 5, ">"),
)
_LEGEND = (
    "columns: rate = mean code per neuron per timestep; spk/n = s_l; zero%/clip%/hi% = codes at 0 / at M / above M//2; "
    "max = largest code seen"
)


def _si(v: float) -> str:
    """``1.234 G`` style: three or four significant digits and a decimal prefix."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor:
            return f"{v / factor:.4g} {prefix}"
    return f"{v:.4g}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _short_config(cfg: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "kind")
    return f"{cfg['kind']}({args})" if args else cfg["kind"]


def _row(layer) -> str:
    def opt(v, spec):
        return "-" if v is None else format(v, spec)

    def pct(v):
        return opt(None if v is None else 100 * v, ".1f")

    name = layer.name if len(layer.name) <= 26 else "~" + layer.name[-25:]
    cells = (
        layer.index, name, layer.op, layer.geometry, layer.input, layer.neuron, f"{layer.dense_macs / 1e6:.2f}",
        f"{layer.macs / 1e6:.2f}", f"{layer.sops / 1e6:.2f}", f"{layer.energy_pj / 1e6:.2f}",
        opt(layer.firing_rate, ".3f"), opt(layer.spikes_per_neuron, ".3f"), pct(layer.zero_share),
        pct(layer.clipped_share), pct(layer.high_share), opt(layer.max_code_seen, "d"),
    )  # fmt: skip
    return " ".join(f"{v!s:{align}{width}}" for v, (_, width, align) in zip(cells, _COLUMNS))


def _header(report) -> list[str]:
    m, c = report.meta, report.constants
    neurons = "; ".join(_short_config(cfg) for cfg in m.get("neurons", [])) or "none"
    lines = [
        f"model: {m.get('model')}   images: {m['images']} from {m.get('source')}   "
        f"imgsz: {m.get('imgsz') or 'as given'}   T: {m.get('T')}   mode: {m.get('mode')}",
        f"neurons: {neurons}",
        f"energy preset: {c.name}: E_MAC = {c.e_mac} pJ, E_AC = {c.e_ac} pJ ({c.source})",
        f"counting rules ({report.counting}):",
    ]
    for rule in report.rules():
        lines += textwrap.wrap(rule, 116, initial_indent="  - ", subsequent_indent="    ", break_on_hyphens=False)
    return [*lines, _LEGEND]


def _footer(report) -> list[str]:
    s = report.summary()
    return [
        f"totals per image: MACs {_si(s['MACs'])}   SOPs {_si(s['SOPs'])}   dense MACs {_si(s['dense_MACs'])}   "
        f"params {_si(s['params'])}",
        f"energy {s['energy_mJ']:.4g} mJ/image (MAC {s['mac_energy_mJ']:.4g} + AC {s['ac_energy_mJ']:.4g})   "
        f"ANN twin {s['ann_energy_mJ']:.4g} mJ   ANN/SNN {s['ann_snn_ratio']:.2f}x",
        f"firing rate {_fmt(s['firing_rate'])} (mean code)   spikes/neuron {_fmt(s['spikes_per_neuron'])}",
        f"NeuroBench: ActivationSparsity {s['ActivationSparsity']:.4f}   SynapticOperations: Effective_MACs "
        f"{_si(s['Effective_MACs'])}, Effective_ACs {_si(s['Effective_ACs'])}, Dense {_si(s['Dense'])}   "
        f"Footprint {s['Footprint']} bytes",
    ]


def table(report) -> str:
    """The settings, the counting rules, the per-layer table and the totals, as text."""
    head = " ".join(f"{name:{align}{width}}" for name, width, align in _COLUMNS)
    rule = "-" * len(head)
    return "\n".join([*_header(report), "", head, rule, *(_row(layer) for layer in report.layers), rule,
                      *_footer(report)])  # fmt: skip


def output_paths(out_dir: str | Path, stem: str = "energy", overwrite: bool = False, inputs=()) -> dict[str, Path]:
    """Paths of the JSON, CSV and PNG a report writes; checks that none exists unless ``overwrite``, and that none is
    one of ``inputs`` (the measured images, the weights), even with ``overwrite``.

    Raises:
        OutputExistsError: A file exists and ``overwrite`` is False.
        IbraYoloError: ``out_dir`` is a file, or cannot be created or written, or a path is an input
            (``ibra_yolo.files.check_outputs``).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise IbraYoloError(f"--out {out} is a file, not a folder")
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}_layers.csv", "png": out / f"{stem}.png"}
    check_outputs(paths.values(), overwrite, flag="--out folder", inputs=inputs)
    return paths


def save(report, out_dir: str | Path, overwrite: bool = False, stem: str = "energy", inputs=()) -> dict[str, Path]:
    """Write JSON, CSV and PNG into ``out_dir``; returns their paths. Nothing is written if one exists (no overwrite)
    or is one of ``inputs`` (files that must not be replaced, e.g. the measured images).

    Raises:
        OutputExistsError: One of the files exists and ``overwrite`` is False.
        IbraYoloError: One of the files is one of ``inputs``.
    """
    paths = output_paths(out_dir, stem, overwrite, inputs)
    text = json.dumps(report.to_dict(), indent=1)
    write_atomic(paths["json"], lambda tmp: tmp.write_text(text), overwrite)
    to_csv(report, paths["csv"], overwrite)
    plot(report, paths["png"], overwrite)
    return paths


def to_csv(report, path: str | Path, overwrite: bool = False) -> Path:
    """Write one row per layer (no histograms; those are in the JSON)."""
    rows = [asdict(layer) for layer in report.layers]
    fields = [k for k in rows[0] if k not in ("code_histogram", "neuron_config")]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    return write_atomic(path, write, overwrite)


def plot(report, path: str | Path, overwrite: bool = False) -> Path:
    """Save a PNG: energy per layer, firing per layer and (spiking models) the histogram of the codes used.

    Drawn on a matplotlib ``Figure`` with the Agg canvas: no pyplot, and the caller's backend is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = report.layers
    spiking = any(layer.input == "AC" for layer in layers)
    rows = [3.0, 3.4, 0.7] + ([2.6] if spiking else [])  # inches: energy, firing, layer names, codes
    width, height = max(10.0, 0.17 * len(layers) + 2.5), sum(rows) + 2.0
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    margins = {"left": 0.9 / width, "right": 1 - 0.9 / width, "top": 1 - 0.75 / height, "bottom": 0.6 / height}
    grid = fig.add_gridspec(len(rows), 1, height_ratios=rows, hspace=0.3, **margins)  # fixed: fast for ~90 labels
    ax_e = fig.add_subplot(grid[0])
    ax_f = fig.add_subplot(grid[1], sharex=ax_e)
    _plot_energy(report, ax_e)
    _plot_firing(report, ax_f)
    if spiking:
        _plot_codes(report, fig.add_subplot(grid[3]))
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), overwrite)


def _plot_energy(report, ax) -> None:
    s, layers = report.summary(), report.layers
    x = np.arange(len(layers))
    colors = ["tab:orange" if layer.input == "MAC" else "tab:blue" for layer in layers]
    energy = np.array([layer.energy_pj / 1e6 for layer in layers])
    ax.bar(x, np.where(energy > 0, energy, np.nan), color=colors, width=0.8)  # silent layers: no bar
    ax.set_yscale("log")
    if (energy > 0).any():
        ax.set_ylim(bottom=energy[energy > 0].min() / 3)
    ax.set_ylabel("energy per image (µJ, log)")
    ax.set_title(
        f"{report.meta.get('model')}: {s['energy_mJ']:.4g} mJ/image ({report.constants.name}; "
        f"{report.meta.get('mode')}; {report.counting}), ANN twin {s['ann_energy_mJ']:.4g} mJ, "
        f"ANN/SNN {s['ann_snn_ratio']:.2f}x\norange: MAC layer (real-valued input), blue: AC layer (spike input)",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelbottom=False)


def _plot_firing(report, ax) -> None:
    layers = report.layers
    x, nan = np.arange(len(layers)), float("nan")
    if any(layer.input == "AC" for layer in layers):
        spk = [nan if layer.spikes_per_neuron is None else layer.spikes_per_neuron for layer in layers]
        rate = [nan if layer.firing_rate is None else layer.firing_rate for layer in layers]
        ax.bar(x, spk, color="tab:green", width=0.8, label="spikes per neuron (s_l, over T and virtual timesteps)")
        ax.set_ylabel("spikes per neuron per image")
        twin = ax.twinx()
        twin.plot(x, rate, "o", color="tab:red", markersize=3.5, label="firing rate (mean code per timestep)")
        twin.set_ylabel("mean code", color="tab:red")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=8)
    else:
        dense = [nan if layer.zero_share is None else 1 - layer.zero_share for layer in layers]
        ax.bar(x, dense, color="tab:green", width=0.8)
        ax.set_ylabel("share of non-zero activations")
    ax.grid(axis="y", alpha=0.3)
    labels = [layer.name.removeprefix("model.").removesuffix(".conv") for layer in layers]
    ax.set_xticks(x, labels, rotation=90, fontsize=6.5)
    ax.set_xlim(-0.7, len(x) - 0.3)


def _plot_codes(report, ax) -> None:
    codes, counts, max_code = report.code_histogram()
    bins = min(max_code + 1, 512)  # one bin per code up to M = 511; coarser beyond
    weights = counts / max(counts.sum(), 1)
    share, edges = np.histogram(codes, bins=bins, range=(-0.5, max_code + 0.5), weights=weights)
    used = share > 0
    ax.bar(((edges[:-1] + edges[1:]) / 2)[used], share[used], width=edges[1] - edges[0], color="tab:purple")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, max_code + 0.5)
    ax.axvline(max_code, color="k", ls="--", lw=0.8)
    per_bin = "" if bins == max_code + 1 else f", {edges[1] - edges[0]:.0f} codes per bin"
    ax.set_xlabel(f"integer code (0..M = {max_code}; dashed line: M{per_bin})")
    ax.set_ylabel("share of neuron outputs")
    ax.set_title("range use: codes emitted by all spiking layers together")
    ax.grid(axis="y", alpha=0.3)
