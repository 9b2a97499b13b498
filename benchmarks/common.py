"""What the benchmarks share: the four variants, model building, interleaved timing, Markdown tables, README sections.

Run the benchmarks as modules from the repository root (``python -m benchmarks.speed``), so that they import this
module and the ``ibra_yolo`` package like any other code, without editing ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import statistics
from datetime import date

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported: benchmarks never download anything
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

import torch  # noqa: E402

__all__ = ("VARIANTS", "build", "sync", "interleaved", "saved_bytes", "environment", "table", "write_readme_section")

VARIANTS = {"IBRA-LIF": "ibra", "I-LIF": "ilif", "IB-LIF": "iblif", "ANN twin": "ann"}


def build(family: str, scale: str, device: torch.device):
    """An untrained ``DetectionModel`` of ``spike-yolo-<family>-<scale>.yaml`` (seed 0, nc 80) with loss settings."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(f"spike-yolo-{family}-{scale}.yaml", nc=80, verbose=False).to(device)
    model.args = get_cfg()
    return model


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(runners: dict, reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per ``step()`` of each runner, running the runners in rotating order (side by side)."""
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n].step()
    times = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            times[n].append(runners[n].step())
    return {n: statistics.median(v) for n, v in times.items()}


def saved_bytes(forward) -> int:
    """Bytes autograd keeps for backward while ``forward()`` runs (each storage counted once; compiled graphs too:
    a compiled training graph saves its tensors through the same hooks)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def environment(device: torch.device, **settings) -> str:
    """One line naming the date, machine, torch, device and the given settings (for table titles)."""
    threads = torch.get_num_threads()
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} CPU thread{'s' * (threads > 1)}"
    )
    extra = "".join(f" · {k} {v}" for k, v in settings.items())
    return f"{date.today()} · {platform.processor() or platform.machine()} · torch {torch.__version__} · {where}{extra}"


def table(headers, rows) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_readme_section(text: str, readme: str, name: str) -> None:
    """Replace the text between the ``<!-- name:start -->`` and ``<!-- name:end -->`` markers of the README."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    with open(readme) as f:
        content = f.read()
    if start not in content or end not in content:
        raise SystemExit(f"error: {readme} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    tail = rest.split(end, 1)[1]
    with open(readme, "w") as f:
        f.write(f"{head}{start}\n{text.strip()}\n{end}{tail}")
