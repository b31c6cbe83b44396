"""Immutable records for the modules the one-shot verbs import, without `dataclasses`.

`dataclasses` imports `inspect` (and with it `ast`, `dis` and `tokenize`) and compiles half a
dozen functions per class with `exec`: for the twenty classes `qonic-proxy token` or `exec`
loads, that was 15 ms of a run meant to stay near the interpreter's own start-up. A record keeps
what those classes used: fields from the class annotations, defaults, `field(repr=False)` for
secrets, `field(default_factory=...)`, `__post_init__`, equality, hashing, `replace` and
`as_dict`; frozen unless `record(frozen=False)`. The methods are shared, made once per class
from its field list, with no code generated.

Modules only the daemon loads keep `dataclasses` (mitmproxy imports it anyway). mypy checks
records like dataclasses, through `dataclass_transform` (PEP 681); so it also lets
`dataclasses.replace(record)` pass, which fails at run time: use `records.replace` (a source
scan in tests/test_records.py keeps dataclasses' helpers out of the package).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from typing import dataclass_transform
else:
    def dataclass_transform(**_: object) -> Callable[[Any], Any]:
        return lambda decorator: decorator

T = TypeVar("T")
_FIELDS = "__record_fields__"
_VALUES = "__record_values__"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field's options, as `field()` gives them (a plain default needs no `field`)."""

    __slots__ = ("name", "default", "default_factory", "repr")

    def __init__(self, default: Any = MISSING, default_factory: Callable[[], Any] | None = None,
                 repr: bool = True) -> None:  # noqa: A002 (dataclasses' name for it)
        if default is not MISSING and default_factory is not None:
            raise TypeError("a field takes a default or a default_factory, not both")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr

    def initial(self, owner: str) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        if self.default is MISSING:
            raise TypeError(f"{owner}() is missing the argument {self.name!r}")
        return self.default


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | None = None,
          repr: bool = True) -> Any:  # noqa: A002
    """A field with options: `field(repr=False)` keeps a secret out of the record's repr."""
    return Field(default, default_factory, repr)


def fields(obj: object) -> tuple[Field, ...]:
    fields_: tuple[Field, ...] = getattr(obj, _FIELDS)
    return fields_


def _values(obj: object) -> tuple[Any, ...]:
    values: tuple[Any, ...] = getattr(obj, _VALUES)(obj)
    return values


def _init_for(own: tuple[Field, ...], post_init: Callable[[Any], None] | None,
              ) -> Callable[..., None]:
    """The class's __init__: a closure over its fields (no code is generated)."""
    names, count = tuple(spec.name for spec in own), len(own)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if not kwargs and len(args) == count:  # all given in order: the daemon's usual case
            self.__dict__.update(zip(names, args, strict=True))
        else:
            _bind(self, own, args, kwargs)
        if post_init is not None:
            post_init(self)

    return __init__


def _bind(self: Any, own: tuple[Field, ...], args: tuple[Any, ...], kwargs: dict[str, Any],
          ) -> None:
    """Positional, then keyword arguments, then defaults, with dataclasses' errors."""
    owner = type(self).__name__
    if len(args) > len(own):
        raise TypeError(f"{owner}() takes {len(own)} arguments, {len(args)} were given")
    for position, spec in enumerate(own):
        if position < len(args):
            if spec.name in kwargs:
                raise TypeError(f"{owner}() got the argument {spec.name!r} twice")
            value = args[position]
        elif spec.name in kwargs:
            value = kwargs.pop(spec.name)
        else:
            value = spec.initial(owner)
        self.__dict__[spec.name] = value
    if kwargs:
        raise TypeError(f"{owner}() got unexpected arguments {', '.join(map(repr, kwargs))}")


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]  # Python's "ask the other side"
    same: bool = _values(self) == _values(other)
    return same


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen(self: Any, name: str, value: object = None) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable: cannot change {name!r}; "
                         "make a new one with records.replace")


def _make(cls: type[T], frozen: bool) -> type[T]:
    own: list[Field] = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        given = cls.__dict__.get(name, MISSING)
        spec = given if isinstance(given, Field) else Field(default=given)
        spec.name = name
        if isinstance(given, Field):
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        own.append(spec)
    setattr(cls, _FIELDS, tuple(own))
    names = tuple(spec.name for spec in own)
    # the values as a tuple, made in C: the daemon compares and hashes some records per request
    getter = attrgetter(*names) if len(names) > 1 else (
        lambda obj: tuple(getattr(obj, name) for name in names))
    setattr(cls, _VALUES, staticmethod(getter))
    init = _init_for(tuple(own), getattr(cls, "__post_init__", None))
    methods: dict[str, Any] = {"__init__": init, "__repr__": _repr, "__eq__": _eq}
    if frozen:
        methods.update(__hash__=_hash, __setattr__=_frozen, __delattr__=_frozen)
    else:
        methods["__hash__"] = None  # mutable and equal by value, as a dataclass
    for name, method in methods.items():
        setattr(cls, name, method)
    return cls


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(*, frozen: bool = True) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def record(cls: type[T] | None = None, /, *, frozen: bool = True,
           ) -> type[T] | Callable[[type[T]], type[T]]:
    """`@record` or `@record(frozen=False)` on a class with annotated fields."""
    if cls is None:
        return lambda later: _make(later, frozen)
    return _make(cls, frozen)


def replace(obj: T, **changes: Any) -> T:
    """A copy of `obj` with some fields changed (as `dataclasses.replace`)."""
    current = as_dict(obj)
    unknown = set(changes) - set(current)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(sorted(unknown))}")
    current.update(changes)
    return type(obj)(**current)


def as_dict(obj: object) -> dict[str, Any]:
    """The fields and their values, one level deep."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
