"""CPNI: the one place that decides what a phone number looks like and how it is hidden.

Three uses, one rule set:

* :func:`mask_number` -- the analyst-mode mask of a *number column*
  (``calling_number``, ``called_number``, ``original_calling_number``). A well-formed
  number (spec: ``^\\+[1-9][0-9]{7,14}$``, and a ``+1`` number has exactly 10 digits
  after the ``+1``) keeps its ``+`` and first ``min(7, n - 4)`` digits; anything else
  that is not empty is replaced whole by :data:`MALFORMED`.
* :func:`mask_text` -- the analyst-mode mask of every other *string column*: each
  number-like run (see below) becomes :data:`REDACTED`. Input from switches and
  users reaches these columns, so nothing is exempt except ISO-8601 dates and times
  (``2026-01-01T00:00:00Z`` in a tariff version stays readable).
* :func:`redact` -- logs and console messages: :func:`mask_text` plus the pipeline's
  own operational numbers and names (``offsets=100-199``, ``rated=1234567``,
  ``partitions=[(0, 1234567)]``, ``offset 1234567``, ``topic=calls-20261103``), IPv4
  addresses, fractions (``0.0000001``: no phone number starts with ``0.``) and
  lower-case hex digests of 16, 32, 40 or 64 characters (reference data versions).

**Number-like run**: an optional plus (``+``, full-width ``＋``, small ``﹢``) and
opening parenthesis, then at least :data:`MIN_DIGITS` digits, where a digit is any
Unicode decimal digit (``\\d``: ASCII, full-width, Arabic-Indic, Devanagari,
mathematical ...) or a digit-like symbol
(super/subscripts, circled and parenthesized digits, CJK numerals
``〇一二三四五六七八九``), and digits may be separated by any number of separators:
horizontal white space, dots, dashes, slashes, parentheses, brackets and invisible
characters (zero-width spaces and joiners, soft hyphen, direction marks, combining
keycap). Commas and colons do not separate (lists and clock times stay readable).
Erring towards hiding is deliberate: a false positive costs readability, a false
negative leaks CPNI.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

#: What a number-like run becomes in free text, logs and console messages.
REDACTED = "<number>"
#: What a malformed (not well-formed, not empty) value of a number column becomes.
MALFORMED = "<malformed>"
#: A run needs this many digits to count as a number (a local number has 7).
MIN_DIGITS = 7
#: Analyst mode shows at most this many leading digits of a well-formed number
#: (country code 1 + NPA + NXX for NANP) ...
KEEP_DIGITS = 7
#: ... and always hides at least this many trailing digits (the line number).
MIN_MASKED_DIGITS = 4

#: Spec section 1: E.164 with a leading ``+``; ``+1`` numbers are NANP (10 digits).
WELL_FORMED = re.compile(r"\+(?:1[0-9]{10}|[2-9][0-9]{7,14})", re.ASCII)

_PLUS = "[+\uff0b\ufe62]"
_DIGIT = (
    r"[\d"
    "\u00b2\u00b3\u00b9\u2070\u2074-\u2079\u2080-\u2089"  # super- and subscripts
    "\u2460-\u249b\u24ea-\u24ff\u2776-\u2793"  # circled, parenthesized, full-stop digits
    "\u3007\u4e00\u4e8c\u4e09\u56db\u4e94\u516d\u4e03\u516b\u4e5d"  # CJK 〇一二...九
    "]"
)
_SEPARATOR = (
    "["
    " \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # horizontal white space
    r".\-/()\[\]"
    "\u00b7\u2010-\u2015\u2024\u2027\u2212\u30fb"  # dots and dashes
    "\ufe58\ufe63\uff08\uff09\uff0d\uff0e\uff0f\uff3b\uff3d\uff65"  # full-width/small forms
    "\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
    "\u20e3\ufe00-\ufe0f"  # combining keycap, variation selectors
    "]"
)
#: A number-like run (see the module docstring).
NUMBER_LIKE = rf"{_PLUS}?[(\uff08]?{_DIGIT}(?:{_SEPARATOR}*{_DIGIT}){{{MIN_DIGITS - 1},}}"

_ISO_DATE = (
    r"(?<![0-9])(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ][0-2][0-9]:[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:Z|[+-][0-2][0-9]:?[0-5][0-9])?)?(?![0-9])"
)
#: Keys whose values are the pipeline's own numbers (offsets, counts) in log lines.
_NUMERIC_KEYS = (
    "offsets?|first|last|partition|position|lag|high|low|consumed|rated|dead_letters|files"
    "|flushes|rows|bytes|messages|events|generation|port|version|records|lines|seconds"
    "|removed_previous|signal"
)
_OPERATIONAL = (
    rf"(?<![\w.])(?:{_NUMERIC_KEYS})=[0-9.-]+(?![0-9])"  # our own key=number tokens
    r"|(?<![\w.])partitions=\[[0-9(), ]*\]"  # assigned partitions=[(0, 123), ...]
    r"|(?<![\w.])(?:topic|group|file|cycle)=[\w.-]+"  # names from configuration
    # paths of files the pipeline reads and writes (lake parts such as
    # batch-x-<hash>-000000000000.parquet): a console message must name the file
    r"|(?<![\w./+=-])/?(?:[\w.+=-]+/)*[\w.+=-]+\.(?:parquet|avro|json|bin|yaml|yml|csv|html|tmp)(?![\w.])"
    r"|(?<![\w.])offset [0-9]+(?![0-9])"
    r"|(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])"  # IPv4
    r"|(?<![0-9.])-?0\.[0-9]+(?![0-9]|\.[0-9])"  # fractions: 0.0000001, 0.123456789
    r"|(?<![0-9A-Za-z])(?=[0-9]*[a-f])"  # hex digests (reference data versions)
    r"(?:[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32}|[0-9a-f]{16})(?![0-9A-Za-z])"
)
_STRICT = re.compile(rf"(?P<keep>{_ISO_DATE})|{NUMBER_LIKE}")
_OPS = re.compile(rf"(?P<keep>{_ISO_DATE}|{_OPERATIONAL})|{NUMBER_LIKE}")
#: :data:`NUMBER_LIKE` restricted to ASCII text, for RE2 (Arrow): the same
#: leftmost-first match on a value that is all ASCII (a test checks every character).
_ASCII_SEPARATOR = r"[ \t./()\[\]-]"
ASCII_NUMBER_LIKE = rf"\+?\(?[0-9](?:{_ASCII_SEPARATOR}*[0-9]){{{MIN_DIGITS - 1},}}"
#: Values :func:`mask_text_array` hands to Python: any non-ASCII character, or
#: something that may be an ISO date (kept, which one RE2 replacement cannot express) ...
_NEEDS_PYTHON = r"[^\x00-\x7f]|[0-9]{4}-[0-9]{2}-[0-9]{2}"
_NON_ASCII = r"[^\x00-\x7f]"
_ASCII_ISO = (
    r"(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ][0-2][0-9]:[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:Z|[+-][0-2][0-9]:?[0-5][0-9])?)?"
)
#: ... except an ASCII value whose only digits are one ISO date or instant that no
#: plus or parenthesis precedes (``standard@2026-11-16T00:00:00Z``, a tariff version on
#: every rated call): :func:`mask_text` keeps it whole, and RE2 can tell.
ASCII_KEEP = rf"^(?:[^0-9]*[^0-9+(])?{_ASCII_ISO}[^0-9]*$"


def _keep_or_redact(match: re.Match[str]) -> str:
    return match.group("keep") or REDACTED


def mask_text(text: str) -> str:
    """``text`` with every number-like run replaced by :data:`REDACTED` (ISO-8601 dates
    and times kept). For values analysts see; see the module docstring."""
    return _STRICT.sub(_keep_or_redact, text)


def redact(text: str) -> str:
    """``text`` with every number-like run replaced by :data:`REDACTED`, keeping ISO-8601
    dates and times and the pipeline's own operational numbers (offsets, counters,
    IPv4 addresses, fractions, hex digests). For log records and console messages."""
    return _OPS.sub(_keep_or_redact, text)


def mask_value(value: object) -> str:
    """``repr(value)`` through :func:`mask_text`: how an error message quotes a bad
    input value (``'<number>'`` for ``'+12022228033'``)."""
    return mask_text(repr(value))


def mask_number(number: str | None) -> str | None:
    """The analyst-mode mask of a number column (the SQL macro of
    :func:`mask_number_macro_sql` is the same rule).

    * ``None`` stays ``None``; ``""`` stays ``""`` (it hides nothing).
    * A well-formed number (:data:`WELL_FORMED`, ``n`` digits after the ``+``) keeps
      the ``+`` and the first ``min(7, n - 4)`` digits; every other digit becomes ``X``:
      ``+12125550100`` -> ``+1212555XXXX``, ``+525555550100`` -> ``+5255555XXXXX``,
      ``+88212345`` -> ``+8821XXXX``.
    * Anything else is replaced whole by :data:`MALFORMED`: ``12125550100``,
      ``+1 (212) 555-0100``, ``+１２１２５５５０１００``, ``anonymous``.
    """
    if number is None or number == "":
        return number
    if not WELL_FORMED.fullmatch(number):
        return MALFORMED
    digits = len(number) - 1
    keep = max(0, min(KEEP_DIGITS, digits - MIN_MASKED_DIGITS))
    return number[: 1 + keep] + "X" * (digits - keep)


def mask_number_macro_sql() -> str:
    """The SQL that defines the DuckDB macro ``mask_number(n)``: :func:`mask_number`.
    (RE2's ``[0-9]`` is ASCII only, like :data:`WELL_FORMED`.)"""
    keep = f"greatest(0, least({KEEP_DIGITS}, length(n) - 1 - {MIN_MASKED_DIGITS}))"
    return (
        "CREATE OR REPLACE TEMP MACRO mask_number(n) AS CASE "
        "WHEN n IS NULL OR n = '' THEN n "
        r"WHEN regexp_full_match(n, '\+(1[0-9]{10}|[2-9][0-9]{7,14})') THEN "
        f"left(n, 1 + {keep}) || repeat('X', length(n) - 1 - {keep}) "
        f"ELSE '{MALFORMED}' END"
    )


def mask_text_macro_sql(python_function: str) -> str:
    """The SQL of a DuckDB macro ``mask_text(s)``: :func:`mask_text`, by RE2 in DuckDB for
    ASCII values without a date (:data:`ASCII_NUMBER_LIKE`), kept for ASCII values
    :data:`ASCII_KEEP` describes, and by ``python_function`` (a DuckDB function running
    :func:`mask_text_array`) only for the rest: DuckDB evaluates a ``CASE`` branch on
    the rows that reach it, so Python sees only those values."""
    return (
        "CREATE OR REPLACE TEMP MACRO mask_text(s) AS CASE "
        f"WHEN NOT regexp_matches(s, '{_NEEDS_PYTHON}') "
        f"THEN regexp_replace(s, '{ASCII_NUMBER_LIKE}', '{REDACTED}', 'g') "
        f"WHEN NOT regexp_matches(s, '{_NON_ASCII}') AND regexp_matches(s, '{ASCII_KEEP}') "
        f"THEN s ELSE {python_function}(s) END"
    )


def mask_text_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`mask_text` over a string array (nulls stay null); the vectorized form the
    analyst views use (a DuckDB Python function). ASCII values without a date are
    masked by Arrow (RE2, :data:`ASCII_NUMBER_LIKE`), ASCII values :data:`ASCII_KEEP`
    describes kept, and only the others go through :func:`mask_text` one by one."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    fast = pc.replace_substring_regex(values, ASCII_NUMBER_LIKE, REDACTED)
    slow = pc.fill_null(pc.match_substring_regex(values, _NEEDS_PYTHON), False)
    if len(values) and pc.any(slow).as_py():
        kept = pc.and_(
            pc.invert(pc.match_substring_regex(values, _NON_ASCII)),
            pc.match_substring_regex(values, ASCII_KEEP),
        )
        fast = pc.if_else(pc.fill_null(kept, False), values, fast)
        slow = pc.and_(slow, pc.invert(pc.fill_null(kept, False)))
    if len(values) == 0 or not pc.any(slow).as_py():
        return fast
    out = fast.to_pylist()
    originals = values.to_pylist()
    for i in pc.indices_nonzero(slow).to_pylist():
        out[i] = mask_text(originals[i])
    return pa.array(out, pa.string())
