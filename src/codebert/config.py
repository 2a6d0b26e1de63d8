"""Typed stage configurations: defaults < YAML preset < command-line flags, validated at once.

Every stage of the pipeline (`corpus extract`, `tokenizer train`, ...) owns a dataclass whose fields
are its whole configuration. Each field is declared with `option(default, "what it means")`: the
text is the field's comment and also its `--help` line, so the two cannot drift apart.

`load_config` merges the three layers and checks every value against the field's type. It never
stops at the first problem: a YAML key that does not exist, `--vocab-size=abc` and a negative
worker count are reported together, one line each, in a single `ConfigError`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from codebert.errors import UserError

PRESETS_DIR = Path(__file__).parent / "configs"


def option(default: Any = MISSING, help: str = "", *, positional: bool = False, metavar: str | None = None):
    """A config field with its explanation. Lists take a copy of the default, never a shared one."""
    metadata = {"help": help, "positional": positional, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class ConfigError(UserError):
    """Every problem found in a configuration, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the configuration:\n{lines}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    inner, optional = unwrap_optional(tp)
    if get_origin(inner) is Literal:
        name = "one of " + ", ".join(repr(a) for a in get_args(inner))
    elif get_origin(inner) is list:
        name = f"a list of {type_name(get_args(inner)[0])}"
    else:
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
            inner, str(inner)
        )
    return name + (" (or null)" if optional else "")


def coerce(value: Any, tp: Any) -> Any:
    """Convert a YAML value or a command-line string to `tp`; raise ValueError with the reason."""
    inner, optional = unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"must be {type_name(tp)}, not null")
    if get_origin(inner) is Literal:
        choices = get_args(inner)
        if value in choices:
            return value
        raise ValueError(f"{value!r} is not {type_name(inner)}")
    if get_origin(inner) is list:
        (item_tp,) = get_args(inner)
        items = value if isinstance(value, list) else [value]
        return [coerce(v, item_tp) for v in items]
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{value!r} is not true or false")
    if inner is int:
        # YAML gives ints already; a float like 3.5 or a bool is a mistake, not an int.
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError(f"{value!r} is not an integer")
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if inner is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
    if inner is Path:
        if not isinstance(value, (str, Path)) or str(value) == "":
            raise ValueError(f"{value!r} is not a path")
        return Path(value)
    if inner is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{value!r} is not a string")
        return str(value)
    raise TypeError(f"unsupported config type {tp}")  # a programming error, not a user one


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (`tiny`) names a file shipped in the package; anything else is a path."""
    text = str(name_or_path)
    candidate = PRESETS_DIR / f"{text}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and candidate.exists():
        return candidate
    path = Path(text)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise UserError(f"config {text!r} is neither a file nor a preset (presets: {known})")
    return path


def read_preset(name_or_path: str | Path, section: str | None) -> dict[str, Any]:
    """Load a YAML preset; with `section`, only that top-level mapping (a preset can serve stages)."""
    path = resolve_preset(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must be a mapping of keys to values")
    if section is not None:
        data = data.get(section, {}) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path}: section {section!r} must be a mapping")
    return data


def load_config(cls: type, preset: dict[str, Any] | None = None, flags: dict[str, Any] | None = None):
    """Build `cls` from defaults, then `preset` (YAML values), then `flags` (strings from the CLI).

    Raises ConfigError listing every unknown key, badly typed value and failed check at once.
    """
    tps = _field_types(cls)
    names = {f.name for f in fields(cls)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for source, layer in (("config", preset or {}), ("flag", flags or {})):
        for key, raw in layer.items():
            name = key.replace("-", "_")
            shown = f"--{name.replace('_', '-')}" if source == "flag" else f"{key} (in the config file)"
            if name not in names:
                problems.append(f"{shown}: unknown option")
                continue
            try:
                values[name] = coerce(raw, tps[name])
            except ValueError as exc:
                problems.append(f"{shown}: {exc}")
    missing = [
        f for f in fields(cls) if f.name not in values and f.default is MISSING and f.default_factory is MISSING
    ]
    for f in missing:
        flag = f.name if f.metadata.get("positional") else f"--{f.name.replace('_', '-')}"
        problems.append(f"{flag}: required ({f.metadata.get('help', '')})")
    if missing:
        raise ConfigError(problems)
    # Checks run even when some value had the wrong type (that field keeps its default), so one
    # message lists the type problems and the failed checks together.
    cfg = cls(**values)
    # Which options the preset or the command line set: a recipe (`code2nl finetune --recipe`)
    # changes only the defaults, never a value the user chose (see `given_options`).
    cfg.__dict__[_GIVEN] = frozenset(values)
    check = getattr(cfg, "validate", None)
    if check is not None:
        problems.extend(check())
    if problems:
        raise ConfigError(problems)
    return cfg


_GIVEN = "_given_options"


def given_options(cfg: Any) -> frozenset[str]:
    """The fields a preset or a flag set when `load_config` built `cfg` (none for a config made in code)."""
    return cfg.__dict__.get(_GIVEN, frozenset())


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly copy (paths as strings), e.g. to save the resolved run config."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[f.name] = value
    return out


__all__ = [
    "ConfigError",
    "coerce",
    "load_config",
    "option",
    "read_preset",
    "resolve_preset",
    "to_dict",
    "type_name",
]
