"""Reference data in Redis: the key layout, the Lua scripts and the shared plumbing.

What the loader (:mod:`pipeline.refdata.redis_load`) and the reader
(:mod:`pipeline.refdata.redis_read`) must agree on lives here: key names
(:class:`Keys`), how each table maps to a hash (:data:`LAYOUTS`, :data:`SEP`), the
read scripts, and how redis-py errors become
:class:`~pipeline.errors.ReferenceStoreError` (:func:`redis_errors`).

Key layout (``ns`` defaults to ``cdr:ref``; ``V`` is the content version of the
directory, :func:`pipeline.refdata.files.reference_version`, so files and Redis agree):

==========================  ======  ==================================================
key                         type    content
==========================  ======  ==================================================
``ns:current``              string  the version readers use
``ns:versions``             set     versions whose keys may exist (for clean-up)
``ns:load-lock``            string  held by the one loader running (expires)
``ns:v:V:npa``              hash    npa -> ``region|state``
``ns:v:V:npanxx``           hash    prefix -> ``ocn|state|rate_center``
``ns:v:V:ocn``              hash    ocn -> ``category|carrier_name``
``ns:v:V:lnp``              hash    tn -> ``ocn|lrn``
``ns:v:V:accounts``         hash    account_id ->
                                    ``tariff_id|enforce_minute_cap|toll_free_flat_per_min``
``ns:v:V:blocklist``        hash    prefix -> reason
``ns:v:V:arrow:T``          string  table ``T`` (one of the hash names above) as an
                                    Arrow IPC stream (zstd), for bulk reads
``ns:v:V:meta``             hash    row count per table, ``loaded_at``
==========================  ======  ==================================================

The hashes serve point lookups (the streaming path asks ``lnp`` per batch) and
operators (``HGET cdr:ref:v:V:npa 907``). In a hash value only the last field is free
text; the fields before it are validated codes that cannot contain ``|``. The Arrow
copies serve whole-table reads
(:meth:`~pipeline.refdata.redis_read.RedisReferenceReader.snapshot`,
:func:`~pipeline.refdata.redis_read.read_tables_from_redis`): one ``GET`` instead of
parsing millions of hash fields in Python.

Scripts touch keys derived from ``ns:current``, so this needs a standalone Redis (or
one shard), not Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from pipeline.errors import ReferenceStoreError

DEFAULT_NAMESPACE = "cdr:ref"
SEP = "|"
#: Fields per HMGET inside the Lua script (Lua's ``unpack`` has a stack limit).
_LUA_HMGET_CHUNK = 4000


@dataclass(frozen=True)
class Layout:
    """How one reference table maps to Redis."""

    table: str  # key of REFERENCE_FILES
    name: str  # Redis key suffix
    key: str  # column used as the hash field
    values: tuple[str, ...]  # columns joined with SEP into the hash value (last: free text)


LAYOUTS: tuple[Layout, ...] = (
    Layout("npa_regions", "npa", "npa", ("region", "state")),
    Layout("npanxx", "npanxx", "prefix", ("ocn", "state", "rate_center")),
    Layout("ocn", "ocn", "ocn", ("category", "carrier_name")),
    Layout("lnp", "lnp", "tn", ("ocn", "lrn")),
    Layout(
        "accounts",
        "accounts",
        "account_id",
        ("tariff_id", "enforce_minute_cap", "toll_free_flat_per_min"),
    ),
    Layout("blocklist", "blocklist", "prefix", ("reason",)),
)


@dataclass(frozen=True)
class Keys:
    """Key names of one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def current(self) -> str:
        return f"{self.namespace}:current"

    @property
    def versions(self) -> str:
        return f"{self.namespace}:versions"

    @property
    def lock(self) -> str:
        return f"{self.namespace}:load-lock"

    @property
    def version_prefix(self) -> str:
        return f"{self.namespace}:v:"

    def table(self, version: str, name: str) -> str:
        """The hash of table ``name`` (``npa``, ``npanxx``, ``ocn``, ``lnp``...)."""
        return f"{self.namespace}:v:{version}:{name}"

    def arrow(self, version: str, name: str) -> str:
        """The Arrow IPC copy of table ``name``."""
        return f"{self.namespace}:v:{version}:arrow:{name}"

    def meta(self, version: str) -> str:
        return f"{self.namespace}:v:{version}:meta"

    def all_of(self, version: str) -> list[str]:
        """Every key of one version."""
        return [
            *(self.table(version, layout.name) for layout in LAYOUTS),
            *(self.arrow(version, layout.name) for layout in LAYOUTS),
            self.meta(version),
        ]


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Translate redis-py exceptions into :class:`ReferenceStoreError`."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ReferenceStoreError(f"Redis unreachable while {what}: {exc}") from exc
    except redis.RedisError as exc:
        raise ReferenceStoreError(f"Redis refused {what}: {exc}") from exc


def connect(url: str, *, timeout: float = 10.0) -> redis.Redis:
    """A synchronous client for ``url`` (``redis://[:password@]host:port/db``).

    No connection is made until the first command.
    """
    try:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise ReferenceStoreError(f"bad Redis URL: {exc}") from exc


#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":lnp", ARGV[3..] numbers.
#: Returns {version, {ocn or false, ...}}, or false when nothing is loaded.
LOOKUP_LNP = f"""
local version = redis.call('GET', KEYS[1])
if not version then return false end
local key = ARGV[1] .. version .. ARGV[2]
local out = {{}}
local n = #ARGV
local i = 3
while i <= n do
  local j = math.min(i + {_LUA_HMGET_CHUNK - 1}, n)
  local part = redis.call('HMGET', key, unpack(ARGV, i, j))
  for k = 1, j - i + 1 do
    local v = part[k]
    if v then
      local bar = string.find(v, '{SEP}', 1, true)
      if bar then v = string.sub(v, 1, bar - 1) end
    end
    out[#out + 1] = v
  end
  i = j + 1
end
return {{version, out}}
"""

#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":lnp", ARGV[3] the numbers packed as
#: 10-digit ASCII with no separator. Returns {version, "ocn,,ocn,..."} (empty = not
#: ported), or false when nothing is loaded. One argument and one reply string
#: instead of one RESP element per number each way.
LOOKUP_LNP_PACKED = f"""
local version = redis.call('GET', KEYS[1])
if not version then return false end
local key = ARGV[1] .. version .. ARGV[2]
local s = ARGV[3]
local out = {{}}
local n = #s / 10
local i = 0
while i < n do
  local j = math.min(i + {_LUA_HMGET_CHUNK}, n)
  local fields = {{}}
  for k = i, j - 1 do fields[#fields + 1] = string.sub(s, k * 10 + 1, k * 10 + 10) end
  local part = redis.call('HMGET', key, unpack(fields))
  for k = 1, #fields do
    local v = part[k]
    if v then
      local bar = string.find(v, '{SEP}', 1, true)
      if bar then v = string.sub(v, 1, bar - 1) end
      out[#out + 1] = v
    else
      out[#out + 1] = ''
    end
  end
  i = j
end
return {{version, table.concat(out, ',')}}
"""

#: KEYS[1] current; ARGV[1] "ns:v:", ARGV[2] ":arrow:", ARGV[3..] table names.
#: Returns {version, blob or false, ...}, or false when nothing is loaded.
READ_TABLES = """
local version = redis.call('GET', KEYS[1])
if not version then return false end
local out = {version}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('GET', ARGV[1] .. version .. ARGV[2] .. ARGV[i])
end
return out
"""


def as_text(value: object) -> str:
    """A Redis reply (bytes from a ``decode_responses=False`` client) as ``str``."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def as_text_or_none(value: object) -> str | None:
    """:func:`as_text`, keeping a missing reply (None) as None."""
    return None if value is None else as_text(value)
