"""Model YAML files read safely: every way a file's text can fail to be a model is one ``ModelConfigError`` line.

Ultralytics' loader (``ultralytics.utils.YAML``) reads the file; the checks here cover what it lets through or reports
in several lines: a path that is not a regular file (a FIFO would block forever), text that is not UTF-8 or not YAML,
a top level that is not a mapping, a key written twice in one mapping (PyYAML keeps the last), aliases that expand to
billions of values, nesting too deep for the parser, a value PyYAML cannot convert (an integer of 5,000 digits).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = (
    "load_yaml",
    "yaml_problem",
    "yaml_text_problem",
    "check_regular",
    "check_unique_keys",
    "check_expanded_size",
    "looks_numeric",
    "yaml_number_hint",
)


def load_yaml(path: Path) -> dict:
    """The YAML file as a dict; one ``ModelConfigError`` line when it is not valid YAML or not a mapping."""
    from ultralytics.utils import YAML

    check_regular(Path(path))
    try:
        return YAML.load(path)
    except (ValueError, RecursionError):  # Ultralytics' several-line message (also UnicodeDecodeError): say it in one
        raise yaml_problem(Path(path)) from None


def check_regular(path: Path) -> None:
    """Refuse a path that exists but is not a regular file (a FIFO blocks the reader forever, /dev/zero never ends)."""
    from ibra_yolo.errors import ModelConfigError

    if path.exists() and not path.is_file() and not path.is_dir():
        raise ModelConfigError(f"{path} is not a regular file (a FIFO or a device): a model YAML must be a file")


def yaml_problem(path: Path) -> Exception:
    """The one-line ``ModelConfigError`` for a YAML file Ultralytics' loader refused."""
    from ibra_yolo.errors import ModelConfigError

    return yaml_text_problem(path) or ModelConfigError(f"{path} cannot be read as a model YAML")


def yaml_text_problem(path: Path) -> Exception | None:
    """What is wrong with a YAML file's text as a model (None: nothing): not UTF-8, not YAML, not a mapping, a key
    written twice, aliases that expand without end, nesting too deep, a value PyYAML cannot convert."""
    import yaml

    from ibra_yolo.errors import ModelConfigError

    try:
        text = path.read_text(encoding="utf-8")
        d = yaml.safe_load(text)
        if d is not None and not isinstance(d, dict):
            return ModelConfigError(
                f"{path}: a model YAML must be a mapping (nc, backbone, head, ...), got a {type(d).__name__}"
            )
        check_unique_keys(text, str(path))
        check_expanded_size(d, str(path))
    except UnicodeDecodeError as e:
        return ModelConfigError(f"{path} is not UTF-8 text (byte {e.start}): a model YAML must be text")
    except RecursionError:
        return ModelConfigError(f"{path} nests its YAML too deeply to be a model")
    except ModelConfigError as e:
        return e
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return ModelConfigError(f"{path} holds a value YAML cannot read: {' '.join(str(e).split())[:200]}")
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return ModelConfigError(f"{path} is not valid YAML{where}: {problem}")
    return None


_OCTAL = re.compile(r"0[0-7]+")  # YAML 1.1's octal integers (sign and underscores removed)


def check_unique_keys(text: str, where: str) -> None:
    """Refuse YAML text that repeats a key in one mapping (PyYAML silently keeps the last, e.g. a second ``nc``), or
    that writes a number with a colon or a leading zero (YAML 1.1 reads ``D: 1:30`` as the base-60 number 90, and
    ``T: 010`` as the octal number 8, without a word).

    Merge keys (``<<: *base``) are YAML's way to override on purpose and are left to PyYAML.

    Raises:
        ModelConfigError: Naming ``where``, the key or value and its line.
    """
    import yaml

    from ibra_yolo.errors import ModelConfigError

    class _Unique(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    continue  # unhashable: PyYAML's own construct_mapping names it
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ModelConfigError(
                        f"{where} repeats the key {key!r} at line {line}: keep one (YAML keeps the last)"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

        def construct_number(self, node):
            value = (super().construct_yaml_int if node.tag.endswith(":int") else super().construct_yaml_float)(node)
            text = str(node.value).replace("_", "").lstrip("+-")
            octal = _OCTAL.fullmatch(text) is not None and int(text) != int(text, 8)  # 07 is 7 either way
            kind = "base-60" if ":" in text else "octal" if octal else None
            if kind:  # battery 32, Y01-Y15: `T: 010` built 8 timesteps
                raise ModelConfigError(
                    f"{where}: {node.value!r:.40} at line {node.start_mark.line + 1} is read by YAML 1.1 as the "
                    f"{kind} number {value!r:.40}: write the number you mean (or quote it if it is text)"
                )
            return value

    _Unique.add_constructor("tag:yaml.org,2002:int", _Unique.construct_number)
    _Unique.add_constructor("tag:yaml.org,2002:float", _Unique.construct_number)
    yaml.load(text, Loader=_Unique)  # noqa: S506 - a SafeLoader subclass


MAX_YAML_VALUES = 1_000_000  # a model YAML has hundreds; aliases can make a few lines expand to billions


def check_expanded_size(d, where: str) -> None:
    """Refuse YAML whose aliases expand to more than ``MAX_YAML_VALUES`` values ("billion laughs"): printing or
    walking it would never end. Shared objects are counted once per use, each computed once."""
    from ibra_yolo.errors import ModelConfigError

    sizes: dict[int, int] = {}

    def size(x) -> int:
        if not isinstance(x, (list, dict)):
            return 1
        if id(x) not in sizes:
            items = x.values() if isinstance(x, dict) else x
            sizes[id(x)] = 0  # a cycle counts as empty (YAML cannot build one through safe_load)
            sizes[id(x)] = 1 + sum(min(size(v), MAX_YAML_VALUES + 1) for v in items)
        return sizes[id(x)]

    if size(d) > MAX_YAML_VALUES:
        raise ModelConfigError(
            f"{where} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases: a model YAML holds hundreds"
        )


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_float(text: str) -> str:
    """``1e9`` or ``1.0e9`` -> ``1.0e+9``: YAML 1.1 (PyYAML) reads an exponent as a float only with a decimal point in
    the mantissa and a sign in the exponent."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    return f"{mantissa}e{exponent if exponent[:1] in ('+', '-') else '+' + exponent}"


def yaml_number_hint(text: str) -> str:
    """How to write a number that YAML read as text: ``write 1.0e+9`` for exponents, else ``remove the quotes``."""
    if "e" in text.lower():
        return f"YAML 1.1 reads an exponent as text unless it is written like {_yaml_float(text)}; write that"
    return "remove the quotes"
