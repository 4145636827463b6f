"""Reference directory files (spec section 2): validation, R-CARRIER, R-REGION facts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import ReferenceDataError
from pipeline.rating.codes import CATEGORY_NAMES, OCN_CATEGORIES, REGIONS, Region
from pipeline.rating.reference import ReferenceData
from pipeline.refdata.files import (
    REFERENCE_FILES,
    SAMPLE_REFDATA_DIR,
    directory_version,
    load_reference_dir,
    read_reference_set,
    read_reference_tables,
)
from pipeline.refdata.generate import generate_reference_dir


@pytest.fixture(scope="module")
def sample() -> ReferenceData:
    return load_reference_dir(SAMPLE_REFDATA_DIR)


@pytest.fixture
def ref_dir(tmp_path: Path) -> Path:
    """A writable copy of the sample set."""
    out = tmp_path / "ref"
    shutil.copytree(SAMPLE_REFDATA_DIR, out)
    return out


def set_line(path: Path, line_no: int, text: str) -> None:
    """Replace 1-based line ``line_no`` of ``path`` with ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def refused(directory: Path) -> str:
    with pytest.raises(ReferenceDataError) as info:
        load_reference_dir(directory)
    return str(info.value)


# --------------------------------------------------------------------------- sample set
def test_sample_set_loads() -> None:
    version, tables = read_reference_set(SAMPLE_REFDATA_DIR)
    assert len(version) == 16
    for name, (_, columns) in REFERENCE_FILES.items():
        assert tuple(tables[name].column_names) == columns
        assert all(t == pa.string() for t in tables[name].schema.types)
    assert tables["lnp"].num_rows >= 200
    assert set(tables["ocn"].column("category").to_pylist()) == set(OCN_CATEGORIES)
    assert load_reference_dir(SAMPLE_REFDATA_DIR).version == version


def test_sample_accounts_are_the_documented_ones(sample: ReferenceData) -> None:
    rows = read_reference_tables(SAMPLE_REFDATA_DIR)["accounts"].to_pylist()
    assert [r["account_id"] for r in rows] == [f"ACC-{n}" for n in range(1001, 1013)]
    by_id = {r["account_id"]: r for r in rows}
    assert {a for a, r in by_id.items() if r["tariff_id"] == "wholesale"} == {
        "ACC-1011",
        "ACC-1012",
    }
    assert {
        a: r["toll_free_flat_per_min"] for a, r in by_id.items() if r["toll_free_flat_per_min"]
    } == {"ACC-1003": "0.0120", "ACC-1007": "0.0135"}
    assert {a for a, r in by_id.items() if r["enforce_minute_cap"] == "true"} == {
        "ACC-1001",
        "ACC-1002",
        "ACC-1005",
        "ACC-1011",
    }
    idx = sample.account_index(pa.array(["ACC-1003", "ACC-1001", "ACC-9999"]))
    assert idx[2] == -1
    assert sample.account_toll_free_micro[idx[0]] == 12_000  # 0.0120 per minute, exact
    assert sample.account_toll_free_micro[idx[1]] == -1


def test_version_is_a_content_hash(ref_dir: Path) -> None:
    assert directory_version(ref_dir) == directory_version(SAMPLE_REFDATA_DIR)
    path = ref_dir / "blocklist.csv"
    path.write_text(path.read_text(encoding="utf-8") + "8817,satellite\n", encoding="utf-8")
    assert directory_version(ref_dir) != directory_version(SAMPLE_REFDATA_DIR)
    assert load_reference_dir(ref_dir).version == directory_version(ref_dir)


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("file_name", "header", "reason"),
    [
        ("npa_regions.csv", "npa,region,stat", "missing column 'state'"),
        ("npa_regions.csv", "npa,region", "missing column 'state'"),
        ("lnp.csv", "tn,ocn,lrn,note", "unexpected column 'note'"),
        ("ocn.csv", "ocn,category,carrier_name", "columns out of order"),
    ],
)
def test_bad_header_is_refused(ref_dir: Path, file_name: str, header: str, reason: str) -> None:
    set_line(ref_dir / file_name, 1, header)
    message = refused(ref_dir)
    assert message.startswith(f"{file_name} line 1: header must be")
    assert reason in message


@pytest.mark.parametrize(
    ("file_name", "line", "text", "message"),
    [
        (
            "lnp.csv",
            7,
            "90755501,XR01,9075550000",
            "lnp.csv line 7: tn '<number>' must be 10 digits",  # CPNI: masked
        ),
        ("lnp.csv", 3, "9075550123,XR01,907555", "lnp.csv line 3: lrn '907555' must be 10 digits"),
        ("npa_regions.csv", 2, "201,MARS,NJ", "npa_regions.csv line 2: region 'MARS' must be one"),
        ("npa_regions.csv", 4, "103,US48,NJ", "npa_regions.csv line 4: npa '103' must be 3 digits"),
        ("npa_regions.csv", 5, "205,US48,", "npa_regions.csv line 5: state '' must be a 2-letter"),
        ("npanxx.csv", 9, "20155,XR01,NJ,X", "npanxx.csv line 9: prefix '20155' must be 6 or 7"),
        ("ocn.csv", 3, "XR02,Someone,SATELLITE", "ocn.csv line 3: category 'SATELLITE' must be"),
        ("ocn.csv", 4, "XR03,,RBOC", "ocn.csv line 4: carrier_name '' must be non-empty"),
        (
            "accounts.csv",
            2,
            "ACC-1001,standard,0.0000001,true",
            "accounts.csv line 2: toll_free_flat_per_min '0.0000001' must be empty or a "
            "non-negative decimal with at most 6 decimal places",
        ),
        (
            "accounts.csv",
            3,
            "ACC-1002,standard,-0.01,true",
            "accounts.csv line 3: toll_free_flat_per_min '-0.01'",
        ),
        (
            "accounts.csv",
            4,
            "ACC-1003,standard,0.0120,yes",
            "accounts.csv line 4: enforce_minute_cap 'yes' must be 'true' or 'false'",
        ),
        (
            "accounts.csv",
            5,
            "ACC-1004,Standard,,false",
            "accounts.csv line 5: tariff_id 'Standard'",
        ),
        ("accounts.csv", 6, ",standard,,false", "accounts.csv line 6: account_id '' must be"),
        ("blocklist.csv", 2, "0881,satellite", "blocklist.csv line 2: prefix '0881' must be 1-15"),
        (
            "blocklist.csv",
            3,
            "1234567890123456,x",
            "blocklist.csv line 3: prefix '<number>'",
        ),
        ("blocklist.csv", 4, "883,", "blocklist.csv line 4: reason '' must be non-empty"),
    ],
)
def test_bad_value_is_refused_naming_file_line_and_reason(
    ref_dir: Path, file_name: str, line: int, text: str, message: str
) -> None:
    set_line(ref_dir / file_name, line, text)
    assert refused(ref_dir).startswith(message)
    if "<number>" in message:  # the digits themselves are nowhere in the message
        assert text.split(",")[0] not in refused(ref_dir)


def test_first_bad_line_is_reported(ref_dir: Path) -> None:
    path = ref_dir / "lnp.csv"
    set_line(path, 40, "1,XR01,9075550000")
    set_line(path, 12, "9075550123,XR01,1")  # earlier line, other column
    assert refused(ref_dir).startswith("lnp.csv line 12: lrn '1'")


@pytest.mark.parametrize(
    ("file_name", "key", "line_a", "line_b"),
    [("lnp.csv", "tn", 5, 9), ("npa_regions.csv", "npa", 10, 30), ("ocn.csv", "ocn", 2, 6)],
)
def test_duplicate_key_is_refused(
    ref_dir: Path, file_name: str, key: str, line_a: int, line_b: int
) -> None:
    path = ref_dir / file_name
    lines = path.read_text(encoding="utf-8").splitlines()
    first_key = lines[line_a - 1].split(",")[0]
    rest = lines[line_b - 1].split(",")[1:]
    set_line(path, line_b, ",".join([first_key, *rest]))
    message = refused(ref_dir)
    shown = "'<number>'" if key == "tn" else repr(first_key)  # a tn is CPNI: masked
    assert message.startswith(f"{file_name} line {line_b}: duplicate {key} {shown}")
    assert f"first on line {line_a}" in message
    assert key != "tn" or first_key not in message


@pytest.mark.parametrize("file_name", ["npanxx.csv", "lnp.csv"])
def test_unknown_ocn_reference_is_refused(ref_dir: Path, file_name: str) -> None:
    path = ref_dir / file_name
    fields = path.read_text(encoding="utf-8").splitlines()[7].split(",")
    fields[1] = "ZZ99"
    set_line(path, 8, ",".join(fields))
    assert refused(ref_dir) == f"{file_name} line 8: ocn 'ZZ99' is not in ocn.csv"


def test_npanxx_prefix_with_unknown_npa_is_refused(ref_dir: Path) -> None:
    set_line(ref_dir / "npanxx.csv", 2, "800555,XR01,NY,X")  # toll-free: not in npa_regions
    assert refused(ref_dir) == (
        "npanxx.csv line 2: prefix '800555' has an NPA that is not in npa_regions.csv"
    )


@pytest.mark.parametrize("file_name", [f for f, _ in REFERENCE_FILES.values()])
def test_missing_file_is_refused_naming_it(ref_dir: Path, file_name: str) -> None:
    (ref_dir / file_name).unlink()
    assert refused(ref_dir).startswith(f"{file_name}: missing from")


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    assert "does not exist" in refused(tmp_path / "nowhere")


def test_wrong_field_count_is_refused_with_its_line(ref_dir: Path) -> None:
    set_line(ref_dir / "ocn.csv", 5, "XR04,Great Lakes Bell Telephone,RBOC,extra")
    assert (
        refused(ref_dir) == "ocn.csv line 5: expected 3 fields (ocn,carrier_name,category), got 4"
    )


def test_invalid_utf8_is_refused_with_its_line(ref_dir: Path) -> None:
    path = ref_dir / "ocn.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = b"XR03,Pacific \xff Bell,RBOC"
    path.write_bytes(b"\n".join(lines))
    assert refused(ref_dir) == "ocn.csv line 4: not valid UTF-8"


def test_empty_file_is_refused(ref_dir: Path) -> None:
    (ref_dir / "blocklist.csv").write_bytes(b"")
    assert refused(ref_dir).startswith("blocklist.csv line 1: header 'prefix,reason' is missing")


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(ref_dir: Path) -> None:
    path = ref_dir / "lnp.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(3, "")  # a blank line 4: data rows below move one line down
    lines[9] = "123,XR01,9075550000"  # line 10
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert refused(ref_dir).startswith("lnp.csv line 10: tn '123'")


def test_header_only_files_and_crlf_are_accepted(ref_dir: Path) -> None:
    (ref_dir / "lnp.csv").write_text("tn,ocn,lrn\n", encoding="utf-8")
    path = ref_dir / "blocklist.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    ref = load_reference_dir(ref_dir)
    assert len(ref.lnp) == 0
    assert len(ref.blocklist_reasons) == 8


# --------------------------------------------------------------------------- R-CARRIER
def origin_carrier(ref: ReferenceData, tn: int) -> tuple[str | None, str]:
    """R-CARRIER by the spec's precedence: LNP, else 7-digit block, else 6-digit NPA-NXX."""
    probe = np.asarray([tn], dtype=np.int64)
    for index, ocns, key in (
        (ref.lnp, ref.lnp_ocn, probe),
        (ref.block7, ref.block7_ocn, probe // 1000),
        (ref.block6, ref.block6_ocn, probe // 10_000),
    ):
        pos = int(index.find(key)[0])
        if pos >= 0:
            ocn = int(ocns[pos])
            return ref.ocns[ocn], CATEGORY_NAMES[int(ref.ocn_category[ocn])]
    return None, "UNKNOWN"


def test_r_carrier_precedence_lnp_then_block7_then_block6(sample: ReferenceData) -> None:
    """R-CARRIER: 312-555 is an RBOC code, 312-555-1 a CLEC block, 312-555-1234 ported."""
    assert origin_carrier(sample, 3125551234) == ("XW02", "WIRELESS")  # LNP wins
    assert origin_carrier(sample, 3125551999) == ("XC01", "CLEC")  # then the 7-digit block
    assert origin_carrier(sample, 3125559999) == ("XR01", "RBOC")  # then the NPA-NXX
    assert int(sample.block6.find(np.asarray([312999], dtype=np.int64))[0]) == -1
    assert origin_carrier(sample, 3129990000) == (None, "UNKNOWN")  # no match


def test_r_carrier_every_block7_differs_from_its_parent(sample: ReferenceData) -> None:
    """R-CARRIER: the sample's thousands blocks are held by another carrier."""
    parents = sample.block6.find(sample.block7.keys // 10)
    assert (parents >= 0).all()
    assert (sample.block6_ocn[parents] != sample.block7_ocn).all()


def test_r_carrier_ported_numbers_change_carrier(sample: ReferenceData) -> None:
    """R-CARRIER: every sample LNP entry names another carrier than its block."""
    for tn, ocn in zip(sample.lnp.keys.tolist(), sample.lnp_ocn.tolist(), strict=True):
        pos7 = int(sample.block7.find(np.asarray([tn // 1000]))[0])
        pos6 = int(sample.block6.find(np.asarray([tn // 10_000]))[0])
        block_ocn = sample.block7_ocn[pos7] if pos7 >= 0 else sample.block6_ocn[pos6]
        assert pos6 >= 0
        assert block_ocn != ocn


# ---------------------------------------------------------------------------- R-REGION
def region_state(ref: ReferenceData, npa: int) -> tuple[str, str | None]:
    state = int(ref.npa_state[npa])
    return REGIONS[int(ref.npa_region[npa])], ref.states[state] if state >= 0 else None


@pytest.mark.parametrize(
    ("npa", "region", "state"),
    [
        (907, Region.ALASKA, "AK"),
        (808, Region.HAWAII, "HI"),
        (787, Region.PUERTO_RICO, "PR"),
        (939, Region.PUERTO_RICO, "PR"),
        (340, Region.USVI, "VI"),
        (671, Region.GUAM, "GU"),
        (670, Region.CNMI, "MP"),
        (684, Region.AMERICAN_SAMOA, "AS"),
        (416, Region.CANADA, "ON"),
        (514, Region.CANADA, "QC"),
        (604, Region.CANADA, "BC"),
        (867, Region.CANADA, "NT"),
        (876, Region.CARIBBEAN, "JM"),
        (658, Region.CARIBBEAN, "JM"),
        (809, Region.CARIBBEAN, "DO"),
        (441, Region.CARIBBEAN, "BM"),
        (212, Region.US48, "NY"),
        (312, Region.US48, "IL"),
        (202, Region.US48, "DC"),
        (213, Region.US48, "CA"),
        (713, Region.US48, "TX"),
        (305, Region.US48, "FL"),
    ],
)
def test_r_region_npa_facts(sample: ReferenceData, npa: int, region: str, state: str) -> None:
    """R-REGION: the region and state of well-known area codes."""
    assert region_state(sample, npa) == (region, state)


@pytest.mark.parametrize("npa", [800, 833, 844, 855, 866, 877, 888, 900, 500, 600, 700, 911])
def test_r_region_non_geographic_codes_are_not_listed(sample: ReferenceData, npa: int) -> None:
    """R-REGION: toll-free and non-geographic NPAs are UNKNOWN (not in npa_regions)."""
    assert region_state(sample, npa) == (Region.UNKNOWN, None)


def test_r_region_table_covers_the_nanp(sample: ReferenceData) -> None:
    """R-REGION: every US state and DC, every province, ~440 geographic codes."""
    rows = read_reference_tables(SAMPLE_REFDATA_DIR)["npa_regions"].to_pylist()
    us48 = {r["state"] for r in rows if r["region"] == Region.US48}
    assert len(us48) == 49  # 48 contiguous states + DC
    canada = {r["state"] for r in rows if r["region"] == Region.CANADA}
    assert canada == {"AB", "BC", "MB", "NB", "NL", "NS", "NT", "ON", "QC", "SK"}
    assert sum(r["region"] == Region.US48 for r in rows) > 330
    assert sum(r["region"] == Region.CANADA for r in rows) >= 40
    assert 420 < len(rows) < 480


# --------------------------------------------------------------------------- generator
def test_generator_makes_the_requested_sizes_and_loads(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    generate_reference_dir(out, npanxx_rows=5_000, lnp_rows=20_000, ocn_rows=300, seed=3)
    tables = read_reference_tables(out)
    assert tables["npanxx"].num_rows == 5_000
    assert tables["lnp"].num_rows == 20_000
    assert tables["ocn"].num_rows == 300
    ref = load_reference_dir(out)
    assert len(ref.block7) == 500
    assert len(ref.block6) == 4_500
    parents = ref.block6.find(ref.block7.keys // 10)
    assert (parents >= 0).all()
    assert (ref.block6_ocn[parents] != ref.block7_ocn).all()
    assert (ref.block6.find(ref.lnp.keys // 10_000) >= 0).all()  # numbers in real codes
    assert set(ref.ocn_category.tolist()) == set(range(len(OCN_CATEGORIES)))
    for name in ("npa_regions.csv", "accounts.csv", "blocklist.csv"):
        assert (out / name).read_bytes() == (SAMPLE_REFDATA_DIR / name).read_bytes()


def test_generator_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_reference_dir(tmp_path / name, npanxx_rows=1_000, lnp_rows=2_000, seed=11)
    assert directory_version(tmp_path / "a") == directory_version(tmp_path / "b")


def test_generator_refuses_impossible_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lnp_rows too large"):
        generate_reference_dir(tmp_path, npanxx_rows=10, lnp_rows=100_000)


# --------------------------------------------------------------------------- CPNI
@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            {5: "+12022228033,XR01,9075550000"},
            "refused: lnp.csv line 5: tn '<number>' must be 10 digits, the first 2-9",
        ),
        (
            {5: "2012458429,XR01,9075550000", 9: "2012458429,XR01,9075550000"},
            "refused: lnp.csv line 9: duplicate tn '<number>' (first on line 5)",
        ),
        (
            {7: "2125550100,XR01,+1 212 555 0100"},
            "refused: lnp.csv line 7: lrn '<number>' must be 10 digits",
        ),
    ],
)
def test_cli_refusal_names_file_and_line_but_not_the_number(
    ref_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: dict[int, str],
    message: str,
) -> None:
    """Issue 10 item 8: ``cdr-pipeline rate --refdata BAD`` exits 2 with a message that
    names the file, line and reason, and no digits of the bad numbers on the console."""
    from pipeline.cli import main

    events = tmp_path / "events.avro"
    assert main(["generate", "--events", "3", "--output", str(events)]) == 0
    capsys.readouterr()
    for line, text in lines.items():
        set_line(ref_dir / "lnp.csv", line, text)
    lake = tmp_path / "lake"
    assert main(["rate", "--refdata", str(ref_dir), "--output", str(lake), str(events)]) == 2
    captured = capsys.readouterr()
    console = captured.out + captured.err
    assert message in " ".join(console.split())
    for text in lines.values():
        number = text.split(",")[2 if "lrn" in message else 0]
        assert number.lstrip("+")[-7:] not in console
    assert not lake.exists()
