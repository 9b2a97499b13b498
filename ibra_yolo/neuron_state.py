"""The neurons a loaded model holds, checked against what YAMLs give (``ibra_yolo.model_state.check_model_state``
runs these for both loaders): each neuron's settings are ones its own ``config()`` rebuilds, and the layers hold the
neuron the file's model dict gives."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ibra_yolo.errors import CheckpointError, ModelConfigError

__all__ = ("check_neuron_settings", "check_yaml_neuron")


def _settings(neuron: nn.Module) -> dict:
    """A neuron's settings: its public attributes (``max_code``, ``scale``, ``beta``, ...; class defaults included)."""
    keys = [k for k in vars(neuron) if not k.startswith("_") and k != "training"]
    return {k: getattr(neuron, k) for k in keys}


def check_neuron_settings(model: nn.Module, path: str | Path) -> None:
    """Refuse a neuron whose settings no YAML gives: each is rebuilt from its own ``config()`` (every rule of
    ``make_neuron``) and must hold exactly what the rebuilt one holds (the same values, of the same types).

    Raises:
        CheckpointError: Naming the layer, the setting and its value.
    """
    from ibra_yolo.neurons import NEURON_KINDS, Activation, make_neuron

    kinds = (*NEURON_KINDS.values(), Activation)
    for name, m in model.named_modules():
        if type(m) not in kinds:
            continue
        where = f"{path}: {name} ({type(m).__name__})"
        try:
            fresh = make_neuron(m.config(), T=m.T)
        except (AttributeError, TypeError, ValueError) as e:  # a setting outside its rules, or one that is missing
            raise CheckpointError(f"{where} holds an invalid setting: {str(e).splitlines()[0][:300]}") from None
        for key, value in _settings(fresh).items():
            held = getattr(m, key, None)
            if type(held) is not type(value) or held != value:
                raise CheckpointError(
                    f"{where} holds {key}={held!r:.80}, but its settings {fresh.config()} give {key}={value!r}: "
                    "the file was altered after it was saved"
                )


def check_yaml_neuron(model: nn.Module, path: str | Path) -> None:
    """Refuse a model whose layers hold another neuron than its model dict gives: train and resume rebuild the model
    from that dict, so an edited ``neuron:`` (I-LIF D 4 in a file of IBRA-LIF layers) would train another network.

    Raises:
        CheckpointError: Naming the layer, what it holds and what the model dict gives.
    """
    from ibra_yolo.neurons import NEURON_KINDS, Activation, make_neuron
    from ibra_yolo.nn.builder import dict_name
    from ibra_yolo.nn.rows import plan_model

    try:
        plan = plan_model(model.yaml, model.yaml.get("channels", 3), dict_name(model.yaml))
    except ModelConfigError as e:
        raise CheckpointError(f"{path}: its model dict is invalid (the file was altered?): {e}") from None
    expected = make_neuron(plan.neuron, plan.T)
    for name, m in ((n, m) for n, m in model.named_modules() if type(m) in (*NEURON_KINDS.values(), Activation)):
        held, want = _settings(m), _settings(expected)
        if held != want:  # named by the first setting that differs (a derived one such as K reads alike in config())
            key = next(k for k in sorted({*held, *want}) if held.get(k, "absent") != want.get(k, "absent"))
            raise CheckpointError(
                f"{path}: {name} holds {key}={held.get(key, 'absent')!r:.40} ({m.config()}, T {m.T}), but the model "
                f"dict gives {key}={want.get(key, 'absent')!r:.40} ({expected.config()}, T {plan.T}): the file was "
                f"altered, and training or resuming from it would rebuild the dict's neuron"
            )
