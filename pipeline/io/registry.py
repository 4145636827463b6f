"""Schema ids of the Kafka wire format: where consumers find writer schemas.

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
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fastavro.schema import load_schema, to_parsing_canonical_form
from pydantic import SecretStr

from pipeline.avro.schemas import SCHEMAS_DIR, load_call_event_schema
from pipeline.avro.types import MAX_DETAIL, Schema, as_schema, parse, schema_json
from pipeline.errors import ConfigError, DataError, InfrastructureError
from pipeline.rating.codes import Reason
from pipeline.settings import check_registry_url

#: Id of ``schemas/call_event.avsc`` in :class:`ShippedSchemas`.
CALL_EVENT_SCHEMA_ID = 1
#: The fixed id table of :class:`ShippedSchemas` (never renumber; append new versions).
SHIPPED_SCHEMA_FILES: Mapping[int, str] = {CALL_EVENT_SCHEMA_ID: "call_event.avsc"}


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


class ShippedSchemas:
    """Schemas under fixed ids, without a registry (see the id table in the module doc).

    ``schemas`` overrides the table (tests, or a deployment pinning extra versions).
    """

    def __init__(self, schemas: Mapping[int, Mapping[str, Any] | str] | None = None) -> None:
        if schemas is None:
            self._schemas = {i: _shipped_schema(name) for i, name in SHIPPED_SCHEMA_FILES.items()}
        else:
            self._schemas = {int(i): parse(s) for i, s in schemas.items()}
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
        found = self._canonical.get(to_parsing_canonical_form(parse(schema)))
        if found is None:
            raise ConfigError(
                f"schema for subject {subject!r} is not one of the shipped schemas "
                f"{sorted(self._schemas)}: add it to SHIPPED_SCHEMA_FILES or use a registry"
            )
        return found


def _shipped_schema(file_name: str) -> Schema:
    if file_name == "call_event.avsc":
        return call_event_schema()
    return as_schema(load_schema(str(SCHEMAS_DIR / file_name)))


def call_event_schema() -> Schema:
    """The parsed ``schemas/call_event.avsc`` (the reader schema of the pipeline)."""
    return load_call_event_schema()


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
    or quoted in an error: ``self.url`` and every message name the URL without them.
    Resolved schemas are cached for the life of the object (ids are immutable in a
    registry); an unknown id is remembered for ``unknown_id_ttl`` seconds so a flood
    of bad messages does not hammer the registry.
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
            parsed = parse(reply["schema"])
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
            self._by_id.setdefault(schema_id, parse(schema))
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
    return _HttpFailure(exc.code, code, message[:MAX_DETAIL])
