"""``cvm varstore``, one decision at a time: what ``show`` decodes and prints of each variable,
the databases ``enroll`` writes (under which GUID, attributes and time, Secure Boot on), each
certificate named by its option, an update's data, time and attributes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cvm.cli import varstore
from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_CERT_SHA256, EFI_CERT_X509, SECURE_BOOT_VARIABLES
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.wire import Guid

OWNER = Guid.parse("0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b")
VENDOR = Guid.parse("11111111-2222-3333-4444-555555555555")
HASH = hashlib.sha256(b"image").digest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("varstore")
    key = generate_rsa_key()
    certificate = issue_certificate("owner", key)
    paths = {"cert": folder / "owner.pem", "key": folder / "owner.key",
             "other": folder / "other.pem", "junk": folder / "junk", "esl": folder / "hash.esl"}
    paths["cert"].write_bytes(pem(certificate))
    paths["key"].write_bytes(private_key_pem(key))
    paths["other"].write_bytes(pem(issue_certificate("other", generate_rsa_key())))
    paths["junk"].write_bytes(b"junk" * 10)
    paths["esl"].write_bytes(SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OWNER, HASH),
                                                )).to_bytes())
    return paths


def _der(path: Path) -> bytes:
    return der(varstore.load_certificate(path.read_bytes()))


@pytest.mark.parametrize("name", sorted(varstore.SIGNATURE_VARIABLES))
def test_each_signature_variable_is_decoded_as_signature_lists(name: str) -> None:
    data = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OWNER, HASH),)).to_bytes()
    document = varstore.variable_document(EfiVariable(name, VENDOR, 0x27, data))
    assert document == {"name": name, "vendor": str(VENDOR), "attributes": "NV|BS|RT|AT",
                        "size": len(data), "entries": [
                            {"type": "EFI_CERT_SHA256", "owner": str(OWNER), "size": 32,
                             "hash": HASH.hex()}]}


@pytest.mark.parametrize(("name", "data", "value"), [
    ("db", b"", ""), ("SecureBootEnable", b"\x01", "01"), ("Counter", b"12345678",
                                                           "3132333435363738")])
def test_an_empty_signature_variable_or_a_short_value_is_shown_in_hex(
        name: str, data: bytes, value: str) -> None:
    document = varstore.variable_document(EfiVariable(name, VENDOR, 0x3, data))
    assert document == {"name": name, "vendor": str(VENDOR), "attributes": "NV|BS",
                        "size": len(data), "value": value}


def test_a_longer_value_is_only_sized() -> None:
    document = varstore.variable_document(EfiVariable("Boot0000", VENDOR, 0x7, b"x" * 9))
    assert document == {"name": "Boot0000", "vendor": str(VENDOR), "attributes": "NV|BS|RT",
                        "size": 9}


def test_a_certificate_entry_is_named_by_subject_and_digest(files: dict[str, Path]) -> None:
    certificate = _der(files["cert"])
    data = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, certificate),
                              SignatureList.of(EFI_CERT_X509, VENDOR, b"not a certificate"),
                              )).to_bytes()
    document = varstore.variable_document(EfiVariable("KEK", VENDOR, 0x27, data))
    assert document["entries"] == [
        {"type": "EFI_CERT_X509", "owner": str(OWNER), "size": len(certificate),
         "subject": "CN=owner", "sha256": hashlib.sha256(certificate).hexdigest()},
        {"type": "EFI_CERT_X509", "owner": str(VENDOR), "size": 17, "subject": None,
         "sha256": hashlib.sha256(b"not a certificate").hexdigest()}]


def test_show_prints_a_line_per_variable_and_per_entry() -> None:
    assert varstore.show_lines([
        {"name": "db", "vendor": "v", "attributes": "NV", "size": 3, "entries": [
            {"type": "EFI_CERT_X509", "owner": "o", "subject": "CN=a", "sha256": "s"},
            {"type": "EFI_CERT_X509", "owner": "o", "subject": None, "sha256": "s"},
            {"type": "EFI_CERT_SHA256", "owner": "p", "hash": "ab"}]},
        {"name": "Flag", "vendor": "w", "attributes": "NV|BS", "size": 1, "value": "01"},
        {"name": "Long", "vendor": "w", "attributes": "0", "size": 9}]) == [
        "db {v} NV 3 bytes", "    EFI_CERT_X509 owner o: CN=a", "    EFI_CERT_X509 owner o: None",
        "    EFI_CERT_SHA256 owner p: ab", "Flag {w} NV|BS 1 bytes = 01", "Long {w} 0 9 bytes"]


def test_show_prints_the_decoded_store(files: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(files["cert"]), "-o", str(out)]) == 0
    capsys.readouterr()
    assert execute(["varstore", "show", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"PK {{{SECURE_BOOT_VARIABLES['PK']}}} NV|BS|RT|AT "
                        f"{len(_der(files['cert'])) + 28 + 16} bytes")
    assert lines[1] == "    EFI_CERT_X509 owner 00000000-0000-0000-0000-000000000000: CN=owner"


def test_enroll_takes_each_option_into_its_database(files: dict[str, Path]) -> None:
    values = varstore.enrolled_databases(files["cert"], [files["other"], files["cert"]],
                                         [files["other"]], [HASH.hex()], [HASH.hex().upper()],
                                         OWNER)
    assert list(values) == ["PK", "KEK", "db", "dbx"]
    assert [e.data for e in values["PK"].certificates()] == [_der(files["cert"])]
    assert [e.data for e in values["KEK"].certificates()] == [_der(files["other"]),
                                                              _der(files["cert"])]
    assert [e.data for e in values["db"].certificates()] == [_der(files["other"])]
    assert [e.data for e in values["db"].sha256_hashes()] == [HASH]
    assert [e.data for e in values["dbx"].sha256_hashes()] == [HASH]
    assert len(values["dbx"]) == 1 and len(values["db"]) == 2
    assert {e.owner for database in values.values() for e in database.certificates()} == {OWNER}
    assert {e.owner for e in values["dbx"].sha256_hashes()} == {OWNER}


@pytest.mark.parametrize("option", ["--pk", "--kek", "--db"])
def test_a_certificate_that_does_not_parse_is_named_with_its_option(
        files: dict[str, Path], option: str) -> None:
    given = {"--pk": files["cert"], "--kek": [], "--db": []}
    given[option] = files["junk"] if option == "--pk" else [files["junk"]]
    with pytest.raises(FormatError) as refused:
        varstore.enrolled_databases(given["--pk"], given["--kek"], given["--db"],  # type: ignore[arg-type]
                                    [], [], OWNER)
    assert str(refused.value).startswith(f"{option} {files['junk']}: ")


def test_enroll_names_the_certificate_that_does_not_parse(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["varstore", "enroll", "--pk", str(files["cert"]), "--kek",
                    str(files["junk"]), "-o", str(tmp_path / "o")]) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"cvm: error: --kek {files['junk']}: ") and err.count("\n") == 1


@pytest.mark.parametrize(("hashes", "says"), [
    (["zz" * 32], "a hash is not hexadecimal"),
    ([HASH.hex(), "ab" * 31], "an image hash for db/dbx must be 32 bytes (SHA-256)"),
    (["ab" * 33], "an image hash for db/dbx must be 32 bytes (SHA-256)")])
def test_an_image_hash_is_32_bytes_in_hex(hashes: list[str], says: str) -> None:
    with pytest.raises(FormatError) as refused:
        varstore._hash_database(hashes, OWNER)
    assert str(refused.value) == says


def test_no_hash_is_no_list() -> None:
    assert varstore._hash_database([], OWNER).lists == ()
    assert len(varstore._hash_database([HASH.hex(), HASH.hex()], OWNER).lists) == 1


def test_the_databases_given_are_set_and_secure_boot_turned_on(files: dict[str, Path]) -> None:
    values = varstore.enrolled_databases(files["cert"], [], [], [], [HASH.hex()], OWNER)
    store = varstore.enrolled(Varstore.empty_4m(), values)
    stamp = EfiTime(2025, 1, 1, 0, 0, 0)
    unset = EfiVariable("x", OWNER, 0, b"").timestamp
    assert [(v.name, v.vendor, v.attributes, v.timestamp) for v in store.variables] == [
        ("PK", SECURE_BOOT_VARIABLES["PK"], 0x27, stamp),
        ("dbx", SECURE_BOOT_VARIABLES["dbx"], 0x27, stamp),
        ("SecureBootEnable", varstore.EFI_SECURE_BOOT_ENABLE_DISABLE, 0x3, unset),
        ("CustomMode", varstore.EFI_CUSTOM_MODE_ENABLE, 0x3, unset)]
    assert store.variables[0].data == values["PK"].to_bytes()
    assert store.variables[1].data == values["dbx"].to_bytes()
    assert store.variables[2].data == b"\x01" and store.variables[3].data == b"\x00"
    assert str(varstore.EFI_SECURE_BOOT_ENABLE_DISABLE) == "f0a30bc7-af08-4556-99c4-001009c93a44"
    assert str(varstore.EFI_CUSTOM_MODE_ENABLE) == "c076ec0c-7028-4399-a072-71ee5c448b9f"


def test_enroll_rewrites_a_template_and_says_what_it_wrote(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "template.fd"
    template.write_bytes(Varstore.empty_4m().set(
        EfiVariable("Kept", VENDOR, 0x7, b"kept")).to_bytes())
    out = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(files["cert"]), "--db-hash", HASH.hex(),
                    "--template", str(template), "--owner", str(OWNER), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: PK 1, KEK 0, db 1, dbx 0\n"
    names = [v.name for v in Varstore.parse(out.read_bytes()).variables]
    assert names == ["Kept", "PK", "db", "SecureBootEnable", "CustomMode"]


def test_an_update_takes_certificates_and_signature_lists_in_order(files: dict[str, Path]
                                                                    ) -> None:
    data = varstore.update_data([files["cert"], files["esl"]], VENDOR)
    database = SignatureDatabase.parse(data)
    assert [(item.type_name, [(s.owner, s.data) for s in item.signatures])
            for item in database.lists] == [
        ("EFI_CERT_X509", [(VENDOR, _der(files["cert"]))]),
        ("EFI_CERT_SHA256", [(OWNER, HASH)])]
    assert varstore.update_data([], VENDOR) == b""


def test_an_update_file_that_is_neither_is_named(files: dict[str, Path]) -> None:
    with pytest.raises(FormatError) as refused:
        varstore.update_data([files["cert"], files["junk"]], OWNER)
    assert str(refused.value) == (f"--add {files['junk']}: neither an X.509 certificate nor "
                                  "EFI signature lists")


@pytest.mark.parametrize(("text", "stamp"), [
    ("2026-02-03T04:05:06", (2026, 2, 3, 4, 5, 6)),
    ("2026-02-03T04:05:06Z", (2026, 2, 3, 4, 5, 6)),
    ("2026-02-03T04:05:06+02:00", (2026, 2, 3, 2, 5, 6)),
    ("2026-01-01T01:00:00+03:00", (2025, 12, 31, 22, 0, 0))])
def test_an_updates_time_is_utc(text: str, stamp: tuple[int, ...]) -> None:
    assert varstore.update_time(text) == EfiTime(*stamp)


def test_a_time_that_is_not_iso_8601_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        varstore.update_time("yesterday")
    assert str(refused.value) == "--time 'yesterday' is not an ISO 8601 date and time"


def test_an_append_write_adds_its_attribute() -> None:
    assert varstore.update_attributes(False) == 0x27
    assert varstore.update_attributes(True) == 0x67


def test_auth_with_an_offset_signs_the_utc_time_a_later_update_must_pass(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(files["cert"]), "--kek",
                    str(files["cert"]), "-o", str(store)]) == 0

    def auth(time: str, out: Path, *more: str) -> None:
        assert execute(["varstore", "auth", "db", "--add", str(files["other"]), "--key",
                        str(files["key"]), "--cert", str(files["cert"]), "--time", time,
                        "-o", str(out), *more]) == 0

    first, second = tmp_path / "first.auth", tmp_path / "second.auth"
    auth("2026-02-03T10:00:00", first)
    auth("2026-02-03T11:00:00+02:00", second)  # 09:00 UTC: older than the first
    assert execute(["varstore", "update", str(store), "db", str(first), "-o",
                    str(tmp_path / "one.fd")]) == 0
    capsys.readouterr()
    assert execute(["varstore", "update", str(tmp_path / "one.fd"), "db", str(second),
                    "-o", str(tmp_path / "two.fd")]) == 67
    assert "timestamp" in capsys.readouterr().err


def test_auth_and_update_say_what_they_wrote(files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store, out, updated = tmp_path / "vars.fd", tmp_path / "db.auth", tmp_path / "new.fd"
    assert execute(["varstore", "enroll", "--pk", str(files["cert"]), "--kek",
                    str(files["cert"]), "-o", str(store)]) == 0
    capsys.readouterr()
    assert execute(["varstore", "auth", "db", "--add", str(files["esl"]), "--key",
                    str(files["key"]), "--cert", str(files["cert"]), "--append",
                    "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: db update, {len(out.read_bytes())} bytes\n"
    assert execute(["varstore", "update", str(store), "db", str(out), "--append",
                    "-o", str(updated)]) == 0
    assert capsys.readouterr().out == f"wrote {updated}: db updated\n"
    db = Varstore.parse(updated.read_bytes()).get("db")
    assert db is not None and db.attributes == 0x27
    assert [e.data for e in SignatureDatabase.parse(db.data).sha256_hashes()] == [HASH]


def test_a_certificate_after_signature_lists_is_added_to_them(files: dict[str, Path]) -> None:
    database = SignatureDatabase.parse(varstore.update_data([files["esl"], files["cert"]],
                                                            VENDOR))
    assert [item.type_name for item in database.lists] == ["EFI_CERT_SHA256", "EFI_CERT_X509"]


def test_an_offset_is_taken_to_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert varstore.update_time("2026-02-03T04:05:06+02:00") == EfiTime(2026, 2, 3, 2, 5, 6)
    finally:
        monkeypatch.undo()
        time.tzset()
