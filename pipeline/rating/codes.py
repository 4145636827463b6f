"""Stable codes used in rated records, dead letters and invoice lines.

These strings are part of the output contract (Parquet columns, dead-letter
``reason``); never rename one without a migration note.
"""

from __future__ import annotations

from enum import StrEnum


class Region(StrEnum):
    """R-REGION values. Order is fixed: the integer code of a region is its index."""

    US48 = "US48"
    ALASKA = "ALASKA"
    HAWAII = "HAWAII"
    PUERTO_RICO = "PUERTO_RICO"
    USVI = "USVI"
    GUAM = "GUAM"
    CNMI = "CNMI"
    AMERICAN_SAMOA = "AMERICAN_SAMOA"
    CANADA = "CANADA"
    CARIBBEAN = "CARIBBEAN"
    MEXICO = "MEXICO"
    INTERNATIONAL = "INTERNATIONAL"
    UNKNOWN = "UNKNOWN"


REGIONS: tuple[str, ...] = tuple(r.value for r in Region)
REGION_CODE: dict[str, int] = {r: i for i, r in enumerate(REGIONS)}
#: Regions that appear in npa_regions.csv (NANP regions).
NANP_REGIONS: frozenset[str] = frozenset(REGIONS[:10])
#: US regions (R-REGION); UNKNOWN is treated like them by R4 and R6.
US_REGIONS: frozenset[str] = frozenset(REGIONS[:8])


class CarrierCategory(StrEnum):
    """OCN categories (ocn.csv) plus UNKNOWN when R-CARRIER finds no match."""

    RBOC = "RBOC"
    ILEC = "ILEC"
    CLEC = "CLEC"
    WIRELESS = "WIRELESS"
    CABLE = "CABLE"
    IC = "IC"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"


OCN_CATEGORIES: tuple[str, ...] = tuple(c.value for c in CarrierCategory if c.value != "UNKNOWN")


class CallClass(StrEnum):
    """R2/R3 call classes."""

    NON_BILLABLE = "NON_BILLABLE"
    TOLL_FREE = "TOLL_FREE"
    DID = "DID"
    OUTBOUND_LD = "OUTBOUND_LD"
    FORWARDED = "FORWARDED"


class IncrementClass(StrEnum):
    """R4 increment classes."""

    US_DOMESTIC = "US_DOMESTIC"
    INTERNATIONAL = "INTERNATIONAL"
    MEXICO = "MEXICO"


class Jurisdiction(StrEnum):
    """R6 jurisdiction of long-distance legs (null for inbound and toll-free dialled legs)."""

    INTRASTATE = "INTRASTATE"
    INTERSTATE = "INTERSTATE"
    INDETERMINATE = "INDETERMINATE"
    INTERNATIONAL = "INTERNATIONAL"


class Flag(StrEnum):
    """Record flags (R1, R6, R8, R10). Flags of a record are listed in this order."""

    ORIGIN_UNKNOWN = "ORIGIN_UNKNOWN"
    OFFSHORE = "OFFSHORE"
    PAYPHONE = "PAYPHONE"
    TOLL_FREE_DIALED = "TOLL_FREE_DIALED"
    JURISDICTION_INDETERMINATE = "JURISDICTION_INDETERMINATE"
    SHORT_CALL = "SHORT_CALL"
    FRAUD_SUSPECT = "FRAUD_SUSPECT"
    ANI_II_INVALID = "ANI_II_INVALID"  # ani_ii given but not two ASCII digits: ignored (R8)


class Reason(StrEnum):
    """Dead-letter reason codes (R1 and the adapters). Stable, upper case."""

    DECODE_ERROR = "DECODE_ERROR"  # bytes are not a CallEvent (any wire/Avro problem)
    UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"  # wire format ok, schema id not resolvable
    BAD_MAGIC_BYTE = "BAD_MAGIC_BYTE"  # not the Confluent wire format
    MISSING_FIELD = "MISSING_FIELD"  # a required field is null or empty
    INVALID_VALUE = "INVALID_VALUE"  # an enum field holds a value outside its symbols
    NEGATIVE_DURATION = "NEGATIVE_DURATION"  # duration_ms < 0
    IMPLAUSIBLE_DURATION = "IMPLAUSIBLE_DURATION"  # duration_ms > MAX_DURATION_MS
    MALFORMED_CALLED_NUMBER = "MALFORMED_CALLED_NUMBER"  # called_number not well-formed E.164
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"  # account_id not in accounts.csv
    NO_TARIFF_IN_EFFECT = "NO_TARIFF_IN_EFFECT"  # start_time before the first tariff version


class LineType(StrEnum):
    """Invoice line types (C1-C4)."""

    USAGE_TOLL_FREE_DOMESTIC = "USAGE_TOLL_FREE_DOMESTIC"
    USAGE_TOLL_FREE_OFFSHORE = "USAGE_TOLL_FREE_OFFSHORE"
    USAGE_DID = "USAGE_DID"
    USAGE_OUTBOUND_LD = "USAGE_OUTBOUND_LD"
    USAGE_FORWARDED = "USAGE_FORWARDED"
    PAYPHONE_SURCHARGE = "PAYPHONE_SURCHARGE"
    SHORT_CALL_SURCHARGE = "SHORT_CALL_SURCHARGE"
    CARRIER_MIX_SURCHARGE = "CARRIER_MIX_SURCHARGE"
    MINUTE_CAP_OVERAGE = "MINUTE_CAP_OVERAGE"


#: Longest plausible call leg (7 days). Longer durations are switch errors; they are
#: dead-lettered (R1) and this bound keeps the integer money arithmetic exact.
MAX_DURATION_MS = 7 * 24 * 3600 * 1000

#: Toll-free NPAs (R3). A NANP fact, not a tariff parameter.
TOLL_FREE_NPAS: frozenset[int] = frozenset({800, 833, 844, 855, 866, 877, 888})


#: Carrier categories as an Arrow-friendly tuple, UNKNOWN last (R-CARRIER).
CATEGORY_NAMES: tuple[str, ...] = (*OCN_CATEGORIES, CarrierCategory.UNKNOWN.value)
