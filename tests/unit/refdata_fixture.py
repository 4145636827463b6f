"""A tiny, hand-written reference set for unit tests of the pure core.

It holds exactly the facts the spec's worked examples (section 5) need, so a test
reads like the example it checks.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.rating.reference import ReferenceData


def _t(**cols: list[str]) -> pa.Table:
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in cols.items()})


NPA_REGIONS = [
    ("907", "ALASKA", "AK"), ("808", "HAWAII", "HI"), ("787", "PUERTO_RICO", "PR"),
    ("340", "USVI", "VI"), ("671", "GUAM", "GU"), ("670", "CNMI", "MP"),
    ("684", "AMERICAN_SAMOA", "AS"), ("416", "CANADA", "ON"), ("604", "CANADA", "BC"),
    ("876", "CARIBBEAN", "JM"), ("212", "US48", "NY"), ("312", "US48", "IL"),
    ("773", "US48", "IL"), ("415", "US48", "CA"), ("202", "US48", "DC"), ("201", "US48", "NJ"),
]  # fmt: skip


def tiny_reference(
    *,
    lnp: list[tuple[str, str]] | None = None,
    blocklist: list[tuple[str, str]] | None = None,
    accounts: list[tuple[str, str, str, str]] | None = None,
) -> ReferenceData:
    """The tiny set; ``lnp`` (tn, ocn), ``blocklist`` (prefix, reason) and ``accounts``
    (id, tariff, toll-free override, cap) replace the defaults when given."""
    accounts = accounts or [
        ("ACC-1", "standard", "", "true"),
        ("ACC-2", "standard", "0.0120", "false"),
        ("ACC-W", "wholesale", "", "false"),
    ]
    lnp = lnp if lnp is not None else [("2125550100", "9102")]
    blocklist = blocklist if blocklist is not None else [("882", "premium"), ("1876555", "scam")]
    return ReferenceData.from_tables(
        version="tiny",
        npa_regions=_t(
            npa=[r[0] for r in NPA_REGIONS],
            region=[r[1] for r in NPA_REGIONS],
            state=[r[2] for r in NPA_REGIONS],
        ),
        npanxx=_t(
            # 212-555 is an RBOC block; its thousands block 212-555-0 belongs to a CLEC.
            # 201-555 is in NJ although a test pretends 212 callers are NY: state comes
            # from npanxx first (R6).
            prefix=["212555", "2125550", "312555", "907555", "201555", "773555"],
            ocn=["9101", "9201", "9101", "9301", "9401", "9401"],
            state=["NY", "NY", "IL", "AK", "NJ", "IL"],
            rate_center=["NWYRCYZN01", "NWYRCYZN01", "CHCGOIL", "ANCHORAGE", "NEWARK", "CHCGOIL"],
        ),
        ocn=_t(
            ocn=["9101", "9102", "9201", "9301", "9401"],
            carrier_name=["Bell Test", "Wireless Test", "Clec Test", "Ilec Test", "Cable Test"],
            category=["RBOC", "WIRELESS", "CLEC", "ILEC", "CABLE"],
        ),
        lnp=_t(tn=[x[0] for x in lnp], ocn=[x[1] for x in lnp], lrn=[x[0] for x in lnp]),
        accounts=_t(
            account_id=[a[0] for a in accounts],
            tariff_id=[a[1] for a in accounts],
            toll_free_flat_per_min=[a[2] for a in accounts],
            enforce_minute_cap=[a[3] for a in accounts],
        ),
        blocklist=_t(prefix=[b[0] for b in blocklist], reason=[b[1] for b in blocklist]),
    )
