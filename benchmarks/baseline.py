"""A deliberately straightforward per-record rating of R1-R11: benchmark baseline and oracle.

Written from ``shared/spec/rating.md`` alone, independently of :mod:`pipeline.rating`:
plain Python, :class:`~decimal.Decimal` money, one dict per event, reference data in
plain dicts read from the CSV files with the :mod:`csv` module. It imports nothing of
the vectorized core; only the validated tariff objects
(:class:`~pipeline.rating.tariffs.TariffBook`, :meth:`Tariff.version_at` for R11) are
shared, because parsing YAML is not what is under test.

Two uses:

* **Oracle** (``tests/unit/test_baseline_agrees.py``): :func:`rate_event` over the same
  events as :func:`pipeline.rating.rate.rate_batch`; every field must agree.
* **Baseline** (``benchmarks/bench_streaming.py``): :func:`run_baseline_consumer` is
  the consumer a straightforward implementation would be: per message a fastavro
  ``schemaless_reader``, :func:`rate_event`, one Redis ``HGET`` per NANP origin number
  (:class:`RedisLnp`), and Parquet written from lists of dicts.

Where the spec is silent, this file follows the decisions the project wrote down in
``docs/decisions.md`` (so that a disagreement means a bug, not a taste), each marked
``[decision]`` here:

* required fields (R1): call_id, account_id, trunk_id, direction, called_number,
  start_time, duration_ms, disposition; an empty string counts as missing;
* an enum field holding a symbol outside its Avro symbols is ``INVALID_VALUE``;
  a leg longer than 7 days is ``IMPLAUSIBLE_DURATION``; a start_time before the
  account tariff's first version is ``NO_TARIFF_IN_EFFECT``;
* several R1 causes: the first in the order missing field, invalid value, negative
  duration, implausible duration, malformed called number, unknown account, no tariff;
* non-billable records (R2) carry rate 0, jurisdiction null, and still get
  origin/destination/increment class and the ORIGIN_UNKNOWN / FRAUD_SUSPECT flags;
* SHORT_CALL needs a billable call (ANSWERED and duration_ms > 0; an answered 0 ms
  leg is not a completed call, as C2 counts them);
* the jurisdiction of a leg to a non-US destination is ``INTERNATIONAL``; of a leg to
  a toll-free number null; a foreign origin "counts as another state" (a known state),
  so only an unknown destination state makes it INDETERMINATE;
* FRAUD_SUSPECT: the calling number, the called number, or the origin R6 uses (the
  original caller of a FORWARDED leg) matches a blocklist prefix; only well-formed
  numbers are matched.
* optional string fields (calling_number, original_calling_number, ani_ii, switch_id)
  holding ``""`` are absent like null (the spec's R1) and the record stores null;
* an ani_ii that is not exactly two ASCII digits is ignored by R8, stored as null and
  flagged ANI_II_INVALID.

Phone numbers are never logged or put into exception messages here.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pipeline.rating.tariffs import TariffBook, TariffVersion

#: ``^\+[1-9][0-9]{7,14}$``, and a ``+1`` number has exactly 10 digits after the ``+1``.
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
TOLL_FREE_NPAS = frozenset({"800", "833", "844", "855", "866", "877", "888"})
US_REGIONS = frozenset(
    {"US48", "ALASKA", "HAWAII", "PUERTO_RICO", "USVI", "GUAM", "CNMI", "AMERICAN_SAMOA"}
)
REQUIRED = (
    "call_id", "account_id", "trunk_id", "direction", "called_number",
    "start_time", "duration_ms", "disposition",
)  # fmt: skip
ENUM_SYMBOLS: Mapping[str, frozenset[str]] = {
    "direction": frozenset({"INBOUND", "OUTBOUND"}),
    "leg": frozenset({"ORIGINAL", "FORWARDED"}),
    "disposition": frozenset({"ANSWERED", "BUSY", "NO_ANSWER", "FAILED", "CANCELLED"}),
}
#: Optional string fields: ``""`` in one of them is absent (R1).
OPTIONAL_STRINGS = ("calling_number", "original_calling_number", "ani_ii", "switch_id")
#: [decision] R8: a usable ANI II is two ASCII digits.
_ANI_II = re.compile(r"[0-9]{2}", re.ASCII)
#: [decision] R1: a leg longer than this is a switch error (``IMPLAUSIBLE_DURATION``).
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
MICRO = Decimal("0.000001")
ZERO = Decimal("0.000000")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The rated fields the oracle produces (a subset of RATED_SCHEMA).
RATED_FIELDS = (
    "call_id", "revision", "account_id", "leg", "calling_number", "original_calling_number",
    "ani_ii", "switch_id", "billing_cycle", "call_class",
    "origin_region", "origin_state", "origin_ocn", "origin_carrier_category",
    "destination_region", "destination_state", "jurisdiction", "increment_class",
    "billable_seconds", "rate_per_min", "usage_charge", "surcharge", "total_charge",
    "tariff_id", "tariff_version", "flags",
)  # fmt: skip

#: 10-digit NANP number -> OCN of the ported number, or None.
LnpLookup = Callable[[str], str | None]


# ------------------------------------------------------------------ reference data
@dataclass(frozen=True)
class Account:
    tariff_id: str
    toll_free_flat: Decimal | None


@dataclass(frozen=True)
class Refs:
    """The small reference tables as plain dicts (LNP is looked up separately)."""

    npa: dict[str, tuple[str, str]]  # npa -> (region, state)
    npanxx: dict[str, tuple[str, str]]  # 6- or 7-digit prefix -> (ocn, state)
    ocn_category: dict[str, str]
    accounts: dict[str, Account]
    blocklist: frozenset[str]
    blocklist_lengths: tuple[int, ...]


def _rows(path: Path) -> Iterable[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def load_refs(directory: Path) -> Refs:
    """Read a reference directory (spec section 2) into dicts (no LNP)."""
    blocklist = frozenset(r["prefix"] for r in _rows(directory / "blocklist.csv"))
    accounts = {}
    for r in _rows(directory / "accounts.csv"):
        flat = r["toll_free_flat_per_min"].strip()
        accounts[r["account_id"]] = Account(r["tariff_id"], Decimal(flat) if flat else None)
    return Refs(
        npa={r["npa"]: (r["region"], r["state"]) for r in _rows(directory / "npa_regions.csv")},
        npanxx={r["prefix"]: (r["ocn"], r["state"]) for r in _rows(directory / "npanxx.csv")},
        ocn_category={r["ocn"]: r["category"] for r in _rows(directory / "ocn.csv")},
        accounts=accounts,
        blocklist=blocklist,
        blocklist_lengths=tuple(sorted({len(p) for p in blocklist})),
    )


def load_lnp_dict(directory: Path) -> dict[str, str]:
    """``lnp.csv`` as ``tn -> ocn`` (for the in-memory oracle)."""
    return {r["tn"]: r["ocn"] for r in _rows(directory / "lnp.csv")}


class RedisLnp:
    """LNP by one ``HGET {ns}:v:{version}:lnp <tn>`` per number (value ``ocn|lrn``).

    The version is the one current when the object is made (``GET {ns}:current``).
    """

    def __init__(self, client: Any, namespace: str = "cdr:ref") -> None:
        version = client.get(f"{namespace}:current")
        if version is None:
            raise RuntimeError(f"no reference data loaded under {namespace!r}")
        text = version.decode() if isinstance(version, bytes) else str(version)
        self.key = f"{namespace}:v:{text}:lnp"
        self.version = text
        self._client = client
        self.calls = 0

    def __call__(self, tn: str) -> str | None:
        self.calls += 1
        value = self._client.hget(self.key, tn)
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.split("|", 1)[0]


# ------------------------------------------------------------------ numbers
@dataclass(frozen=True)
class Number:
    """One parsed number. ``digits`` is None unless well-formed."""

    present: bool
    digits: str | None  # E.164 digits without '+'

    @property
    def nanp(self) -> bool:
        return self.digits is not None and self.digits.startswith("1")

    @property
    def national(self) -> str:
        assert self.digits is not None
        return self.digits[1:]


def parse_number(value: object) -> Number:
    """Well-formed: ``^\\+[1-9][0-9]{7,14}$`` and +1 numbers have 10 digits after +1."""
    if value is None:
        return Number(False, None)
    text = str(value)
    if not _E164.fullmatch(text):
        return Number(True, None)
    digits = text[1:]
    if digits.startswith("1") and len(digits) != 11:
        return Number(True, None)
    return Number(True, digits)


def region_of(num: Number, refs: Refs) -> str:
    """R-REGION."""
    if num.digits is None:
        return "UNKNOWN"
    if num.nanp:
        return refs.npa.get(num.national[:3], ("UNKNOWN", ""))[0]
    if num.digits.startswith("52"):
        return "MEXICO"
    return "INTERNATIONAL"


def state_of(num: Number, refs: Refs) -> str | None:
    """npanxx (7 then 6 digits), else npa_regions; None for non-NANP or unknown."""
    if not num.nanp:
        return None
    nat = num.national
    for prefix in (nat[:7], nat[:6]):
        hit = refs.npanxx.get(prefix)
        if hit is not None and hit[1]:
            return hit[1]
    npa = refs.npa.get(nat[:3])
    return npa[1] if npa and npa[1] else None


def carrier_of(num: Number, refs: Refs, lnp: LnpLookup) -> tuple[str | None, str]:
    """R-CARRIER: (ocn, category); LNP, then the 7-digit block, then NPA-NXX."""
    if not num.nanp:
        return None, "UNKNOWN"
    nat = num.national
    ocn = lnp(nat)
    if ocn is None:
        for prefix in (nat[:7], nat[:6]):
            hit = refs.npanxx.get(prefix)
            if hit is not None:
                ocn = hit[0]
                break
    if ocn is None:
        return None, "UNKNOWN"
    return ocn, refs.ocn_category.get(ocn, "UNKNOWN")


def blocklisted(num: Number, refs: Refs) -> bool:
    if num.digits is None:
        return False
    return any(num.digits[:n] in refs.blocklist for n in refs.blocklist_lengths)


# ------------------------------------------------------------------ rating
@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str


def _money(value: Decimal) -> Decimal:
    return value.quantize(MICRO, rounding=ROUND_HALF_UP)


def _utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return _EPOCH + timedelta(microseconds=int(str(value)))  # timestamp-micros as an int


def validate(event: Mapping[str, Any], refs: Refs) -> DeadLetter | None:
    """R1 (the parts that do not need the tariff)."""
    missing = [f for f in REQUIRED if event.get(f) is None or event.get(f) == ""]
    if missing:
        return DeadLetter("MISSING_FIELD", f"missing: {', '.join(missing)}")
    for name, symbols in ENUM_SYMBOLS.items():
        value = event.get(name)
        if value is not None and value not in symbols:
            return DeadLetter("INVALID_VALUE", f"{name} is not one of its symbols")
    if int(event["duration_ms"]) < 0:
        return DeadLetter("NEGATIVE_DURATION", "duration_ms < 0")
    if int(event["duration_ms"]) > MAX_DURATION_MS:
        return DeadLetter("IMPLAUSIBLE_DURATION", "duration_ms longer than 7 days")
    if parse_number(event["called_number"]).digits is None:
        return DeadLetter("MALFORMED_CALLED_NUMBER", "called_number is not E.164")
    if event["account_id"] not in refs.accounts:
        return DeadLetter("UNKNOWN_ACCOUNT", "account_id unknown")
    return None


def _increments(version: TariffVersion, inc_class: str) -> tuple[int, int]:
    pair = getattr(version.increments, inc_class)
    return int(pair[0]), int(pair[1])


def _international_rate(version: TariffVersion, digits: str, region: str) -> Decimal:
    table = version.long_distance.international
    for n in range(len(digits), 0, -1):
        rate = table.prefixes.get(digits[:n])
        if rate is not None:
            return rate
    for key, rate in table.regions.items():
        if str(key) == region:
            return rate
    return table.default_per_min


def rate_event(
    event: Mapping[str, Any], refs: Refs, lnp: LnpLookup, book: TariffBook
) -> dict[str, Any] | DeadLetter:
    """Rate one event (a dict of CallEvent fields; enums as strings, start_time a
    datetime or epoch micros). Returns the rated fields (:data:`RATED_FIELDS`) or a
    :class:`DeadLetter`."""
    dead = validate(event, refs)
    if dead is not None:
        return dead
    optional = {k: None if event.get(k) == "" else event.get(k) for k in OPTIONAL_STRINGS}
    ani_ii = optional["ani_ii"]
    ani_ii_invalid = ani_ii is not None and not _ANI_II.fullmatch(str(ani_ii))
    if ani_ii_invalid:
        optional["ani_ii"] = None
    account = refs.accounts[event["account_id"]]
    start = _utc(event["start_time"])
    tariff = book[account.tariff_id]
    version = tariff.version_at(start)  # R11
    if version is None:
        return DeadLetter("NO_TARIFF_IN_EFFECT", "start_time before the first tariff version")

    inbound = event["direction"] == "INBOUND"
    leg = event.get("leg") or "ORIGINAL"
    forwarded = leg == "FORWARDED"
    duration_ms = int(event["duration_ms"])
    called = parse_number(event["called_number"])
    calling = parse_number(optional["calling_number"])
    original = parse_number(optional["original_calling_number"])
    # the origin number R6 uses (R4 and R10 too)
    origin = original if (not inbound and forwarded and original.present) else calling

    origin_region = region_of(origin, refs)
    origin_state = state_of(origin, refs)
    origin_ocn, origin_category = carrier_of(origin, refs, lnp)
    dest_region = region_of(called, refs)
    dest_state = state_of(called, refs)
    called_toll_free = called.nanp and called.national[:3] in TOLL_FREE_NPAS

    # R2, R3
    billable = event["disposition"] == "ANSWERED" and duration_ms != 0
    if not billable:
        call_class = "NON_BILLABLE"
    elif inbound:
        call_class = "TOLL_FREE" if called_toll_free else "DID"
    else:
        call_class = "FORWARDED" if forwarded else "OUTBOUND_LD"

    # R4
    basis = origin_region if inbound else dest_region
    if basis in US_REGIONS or basis == "UNKNOWN":
        inc_class = "US_DOMESTIC"
    elif basis == "MEXICO":
        inc_class = "MEXICO"
    else:
        inc_class = "INTERNATIONAL"

    # R5
    seconds = -(-duration_ms // 1000)
    billable_seconds = 0
    if billable:
        initial, additional = _increments(version, inc_class)
        if seconds <= initial:
            billable_seconds = initial
        else:
            billable_seconds = initial + -(-(seconds - initial) // additional) * additional

    # R6
    flags: list[str] = []
    rate = ZERO
    jurisdiction: str | None = None
    offshore = False
    indeterminate = False
    toll_free_dialed = False
    if call_class == "TOLL_FREE":
        offshore_rates = {str(k): v for k, v in version.toll_free.offshore_per_min.items()}
        if origin_region in offshore_rates:
            rate, offshore = offshore_rates[origin_region], True
        elif account.toll_free_flat is not None:
            rate = account.toll_free_flat
        else:
            rate = version.toll_free.domestic_per_min
    elif call_class == "DID":
        rate = version.did_per_min
    elif call_class in ("OUTBOUND_LD", "FORWARDED"):
        if called_toll_free:
            rate, toll_free_dialed = ZERO, True
        elif called.nanp and (dest_region in US_REGIONS or dest_region == "UNKNOWN"):
            foreign_origin = origin_region != "UNKNOWN" and origin_region not in US_REGIONS
            o_state = "<another state>" if foreign_origin else origin_state
            if o_state is None or dest_state is None:
                jurisdiction, indeterminate = "INDETERMINATE", True
            elif o_state == dest_state:
                jurisdiction = "INTRASTATE"
            else:
                jurisdiction = "INTERSTATE"
            ld = version.long_distance
            rate = ld.interstate_per_min if jurisdiction == "INTERSTATE" else ld.intrastate_per_min
        else:
            assert called.digits is not None
            jurisdiction = "INTERNATIONAL"
            rate = _international_rate(version, called.digits, dest_region)

    # R7, R8, R9
    usage = _money(Decimal(billable_seconds) * rate / 60) if billable else ZERO
    payphone = call_class == "TOLL_FREE" and optional["ani_ii"] in set(
        version.toll_free.payphone_ani_ii
    )
    surcharge = _money(version.toll_free.payphone_surcharge_per_call) if payphone else ZERO
    total = usage + surcharge

    # R10 (flags in the order the rules introduce them)
    if origin_region == "UNKNOWN":
        flags.append("ORIGIN_UNKNOWN")
    if offshore:
        flags.append("OFFSHORE")
    if payphone:
        flags.append("PAYPHONE")
    if toll_free_dialed:
        flags.append("TOLL_FREE_DIALED")
    if indeterminate:
        flags.append("JURISDICTION_INDETERMINATE")
    if billable and seconds <= version.cycle.short_call.max_seconds:
        flags.append("SHORT_CALL")
    if any(blocklisted(num, refs) for num in (calling, called, origin)):
        flags.append("FRAUD_SUSPECT")
    if ani_ii_invalid:
        flags.append("ANI_II_INVALID")

    return {
        "call_id": event["call_id"],
        "revision": int(event.get("revision") or 0),
        "account_id": event["account_id"],
        "leg": leg,
        **optional,
        "billing_cycle": f"{start.year:04d}-{start.month:02d}",
        "call_class": call_class,
        "origin_region": origin_region,
        "origin_state": origin_state,
        "origin_ocn": origin_ocn,
        "origin_carrier_category": origin_category,
        "destination_region": dest_region,
        "destination_state": dest_state,
        "jurisdiction": jurisdiction,
        "increment_class": inc_class,
        "billable_seconds": billable_seconds,
        "rate_per_min": _money(rate) if billable else ZERO,
        "usage_charge": usage,
        "surcharge": surcharge,
        "total_charge": _money(total),
        "tariff_id": tariff.tariff_id,
        "tariff_version": tariff.version_label(version),
        "flags": flags,
    }


# ------------------------------------------------------------------ streaming baseline
def baseline_arrow_schema() -> Any:
    """The Parquet schema of the baseline's rated rows (money DECIMAL(18,6), never float)."""
    import pyarrow as pa

    money = pa.decimal128(18, 6)
    return pa.schema(
        [
            ("call_id", pa.string()), ("revision", pa.int32()), ("account_id", pa.string()),
            ("trunk_id", pa.string()), ("direction", pa.string()), ("leg", pa.string()),
            ("calling_number", pa.string()), ("called_number", pa.string()),
            ("original_calling_number", pa.string()), ("start_time", pa.timestamp("us", "UTC")),
            ("billing_cycle", pa.string()), ("disposition", pa.string()),
            ("duration_ms", pa.int64()), ("ani_ii", pa.string()),
            ("sip_response_code", pa.int32()), ("switch_id", pa.string()),
            ("call_class", pa.string()), ("origin_region", pa.string()),
            ("origin_state", pa.string()), ("origin_ocn", pa.string()),
            ("origin_carrier_category", pa.string()), ("destination_region", pa.string()),
            ("destination_state", pa.string()), ("jurisdiction", pa.string()),
            ("increment_class", pa.string()), ("billable_seconds", pa.int64()),
            ("rate_per_min", money), ("usage_charge", money), ("surcharge", money),
            ("total_charge", money), ("tariff_id", pa.string()), ("tariff_version", pa.string()),
            ("flags", pa.list_(pa.string())), ("source_topic", pa.string()),
            ("source_partition", pa.int32()), ("source_offset", pa.int64()),
        ]
    )  # fmt: skip


@dataclass
class BaselineStats:
    """What :func:`run_baseline_consumer` did; times are ``time.monotonic()``."""

    consumed: int = 0
    rated: int = 0
    dead_letters: int = 0
    files: int = 0
    redis_gets: int = 0
    started: float = 0.0
    first_message_at: float | None = None
    last_write_at: float | None = None


def run_baseline_consumer(
    *,
    brokers: str,
    topic: str,
    group: str,
    redis_url: str,
    refdata_dir: Path,
    tariffs_dir: Path,
    output: Path,
    max_events: int,
    namespace: str = "cdr:ref",
    file_rows: int = 50_000,
    idle_timeout_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> BaselineStats:
    """The per-record baseline consumer: consume ``max_events`` messages of ``topic``
    and, for each, check the Confluent header, decode it with fastavro's
    ``schemaless_reader``, rate it with :func:`rate_event` (one Redis ``HGET`` for a
    NANP origin), and buffer the dict; every ``file_rows`` rows write a Parquet file
    (``pyarrow.Table.from_pylist``) and commit the offsets. Dead letters go to one
    Parquet file of their own at the end.
    """
    import io
    import json
    import time

    import fastavro
    import pyarrow as pa
    import pyarrow.parquet as pq
    import redis
    from confluent_kafka import Consumer

    from pipeline.avro.schemas import SCHEMAS_DIR
    from pipeline.tariff_files import load_tariff_dir

    stats = BaselineStats(started=time.monotonic())
    refs = load_refs(refdata_dir)
    book = load_tariff_dir(tariffs_dir)
    lnp = RedisLnp(redis.Redis.from_url(redis_url), namespace)
    schemas = {1: fastavro.parse_schema(json.loads((SCHEMAS_DIR / "call_event.avsc").read_text()))}
    schema = baseline_arrow_schema()
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    def write() -> None:
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema)
            pq.write_table(
                table, output / f"baseline-{stats.files:05d}.parquet", compression="zstd"
            )
            stats.files += 1
            rows.clear()
        consumer.commit(asynchronous=False)
        stats.last_write_at = time.monotonic()

    last_message = time.monotonic()
    try:
        while stats.consumed < max_events:
            messages = consumer.consume(min(1000, max_events - stats.consumed), 0.5)
            if not messages:
                if time.monotonic() - last_message > idle_timeout_s:
                    break
                continue
            last_message = time.monotonic()
            if stats.first_message_at is None:
                stats.first_message_at = last_message
            done = 0
            for msg in messages:
                if msg.error() is not None:
                    continue
                done += 1
                value = msg.value()
                source = {
                    "source_topic": msg.topic(),
                    "source_partition": msg.partition(),
                    "source_offset": msg.offset(),
                }
                if value is None or len(value) < 5 or value[0] != 0:
                    dead.append({"reason": "BAD_MAGIC_BYTE", **source})
                    continue
                writer = schemas.get(int.from_bytes(value[1:5], "big"))
                if writer is None:
                    dead.append({"reason": "UNKNOWN_SCHEMA_ID", **source})
                    continue
                try:
                    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer, None)
                except Exception:  # any malformed datum is a dead letter
                    dead.append({"reason": "DECODE_ERROR", **source})
                    continue
                assert isinstance(record, dict)
                outcome = rate_event(record, refs, lnp, book)
                if isinstance(outcome, DeadLetter):
                    dead.append(
                        {"reason": outcome.reason, "call_id": record.get("call_id"), **source}
                    )
                else:
                    rows.append({**record, **outcome, **source})
            stats.consumed += done
            if len(rows) >= file_rows:
                write()
            if progress is not None:
                progress(done)
        write()
        if dead:
            pq.write_table(pa.Table.from_pylist(dead), output / "baseline-dead-letters.parquet")
    finally:
        consumer.close()
    stats.dead_letters = len(dead)
    stats.rated = stats.consumed - stats.dead_letters
    stats.redis_gets = lnp.calls
    return stats
