"""Typed settings, declared once.

Every setting of genkit, the engine's (``genkit.config.TrainConfig``) and each domain's (its ``Options``
dataclass), is a dataclass field made with :func:`option`. From that one declaration genkit derives the
command-line flag, the config-file key, the validation (type, choices, ranges), ``genkit info --json``
and the CLI reference in the docs; the domain's methods receive an instance of the dataclass.

Why dataclasses and not pydantic: they are in the standard library, import in microseconds (``genkit --help``
stays fast), and a frozen dataclass is exactly what a resolved setting is; the few checks genkit needs
(type, choices, ranges, finiteness) are the short :class:`Setting.check` below. Checks that relate two fields
belong in the dataclass's ``__post_init__`` and raise ``GenkitError``.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``typing.Literal[...]`` of one of those (the
literal's values are the choices), and any of them ``| None``, where None means "decided by genkit or the
domain" (shown as ``auto``; a domain's ``resolve_options`` replaces it with the value in use, so a saved
``config.toml`` never holds a placeholder).

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import GenkitError

SCALARS = (bool, int, float, str)


class _Auto:
    """The value "auto" given explicitly (``--size auto``): unlike an absent flag, it overrides earlier layers."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()


@dataclass(frozen=True)
class Spec:
    """What :func:`option` attaches to a dataclass field (``field.metadata["genkit"]``)."""

    help: str = ""
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    resumable: bool = False  # engine settings only: may be changed by ``--resume``
    auto: str = ""  # what None means, for the help text ("the data's")


def option(default: Any, help: str = "", *, choices: typing.Sequence[Any] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           resumable: bool = False, auto: str = "") -> Any:
    """A setting: a dataclass field with a default, a help text and optional choices and bounds.

    ``ge``/``gt``/``le``/``lt`` bound numbers (>=, >, <=, <). Example::

        @dataclass(frozen=True)
        class Options:
            width: int = genkit.option(64, "Channels of the widest layer.", gt=0)
            norm: str = genkit.option("batch", "Normalisation.", choices=("batch", "none"))
    """
    spec = Spec(help=help, choices=tuple(choices) if choices is not None else None, ge=ge, gt=gt, le=le, lt=lt,
                resumable=resumable, auto=auto)
    return field(default=default, metadata={"genkit": spec})


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass, with its type worked out."""

    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None allowed ("auto")
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return self.spec.choices

    def check(self, value: Any, where: str = "") -> Any:
        """``value`` converted to the setting's type, or ``GenkitError`` (exit 2) naming ``where`` and the setting."""
        try:
            return self.convert(value)
        except ValueError as exc:
            label = f"{where}: {self.name}" if where else self.flag
            raise GenkitError(f"{label} {exc}", exit_code=2) from None

    def convert(self, value: Any) -> Any:
        """``value`` in the setting's type; ``ValueError`` with the reason ("must be ...") otherwise."""
        if value is None or value is AUTO:
            if self.optional:
                return value
            raise ValueError("must be set" if value is None else "has no automatic value")
        kind = self.kind
        ok = (isinstance(value, bool) if kind is bool else
              isinstance(value, int) and not isinstance(value, bool) if kind is int else
              isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
              isinstance(value, str))
        if not ok:
            raise ValueError(f"must be {kind.__name__}, got {value!r}")
        if kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        problem = self.range_problem(value)
        if problem:
            raise ValueError(f"{problem}, got {value!r}")
        return value

    def range_problem(self, value: Any) -> str:
        s = self.spec
        if s.gt is not None and not value > s.gt or s.ge is not None and not value >= s.ge or \
                s.lt is not None and not value < s.lt or s.le is not None and not value <= s.le:
            return "must be " + self.range_text()
        return ""

    def range_text(self) -> str:
        s = self.spec
        if s.gt == 0 and s.lt is None and s.le is None:
            return "positive"
        if s.ge == 0 and s.lt is None and s.le is None:
            return "zero or positive"
        lo = f"[{s.ge:g}" if s.ge is not None else f"({s.gt:g}" if s.gt is not None else "(-inf"
        hi = f"{s.le:g}]" if s.le is not None else f"{s.lt:g})" if s.lt is not None else "inf)"
        return f"in {lo}, {hi}"

    def describe(self) -> dict[str, Any]:
        """The setting as JSON (``genkit info --json``, the docs)."""
        out: dict[str, Any] = {"name": self.name, "flag": self.flag, "type": self.kind.__name__,
                               "default": self.default, "help": self.spec.help}
        if self.optional:
            out["auto"] = self.spec.auto or "decided at run time"
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if any(v is not None for v in (self.spec.ge, self.spec.gt, self.spec.le, self.spec.lt)):
            out["range"] = self.range_text()
        return out


_CACHE: dict[type, tuple[Setting, ...]] = {}


def settings(cls: type) -> tuple[Setting, ...]:
    """The settings of a dataclass made with :func:`option` (``TypeError`` naming a field genkit cannot type)."""
    if cls in _CACHE:
        return _CACHE[cls]
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, optional, choices = _parse_type(hints.get(f.name, Any))
        if kind is None:
            raise TypeError(f"field {f.name!r} has type {hints.get(f.name)!r}; use bool, int, float, str, "
                            "a Literal of one of them, or one of these | None")
        if f.default is dataclasses.MISSING:
            raise TypeError(f"field {f.name!r} has no default")
        spec = f.metadata.get("genkit", Spec())
        if choices is not None and spec.choices is None:
            spec = dataclasses.replace(spec, choices=choices)
        setting = Setting(f.name, kind, optional, f.default, spec)
        try:
            setting.convert(f.default)
        except ValueError as exc:
            raise TypeError(f"field {f.name!r}: its default {f.default!r} {exc}") from None
        out.append(setting)
    _CACHE[cls] = tuple(out)
    return _CACHE[cls]


def _parse_type(tp: Any) -> tuple[type | None, bool, tuple[Any, ...] | None]:
    optional = False
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) != 1:
            return None, False, None
        tp, args = rest[0], typing.get_args(rest[0])
    if typing.get_origin(tp) is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and next(iter(kinds)) in SCALARS:
            return next(iter(kinds)), optional, tuple(args)
        return None, False, None
    return (tp if tp in SCALARS else None), optional, None


def to_dict(obj: Any) -> dict[str, Any]:
    """A settings object as a plain dict (field order kept)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def build(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """``cls(**values)`` with every value checked; unknown keys are an error naming ``where``."""
    known = {s.name: s for s in settings(cls)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            raise GenkitError(f"{where}: unknown key {key!r}" if where else f"unknown setting {key!r}", exit_code=2)
        checked[key] = known[key].check(value, where)
    return cls(**checked)


class MappingAccess(Mapping):
    """Read access by key (``options["size"]``, ``options.get(...)``, ``dict(options)``) for a settings object.

    The options of a domain declared the old way, with ``genkit.Option`` tuples, are an instance of a
    dataclass generated with this base, so plugin code written for options-as-a-mapping keeps working.
    """

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._names() else default

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, key: object) -> bool:
        return key in self._names()


def from_option_tuples(class_name: str, opts: typing.Sequence[Any]) -> type:
    """A frozen settings dataclass (with :class:`MappingAccess`) equivalent to old-style ``Option`` tuples."""
    fields = []
    for o in opts:
        kind = type(o.default)
        fields.append((o.name, kind, option(o.default, o.help, choices=o.choices)))
    return dataclasses.make_dataclass(class_name, fields, bases=(MappingAccess,), frozen=True)
