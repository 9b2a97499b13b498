"""Energy per operation: named presets (Horowitz, ISSCC 2014, 45 nm) and user values."""

from __future__ import annotations

from dataclasses import dataclass

from ibra_yolo.coding import is_number
from ibra_yolo.errors import IbraYoloError

__all__ = ("EnergyPreset", "PRESETS", "DEFAULT_PRESET", "energy_constants")


@dataclass(frozen=True)
class EnergyPreset:
    """Energy per operation in picojoules.

    Attributes:
        name (str): Preset name (``"custom"`` for user values).
        e_mac (float): Energy of one multiply-accumulate (real-valued input), pJ.
        e_ac (float): Energy of one accumulate (a spike arriving at a synapse), pJ.
        source (str): Where the values come from.
    """

    name: str
    e_mac: float
    e_ac: float
    source: str


_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm, 0.9 V"
_OPS = {  # preset: (multiply, pJ), (accumulator add, pJ); a MAC is one of each, an AC (a spike) one add
    "45nm-fp32": (("fp32 mult", 3.7), ("fp32 add", 0.9)),
    "45nm-fp16": (("fp16 mult", 1.1), ("fp16 add", 0.4)),
    "45nm-int8": (("int8 mult", 0.2), ("int32 add", 0.1)),  # int8 weights and activations, 32-bit accumulator
    "45nm-int32": (("int32 mult", 3.1), ("int32 add", 0.1)),
}


def _preset(name: str, mult: tuple, add: tuple) -> EnergyPreset:
    (m, e_m), (a, e_a) = mult, add
    source = f"{_HOROWITZ}: MAC = {m} {e_m} + {a} {e_a} pJ; AC = {a} {e_a} pJ"
    return EnergyPreset(name, round(e_m + e_a, 6), e_a, source)


PRESETS: dict[str, EnergyPreset] = {name: _preset(name, *ops) for name, ops in _OPS.items()}
DEFAULT_PRESET = "45nm-fp32"


MIN_OP_PJ = 1e-6  # the smallest: 1 zJ (subnormal values such as 1e-320 pJ were rounded 11 % off)
MAX_OP_PJ = 1e6  # the largest energy per operation taken: 1 uJ, 200,000x a 45 nm MAC (1e308 made the totals inf)


def energy_constants(
    preset: str | EnergyPreset = DEFAULT_PRESET, e_mac: float | None = None, e_ac: float | None = None
) -> EnergyPreset:
    """Return the energy constants of ``preset``, with ``e_mac`` / ``e_ac`` (pJ) replacing its values when given.

    Args:
        preset (str | EnergyPreset): A key of ``PRESETS``, or constants to start from.
        e_mac (float, optional): Custom MAC energy in pJ.
        e_ac (float, optional): Custom AC energy in pJ.

    Returns:
        (EnergyPreset): The constants; named ``"custom"`` when a value was replaced.

    Raises:
        IbraYoloError: Unknown preset or a value that is not a positive finite number.
    """
    if isinstance(preset, EnergyPreset):
        base = preset
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise IbraYoloError(f"energy preset {preset!r} is unknown: choose one of {', '.join(PRESETS)}")
    for name, v in (("e_mac", e_mac), ("e_ac", e_ac), ("preset.e_mac", base.e_mac), ("preset.e_ac", base.e_ac)):
        ok = is_number(v) and MIN_OP_PJ <= v <= MAX_OP_PJ  # numpy numbers too (np.float32 was refused)
        if v is not None and not ok:
            raise IbraYoloError(
                f"{name}={v!r} is invalid: it must be a positive number of picojoules in [{MIN_OP_PJ:g}, "
                f"{MAX_OP_PJ:g}] (a 45 nm float32 MAC costs 4.6)"
            )
    if e_mac is None and e_ac is None:
        return base
    mac, ac = base.e_mac if e_mac is None else float(e_mac), base.e_ac if e_ac is None else float(e_ac)
    return EnergyPreset("custom", mac, ac, f"user values E_MAC={mac} pJ, E_AC={ac} pJ (unset values from {base.name})")
