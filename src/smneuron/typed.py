"""Typed values as SageMaker sends them: parsers, and declared hyperparameter fields."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field, fields
from typing import Any

from smneuron.errors import ConfigurationError


def parse_bool(value: Any, name: str = "value") -> bool:
    """Parse a boolean the way SageMaker users write it: true/false/True/False/1/0/yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "0", "no", "n", "off", ""):
            return False
    raise ConfigurationError(f"{name}: expected true or false, got {value!r}")


def parse_int(value: Any, name: str = "value") -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    raise ConfigurationError(f"{name}: expected an integer, got {value!r}")


def parse_float(value: Any, name: str = "value") -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(f"{name}: expected a number, got {value!r}")


def parse_str(value: Any, name: str = "value") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigurationError(f"{name}: expected a string, got {value!r}")


def parse_int_list(value: Any, name: str = "value") -> tuple[int, ...]:
    """A list of integers from ``[32, 64]``, ``"32,64"`` or ``"[32, 64]"``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"{name}: expected a list of integers, got {value!r}"
                ) from err
        else:
            value = [part for part in text.replace(" ", "").split(",") if part]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigurationError(f"{name}: expected a non-empty list of integers, got {value!r}")
    return tuple(parse_int(item, name) for item in value)


def parse_float_list(value: Any, name: str = "value") -> tuple[float, ...]:
    """A list of numbers from ``[1, 2.5]``, ``"1,2.5"`` or ``"[1, 2.5]"``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"{name}: expected a list of numbers, got {value!r}"
                ) from err
        else:
            value = [part for part in text.replace(" ", "").split(",") if part]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigurationError(f"{name}: expected a non-empty list of numbers, got {value!r}")
    return tuple(parse_float(item, name) for item in value)


def parse_str_list(value: Any, name: str = "value") -> tuple[str, ...]:
    """A list of strings from ``["ham", "spam"]``, ``"ham,spam"`` or ``""`` (empty)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"{name}: expected a list of strings, got {value!r}"
                ) from err
        else:
            return tuple(part.strip() for part in text.split(",") if part.strip())
    if not isinstance(value, list | tuple):
        raise ConfigurationError(f"{name}: expected a list of strings, got {value!r}")
    return tuple(parse_str(item, name) for item in value)


def one_of(
    value: Any, choices: Sequence[Any], name: str = "value", *, ignore_case: bool = False
) -> Any:
    """``value`` when it is one of ``choices``; else a ConfigurationError that lists them.

    With ``ignore_case``, strings match in any case and the choice's own spelling is returned
    (``"Gunicorn"`` gives ``"gunicorn"``).
    """
    for choice in choices:
        if choice == value:
            return choice
        if ignore_case and isinstance(choice, str) and isinstance(value, str):
            if choice.lower() == value.strip().lower():
                return choice
    allowed = ", ".join(str(choice) for choice in choices)
    raise ConfigurationError(f"{name}: {value!r} is not one of: {allowed}")


def within(
    value: Any, name: str = "value", minimum: float | None = None, maximum: float | None = None
) -> None:
    """Raise a ConfigurationError naming the limit when a number (or any item of a tuple of
    numbers) is outside ``[minimum, maximum]``."""
    for item in value if isinstance(value, tuple) else (value,):
        if not isinstance(item, int | float):
            continue
        if minimum is not None and item < minimum:
            raise ConfigurationError(f"{name}: {item!r} is below the minimum {minimum}")
        if maximum is not None and item > maximum:
            raise ConfigurationError(f"{name}: {item!r} is above the maximum {maximum}")


# Value type name (as declared in hp() fields and the environment registry) -> parser.
PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "bool": parse_bool,
    "int": parse_int,
    "float": parse_float,
    "str": parse_str,
    "int_list": parse_int_list,
    "float_list": parse_float_list,
    "str_list": parse_str_list,
}


def hp(
    default: Any,
    kind: str,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare a typed hyperparameter field (metadata read by ``parse_hyperparameters``)."""
    return field(
        default=default,
        metadata={"kind": kind, "help": help, "choices": choices, "min": minimum, "max": maximum},
    )


def _decode_sagemaker_value(value: Any) -> Any:
    """SageMaker stores every hyperparameter as a JSON-encoded string; undo that once."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    if meta.get("choices") is not None:
        one_of(value, meta["choices"], name)
    within(value, name, meta.get("min"), meta.get("max"))


def parse_hyperparameters(cls: type, raw: Mapping[str, Any]) -> Any:
    """Build the frozen dataclass ``cls`` from SageMaker's hyperparameters.json content.

    Unknown names are a client error that lists the known ones; names starting with
    ``sagemaker_`` belong to the SageMaker Python SDK and are ignored.
    """
    specs = {f.name: f for f in fields(cls)}
    unknown = sorted(
        name for name in raw if name not in specs and not name.startswith("sagemaker_")
    )
    if unknown:
        raise ConfigurationError(
            f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(sorted(specs))}"
        )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in raw:
            continue
        meta = spec.metadata
        value = PARSERS[meta["kind"]](_decode_sagemaker_value(raw[name]), name)
        _check_range(name, value, meta)
        values[name] = value
    return cls(**values)


def hyperparameter_table(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) rows for docs and ``smneuron hyperparameters``."""
    rows = []
    for spec in fields(cls):
        meta = spec.metadata
        extra = []
        if meta.get("choices"):
            extra.append("one of " + ", ".join(str(c) for c in meta["choices"]))
        if meta.get("min") is not None:
            extra.append(f"≥ {meta['min']}")
        if meta.get("max") is not None:
            extra.append(f"≤ {meta['max']}")
        text = meta["help"] + (f" ({'; '.join(extra)})" if extra else "")
        default = spec.default
        if isinstance(default, tuple):
            default = ",".join(str(item) for item in default)
        rows.append((spec.name, meta["kind"], repr(default), text))
    return rows


def hyperparameter_markdown(cls: type) -> str:
    """The hyperparameters of ``cls`` as a markdown table (docs/configuration.md)."""
    lines = ["| Name | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, kind, default, text in hyperparameter_table(cls):
        lines.append(f"| `{name}` | {kind} | `{default}` | {text} |")
    return "\n".join(lines)
