"""CPNI masking (:mod:`pipeline.cpni`) over hostile input, the log filter and the
console messages of ``cdr-pipeline`` (issue 10, items 3, 4, 6 and 8)."""

from __future__ import annotations

import io
import logging
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import duckdb
import duckdb.func as duckdb_func
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.cpni import (
    _SEPARATOR,
    ASCII_NUMBER_LIKE,
    MALFORMED,
    NUMBER_LIKE,
    REDACTED,
    mask_number,
    mask_number_macro_sql,
    mask_text,
    mask_text_array,
    mask_text_macro_sql,
    redact,
)
from pipeline.observability import setup_logging

#: The zero of some decimal digit scripts: ASCII, full-width, Arabic-Indic, extended
#: Arabic-Indic, Devanagari, Bengali, Thai, mathematical bold, mathematical monospace.
ZEROS = (
    "0",
    "\uff10",
    "\u0660",
    "\u06f0",
    "\u0966",
    "\u09e6",
    "\u0e50",
    "\U0001d7ce",
    "\U0001d7f6",
)
SEPARATORS = ("", " ", ".", "-", "/", "\u00a0", "\u200b", "\u2011", "\u3000", "\u00ad", "\u200e")


def render(digits: str, zero: str, separator: str = "") -> str:
    """``digits`` (ASCII) written with the digits of the script whose zero is ``zero``."""
    return separator.join(chr(ord(zero) + int(d)) for d in digits)


def ascii_digits(text: str) -> str:
    """The digits of ``text`` in any script, as ASCII (everything else dropped)."""
    return "".join(
        str(unicodedata.digit(c)) for c in text if unicodedata.digit(c, None) is not None
    )


# ------------------------------------------------------------------ mask_number
@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+12125550100", "+1212555XXXX"),  # well-formed NANP: country code + NPA-NXX shown
        ("+525555550100", "+5255555XXXXX"),
        ("+442071234567", "+4420712XXXXX"),
        ("+88212345", "+8821XXXX"),  # 8 digits: at least 4 hidden
        ("+882123456789012", "+8821234XXXXXXXX"),  # 15 digits
        (None, None),
        ("", ""),
        # anything else is masked whole (issue 10 item 3)
        (render("+12125550100"[1:], "\uff10").join(["+", ""]), MALFORMED),  # full-width
        ("+" + render("12125550101", "\u0660"), MALFORMED),  # Arabic-Indic
        ("+" + render("12125550102", "\u0966"), MALFORMED),  # Devanagari
        ("\uff0b12125550100", MALFORMED),  # full-width plus
        ("+1 212 555 0100", MALFORMED),
        ("+1.212.555.0100", MALFORMED),
        ("+1-212-555-0100", MALFORMED),
        ("+1 (212) 555-0100", MALFORMED),
        ("12125550100", MALFORMED),  # no +
        ("+1212555010", MALFORMED),  # +1 with 9 digits
        ("+121255501000", MALFORMED),  # +1 with 11 digits
        ("+02125550100", MALFORMED),  # country code 0
        ("+8821234", MALFORMED),  # 7 digits: too short
        ("+8821234567890123", MALFORMED),  # 16 digits: too long
        ("+12125550100\n", MALFORMED),
        (" +12125550100", MALFORMED),
        ("+1212555\u200b0100", MALFORMED),  # zero-width space
        ("+" + "1" * 10_000, MALFORMED),
        ("anonymous", MALFORMED),
    ],
)
def test_mask_number(number: str | None, masked: str | None) -> None:
    assert mask_number(number) == masked


def test_mask_number_hides_every_digit_of_a_malformed_value() -> None:
    """Whole, not partly: no digit of any script survives in a malformed value."""
    for zero in ZEROS:
        for sep in SEPARATORS:
            value = "+" + render("12125550100", zero, sep)
            if value == "+12125550100":
                continue
            assert mask_number(value) == MALFORMED, (zero, sep)


_MASK_CON = duckdb.connect()
_MASK_CON.execute(mask_number_macro_sql())

_NUMBERISH = st.text(
    alphabet="+0123456789 -()x\uff11\uff10\u0661\u0967\u200b\uff0b", min_size=0, max_size=18
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.none(), _NUMBERISH, st.from_regex(r"\+(1[0-9]{10}|[2-9][0-9]{7,14})", fullmatch=True)
    )
)
def test_sql_macro_is_the_python_rule(number: str | None) -> None:
    got = _MASK_CON.execute("SELECT mask_number(?)", [number]).fetchall()
    assert got == [(mask_number(number),)]


# ------------------------------------------------------------------ mask_text
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+12125550104", REDACTED),  # ani_ii / switch_id holding a number (item 4)
        ("5550100", REDACTED),  # 7 digits: a local number
        ("555010", "555010"),  # 6 digits: not a number
        ("+1 212 555 0100", REDACTED),
        ("+1 (212) 555-0100", REDACTED),
        ("212.555.0100", REDACTED),
        ("212/555-0100", REDACTED),
        ("1\u20e32\u20e31\u20e32\u20e35\u20e35\u20e35\u20e3", REDACTED + "\u20e3"),  # keycaps
        ("\u2460\u2461\u2462\u2463\u2464\u2465\u2466", REDACTED),  # circled digits
        ("\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077", REDACTED),  # superscripts
        ("\u4e8c\u4e00\u4e8c\u4e94\u4e94\u4e94\u3007", REDACTED),  # CJK numerals
        ("SW-DAL1-000000000005", "SW-DAL<number>"),
        (
            "call from +1 212 555 0100 at 2026-11-03T12:00:00Z",
            f"call from {REDACTED} at 2026-11-03T12:00:00Z",
        ),
        ("standard@2026-01-01T00:00:00Z", "standard@2026-01-01T00:00:00Z"),  # tariff version
        ("2026-11", "2026-11"),  # a billing cycle
        ("US_DOMESTIC", "US_DOMESTIC"),
        ("27", "27"),  # a valid ani_ii
        ("", ""),
        ("a, 1, 2, 3, 4, 5, 6, 7", "a, 1, 2, 3, 4, 5, 6, 7"),  # commas do not join digits
        ("12:34:56 1234", "12:34:56 1234"),  # nor do colons
        ("offsets=12125550100", f"offsets={REDACTED}"),  # no exemption for data
    ],
)
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@settings(max_examples=400, deadline=None)
@given(
    digits=st.from_regex(r"[0-9]{7,15}", fullmatch=True),
    zero=st.sampled_from(ZEROS),
    separator=st.sampled_from(SEPARATORS),
    plus=st.sampled_from(("", "+", "\uff0b")),
    before=st.text(alphabet="abc XYZ:_,#=@'\"", max_size=8),
    after=st.text(alphabet="abc XYZ:_,#=@'\"", max_size=8),
)
def test_no_digit_of_a_number_survives_in_free_text(
    digits: str, zero: str, separator: str, plus: str, before: str, after: str
) -> None:
    """A 7-15 digit number in any script with any separator, inside any text without
    digits: the masked text has no digit left and keeps the text around it."""
    text = before + plus + render(digits, zero, separator) + after
    masked = mask_text(text)
    assert ascii_digits(masked) == ""
    assert masked == before + REDACTED + after


def test_mask_text_is_linear_on_long_hostile_strings() -> None:
    """1 MB of near-misses (6-digit groups, separators) masks in well under a second."""
    hostile = ("123456," + " " * 50 + "-" * 50) * 10_000
    started = time.perf_counter()
    assert mask_text(hostile) == hostile
    long_number = "1 " * 500_000
    assert mask_text(long_number) == REDACTED + " "
    assert time.perf_counter() - started < 5


def test_mask_text_array_is_mask_text_per_value() -> None:
    values = [
        "+12125550104",
        None,
        "ALASKA",
        "",
        "x-\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
        "27",
    ]
    got = mask_text_array(pa.array(values, pa.string()))
    assert got.to_pylist() == [None if v is None else mask_text(v) for v in values]
    chunked = pa.chunked_array([pa.array(values[:2]), pa.array(values[2:])])
    assert mask_text_array(chunked).to_pylist() == got.to_pylist()
    assert mask_text_array(pa.array([], pa.string())).to_pylist() == []
    assert mask_text_array(pa.array(["ALASKA", None])).to_pylist() == ["ALASKA", None]


def test_ascii_pattern_is_the_unicode_pattern_on_ascii() -> None:
    """The RE2 fast path treats every ASCII character as :data:`NUMBER_LIKE` does."""
    for code in range(128):
        c = chr(code)
        assert bool(re.fullmatch(_SEPARATOR, c)) == bool(re.fullmatch(r"[ \t./()\[\]-]", c)), c
        for text in (f"{c}1234567", f"123{c}4567", f"1234567{c}"):
            python = re.search(NUMBER_LIKE, text)
            ascii_ = re.search(ASCII_NUMBER_LIKE, text)
            assert (python and python.span()) == (ascii_ and ascii_.span()), text


_TEXT_CON = duckdb.connect()
_TEXT_CON.create_function(
    "_py_mask",
    mask_text_array,
    [duckdb.sqltype("VARCHAR")],
    duckdb.sqltype("VARCHAR"),
    type=duckdb_func.ARROW,
    null_handling=duckdb_func.SPECIAL,
)
_TEXT_CON.execute(mask_text_macro_sql("_py_mask"))
_FREE_TEXT = (
    st.text(alphabet="0123456789+-. ()/[]:,TZa\u0661\uff11\u200b\u3007", min_size=0, max_size=40)
    | st.from_regex(r"x?(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9][T ]?[0-9 :+.-]{0,12}", fullmatch=True)
    # tariff versions and their near misses (the ASCII_KEEP fast path)
    | st.from_regex(
        r"[a-z@+(0-9 .-]{0,3}(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]([T ][0-9:.,+Z-]{0,14})?"
        r"[a-zZ@ 0-9.-]{0,3}",
        fullmatch=True,
    )
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.none(), _FREE_TEXT), max_size=8))
def test_arrow_and_sql_forms_are_mask_text(values: list[str | None]) -> None:
    """mask_text_array (Arrow + Python) and the SQL macro (RE2 + Python) agree with
    :func:`mask_text` value by value, dates and non-ASCII digits included."""
    expected = [None if v is None else mask_text(v) for v in values]
    assert mask_text_array(pa.array(values, pa.string())).to_pylist() == expected
    got = _TEXT_CON.execute("SELECT mask_text(unnest(?::VARCHAR[]))", [values]).fetchall()
    assert [r[0] for r in got] == expected


def test_python_masks_only_the_values_that_need_it() -> None:
    """Issue 9 item 7: the SQL macro hands Python only non-ASCII values and ASCII values
    with a date it cannot keep whole; tariff versions (on every call) stay in RE2."""
    seen: list[str] = []

    def spy(values: pa.Array) -> pa.Array:
        seen.extend(values.to_pylist())
        return mask_text_array(values)

    con = duckdb.connect()
    con.create_function(
        "_spy",
        spy,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        type=duckdb_func.ARROW,
        null_handling=duckdb_func.SPECIAL,
    )
    con.execute(mask_text_macro_sql("_spy"))
    values = [
        "standard@2026-11-16T00:00:00Z",
        "2026-11-16",
        "SW-NYC1-000000000123",
        "ALASKA",
        "x-\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
        "+2026-11-16",  # a plus before the date: a number-like run
        "v1@2026-11-16",  # another digit: Python decides
    ]
    got = con.execute("SELECT mask_text(unnest(?::VARCHAR[]))", [values]).fetchall()
    assert [r[0] for r in got] == [mask_text(v) for v in values]
    assert sorted(seen) == sorted(values[4:])
    assert got[0][0] == "standard@2026-11-16T00:00:00Z"


# ------------------------------------------------------------------ logs (item 6)
@pytest.mark.parametrize(
    "number",
    [
        "+12125550100",
        "+1 212 555 0100",
        "(212) 555-0100",
        "212.555.0100",
        "5550100",  # 7 digits
        "+" + render("12125550100", "\uff10"),  # full-width
        "+" + render("12125550101", "\u0660"),  # Arabic-Indic
        render("2125550102", "\u0966", " "),  # Devanagari, spaced
        "2\u200b1\u200b2\u200b5\u200b5\u200b5\u200b0\u200b1\u200b0\u200b0",
    ],
)
def test_redact_hides_numbers(number: str) -> None:
    assert redact(f"careless calling={number} here") == f"careless calling={REDACTED} here"


def test_redact_keeps_file_names_but_not_numbers_beside_them() -> None:
    """A console message must name the damaged lake file; a number next to it is hidden."""
    text = "bad part x/p-000000000000.parquet for +1 212 555 0100"
    assert redact(text) == f"bad part x/p-000000000000.parquet for {REDACTED}"


@pytest.mark.parametrize(
    "line",
    [
        "flushed topic=call-events partition=3 offsets=123456789-123457788 rated=1234567 "
        "dead_letters=2 files=1 seconds=1234.567",
        "assigned partitions=[(0, 123456789), (1, 1001)]",
        "batch topic=calls-12345678 messages=100 rated=99 dead_letters=1 seconds=0.012",
        "rated file=calls-20261103.avro removed_previous=0 events=10 rated=10 dead_letters=0",
        "skipped a message on dlq that is not a dead letter (offset 123456789)",
        "closed cycle=2026-11 records=12345678 lines=42 file=invoice_lines.parquet",
        "cycle closed at 2026-11-03T12:00:00.123456+00:00 and 2026-11-03 12:00:00,123",
        "Redis unreachable: Error 111 connecting to 127.0.0.1:6379. Connection refused.",
        "reference data switched from 3f2a1234567b8c9d to 0123456789abcdef",
        "accounts.csv line 2: toll_free_flat_per_min '0.0000001' must be empty",
        "idle for 12.5 s: stopping",
        "lake file /tmp/l/rated_calls/billing_cycle=2026-11/batch-x-943dbf7d15d2-000000000000"
        ".parquet cannot be read",
        "payload at dead_letter_payloads/calls+00003+123456789.bin",
    ],
)
def test_redact_keeps_operational_numbers(line: str) -> None:
    """Offsets, counters, ISO timestamps, IPv4 addresses, reference data versions and
    fractions stay readable in log lines and console messages."""
    assert redact(line) == line


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("DEBUG", "kv", stream=stream)
    try:
        yield stream
    finally:
        setup_logging("INFO", "kv")


def test_log_filter_redacts_wide_numbers(log_stream: io.StringIO) -> None:
    """RedactPhoneNumbers (the handler filter) on messages, arguments and tracebacks."""
    log = logging.getLogger("pipeline.test")
    hostile = ["+1 212 555 0100", "+" + render("12125550101", "\uff10"), "5550102"]
    for number in hostile:
        log.warning("careless calling=%s", number)
    arabic = render("2125550103", "\u0660")
    try:
        raise ValueError("bad number " + arabic)
    except ValueError:
        log.exception("failed offsets=100-199")
    log.info("flushed partition=0 offsets=1234567-1234999 rated=1234567 at 2026-11-03T12:00:00Z")
    text = log_stream.getvalue()
    for digits in ("2125550100", "2125550101", "5550102", "2125550103"):
        assert digits not in ascii_digits(text.replace("1234567", "")), digits
    assert text.count(REDACTED) == 4
    assert "offsets=100-199" in text
    assert "offsets=1234567-1234999 rated=1234567 at 2026-11-03T12:00:00Z" in text


def test_log_filter_json_format_redacts_too() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        logging.getLogger("pipeline.test").info("careless calling=%s", "+1 212 555 0100")
    finally:
        setup_logging("INFO", "kv")
    assert '"calling": "<number>"' in stream.getvalue()
    assert "555" not in stream.getvalue()


# ------------------------------------------------------------------ console (item 8)
def test_cli_error_messages_are_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The safety net in ``main``: a refused command's message (here DuckDB echoing a
    literal) is printed with the number redacted, exit 2."""
    from pipeline.lake.lake import Lake

    Lake(tmp_path).create_tables(["dead_letters"])
    sql = "SELECT '+1 212 555 0100'::INTEGER"
    assert main(["query", sql, "--lake", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "refused: query failed" in captured.err
    assert "555" not in captured.err + captured.out
    assert REDACTED in captured.err
