"""records: the dataclass behaviour the CLI's classes rely on, without the dataclasses module."""

from __future__ import annotations

from typing import ClassVar

import pytest

from qonic_proxy.records import as_dict, field, fields, record, replace


@record
class Login:
    user: str
    secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "login"


@record
class Checked:
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low above high")


@record(frozen=False)
class Mutable:
    value: int = 0


def test_positional_keyword_and_default_arguments() -> None:
    login = Login("ann", secret="s3cret")
    assert (login.user, login.secret, login.scopes, login.notes) == ("ann", "s3cret", (), [])
    assert Login("ann", "s3cret", ("a",)).scopes == ("a",)
    assert [f.name for f in fields(login)] == ["user", "secret", "scopes", "notes"]
    assert Login.kind == "login"  # a ClassVar is no field


def test_each_record_gets_its_own_default_from_a_factory() -> None:
    one, two = Login("a", "s"), Login("b", "s")
    one.notes.append("x")
    assert two.notes == []


@pytest.mark.parametrize(("args", "kwargs", "says"), [
    (("ann",), {}, "missing the argument 'secret'"),
    (("ann", "s"), {"user": "bob"}, "'user' twice"),
    (("ann", "s"), {"colour": "red"}, "unexpected arguments 'colour'"),
    (("ann", "s", (), [], "extra"), {}, "takes 4 arguments, 5 were given"),
])
def test_wrong_arguments_are_refused_by_name(args: tuple[object, ...], kwargs: dict[str, object],
                                             says: str) -> None:
    with pytest.raises(TypeError, match=says):
        Login(*args, **kwargs)  # type: ignore[arg-type]


def test_a_frozen_record_cannot_change() -> None:
    login = Login("ann", "s")
    with pytest.raises(AttributeError, match="immutable"):
        login.user = "bob"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del login.user
    assert login.user == "ann"


def test_repr_leaves_out_what_is_marked_repr_false() -> None:
    shown = repr(Login("ann", "s3cret"))
    assert shown == "Login(user='ann', scopes=(), notes=[])"
    assert "s3cret" not in shown and "s3cret" not in str(Login("ann", "s3cret"))


def test_equality_and_hash_go_by_value_and_class() -> None:
    assert Checked(1, 2) == Checked(1, 2) and hash(Checked(1, 2)) == hash(Checked(1, 2))
    assert Checked(1, 2) != Checked(1, 3)
    assert Checked(1, 2) != (1, 2)  # type: ignore[comparison-overlap]
    assert len({Checked(1, 2), Checked(1, 2)}) == 1
    assert Mutable(1) == Mutable(1)
    with pytest.raises(TypeError):
        hash(Mutable(1))  # equal by value and mutable: unhashable, as a dataclass


def test_post_init_checks_every_construction_replace_included() -> None:
    with pytest.raises(ValueError, match="low above high"):
        Checked(3, 2)
    with pytest.raises(ValueError, match="low above high"):
        replace(Checked(1, 2), low=5)


def test_replace_copies_with_changes_and_refuses_unknown_fields() -> None:
    login = Login("ann", "s", ("a",))
    moved = replace(login, user="bob")
    assert (moved.user, moved.secret, moved.scopes) == ("bob", "s", ("a",))
    assert login.user == "ann"
    with pytest.raises(TypeError, match="no field colour"):
        replace(login, colour="red")


def test_as_dict_and_a_mutable_record() -> None:
    assert as_dict(Checked(1, 2)) == {"low": 1, "high": 2}
    box = Mutable()
    box.value = 5
    assert box.value == 5


def test_a_field_takes_one_kind_of_default() -> None:
    with pytest.raises(TypeError, match="not both"):
        field(default=1, default_factory=list)


def test_no_dataclasses_helper_is_called_on_what_may_be_a_record() -> None:
    """mypy takes records for dataclasses, so `dataclasses.replace(record)` type-checks and then
    fails at run time: outside the sandbox (whose own classes are its business) the helpers
    come from records."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "qonic_proxy"
    helper = re.compile(r"dataclasses\.(replace|asdict|astuple|fields)\("
                        r"|from dataclasses import [^\n]*\b(replace|asdict|astuple|fields)\b")
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if "sandbox" not in path.parts and path.name != "records.py"
                 and helper.search(path.read_text())]
    assert offenders == []
