"""The type model of a parsed Avro schema, and what the columnar decoder can read.

:func:`compile_schema` turns a fastavro-parsed schema into :class:`AvroType` trees
(named references expanded, recursion marked). :func:`columnar_problem` says why
polars plus the vectorized scan (:mod:`pipeline.avro.scan`) cannot decode a type
-- the one polars-compatibility check of the pipeline; :func:`physical_schema` is the
schema handed to polars: same binary layout, enums read as ``long`` (polars panics
on nullable enums), no defaults (polars rejects non-null ones), no logical types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

#: A parsed Avro schema as returned by :func:`fastavro.parse_schema`.
Schema = dict[str, Any]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
#: Encoded size of the fixed-width primitives.
FIXED_SIZE = {"boolean": 1, "float": 4, "double": 8}
MAX_DETAIL = 240


@dataclass(frozen=True, eq=False)
class AvroField:
    name: str
    type: AvroType
    has_default: bool
    default: Any
    aliases: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class AvroType:
    kind: str  # a primitive name, enum, fixed, record, union, array, map, recursive
    logical: str | None = None
    name: str = ""
    symbols: tuple[str, ...] = ()
    size: int = 0
    fields: tuple[AvroField, ...] = ()
    branches: tuple[AvroType, ...] = ()

    def non_null(self) -> tuple[bool, list[AvroType]]:
        """(nullable, the non-null branches) of a union, or (kind == null, [self])."""
        if self.kind == "union":
            return (
                any(b.kind == "null" for b in self.branches),
                [b for b in self.branches if b.kind != "null"],
            )
        return (self.kind == "null", [] if self.kind == "null" else [self])


def strip_private(obj: Any) -> Any:
    """``obj`` without fastavro's bookkeeping keys (``__fastavro_parsed`` ...)."""
    if isinstance(obj, Mapping):
        return {k: strip_private(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj


def schema_json(schema: Mapping[str, Any] | str) -> str:
    """The JSON text of a (parsed or plain) schema, as sent to a registry."""
    if isinstance(schema, str):
        return schema
    return json.dumps(strip_private(schema), separators=(",", ":"))


def as_schema(parsed: Any) -> Schema:
    """``parsed`` if it is a record-like schema dict; ValueError otherwise."""
    if not isinstance(parsed, dict):
        raise ValueError("the schema is not a record schema")
    return parsed


def parse(schema: Mapping[str, Any] | str) -> Schema:
    """Parse a schema (JSON text or plain dict) with fastavro."""
    raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return as_schema(fastavro.parse_schema(raw))


def _compile(schema: Any, named: Mapping[str, Any], stack: tuple[str, ...] = ()) -> AvroType:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return AvroType(schema)
        if schema in stack:
            return AvroType("recursive", name=schema)
        if schema not in named:
            raise ValueError(f"unknown type name {schema!r}")
        return _compile(named[schema], named, stack)
    if isinstance(schema, list):
        return AvroType("union", branches=tuple(_compile(b, named, stack) for b in schema))
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if kind in PRIMITIVES:
            return AvroType(str(kind), logical=logical)
        if kind == "enum":
            return AvroType("enum", name=str(schema["name"]), symbols=tuple(schema["symbols"]))
        if kind == "fixed":
            return AvroType(
                "fixed", name=str(schema["name"]), size=int(schema["size"]), logical=logical
            )
        if kind in ("record", "error"):
            name = str(schema.get("name", ""))
            inner = (*stack, name)
            fields = tuple(
                AvroField(
                    str(f["name"]),
                    _compile(f["type"], named, inner),
                    "default" in f,
                    f.get("default"),
                    tuple(f.get("aliases", ())),
                )
                for f in schema["fields"]
            )
            return AvroType("record", name=name, fields=fields)
        if kind in ("array", "map"):
            return AvroType(str(kind))
        if isinstance(kind, (str, list, Mapping)):
            return _compile(kind, named, stack)
    raise ValueError(f"not an Avro schema: {schema!r}"[:MAX_DETAIL])


def compile_schema(schema: Schema) -> AvroType:
    """Our model of a fastavro-parsed schema (named references expanded)."""
    return _compile(schema, schema.get("__named_schemas", {}))


def columnar_problem(t: AvroType) -> str | None:
    """Why polars + the vectorized scan cannot handle ``t`` (None if they can)."""
    if t.kind in PRIMITIVES:
        return "a null-typed field" if t.kind == "null" else None
    if t.kind in ("enum", "fixed"):
        return None
    if t.kind == "record":
        for f in t.fields:
            problem = columnar_problem(f.type)
            if problem:
                return problem
        return None
    if t.kind == "union":
        nullable, others = t.non_null()
        if len(t.branches) == 2 and nullable and len(others) == 1:
            inner = others[0]
            if inner.kind in PRIMITIVES or inner.kind in ("enum", "fixed"):
                return None
        return "a union other than [null, primitive|enum|fixed]"
    return f"a {t.kind} type"


def physical_schema(t: AvroType, raw_bytes: frozenset[str] = frozenset()) -> Any:
    """The schema polars reads for ``t`` (a type :func:`columnar_problem` accepts).

    Same binary layout; enums as ``long``; no defaults or logical types; strings of
    the top-level fields named in ``raw_bytes`` as ``bytes`` (not checked for UTF-8,
    as Avro resolution skips fields the reader does not use).
    """
    counter = [0]

    def physical(t: AvroType, as_bytes: bool) -> Any:
        if t.kind in PRIMITIVES:
            return "bytes" if as_bytes and t.kind == "string" else t.kind
        if t.kind == "enum":
            return "long"
        counter[0] += 1
        if t.kind == "fixed":
            return {"type": "fixed", "name": f"_fixed{counter[0]}", "size": t.size}
        if t.kind == "record":
            return {
                "type": "record",
                "name": f"_record{counter[0]}",
                "fields": [{"name": f.name, "type": physical(f.type, as_bytes)} for f in t.fields],
            }
        if t.kind == "union":
            return [physical(b, as_bytes) for b in t.branches]
        raise ValueError(f"no columnar layout for {t.kind}")

    if t.kind != "record":
        return physical(t, False)
    counter[0] += 1
    return {
        "type": "record",
        "name": f"_record{counter[0]}",
        "fields": [
            {"name": f.name, "type": physical(f.type, f.name in raw_bytes)} for f in t.fields
        ],
    }


def strip_logical(obj: Any) -> Any:
    """A schema without logical types: fastavro then returns the raw ints/bytes."""
    if isinstance(obj, Mapping):
        return {
            k: strip_logical(v)
            for k, v in obj.items()
            if k != "logicalType" and not str(k).startswith("__")
        }
    if isinstance(obj, list):
        return [strip_logical(v) for v in obj]
    return obj


def relax_strings(t: Any) -> Any:
    """``t`` with every ``string`` read as ``bytes`` (same binary layout, no UTF-8 check)."""
    if t == "string":
        return "bytes"
    if isinstance(t, list):
        return [relax_strings(b) for b in t]
    if isinstance(t, Mapping):
        kind = t.get("type")
        if kind == "string":
            return {**t, "type": "bytes"}
        if kind in ("record", "error"):
            return {**t, "fields": [{**f, "type": relax_strings(f["type"])} for f in t["fields"]]}
        if kind == "array":
            return {**t, "items": relax_strings(t["items"])}
        if kind == "map":
            return {**t, "values": relax_strings(t["values"])}
        if isinstance(kind, (list, Mapping)):
            return {**t, "type": relax_strings(kind)}
    return t  # other primitives, enums, fixed, named references


def fastavro_layout(writer: Schema, needed: set[str]) -> Schema:
    """The schema fastavro decodes with: raw logical types; fields the reader does not use
    keep their layout but strings are not UTF-8 checked (Avro resolution skips them, and
    polars does not read them either)."""
    plain = strip_logical(writer)
    plain["fields"] = [
        f if f["name"] in needed else {**f, "type": relax_strings(f["type"])}
        for f in plain["fields"]
    ]
    return as_schema(fastavro.parse_schema(plain))
