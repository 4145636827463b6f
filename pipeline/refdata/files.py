"""Reference directory files (spec section 2): read, validate, version.

A reference directory holds six CSV files (header row, UTF-8), listed in
:data:`REFERENCE_FILES`. :func:`read_reference_tables` reads them with
``pyarrow.csv`` (every column a non-null ``string``) and validates them with
vectorized ``pyarrow.compute`` kernels: exact header, one pattern per column, no
duplicate keys, OCNs and NPAs that exist. Per-row Python code only runs to describe
the first bad line, so a million LNP rows load in about a second.

Every problem raises :class:`pipeline.errors.ReferenceDataError` naming the file,
the 1-based line (the header is line 1) and the reason, e.g.
``lnp.csv line 7: tn '90755501' must be 10 digits, the first 2-9``. A value that
looks like a phone number (CPNI) is masked in the message
(:func:`pipeline.cpni.mask_value`): ``lnp.csv line 7: tn '<number>' must be 10
digits, the first 2-9``.

The version of a directory is a short SHA-256 of its files' bytes: the same content
gives the same version in files, in Redis and in the rated records.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.cpni import mask_text, mask_value
from pipeline.errors import ReferenceDataError
from pipeline.rating.codes import NANP_REGIONS, OCN_CATEGORIES
from pipeline.rating.reference import ReferenceData

#: Table name (as passed to :meth:`ReferenceData.from_tables`) -> (file name, columns).
REFERENCE_FILES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "npa_regions": ("npa_regions.csv", ("npa", "region", "state")),
    "npanxx": ("npanxx.csv", ("prefix", "ocn", "state", "rate_center")),
    "ocn": ("ocn.csv", ("ocn", "carrier_name", "category")),
    "lnp": ("lnp.csv", ("tn", "ocn", "lrn")),
    "accounts": (
        "accounts.csv",
        ("account_id", "tariff_id", "toll_free_flat_per_min", "enforce_minute_cap"),
    ),
    "blocklist": ("blocklist.csv", ("prefix", "reason")),
}

#: The sample reference set shipped with the package.
SAMPLE_REFDATA_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "refdata"

VERSION_LENGTH = 16  # hex digits of the SHA-256 kept as the version

_BOM = b"\xef\xbb\xbf"
_TEXT = r"^\S(.*\S)?$"  # non-empty, no leading/trailing blank
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
#: Columns that never hold a phone number (money): error messages quote their values
#: as they are; every other value is quoted through :func:`pipeline.cpni.mask_value`.
_PLAIN_COLUMNS = frozenset({"toll_free_flat_per_min"})


@dataclass(frozen=True)
class _Check:
    """One rule over one column: ``ok`` is true where the value is acceptable."""

    column: str
    ok: pa.ChunkedArray
    reason: str


def reference_version(contents: Mapping[str, bytes]) -> str:
    """Short SHA-256 over the files' names and bytes, in :data:`REFERENCE_FILES` order."""
    digest = hashlib.sha256()
    for name, (file_name, _) in REFERENCE_FILES.items():
        data = contents[name]
        digest.update(f"{file_name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:VERSION_LENGTH]


def read_reference_set(directory: Path) -> tuple[str, dict[str, pa.Table]]:
    """Read and validate a reference directory; return ``(version, tables)``.

    ``tables`` maps the keys of :data:`REFERENCE_FILES` to string tables whose columns
    are the CSV columns, in file order. Raises :class:`ReferenceDataError`.
    """
    contents = _read_contents(directory)
    tables = {name: _read_table(name, data) for name, data in contents.items()}
    _check_references(tables, contents)
    return reference_version(contents), tables


def directory_version(directory: Path) -> str:
    """The version of a reference directory without validating it (cheap)."""
    return reference_version(_read_contents(directory))


def read_reference_tables(directory: Path) -> dict[str, pa.Table]:
    """The validated string tables of a reference directory (see :func:`read_reference_set`)."""
    return read_reference_set(directory)[1]


def build_reference_data(version: str, tables: Mapping[str, pa.Table]) -> ReferenceData:
    """:meth:`ReferenceData.from_tables`, with ``ValueError`` as :class:`ReferenceDataError`."""
    try:
        return ReferenceData.from_tables(
            version=version,
            npa_regions=tables["npa_regions"],
            npanxx=tables["npanxx"],
            ocn=tables["ocn"],
            lnp=tables["lnp"],
            accounts=tables["accounts"],
            blocklist=tables["blocklist"],
        )
    except ValueError as exc:
        raise ReferenceDataError(f"reference data {version}: {mask_text(str(exc))}") from exc


def load_reference_dir(directory: Path) -> ReferenceData:
    """Read, validate and index a reference directory (batch mode, no Redis)."""
    version, tables = read_reference_set(directory)
    return build_reference_data(version, tables)


# --------------------------------------------------------------------------- reading
def _read_contents(directory: Path) -> dict[str, bytes]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ReferenceDataError(f"reference directory {str(directory)!r} does not exist")
    contents: dict[str, bytes] = {}
    for name, (file_name, _) in REFERENCE_FILES.items():
        try:
            contents[name] = (directory / file_name).read_bytes()
        except FileNotFoundError:
            raise ReferenceDataError(f"{file_name}: missing from {str(directory)!r}") from None
        except OSError as exc:
            raise ReferenceDataError(f"{file_name}: cannot be read: {exc}") from exc
    return contents


def _read_table(name: str, data: bytes) -> pa.Table:
    file_name, columns = REFERENCE_FILES[name]
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    _check_header(file_name, columns, data)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(skip_rows=1, column_names=list(columns)),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        if b"\n" not in data.rstrip(b"\r\n"):  # header only: pyarrow calls that empty
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        raise ReferenceDataError(_describe_parse_error(file_name, columns, data, exc)) from exc
    _check_values(name, table, data)
    return table


def _check_header(file_name: str, columns: tuple[str, ...], data: bytes) -> None:
    expected = ",".join(columns)
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise ReferenceDataError(f"{file_name} line 1: header is not UTF-8") from None
    if not text.strip():
        raise ReferenceDataError(f"{file_name} line 1: header {expected!r} is missing")
    found = [c.strip() for c in next(csv.reader([text]))]
    if tuple(found) == columns:
        return
    missing = [c for c in columns if c not in found]
    extra = [c for c in found if c not in columns]
    if missing:
        detail = "missing column " + ", ".join(repr(c) for c in missing)
    elif extra:
        detail = "unexpected column " + ", ".join(repr(c) for c in extra)
    else:
        detail = "columns out of order or repeated"
    raise ReferenceDataError(
        f"{file_name} line 1: header must be {expected!r}, got {mask_value(text)} ({detail})"
    )


def _describe_parse_error(
    file_name: str, columns: tuple[str, ...], data: bytes, exc: pa.ArrowInvalid
) -> str:
    """Find the first line pyarrow could not parse (slow path, errors only)."""
    for line_no, raw in _physical_lines(data):
        if line_no == 1 or not raw:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return f"{file_name} line {line_no}: not valid UTF-8"
        fields = next(csv.reader([text]), [])
        if len(fields) != len(columns):
            return (
                f"{file_name} line {line_no}: expected {len(columns)} fields "
                f"({','.join(columns)}), got {len(fields)}"
            )
        if text.count('"') % 2:
            return f"{file_name} line {line_no}: unbalanced quote"
    return f"{file_name}: cannot be parsed as CSV: {exc}"


def _physical_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, line without its end-of-line)`` for every line."""
    for i, raw in enumerate(data.split(b"\n"), start=1):
        yield i, raw.rstrip(b"\r")


def _line_of_row(data: bytes, row: int) -> int:
    """Physical line of data row ``row`` (0-based); pyarrow skips empty lines."""
    if b"\n\n" not in data and b"\n\r\n" not in data:
        return row + 2
    seen = -1
    for line_no, raw in _physical_lines(data):
        if line_no == 1 or not raw:
            continue
        seen += 1
        if seen == row:
            return line_no
    return row + 2


# ------------------------------------------------------------------------ validation
def _regex(table: pa.Table, column: str, pattern: str, reason: str) -> _Check:
    return _Check(column, pc.match_substring_regex(table.column(column), pattern), reason)


def _one_of(table: pa.Table, column: str, values: frozenset[str] | tuple[str, ...]) -> _Check:
    allowed = sorted(values)
    ok = pc.is_in(table.column(column), value_set=pa.array(allowed, pa.string()))
    return _Check(column, ok, "must be one of " + ", ".join(allowed))


def _text(table: pa.Table, column: str, what: str = "must be non-empty") -> list[_Check]:
    return [
        _regex(table, column, _TEXT, f"{what}, without leading or trailing blanks"),
        _regex(table, column, _NO_CONTROL, "must not contain control characters"),
    ]


def _value_checks(name: str, t: pa.Table) -> list[_Check]:
    """The per-value rules of one file (spec section 2)."""
    if name == "npa_regions":
        return [
            _regex(t, "npa", r"^[2-9][0-9]{2}$", "must be 3 digits, the first 2-9"),
            _one_of(t, "region", NANP_REGIONS),
            _regex(t, "state", r"^[A-Z]{2}$", "must be a 2-letter upper-case code"),
        ]
    if name == "npanxx":
        return [
            _regex(
                t, "prefix", r"^[2-9][0-9]{5,6}$", "must be 6 or 7 digits (NPA-NXX[-X]), first 2-9"
            ),
            _regex(t, "ocn", r"^[A-Za-z0-9]{1,8}$", "must be 1-8 letters or digits"),
            _regex(t, "state", r"^([A-Z]{2})?$", "must be empty or a 2-letter upper-case code"),
            _regex(t, "rate_center", _NO_CONTROL, "must not contain control characters"),
        ]
    if name == "ocn":
        return [
            _regex(t, "ocn", r"^[A-Za-z0-9]{1,8}$", "must be 1-8 letters or digits"),
            *_text(t, "carrier_name"),
            _one_of(t, "category", OCN_CATEGORIES),
        ]
    if name == "lnp":
        return [
            _regex(t, "tn", r"^[2-9][0-9]{9}$", "must be 10 digits, the first 2-9"),
            _regex(t, "ocn", r"^[A-Za-z0-9]{1,8}$", "must be 1-8 letters or digits"),
            _regex(t, "lrn", r"^[0-9]{10}$", "must be 10 digits"),
        ]
    if name == "accounts":
        return [
            *_text(t, "account_id"),
            _regex(t, "tariff_id", r"^[a-z0-9_-]+$", "must match [a-z0-9_-]+"),
            _regex(
                t,
                "toll_free_flat_per_min",
                r"^([0-9]+(\.[0-9]{1,6})?)?$",
                "must be empty or a non-negative decimal with at most 6 decimal places",
            ),
            _regex(t, "enforce_minute_cap", r"^(true|false)$", "must be 'true' or 'false'"),
        ]
    if name == "blocklist":
        return [
            _regex(t, "prefix", r"^[1-9][0-9]{0,14}$", "must be 1-15 digits (E.164 without +)"),
            *_text(t, "reason"),
        ]
    raise AssertionError(name)


#: Key column of each file: a value may appear once.
_KEYS = {
    "npa_regions": "npa",
    "npanxx": "prefix",
    "ocn": "ocn",
    "lnp": "tn",
    "accounts": "account_id",
    "blocklist": "prefix",
}


def _check_values(name: str, table: pa.Table, data: bytes) -> None:
    file_name = REFERENCE_FILES[name][0]
    _raise_first_failure(file_name, table, data, _value_checks(name, table))
    dup = _first_duplicate(table.column(_KEYS[name]))
    if dup is not None:
        row, first = dup
        key = _KEYS[name]
        value = table.column(key)[row].as_py()
        raise ReferenceDataError(
            f"{file_name} line {_line_of_row(data, row)}: duplicate {key} {mask_value(value)} "
            f"(first on line {_line_of_row(data, first)})"
        )


def _raise_first_failure(
    file_name: str, table: pa.Table, data: bytes, checks: list[_Check]
) -> None:
    """Raise for the first row failing any check (first failing check of that row)."""
    if not checks or table.num_rows == 0:
        return
    all_ok = checks[0].ok
    for check in checks[1:]:
        all_ok = pc.and_(all_ok, check.ok)
    row = pc.index(all_ok, False).as_py()
    if row is None or row < 0:
        return
    for check in checks:
        if not check.ok[row].as_py():
            value = table.column(check.column)[row].as_py()
            raise ReferenceDataError(
                f"{file_name} line {_line_of_row(data, row)}: "
                f"{check.column} {_quoted(check.column, value)} {check.reason}"
            )
    raise AssertionError("unreachable: a failing row fails a check")


def _quoted(column: str, value: object) -> str:
    """``value`` as an error message quotes it: masked unless ``column`` is plain."""
    return repr(value) if column in _PLAIN_COLUMNS else mask_value(value)


def _first_duplicate(column: pa.ChunkedArray) -> tuple[int, int] | None:
    """``(row, first row)`` of the first value seen before, or None."""
    if pc.count_distinct(column).as_py() == len(column):
        return None
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    _, first_rows = np.unique(codes, return_index=True)
    repeated = np.ones(codes.size, dtype=np.bool_)
    repeated[first_rows] = False
    row = int(np.flatnonzero(repeated)[0])
    first = int(np.flatnonzero(codes == codes[row])[0])
    return row, first


def _check_references(tables: Mapping[str, pa.Table], contents: Mapping[str, bytes]) -> None:
    """Cross-file rules: OCNs of npanxx and lnp exist; each npanxx NPA is in npa_regions."""
    ocns = tables["ocn"].column("ocn").combine_chunks()
    npas = tables["npa_regions"].column("npa").combine_chunks()
    npanxx = tables["npanxx"]
    lnp = tables["lnp"]
    npa_of_prefix = pc.utf8_slice_codeunits(npanxx.column("prefix"), 0, 3)
    rules: list[tuple[str, pa.Table, list[_Check]]] = [
        (
            "npanxx",
            npanxx,
            [
                _Check("ocn", pc.is_in(npanxx.column("ocn"), value_set=ocns), "is not in ocn.csv"),
                _Check(
                    "prefix",
                    pc.is_in(npa_of_prefix, value_set=npas),
                    "has an NPA that is not in npa_regions.csv",
                ),
            ],
        ),
        (
            "lnp",
            lnp,
            [_Check("ocn", pc.is_in(lnp.column("ocn"), value_set=ocns), "is not in ocn.csv")],
        ),
    ]
    for name, table, checks in rules:
        _raise_first_failure(REFERENCE_FILES[name][0], table, contents[name], checks)
