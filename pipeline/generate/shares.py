"""Constants and share tables of the synthetic traffic (the mix in :mod:`pipeline.generate`).

Plain data, no logic: the named shares, codes, switch names and number plans the
other modules of the package draw with (the hourly profile is in ``timing``, account
and trunk weights in ``chunk``), plus the array type aliases ``I64`` and ``Bool``.
Shares are normalized where they are used.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)
DEFAULT_CHUNK = 200_000

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

SWITCHES = ("SW-NYC1", "SW-CHI1", "SW-DAL1", "SW-LAX1")
TOLL_FREE = (800, 833, 844, 855, 866, 877, 888)
UNKNOWN_ACCOUNT = "ACC-9999"
MICROS_PER_HOUR = 3_600_000_000

# (category, share) tables; shares are normalized where used.
KIND_SHARES = {"TOLL_FREE": 0.62, "DID": 0.16, "OUTBOUND": 0.22}
ORIGIN_SHARES = {
    "US48": 0.69,
    "LNP": 0.06,
    "US48_NPA": 0.04,
    "ALASKA": 0.02,
    "HAWAII": 0.015,
    "PUERTO_RICO": 0.02,
    "USVI": 0.005,
    "GUAM": 0.005,
    "CNMI": 0.003,
    "AMERICAN_SAMOA": 0.002,
    "CANADA": 0.06,
    "CARIBBEAN": 0.02,
    "MEXICO": 0.03,
    "INTERNATIONAL": 0.02,
    "WITHHELD": 0.01,
}
DESTINATION_SHARES = {
    "SAME_STATE": 0.30,
    "US48": 0.44,
    "OFFSHORE": 0.03,
    "TOLL_FREE": 0.02,
    "CANADA": 0.07,
    "CARIBBEAN": 0.03,
    "MEXICO": 0.04,
    "UK": 0.03,
    "INDIA": 0.02,
    "INTERNATIONAL": 0.018,
    "BLOCKLISTED": 0.002,
}
OFFSHORE_REGIONS = ("ALASKA", "HAWAII", "PUERTO_RICO", "USVI", "GUAM")
DISPOSITIONS = ("ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED")
DISPOSITION_SHARES = (0.78, 0.09, 0.06, 0.04, 0.03)
SIP_CODES = (200, 480, 486, 503, 487)
ANI_II = ("00", "27", "70", "29")
ANI_II_SHARES = (0.50, 0.015, 0.007, 0.005)  # rest: null
BAD_SHARE = 0.005
BAD_KINDS = (
    "NEGATIVE_DURATION",
    "CALLED_NO_PLUS",
    "CALLED_TOO_SHORT",
    "UNKNOWN_ACCOUNT",
    "CALLING_MISSING",
    "CALLING_MALFORMED",
)
CORRECTION_SHARE = 0.01
FORWARDED_SHARE = 0.04
SHORT_CALL_SHARE = 0.05
ZERO_MS_SHARE = 0.002
MAX_DURATION_MS = 4 * 3_600_000

# International number plans: (leading digits, total digits without "+").
MEXICO_PLANS = ((5255, 12), (5233, 12), (5281, 12), (52664, 12))
UK_PLANS = ((4420, 12), (447, 12))
INDIA_PLANS = ((919, 12), (918, 12), (917, 12))
OTHER_INTL_PLANS = ((639, 12), (4930, 12), (331, 11), (612, 11), (8613, 13))
ORIGIN_INTL_PLANS = UK_PLANS + INDIA_PLANS + OTHER_INTL_PLANS
