"""docs/configuration.md, generated from the configuration model itself.

Every key's type, default and constraints come from ``spendstream.config``'s pydantic
fields and its meaning from their ``description``, so the reference cannot drift from
what the loader accepts. Regenerate after changing the model::

    python -m spendstream.config_reference          # writes docs/configuration.md
    python -m spendstream.config_reference --check  # exit 1 when the file is stale

``undocumented()`` lists keys without a description (a test keeps it empty).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from spendstream.config import Config, below_money_limit, is_model
from spendstream.generated_file import write_or_check

__all__ = ["REFERENCE_PATH", "iter_keys", "main", "render", "undocumented"]

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

_INTRO = """\
# Configuration reference

<!-- Generated from spendstream/config.py by `python -m spendstream.config_reference`;
     edit the Field descriptions there, not this file (a test fails when they differ). -->

spendstream reads one TOML file: `--config FILE`, else the file named by
`$SPENDSTREAM_CONFIG`, else `spendstream.toml` in the working directory when there is one
(the command says so on stderr: `using ./spendstream.toml`), else nothing. `spendstream
demo` reads only `--config`: without it, its own workload's configuration. **Every key has
a default**, so an empty file (or no file) is a working configuration; `spendstream init`
writes a commented starter `spendstream.toml` (`spendstream init --cluster` for a Kafka
cluster and containers: your brokers, an HTTP endpoint other hosts reach, a shared warehouse
of a PostgreSQL catalog and S3 tables, signed breaker records; placeholders to replace).

A key the model does not know, or a value of the wrong type, stops the command with exit
code 2 and a message naming the key, with the nearest known key when there is one:

    invalid configuration in spendstream.toml:
      kafka.bootstrap_server: unknown key; did you mean bootstrap_servers?

A list of tables (`[[budget]]`, `[[alerts.sink]]`, `[[alerts.route]]`) written with single
brackets says so: `budget: Input should be a valid list; each entry is its own [[budget]]
table (double brackets), not [budget]`.

Money is exact: TOML numbers become decimals through their shortest text (`3.75` is exactly
3.75). Secrets (tokens, webhook URLs, routing keys) are never written in the file: give the
name of an environment variable (`*_env`) or a file (`*_file`) that holds them.
"""


def _union_members(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _constraints(metadata: list[Any]) -> str:
    out = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            out.append(_constraints(m.metadata))
        elif isinstance(m, annotated_types.Ge):
            out.append(f">= {m.ge}")
        elif isinstance(m, annotated_types.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"<= {m.le}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"< {m.lt}")
        elif isinstance(m, AfterValidator) and m.func is below_money_limit:
            out.append("< 1e20")
        elif isinstance(m, annotated_types.MinLen) and m.min_length > 0:
            out.append("not empty")
    if out and all(o == "not empty" for o in out if o):
        return ", not empty"
    return ", ".join(o for o in out if o)


def _type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    extra = _constraints(metadata or [])
    if get_origin(annotation) is Annotated:
        inner, *meta = get_args(annotation)
        return _type_text(inner, [*meta, *(metadata or [])])
    if _optional(annotation):
        (inner,) = _union_members(annotation)
        return _type_text(inner, metadata) + " or unset"
    origin = get_origin(annotation)
    if origin is Literal:
        text = " | ".join(f'`"{a}"`' for a in get_args(annotation))
    elif origin is list:
        text = "list of " + _type_text(get_args(annotation)[0])
    elif origin is dict:
        key, value = get_args(annotation)
        text = f"table of {_type_text(key)} -> {_type_text(value)}"
    else:
        text = {
            str: "string",
            int: "integer",
            float: "number",
            bool: "boolean",
            Decimal: "decimal",
            datetime: "date or offset date-time",
        }.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if extra.startswith(","):
        return text + extra
    return f"{text} {extra}" if extra else text


def _toml(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Decimal | int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    text = _toml(field.get_default(call_default_factory=True))
    return text if text == "unset" else f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel], skip_sections: bool = True) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if skip_sections and _section_kind(field) is not None:
            continue
        rows.append(
            f"| `{name}` | {_cell(_type_text(field.annotation, field.metadata))} | "
            f"{_cell(_default_text(field))} | {_cell(field.description or '')} |"
        )
    return rows


def _section_kind(field: FieldInfo) -> tuple[str, list[type[BaseModel]]] | None:
    """("table", [model]) for a nested section, ("array", models) for a list of tables."""
    annotation: Any = field.annotation
    if is_model(annotation):
        return "table", [annotation]
    if get_origin(annotation) is list:
        item = get_args(annotation)[0]
        if get_origin(item) is Annotated:
            item = get_args(item)[0]
        members = _union_members(item)
        if members and all(is_model(m) for m in members):
            return "array", members
    return None


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def _section(path: str, model: type[BaseModel], depth: int, array: bool) -> list[str]:
    head = f"[[{path}]]" if array else f"[{path}]"
    out = ["", f"{'#' * depth} `{head}`", ""]
    if _doc(model):
        out += [_doc(model), ""]
    scalars = [f for f in model.model_fields.values() if _section_kind(f) is None]
    if scalars:
        out += _table(model)
    for name, field in model.model_fields.items():
        kind = _section_kind(field)
        if kind is None:
            continue
        shape, members = kind
        sub = f"{path}.{name}"
        if len(members) == 1:
            out += _section(sub, members[0], depth + 1, shape == "array")
            continue
        out += ["", f"{'#' * (depth + 1)} `[[{sub}]]`", "", field.description or "", ""]
        for member in members:
            tag = member.model_fields["type"].annotation
            out += ["", f'{"#" * (depth + 2)} `type = "{get_args(tag)[0]}"`', ""]
            if _doc(member):
                out += [_doc(member), ""]
            out += _table(member)
    return out


def render() -> str:
    """The whole of docs/configuration.md (pure: the model in, the same text out)."""
    out = [_INTRO]
    for name, field in Config.model_fields.items():
        kind = _section_kind(field)
        assert kind is not None, f"top-level key {name} is not a section"
        shape, (model, *_) = kind
        out += _section(name, model, 2, shape == "array")
    return "\n".join(out).rstrip() + "\n"


def iter_keys(
    model: type[BaseModel] | None = None, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """Every key of the tree as (dotted path, field), union members included."""
    model = Config if model is None else model
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, field
        kind = _section_kind(field)
        if kind is None:
            continue
        _, members = kind
        for member in members:
            tag = member.model_fields.get("type")
            label = (
                f"{path}[type={get_args(tag.annotation)[0]}]."
                if len(members) > 1 and tag
                else f"{path}."
            )
            yield from iter_keys(member, label)


def undocumented() -> list[str]:
    """Keys whose field has no description."""
    return [path for path, field in iter_keys() if not (field.description or "").strip()]


def main(argv: list[str] | None = None, path: Path = REFERENCE_PATH) -> int:
    args = sys.argv[1:] if argv is None else argv
    missing = undocumented()
    if missing:
        print(
            "keys without a Field(description=...) in spendstream/config.py: " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    return write_or_check(
        path, render(), "python -m spendstream.config_reference", check="--check" in args
    )


if __name__ == "__main__":
    raise SystemExit(main())
