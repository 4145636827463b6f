"""Kafka wire format (spec section 1): Confluent framing around Avro binary datums.

A message value is ``0x00`` (magic byte), a 4-byte big-endian schema id, then the
Avro binary datum of one ``CallEvent``; the message key is the call_id.

Schema ids
----------
Ids resolve through a :class:`SchemaResolver`:

* :class:`RegistrySchemas` -- a Confluent-compatible Schema Registry over HTTP
  (``GET /schemas/ids/{id}``, ``POST /subjects/{subject}/versions``), cached.
* :class:`ShippedSchemas` -- no registry: the schemas shipped in ``schemas/`` under
  FIXED ids. Producers and consumers without a registry must agree on this table,
  so ids are never reused or renumbered; a new schema version gets the next id.

  ==  =====================  ===========================================
  id  file                   notes
  ==  =====================  ===========================================
  1   ``call_event.avsc``    ``cdr.pipeline.CallEvent``, first version
  ==  =====================  ===========================================

Errors: an unreachable or failing registry raises :class:`SchemaRegistryError` (an
:class:`~pipeline.errors.InfrastructureError`: pause and retry, never dead-letter);
an id the registry does not know (HTTP 404, ``error_code`` 40403) is a data error:
the message becomes an ``UNKNOWN_SCHEMA_ID`` dead letter.

Decoding a batch (:func:`decode_batch`)
---------------------------------------
Every message ends as exactly one event row or one dead letter (R1); a bad message
never spoils the rest of its batch. Dead-letter reasons chosen here:

* ``BAD_MAGIC_BYTE`` -- not the Confluent framing: null value (tombstone), empty
  value, fewer than 5 bytes, or byte 0 is not ``0x00``.
* ``UNKNOWN_SCHEMA_ID`` -- framing fine, the resolver does not know the id.
* ``DECODE_ERROR`` -- framing and id fine but the datum is not a record of the
  writer schema (empty, truncated, random bytes, bytes left over after the record,
  invalid UTF-8, out-of-range union/enum index...), or the writer schema cannot be
  resolved against the reader schema (e.g. a field changed type).

Decoded values that violate the semantics (negative duration, unknown enum symbol,
missing required value) are passed on: the rating core dead-letters them (R1).

Events carry ``payload`` = the raw message value on every row, because the core
may still dead-letter an event (e.g. unknown account) and needs the raw bytes.

Columnar fast path. The messages of a batch are grouped by writer schema id; each
group is checked by a vectorized (numpy) structural scan of the Avro binary
encoding, and the messages that pass are concatenated into ONE in-memory Avro
object container file (header + a single data block) read by ``polars.read_avro``
(``benchmarks/bench_decode.py``: about 7x the records/s of fastavro per message,
end to end). The container's schema starts with a ``fixed(5)`` field that swallows
the wire header, so a block body is just the message values back to back. The
scan walks all datums in lock step and rejects a datum whose varints are
overlong, whose string/bytes lengths are negative or run past its end, whose
union/enum index is out of range, whose ``int`` does not fit 32 bits, or that does
not end exactly at the end of the message: a garbage tail, which polars silently
ignores in the last datum of a block and which shifts every later datum of the
block. Rejected datums go to ``fastavro`` one by one, the authority for what is
good (and for the error message of a dead letter). Whatever the scan cannot see
(invalid UTF-8) makes polars fail the block: the block is then bisected, halves
decoded again, down to small blocks that go to ``fastavro``. A block must yield
exactly as many records as it holds datums.

Writer schemas polars cannot read (arrays, maps, unions other than ``[null, T]``,
recursive types...) are decoded with ``fastavro`` per message: correct, slower.
Before a writer schema is first decoded columnar, a few generated records are
decoded both ways; any difference (or a polars error) disables the columnar path
for that schema (logged once). Fields the reader does not use are skipped, as in
Avro resolution: neither decoder checks their strings for valid UTF-8.
Enums are handed to polars as ``long`` (their binary form) and mapped to symbols
here, because polars panics on nullable enums; field defaults are stripped from
the container header because polars rejects non-null defaults.

Schema resolution (writer -> reader ``CallEvent``) is done here on Arrow columns,
identically for both decoders: fields are matched by name (or reader alias); a
field missing from the writer takes the reader default (null if the reader has no
default, which the core reports as MISSING_FIELD); writer fields the reader does
not know are dropped; ``int`` promotes to ``long``; a writer ``timestamp-millis``
or ``-nanos`` is converted to microseconds (a plain ``long`` is taken as micros);
a null in a writer union for a reader field that is not nullable passes through
as null (MISSING_FIELD in the core); an enum symbol the reader does not know passes
through as a string (INVALID_VALUE in the core). A field whose writer type cannot
be resolved to the reader type turns every message of that schema id into a
``DECODE_ERROR`` dead letter.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import fastavro
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from fastavro.schema import load_schema, to_parsing_canonical_form
from pydantic import SecretStr

from pipeline.errors import ConfigError, DataError, InfrastructureError
from pipeline.io.schemas import SCHEMAS_DIR
from pipeline.rating.codes import Reason
from pipeline.rating.columns import CALL_EVENT_FIELDS, DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pipeline.settings import check_registry_url

log = logging.getLogger(f"cdr_pipeline.{__name__.removeprefix('pipeline.')}")

#: A parsed Avro schema as returned by :func:`fastavro.parse_schema`.
Schema = dict[str, Any]

MAGIC_BYTE = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**31 - 1
#: Id of ``schemas/call_event.avsc`` in :class:`ShippedSchemas`.
CALL_EVENT_SCHEMA_ID = 1
#: The fixed id table of :class:`ShippedSchemas` (never renumber; append new versions).
SHIPPED_SCHEMA_FILES: Mapping[int, str] = {CALL_EVENT_SCHEMA_ID: "call_event.avsc"}

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
BOOL = npt.NDArray[np.bool_]

_MAX_DETAIL = 240
_OBJECT_REPR = re.compile(r"\s*(from )?<[^<>]* at 0x[0-9a-fA-F]+>")
#: Blocks that fail in polars are bisected down to this size, then go to fastavro.
_BISECT_MIN = 32


# --------------------------------------------------------------------------- errors


class UnknownSchemaIdError(DataError):
    """The resolver does not know a schema id: the message is dead-lettered."""

    def __init__(self, schema_id: int, detail: str | None = None) -> None:
        super().__init__(Reason.UNKNOWN_SCHEMA_ID, detail or f"schema id {schema_id} is unknown")
        self.schema_id = schema_id


class SchemaRegistryError(InfrastructureError):
    """The schema registry is unreachable or failed (pause and retry)."""


# ------------------------------------------------------------------------ resolvers


class SchemaResolver(Protocol):
    """Maps schema ids to writer schemas (consumers) and schemas to ids (producers)."""

    def writer_schema(self, schema_id: int) -> Schema:
        """The parsed writer schema of ``schema_id``.

        Raises :class:`UnknownSchemaIdError` (or another :class:`DataError`) when the
        id cannot be resolved, :class:`~pipeline.errors.InfrastructureError` when the
        resolver cannot answer right now.
        """
        ...

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """The id under which ``schema`` is known for ``subject`` (registering it if needed)."""
        ...


def value_subject(topic: str) -> str:
    """The registry subject of a topic's message values (TopicNameStrategy)."""
    return f"{topic}-value"


def _strip_private(obj: Any) -> Any:
    """``obj`` without fastavro's bookkeeping keys (``__fastavro_parsed`` ...)."""
    if isinstance(obj, Mapping):
        return {k: _strip_private(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, list):
        return [_strip_private(v) for v in obj]
    return obj


def schema_json(schema: Mapping[str, Any] | str) -> str:
    """The JSON text of a (parsed or plain) schema, as sent to a registry."""
    if isinstance(schema, str):
        return schema
    return json.dumps(_strip_private(schema), separators=(",", ":"))


def _parse(schema: Mapping[str, Any] | str) -> Schema:
    raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return _as_schema(fastavro.parse_schema(raw))


def _as_schema(parsed: Any) -> Schema:
    if not isinstance(parsed, dict):
        raise ValueError("the schema is not a record schema")
    return parsed


class ShippedSchemas:
    """Schemas under fixed ids, without a registry (see the id table in the module doc).

    ``schemas`` overrides the table (tests, or a deployment pinning extra versions).
    """

    def __init__(self, schemas: Mapping[int, Mapping[str, Any] | str] | None = None) -> None:
        if schemas is None:
            self._schemas = {i: _shipped_schema(name) for i, name in SHIPPED_SCHEMA_FILES.items()}
        else:
            self._schemas = {int(i): _parse(s) for i, s in schemas.items()}
        self._canonical = {to_parsing_canonical_form(s): i for i, s in self._schemas.items()}

    def writer_schema(self, schema_id: int) -> Schema:
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise UnknownSchemaIdError(
                schema_id, f"schema id {schema_id} is not a shipped schema id"
            ) from None

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """The fixed id of ``schema`` (by Avro parsing canonical form); ConfigError if none."""
        found = self._canonical.get(to_parsing_canonical_form(_parse(schema)))
        if found is None:
            raise ConfigError(
                f"schema for subject {subject!r} is not one of the shipped schemas "
                f"{sorted(self._schemas)}: add it to SHIPPED_SCHEMA_FILES or use a registry"
            )
        return found


def _shipped_schema(file_name: str) -> Schema:
    if file_name == "call_event.avsc":
        return call_event_schema()
    return _as_schema(load_schema(str(SCHEMAS_DIR / file_name)))


def call_event_schema() -> Schema:
    """The parsed ``schemas/call_event.avsc`` (the reader schema of the pipeline)."""
    try:
        from pipeline.io.schemas import load_call_event_schema
    except ImportError:  # pragma: no cover - the shared helper is always shipped
        return _load_call_event_fallback()
    return load_call_event_schema()


def _load_call_event_fallback() -> Schema:
    return _as_schema(load_schema(str(SCHEMAS_DIR / "call_event.avsc")))


_NOT_IN_REGISTRY = "schema id {} is not in the schema registry"


@dataclass
class _HttpFailure:
    status: int
    error_code: int | None
    message: str


class RegistrySchemas:
    """A Confluent-compatible Schema Registry client (standard library HTTP only).

    ``url`` is the registry base URL, e.g. ``http://registry:8081`` (a ``SecretStr``
    from the settings, or a plain string); credentials in the URL
    (``http://user:secret@host:8081``) are sent as HTTP basic auth and never logged
    or quoted in an error: ``self.url`` and every message name the URL without them. Resolved schemas are cached for the life of the object (ids are
    immutable in a registry); an unknown id is remembered for ``unknown_id_ttl``
    seconds so a flood of bad messages does not hammer the registry.
    """

    def __init__(
        self, url: str | SecretStr, *, timeout: float = 10.0, unknown_id_ttl: float = 60.0
    ) -> None:
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        try:
            check_registry_url(raw)
        except ValueError as exc:  # its message never quotes the URL
            raise ConfigError(f"{exc}: expected http(s)://[user:password@]host[:port]") from None
        parts = urllib.parse.urlsplit(raw)
        host = parts.hostname or ""  # not empty: checked above
        netloc = host + (f":{parts.port}" if parts.port else "")
        if ":" in host:  # IPv6 literal
            netloc = f"[{host}]" + (f":{parts.port}" if parts.port else "")
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            secret = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        self.timeout = timeout
        self.unknown_id_ttl = unknown_id_ttl
        self._lock = threading.Lock()
        self._by_id: dict[int, Schema] = {}
        self._unknown: dict[int, float] = {}
        self._ids: dict[tuple[str, str], int] = {}

    def writer_schema(self, schema_id: int) -> Schema:
        with self._lock:
            cached = self._by_id.get(schema_id)
            expiry = self._unknown.get(schema_id)
        if cached is not None:
            return cached
        if expiry is not None and time.monotonic() < expiry:
            raise UnknownSchemaIdError(schema_id, _NOT_IN_REGISTRY.format(schema_id))
        reply = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        if isinstance(reply, _HttpFailure):
            if reply.status == 404 and reply.error_code == 40403:
                with self._lock:
                    self._unknown[schema_id] = time.monotonic() + self.unknown_id_ttl
                raise UnknownSchemaIdError(schema_id, _NOT_IN_REGISTRY.format(schema_id))
            raise self._failure("resolving schema id", reply)
        if not isinstance(reply, dict) or not isinstance(reply.get("schema"), str):
            raise SchemaRegistryError(f"schema registry {self.url}: unexpected reply for an id")
        schema_type = reply.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise DataError(
                Reason.DECODE_ERROR, f"schema id {schema_id} is {schema_type}, not AVRO"
            )
        try:
            parsed = _parse(reply["schema"])
        except Exception as exc:  # an invalid schema in the registry: this id can't decode
            raise DataError(
                Reason.DECODE_ERROR, f"schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from exc
        with self._lock:
            self._by_id[schema_id] = parsed
        return parsed

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        text = schema_json(schema)
        key = (subject, text)
        with self._lock:
            known = self._ids.get(key)
        if known is not None:
            return known
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        reply = self._request("POST", path, {"schema": text})
        if isinstance(reply, _HttpFailure):
            if reply.status in (409, 422):
                raise ConfigError(
                    f"schema registry rejected the schema for subject {subject!r}: "
                    f"HTTP {reply.status} {reply.message}"
                )
            raise self._failure(f"registering subject {subject!r}", reply)
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), int):
            raise SchemaRegistryError(f"schema registry {self.url}: unexpected reply to register")
        schema_id = int(reply["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._by_id.setdefault(schema_id, _parse(schema))
        return schema_id

    def _failure(self, what: str, reply: _HttpFailure) -> Exception:
        if reply.status in (401, 403):
            return ConfigError(
                f"schema registry {self.url} refused access ({what}): HTTP {reply.status}"
            )
        return SchemaRegistryError(
            f"schema registry {self.url} failed {what}: HTTP {reply.status} {reply.message}"
        )

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
        if data is not None:
            headers["Content-Type"] = "application/vnd.schemaregistry.v1+json"
        if self._auth:
            headers["Authorization"] = self._auth
        # The scheme was checked in __init__ (http/https only), hence the S310 waivers.
        url = self.url + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            return _http_failure(exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise SchemaRegistryError(f"schema registry {self.url} unreachable: {reason}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise SchemaRegistryError(f"schema registry {self.url}: reply is not JSON") from exc


def _http_failure(exc: urllib.error.HTTPError) -> _HttpFailure:
    code: int | None = None
    message = str(exc.reason)
    try:
        body = json.loads(exc.read() or b"{}")
        if isinstance(body, dict):
            code = body.get("error_code") if isinstance(body.get("error_code"), int) else None
            message = str(body.get("message", message))
    except (ValueError, OSError):
        pass
    finally:
        exc.close()
    return _HttpFailure(exc.code, code, message[:_MAX_DETAIL])


# ----------------------------------------------------------------------- type model

_HEADER_FIELD = "wire_header__"
_HEADER_TYPE = {"type": "fixed", "name": "wire_header__", "size": HEADER_SIZE}
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FIXED_SIZE = {"boolean": 1, "float": 4, "double": 8}


@dataclass(frozen=True, eq=False)
class _Field:
    name: str
    type: _Type
    has_default: bool
    default: Any
    aliases: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class _Type:
    kind: str  # a primitive name, enum, fixed, record, union, array, map, recursive
    logical: str | None = None
    name: str = ""
    symbols: tuple[str, ...] = ()
    size: int = 0
    fields: tuple[_Field, ...] = ()
    branches: tuple[_Type, ...] = ()

    def non_null(self) -> tuple[bool, list[_Type]]:
        """(nullable, the non-null branches) of a union, or (kind == null, [self])."""
        if self.kind == "union":
            return (
                any(b.kind == "null" for b in self.branches),
                [b for b in self.branches if b.kind != "null"],
            )
        return (self.kind == "null", [] if self.kind == "null" else [self])


def _compile(schema: Any, named: Mapping[str, Any], stack: tuple[str, ...] = ()) -> _Type:
    """Our model of a parsed fastavro schema (named references expanded)."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _Type(schema)
        if schema in stack:
            return _Type("recursive", name=schema)
        if schema not in named:
            raise ValueError(f"unknown type name {schema!r}")
        return _compile(named[schema], named, stack)
    if isinstance(schema, list):
        return _Type("union", branches=tuple(_compile(b, named, stack) for b in schema))
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if kind in _PRIMITIVES:
            return _Type(str(kind), logical=logical)
        if kind == "enum":
            return _Type("enum", name=str(schema["name"]), symbols=tuple(schema["symbols"]))
        if kind == "fixed":
            return _Type(
                "fixed", name=str(schema["name"]), size=int(schema["size"]), logical=logical
            )
        if kind in ("record", "error"):
            name = str(schema.get("name", ""))
            inner = (*stack, name)
            fields = tuple(
                _Field(
                    str(f["name"]),
                    _compile(f["type"], named, inner),
                    "default" in f,
                    f.get("default"),
                    tuple(f.get("aliases", ())),
                )
                for f in schema["fields"]
            )
            return _Type("record", name=name, fields=fields)
        if kind in ("array", "map"):
            return _Type(str(kind))
        if isinstance(kind, (str, list, Mapping)):
            return _compile(kind, named, stack)
    raise ValueError(f"not an Avro schema: {schema!r}"[:_MAX_DETAIL])


def _compile_top(schema: Schema) -> _Type:
    return _compile(schema, schema.get("__named_schemas", {}))


def _columnar_problem(t: _Type) -> str | None:
    """Why polars + the vectorized scan cannot handle ``t`` (None if they can)."""
    if t.kind in _PRIMITIVES:
        return "a null-typed field" if t.kind == "null" else None
    if t.kind in ("enum", "fixed"):
        return None
    if t.kind == "record":
        for f in t.fields:
            problem = _columnar_problem(f.type)
            if problem:
                return problem
        return None
    if t.kind == "union":
        nullable, others = t.non_null()
        if len(t.branches) == 2 and nullable and len(others) == 1:
            inner = others[0]
            if inner.kind in _PRIMITIVES or inner.kind in ("enum", "fixed"):
                return None
        return "a union other than [null, primitive|enum|fixed]"
    return f"a {t.kind} type"


def _physical(t: _Type, counter: list[int]) -> Any:
    """The schema polars reads: same binary layout, enums as long, no defaults/logical types."""
    if t.kind in _PRIMITIVES:
        return t.kind
    if t.kind == "enum":
        return "long"
    counter[0] += 1
    if t.kind == "fixed":
        return {"type": "fixed", "name": f"_fixed{counter[0]}", "size": t.size}
    if t.kind == "record":
        return {
            "type": "record",
            "name": f"_record{counter[0]}",
            "fields": [{"name": f.name, "type": _physical(f.type, counter)} for f in t.fields],
        }
    if t.kind == "union":
        return [_physical(b, counter) for b in t.branches]
    raise ValueError(f"no columnar layout for {t.kind}")


def _strip_logical(obj: Any) -> Any:
    """A schema without logical types: fastavro then returns the raw ints/bytes."""
    if isinstance(obj, Mapping):
        return {
            k: _strip_logical(v)
            for k, v in obj.items()
            if k != "logicalType" and not str(k).startswith("__")
        }
    if isinstance(obj, list):
        return [_strip_logical(v) for v in obj]
    return obj


def _relax_strings(t: Any) -> Any:
    """``t`` with every ``string`` read as ``bytes`` (same binary layout, no UTF-8 check)."""
    if t == "string":
        return "bytes"
    if isinstance(t, list):
        return [_relax_strings(b) for b in t]
    if isinstance(t, Mapping):
        kind = t.get("type")
        if kind == "string":
            return {**t, "type": "bytes"}
        if kind in ("record", "error"):
            return {**t, "fields": [{**f, "type": _relax_strings(f["type"])} for f in t["fields"]]}
        if kind == "array":
            return {**t, "items": _relax_strings(t["items"])}
        if kind == "map":
            return {**t, "values": _relax_strings(t["values"])}
        if isinstance(kind, (list, Mapping)):
            return {**t, "type": _relax_strings(kind)}
    return t  # other primitives, enums, fixed, named references


def _fastavro_layout(writer: Schema, needed: set[str]) -> Schema:
    """The schema fastavro decodes with: raw logical types; fields the reader does not use
    keep their layout but strings are not UTF-8 checked (Avro resolution skips them, and
    polars does not read them either)."""
    plain = _strip_logical(writer)
    plain["fields"] = [
        f if f["name"] in needed else {**f, "type": _relax_strings(f["type"])}
        for f in plain["fields"]
    ]
    return _as_schema(fastavro.parse_schema(plain))


# ------------------------------------------------------------------- varint helpers


def zigzag_varint(value: int) -> bytes:
    """Avro ``long`` encoding of one int (zig-zag, then base-128 varint)."""
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _varint_array(values: I64) -> pa.Array:
    """Avro ``long`` encodings of an int64 array, as a ``large_binary`` array."""
    n = len(values)
    z = ((values << 1) ^ (values >> 63)).view(np.uint64)
    sizes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        sizes += z >= np.uint64(1 << (7 * k))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    rows = np.arange(n)
    for k in range(10):
        if k:
            rows = rows[sizes[rows] > k]
            if not rows.size:
                break
        chunk = (z[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (sizes[rows] > k + 1).astype(np.uint64) << np.uint64(7)
        out[offsets[rows] + k] = (chunk | more).astype(np.uint8)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)]
    )


# ----------------------------------------------------------- vectorized datum scan


@dataclass
class _Scan:
    """Lock-step structural scan of many datums in one buffer (see module doc)."""

    buf: U8  # all message bytes, padded with 16 zero bytes
    pos: I64  # next byte of each datum
    end: I64  # end of each datum
    ok: BOOL

    def _set(self, rows: I64 | None, new_pos: I64, bad: BOOL | None = None) -> None:
        end = self.end if rows is None else self.end[rows]
        over = new_pos > end
        if bad is not None:
            over |= bad
        new_pos = np.where(over, end, new_pos)  # keep reads inside the buffer
        if rows is None:
            self.pos = new_pos
            self.ok &= ~over
        else:
            self.pos[rows] = new_pos
            self.ok[rows[over]] = False

    def varint(self, rows: I64 | None) -> I64:
        p = self.pos if rows is None else self.pos[rows]
        b = self.buf[p]
        value = (b & 0x7F).astype(np.uint64)
        length = np.ones(len(p), dtype=np.int64)
        active = np.flatnonzero(b & 0x80)
        bad = np.zeros(len(p), dtype=np.bool_)
        k = 1
        while active.size:
            if k == 10:  # more than 10 bytes: not a 64-bit varint
                bad[active] = True
                break
            b = self.buf[p[active] + k]
            if k == 9:
                bad[active[(b & 0x7E) != 0]] = True  # bits beyond 64
            value[active] |= (b & 0x7F).astype(np.uint64) << np.uint64(7 * k)
            length[active] += 1
            active = active[(b & 0x80) != 0]
            k += 1
        self._set(rows, p + length, bad)
        return (value >> np.uint64(1)).astype(np.int64) ^ -(value & np.uint64(1)).astype(np.int64)

    def skip(self, rows: I64 | None, size: I64 | int, bad: BOOL | None = None) -> None:
        p = self.pos if rows is None else self.pos[rows]
        self._set(rows, p + size, bad)

    def walk(self, t: _Type, rows: I64 | None) -> None:
        kind = t.kind
        if kind == "null":
            return
        if kind in ("string", "bytes"):
            n = self.varint(rows)
            p = self.pos if rows is None else self.pos[rows]
            end = self.end if rows is None else self.end[rows]
            bad = (n < 0) | (n > end - p)
            self.skip(rows, np.where(bad, 0, n), bad)
        elif kind == "long":
            self.varint(rows)
        elif kind == "int":
            v = self.varint(rows)
            self._flag(rows, (v < -(2**31)) | (v >= 2**31))
        elif kind in _FIXED_SIZE:
            self.skip(rows, _FIXED_SIZE[kind])
        elif kind == "fixed":
            self.skip(rows, t.size)
        elif kind == "enum":
            v = self.varint(rows)
            self._flag(rows, (v < 0) | (v >= len(t.symbols)))
        elif kind == "record":
            for f in t.fields:
                self.walk(f.type, rows)
        elif kind == "union":
            v = self.varint(rows)
            self._flag(rows, (v < 0) | (v >= len(t.branches)))
            all_rows = np.arange(len(self.pos)) if rows is None else rows
            for i, branch in enumerate(t.branches):
                if branch.kind != "null":
                    selected = all_rows[v == i]
                    if selected.size:
                        self.walk(branch, selected)
        else:  # excluded by _columnar_problem
            raise ValueError(f"cannot scan {kind}")

    def _flag(self, rows: I64 | None, bad: BOOL) -> None:
        if rows is None:
            self.ok &= ~bad
        else:
            self.ok[rows[bad]] = False


def _scan_datums(t: _Type, buf: U8, starts: I64, ends: I64) -> BOOL:
    """True for each datum ``buf[start:end]`` that is structurally a record of ``t``."""
    scan = _Scan(buf, starts.copy(), ends, np.ones(len(starts), dtype=np.bool_))
    scan.walk(t, None)
    ok: BOOL = scan.ok & (scan.pos == ends)
    return ok


# ------------------------------------------------------------------------- the plan

_READER_KINDS = {"string", "int", "long", "enum"}
#: Writer-shaped Arrow type of each writer kind (enums as their symbol strings).
_WRITER_ARROW = {
    "string": pa.large_string(),
    "enum": pa.large_string(),
    "int": pa.int32(),
    "long": pa.int64(),
}
_TS_TO_MICROS = {None: 1, "timestamp-micros": 1, "timestamp-millis": 1000, "timestamp-nanos": -1000}


@dataclass(frozen=True)
class _Column:
    """How one EVENT_SCHEMA column is filled from a writer record."""

    name: str
    arrow_type: pa.DataType
    source: str | None = None  # writer field; None -> ``default``
    default: Any = None
    scale: int = 1  # timestamps: > 0 multiply, < 0 divide (floor) to get micros


@dataclass
class _Plan:
    schema_id_hint: str
    error: str | None = None
    columns: tuple[_Column, ...] = ()
    needed: dict[str, _Type] = field(default_factory=dict)  # writer field -> base type
    fastavro_schema: Schema | None = None
    record: _Type | None = None
    columnar: bool = False
    header: bytes = b""
    sync: bytes = b""
    symbols: dict[str, pa.Array] = field(default_factory=dict)


def _reader_columns(reader: Schema) -> list[tuple[pa.Field, _Field | None, _Type | None]]:
    t = _compile_top(reader)
    if t.kind != "record":
        raise ConfigError("the reader schema must be a record")
    by_name = {f.name: f for f in t.fields}
    out: list[tuple[pa.Field, _Field | None, _Type | None]] = []
    for col in CALL_EVENT_FIELDS:
        rf = by_name.get(col.name)
        if rf is None:
            out.append((col, None, None))
            continue
        _, bases = rf.type.non_null()
        if len(bases) != 1 or bases[0].kind not in _READER_KINDS:
            raise ConfigError(f"reader field {col.name!r}: unsupported type for {col.type}")
        out.append((col, rf, bases[0]))
    return out


def _resolve_column(
    col: pa.Field, rf: _Field | None, rbase: _Type | None, writer: _Type
) -> tuple[_Column, _Type | None]:
    """How to fill ``col``; raises ValueError when the writer field cannot resolve."""
    if rf is None or rbase is None:
        return _Column(col.name, col.type), None
    names = (rf.name, *rf.aliases)
    wf = next((f for name in names for f in writer.fields if f.name == name), None)
    if wf is None:
        default = rf.default if rf.has_default else None
        if default is not None and rbase.kind == "long" and rbase.logical == "timestamp-micros":
            default = pa.scalar(int(default), pa.int64()).cast(col.type).as_py()
        return _Column(col.name, col.type, default=default), None
    _, wbases = wf.type.non_null()
    if not wbases:  # a null-only writer type
        return _Column(col.name, col.type), None
    if len(wbases) > 1:
        raise ValueError(f"field {rf.name!r}: a writer union of several types is not supported")
    wbase = wbases[0]
    promotable = {
        "string": {"string"},
        "int": {"int"},
        "long": {"int", "long"},
        "enum": {"enum"},
    }[rbase.kind]
    if wbase.kind not in promotable:
        raise ValueError(f"field {rf.name!r}: writer {wbase.kind} cannot be read as {rbase.kind}")
    scale = 1
    if rbase.logical == "timestamp-micros":
        if wbase.logical not in _TS_TO_MICROS:
            raise ValueError(f"field {rf.name!r}: writer {wbase.logical} is not a UTC timestamp")
        scale = _TS_TO_MICROS[wbase.logical]
    return _Column(col.name, col.type, source=wf.name, scale=scale), wbase


_PLANS: dict[tuple[str, str], _Plan] = {}
_PLANS_LOCK = threading.Lock()


def _plan_for(writer: Schema, reader: Schema, reader_key: str, hint: str) -> _Plan:
    key = (schema_json(writer), reader_key)
    with _PLANS_LOCK:
        plan = _PLANS.get(key)
    if plan is None:
        plan = _build_plan(writer, reader, hint)
        with _PLANS_LOCK:
            if len(_PLANS) > 256:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _build_plan(writer: Schema, reader: Schema, hint: str) -> _Plan:
    plan = _Plan(hint)
    try:
        wtype = _compile_top(writer)
        if wtype.kind != "record":
            raise ValueError("the writer schema is not a record")
        columns: list[_Column] = []
        for col, rf, rbase in _reader_columns(reader):
            column, wbase = _resolve_column(col, rf, rbase, wtype)
            columns.append(column)
            if column.source is not None and wbase is not None:
                plan.needed[column.source] = wbase
        plan.columns = tuple(columns)
        plan.fastavro_schema = _fastavro_layout(writer, set(plan.needed))
    except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException) as exc:
        plan.error = f"writer schema {hint} cannot be read as CallEvent: {exc}"[:_MAX_DETAIL]
        return plan
    plan.record = wtype
    plan.symbols = {
        name: pa.array(t.symbols, pa.large_string())
        for name, t in plan.needed.items()
        if t.kind == "enum"
    }
    problem = _columnar_problem(wtype)
    if problem is None:
        physical = _physical(wtype, [0])
        # The 5-byte wire header is read as a leading fixed field: a block body is then
        # simply the concatenation of the message values.
        physical["fields"].insert(0, {"name": _HEADER_FIELD, "type": _HEADER_TYPE})
        plan.sync = os.urandom(16)
        plan.header = _container_header(json.dumps(physical), plan.sync)
        plan.columnar = True
        problem = _probe(plan)
        plan.columnar = problem is None
    if problem:
        log.warning(
            "writer schema %s: columnar decode unavailable (%s); per message", hint, problem
        )
    return plan


def columnar_decodable(writer_schema: Schema, reader_schema: Schema | None = None) -> bool:
    """Whether :func:`decode_batch` uses the columnar path for this writer schema."""
    reader = reader_schema if reader_schema is not None else call_event_schema()
    plan = _plan_for(writer_schema, reader, schema_json(reader), "(asked)")
    return plan.error is None and plan.columnar


def _container_header(schema_text: str, sync: bytes) -> bytes:
    meta = {"avro.schema": schema_text.encode("utf-8"), "avro.codec": b"null"}
    out = bytearray(b"Obj\x01")
    out += zigzag_varint(len(meta))
    for key, value in meta.items():
        out += zigzag_varint(len(key)) + key.encode("ascii")
        out += zigzag_varint(len(value)) + value
    out += b"\x00" + sync
    return bytes(out)


def _probe(plan: _Plan) -> str | None:
    """Decode generated records both ways; a difference disables the columnar path."""
    from fastavro.utils import generate_many

    assert plan.fastavro_schema is not None
    assert plan.record is not None
    state = random.getstate()  # fastavro's generator draws from the global random module
    try:
        datums = []
        for record in generate_many(plan.fastavro_schema, 8):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, plan.fastavro_schema, record)
            datums.append(out.getvalue())
        buf = b"".join(datums)
        arr = np.frombuffer(buf + bytes(16), dtype=np.uint8)
        ends = np.cumsum([len(d) for d in datums], dtype=np.int64)
        starts = ends - np.array([len(d) for d in datums], dtype=np.int64)
        if not _scan_datums(plan.record, arr, starts, ends).all():
            return "the structural scan rejects valid datums"
        fast = _polars_block(plan, b"".join(wire_header(1) + d for d in datums), len(datums))
        slow, dead = _fastavro_rows(plan, datums)
        if dead or not fast.equals(slow):
            return "polars and fastavro disagree on sample records"
    except Exception as exc:  # polars cannot read this layout: fall back
        return f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL]
    except BaseException as exc:  # pyo3 PanicException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return f"polars panicked: {exc}"[:_MAX_DETAIL]
    finally:
        random.setstate(state)
    return None


# ------------------------------------------------------------------ block decoding


def _polars_block(plan: _Plan, body: bytes, count: int) -> pa.Table:
    """The writer-shaped table of ``count`` concatenated message values, read by polars."""
    container = b"".join(
        [plan.header, zigzag_varint(count), zigzag_varint(len(body)), body, plan.sync]
    )
    frame = pl.read_avro(io.BytesIO(container), columns=list(plan.needed) or [_HEADER_FIELD])
    if frame.height != count:
        raise ValueError(f"block of {count} datums decoded as {frame.height} records")
    if not plan.needed:
        return pa.table({})
    table = frame.select(list(plan.needed)).to_arrow()
    columns = []
    for name, t in plan.needed.items():
        col = table.column(name)
        if t.kind == "enum":
            col = pc.take(plan.symbols[name], col)
        columns.append(col.cast(_WRITER_ARROW[t.kind]))
    return pa.table(columns, names=list(plan.needed))


def _fastavro_rows(plan: _Plan, datums: Sequence[bytes]) -> tuple[pa.Table, dict[int, str]]:
    """Decode ``datums`` one by one (the authority); failures map index -> detail."""
    assert plan.fastavro_schema is not None
    records: list[dict[str, Any] | None] = []
    dead: dict[int, str] = {}
    for i, datum in enumerate(datums):
        stream = io.BytesIO(datum)
        try:
            record = fastavro.schemaless_reader(stream, plan.fastavro_schema, None)
            left = len(datum) - stream.tell()
            if left:
                raise ValueError(f"{left} trailing byte(s) after the record")
            if not isinstance(record, dict):
                raise TypeError("the datum is not a record")
            records.append(record)
        except Exception as exc:
            dead[i] = _describe(exc)
            records.append(None)
    good = [r for r in records if r is not None]
    try:
        table = _writer_table(plan, good)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        good_idx = [i for i, r in enumerate(records) if r is not None]
        kept: list[dict[str, Any]] = []
        for i in good_idx:  # isolate values Arrow refuses (e.g. an int beyond 32 bits)
            try:
                _writer_table(plan, [records[i] or {}])
                kept.append(records[i] or {})
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
                dead[i] = "a value is out of range for its Avro type"
        table = _writer_table(plan, kept)
    return table, dead


def _writer_table(plan: _Plan, records: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.table(
        [
            pa.array([r.get(name) for r in records], type=_WRITER_ARROW[t.kind])
            for name, t in plan.needed.items()
        ],
        names=list(plan.needed),
    )


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = _OBJECT_REPR.sub("", text)  # fastavro names the stream object: not stable
    return f"Avro datum does not decode: {text}"[:_MAX_DETAIL]


# ---------------------------------------------------------------------- projection


def _project(plan: _Plan, table: pa.Table) -> tuple[pa.Table, dict[int, str]]:
    """Writer-shaped rows -> the call-event columns of EVENT_SCHEMA (reader resolution)."""
    n = table.num_rows
    arrays = []
    dead: dict[int, str] = {}
    for column in plan.columns:
        if column.source is None:
            if column.default is None:
                arrays.append(pa.nulls(n, column.arrow_type))
            else:
                scalar = pa.scalar(column.default, column.arrow_type)
                arrays.append(pc.fill_null(pa.nulls(n, column.arrow_type), scalar))
            continue
        values = table.column(column.source)
        if pa.types.is_timestamp(column.arrow_type):
            values, bad = _to_micros(values, column.scale)
            for i in np.flatnonzero(bad).tolist():
                dead[i] = f"{column.name} is out of the timestamp range"
        arrays.append(values.cast(column.arrow_type))
    schema = pa.schema(list(CALL_EVENT_FIELDS))
    return pa.Table.from_arrays(arrays, schema=schema), dead


def _to_micros(values: pa.ChunkedArray | pa.Array, scale: int) -> tuple[pa.Array, BOOL]:
    values = values.cast(pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if scale == 1:
        return values, np.zeros(len(values), dtype=np.bool_)
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    raw = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if scale > 0:
        limit = np.iinfo(np.int64).max // scale
        bad = valid & (np.abs(raw) > limit)
        micros = np.where(bad, 0, raw) * scale
    else:
        bad = np.zeros(len(raw), dtype=np.bool_)
        micros = np.floor_divide(raw, -scale)
    return pa.array(micros, pa.int64(), mask=~valid), bad


# ------------------------------------------------------------------------ decoding


@dataclass(frozen=True)
class KafkaSources:
    """Where each message of a batch came from (parallel to the values)."""

    topics: str | Sequence[str]  # one topic for the whole batch, or one per message
    partitions: Sequence[int] | npt.NDArray[np.integer[Any]]
    offsets: Sequence[int] | npt.NDArray[np.integer[Any]]

    def arrays(self, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
        if isinstance(self.topics, str):
            topics = pc.fill_null(pa.nulls(n, pa.string()), self.topics)
        else:
            topics = pa.array(self.topics, pa.string())
        partitions = pa.array(self.partitions, pa.int32())
        offsets = pa.array(self.offsets, pa.int64())
        if not len(topics) == len(partitions) == len(offsets) == n:
            raise ValueError(f"sources do not match the {n} message values")
        return topics, partitions, offsets


class KafkaMessage(Protocol):
    """The part of ``confluent_kafka.Message`` used here."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


@dataclass
class _Outcome:
    pieces: list[tuple[I64, pa.Table]] = field(default_factory=list)
    dead_rows: list[int] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    dead_details: list[str] = field(default_factory=list)
    dead_ids: dict[int, tuple[str | None, int | None]] = field(default_factory=dict)

    def dead(self, rows: Sequence[int] | I64, reason: str, detail: str) -> None:
        rows = [int(r) for r in rows]
        self.dead_rows.extend(rows)
        self.dead_reasons.extend([str(reason)] * len(rows))
        self.dead_details.extend([detail[:_MAX_DETAIL]] * len(rows))


def decode_messages(
    messages: Sequence[KafkaMessage],
    resolver: SchemaResolver,
    reader_schema: Schema | None = None,
    *,
    columnar: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """:func:`decode_batch` over consumed ``confluent_kafka`` messages (without errors)."""
    sources = KafkaSources(
        [m.topic() or "" for m in messages],
        [m.partition() or 0 for m in messages],
        [m.offset() or 0 for m in messages],
    )
    return decode_batch(
        [m.value() for m in messages],
        sources,
        resolver,
        reader_schema,
        keys=[m.key() for m in messages],
        columnar=columnar,
    )


def decode_batch(
    values: Sequence[bytes | None],
    sources: KafkaSources,
    resolver: SchemaResolver,
    reader_schema: Schema | None = None,
    *,
    keys: Sequence[bytes | str | None] | None = None,
    columnar: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """Decode wire-format message values into (events, dead letters).

    ``events`` follows :data:`EVENT_SCHEMA` (source_topic/partition/offset filled,
    ``payload`` = the raw value) in input order; ``dead letters`` follows
    :data:`DEAD_LETTER_SCHEMA`, one row per bad message, in input order. ``keys``
    (the message keys, i.e. call ids) name the call in dead letters of messages
    whose datum could not be read. ``columnar=False`` decodes every message with
    fastavro (the reference path; same result, slower). Bad messages never raise;
    :class:`~pipeline.errors.InfrastructureError` means the resolver could not answer
    (retry the batch), :class:`~pipeline.errors.ConfigError` a misconfiguration.
    """
    n = len(values)
    reader = reader_schema if reader_schema is not None else call_event_schema()
    reader_key = schema_json(reader)
    topics, partitions, offsets = sources.arrays(n)
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} message values")

    try:
        lengths = np.fromiter(map(len, values), np.int64, n)  # type: ignore[arg-type]
    except TypeError:  # a None (tombstone) among the values
        lengths = np.fromiter((-1 if v is None else len(v) for v in values), np.int64, n)
    joined = b"".join([v for v in values if v is not None])
    buf = np.frombuffer(joined + bytes(16), dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(np.maximum(lengths, 0)[:-1], out=starts[1:])
    ends = starts + np.maximum(lengths, 0)

    out = _Outcome()
    framed = lengths >= HEADER_SIZE
    magic = np.where(lengths >= 1, buf[np.minimum(starts, len(buf) - 1)], -1)
    for i in np.flatnonzero(~framed | (magic != MAGIC_BYTE)).tolist():
        out.dead([i], Reason.BAD_MAGIC_BYTE, _framing_problem(int(lengths[i]), int(magic[i])))
    good = np.flatnonzero(framed & (magic == MAGIC_BYTE))
    head = starts[good]
    ids_u32 = (
        (buf[head + 1].astype(np.int64) << 24)
        | (buf[head + 2].astype(np.int64) << 16)
        | (buf[head + 3].astype(np.int64) << 8)
        | buf[head + 4].astype(np.int64)
    )
    ids = np.where(ids_u32 >= 2**31, ids_u32 - 2**32, ids_u32)

    for schema_id in np.unique(ids).tolist():
        rows = good[ids == schema_id]
        try:
            writer = resolver.writer_schema(int(schema_id))
        except DataError as exc:
            out.dead(rows, exc.reason, exc.detail)
            continue
        plan = _plan_for(writer, reader, reader_key, f"id {schema_id}")
        if plan.error:
            out.dead(rows, Reason.DECODE_ERROR, plan.error)
            continue
        d_starts, d_ends = starts[rows] + HEADER_SIZE, ends[rows]
        if columnar and plan.columnar:
            assert plan.record is not None
            ok = _scan_datums(plan.record, buf, d_starts, d_ends)
            slow = rows[~ok]
            blocks, failed = _columnar(plan, values, rows[ok], joined)
            for block_rows, table in blocks:
                _add(out, plan, block_rows, table)
            slow = np.sort(np.concatenate([slow, *failed])) if failed else slow
        else:
            slow = rows
        if slow.size:
            table, dead = _fastavro_rows(plan, _datums(values, slow))
            for local, detail in dead.items():
                out.dead([int(slow[local])], Reason.DECODE_ERROR, detail)
            keep = np.array([i for i in range(len(slow)) if i not in dead], dtype=np.int64)
            _add(out, plan, slow[keep] if keep.size else keep, table)

    return _assemble(out, n, values, keys, topics, partitions, offsets)


def _framing_problem(length: int, magic: int) -> str:
    if length < 0:
        return "null message value (tombstone): not the Confluent wire format"
    if length == 0:
        return "empty message value: not the Confluent wire format"
    if magic != MAGIC_BYTE:
        return f"magic byte 0x{magic:02x}, expected 0x00: not the Confluent wire format"
    return f"{length}-byte value is shorter than the 5-byte wire-format header"


def _datums(values: Sequence[bytes | None], rows: I64) -> list[bytes]:
    """The Avro datums (message values without their header) of ``rows``."""
    return [values[i][HEADER_SIZE:] for i in rows.tolist()]


def _columnar(
    plan: _Plan, values: Sequence[bytes | None], rows: I64, whole: bytes
) -> tuple[list[tuple[I64, pa.Table]], list[I64]]:
    """Decode ``rows`` with polars, bisecting failed blocks; small failed blocks are returned."""
    done: list[tuple[I64, pa.Table]] = []
    failed: list[I64] = []
    pending = [rows] if rows.size else []
    while pending:
        block = pending.pop()
        try:
            body = (
                whole
                if len(block) == len(values)
                else b"".join([values[i] for i in block.tolist()])
            )
            done.append((block, _polars_block(plan, body, len(block))))
            continue
        except Exception as exc:
            problem: BaseException = exc
        except BaseException as exc:  # pyo3 PanicException derives from BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            problem = exc
        log.debug("polars failed on a block of %d datums (%s)", len(block), type(problem).__name__)
        if len(block) <= _BISECT_MIN:
            failed.append(block)
        else:
            half = len(block) // 2
            pending += [block[half:], block[:half]]
    return done, failed


def _add(out: _Outcome, plan: _Plan, rows: I64, writer_table: pa.Table) -> None:
    if not len(rows):
        return
    if writer_table.num_columns == 0:
        writer_table = pa.table({"_": pa.nulls(len(rows))})
    projected, dead = _project(plan, writer_table)
    if dead:
        bad = np.zeros(len(rows), dtype=np.bool_)
        for local, detail in dead.items():
            bad[local] = True
            out.dead([int(rows[local])], Reason.DECODE_ERROR, detail)
            call_id = projected.column("call_id")[local].as_py()
            revision = projected.column("revision")[local].as_py()
            out.dead_ids[int(rows[local])] = (call_id, revision)
        projected = projected.filter(pa.array(~bad))
        rows = rows[~bad]
    out.pieces.append((rows, projected))


def _key_text(key: bytes | str | None) -> str | None:
    if key is None or isinstance(key, str):
        return key
    try:
        return bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _assemble(
    out: _Outcome,
    n: int,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | str | None] | None,
    topics: pa.Array,
    partitions: pa.Array,
    offsets: pa.Array,
) -> tuple[pa.Table, pa.Table]:
    payload = pa.array(values, pa.binary())

    if out.pieces:
        order_rows = np.concatenate([rows for rows, _ in out.pieces])
        table = pa.concat_tables([t for _, t in out.pieces])
        order = np.argsort(order_rows, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            table = table.take(pa.array(order))
        rows = order_rows[order]
    else:
        table = pa.schema(list(CALL_EVENT_FIELDS)).empty_table()
        rows = np.zeros(0, dtype=np.int64)
    m = len(rows)
    everything = m == n  # rows are unique and sorted: all of them, in order

    def pick(array: pa.Array) -> pa.Array:
        return array if everything else array.take(pa.array(rows))

    events = pa.Table.from_arrays(
        [
            *table.columns,
            pick(topics),
            pick(partitions),
            pick(offsets),
            pa.nulls(m, pa.string()),
            pa.nulls(m, pa.int64()),
            pick(payload),
        ],
        schema=EVENT_SCHEMA,
    )

    order = np.argsort(np.array(out.dead_rows, dtype=np.int64), kind="stable")
    dead_rows = [out.dead_rows[i] for i in order]
    call_ids: list[str | None] = []
    revisions: list[int | None] = []
    for r in dead_rows:
        call_id, revision = out.dead_ids.get(r, (None, None))
        if call_id is None and keys is not None:
            call_id = _key_text(keys[r])
        call_ids.append(call_id)
        revisions.append(revision)
    taken = pa.array(dead_rows, pa.int64())
    k = len(dead_rows)
    dead_letters = pa.Table.from_arrays(
        [
            pa.array([out.dead_reasons[i] for i in order], pa.string()),
            pa.array([out.dead_details[i] for i in order], pa.string()),
            pa.array(call_ids, pa.string()),
            pa.array(revisions, pa.int32()),
            topics.take(taken),
            partitions.take(taken),
            offsets.take(taken),
            pa.nulls(k, pa.string()),
            pa.nulls(k, pa.int64()),
            payload.take(taken),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
    return events, dead_letters


# ------------------------------------------------------------------------ encoding


def wire_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header for ``schema_id``."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} out of range")
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big")


def encode(record: Mapping[str, Any], schema_id: int, parsed_schema: Schema) -> bytes:
    """One record in the Confluent wire format (header + schemaless Avro datum)."""
    out = io.BytesIO()
    out.write(wire_header(schema_id))
    fastavro.schemaless_writer(out, parsed_schema, dict(record))
    return out.getvalue()


_Encoder = Callable[[pa.RecordBatch, bytes], list[bytes]]
_ENCODERS: dict[str, _Encoder | None] = {}


def encode_table(
    events: pa.Table, schema_id: int, parsed_schema: Schema | None = None
) -> list[bytes]:
    """Encode each row of ``events`` (e.g. EVENT_SCHEMA; extra columns ignored).

    ``parsed_schema`` defaults to the shipped ``CallEvent`` schema and must be the
    schema registered under ``schema_id``. Flat record schemas (strings, ints,
    longs, enums, ``[null, T]`` unions) are encoded column-wise with Arrow; others
    row by row with fastavro. A column missing from ``events`` takes the field
    default; ValueError if it has none, or if a required value is null or an enum
    value is not a symbol (the message names row and field, never the value).
    """
    schema = parsed_schema if parsed_schema is not None else call_event_schema()
    header = wire_header(schema_id)
    key = schema_json(schema)
    if key not in _ENCODERS:
        _ENCODERS[key] = _column_encoder(_compile_top(schema))
    encoder = _ENCODERS[key]
    if encoder is None:
        return _encode_rows(events, header, schema)
    if any(column.num_chunks > 1 for column in events.columns):
        events = events.combine_chunks()  # small chunks would cost per-batch overhead
    out: list[bytes] = []
    for batch in events.to_batches(max_chunksize=1 << 18):
        try:
            out.extend(encoder(batch, header))
        except _RowError as exc:
            raise ValueError(f"row {len(out) + exc.row}: {exc.problem}") from None
    return out


class _RowError(ValueError):
    def __init__(self, row: int, problem: str) -> None:
        super().__init__(f"row {row}: {problem}")
        self.row = row
        self.problem = problem


def _encode_rows(events: pa.Table, header: bytes, schema: Schema) -> list[bytes]:
    names = [c for c in (f["name"] for f in schema["fields"]) if c in events.column_names]
    out = []
    for row in events.select(names).to_pylist():
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, schema, row)
        out.append(buf.getvalue())
    return out


_ENCODABLE = {"string", "int", "long", "enum"}


def _column_encoder(record: _Type) -> _Encoder | None:
    if record.kind != "record":
        return None
    for f in record.fields:
        nullable, bases = f.type.non_null()
        ok_union = f.type.kind != "union" or (len(f.type.branches) == 2 and nullable)
        if not ok_union or len(bases) != 1 or bases[0].kind not in _ENCODABLE:
            return None

    def encode_batch(batch: pa.RecordBatch, header: bytes) -> list[bytes]:
        n = batch.num_rows
        parts = [pa.scalar(header, pa.large_binary())]
        for f in record.fields:
            parts.append(_encode_field(f, batch, n))
        parts.append(pa.scalar(b"", pa.large_binary()))
        joined = pc.binary_join_element_wise(*parts)
        result: list[bytes] = joined.to_pylist()
        return result

    return encode_batch


def _encode_field(f: _Field, batch: pa.RecordBatch, n: int) -> pa.Array:
    nullable, (base,) = f.type.non_null()
    if f.name in batch.schema.names:
        column = batch.column(f.name)
    elif f.has_default:
        column = pa.array([f.default] * n)
    else:
        raise ValueError(f"column {f.name!r} is missing and has no default")
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not nullable and not valid.all():
        raise _RowError(int(np.argmin(valid)), f"field {f.name!r} is null")
    encoded = _encode_values(f.name, base, column, valid)
    if f.type.kind != "union":
        return encoded
    null_index = next(i for i, b in enumerate(f.type.branches) if b.kind == "null")
    prefix = pa.scalar(zigzag_varint(1 - null_index), pa.large_binary())
    empty = pa.scalar(b"", pa.large_binary())
    with_branch = pc.binary_join_element_wise(prefix, encoded, empty)
    return pc.if_else(
        pa.array(valid), with_branch, pa.scalar(zigzag_varint(null_index), pa.large_binary())
    )


def _encode_values(name: str, base: _Type, column: pa.Array, valid: BOOL) -> pa.Array:
    if base.kind == "string":
        data = column.cast(pa.large_string()).cast(pa.large_binary())
        lengths = pc.binary_length(data).fill_null(0).to_numpy(zero_copy_only=False)
        empty = pa.scalar(b"", pa.large_binary())
        return pc.binary_join_element_wise(
            _varint_array(np.asarray(lengths, np.int64)), data.fill_null(b""), empty
        )
    if base.kind == "enum":
        index = pc.index_in(column.cast(pa.string()), value_set=pa.array(base.symbols, pa.string()))
        unknown = valid & ~np.asarray(index.is_valid().to_numpy(zero_copy_only=False), np.bool_)
        if unknown.any():
            raise _RowError(
                int(np.argmax(unknown)), f"field {name!r} is not a symbol of {base.name}"
            )
        raw = np.asarray(index.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        return _varint_array(raw)
    try:
        if pa.types.is_timestamp(column.type):
            unit = {"timestamp-millis": "ms", "timestamp-nanos": "ns"}.get(base.logical or "", "us")
            column = column.cast(pa.timestamp(unit, "UTC"))
        ints = column.cast(pa.int32() if base.kind == "int" else pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # No chained exception: Arrow's message would carry the value.
        raise ValueError(f"field {name!r}: a value does not fit Avro {base.kind}") from None
    raw = np.asarray(ints.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    return _varint_array(raw)
