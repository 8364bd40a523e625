"""``cvm tpm``, one decision at a time: the bank and PCRs refused as usage errors, the values a
policy expects, the PIN in the policy exactly when given, the vTPM started, shut down and saved,
the log's measurements extended, the structures ``inspect`` tries, the ports ``serve`` takes and
the ``cmd:`` loop."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.cli import tpm
from cvm.errors import FormatError, StatusError, UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.replay import replay
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state_file import (
    HEADER_LAYOUT,
    STATE_FILE_MAGIC,
    USER_HEADER_SIZE,
    StateFileHeader,
    key_id,
)
from cvm.vtpm.state_store import StateStore
from cvm.vtpm.templates import public_from_pem, srk_template

GET_RANDOM_16 = bytes.fromhex("80010000000c0000017b0010")


@pytest.fixture
def log(vectors: Path) -> Path:
    return vectors / "tpm" / "go-tpm-tools" / "ubuntu-2404-amd-sevsnp.bin"


@pytest.mark.parametrize("bank", ["sha1", "sha256", "sha384"])
def test_a_pcr_bank_the_tpm_knows_is_taken(bank: str) -> None:
    assert tpm._bank(bank) == bank


def test_another_bank_is_a_usage_error() -> None:
    with pytest.raises(typer.BadParameter) as refused:
        tpm._bank("md5")
    assert str(refused.value) == "'md5' is not a PCR bank (sha1, sha256 or sha384)"


@pytest.mark.parametrize(("text", "pcrs"), [
    ("7", [7]), ("7,0,7", [0, 7]), (" 1 , 2 ,", [1, 2]), ("0,23", [0, 23])])
def test_pcrs_are_read_sorted_once_each(text: str, pcrs: list[int]) -> None:
    assert tpm.parse_pcrs(text) == pcrs


@pytest.mark.parametrize("text", ["24", "-1", "", ",", "0,24"])
def test_pcrs_outside_0_to_23_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        tpm.parse_pcrs(text)
    assert str(refused.value) == "--pcrs: give PCR indices between 0 and 23"


def test_pcrs_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(UsageError) as refused:
        tpm.parse_pcrs("7,x")
    assert str(refused.value) == "--pcrs: '7,x' is not a comma-separated list of numbers"


def test_the_values_come_from_exactly_one_source(tmp_path: Path, log: Path) -> None:
    for values, eventlog in ((None, None), (tmp_path / "v", log)):
        with pytest.raises(UsageError) as refused:
            tpm.predicted_values("sha256", [7], values, eventlog)
        assert str(refused.value) == "give exactly one of --pcr-values and --from-eventlog"


def test_raw_values_are_split_in_selection_order(tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"\x01" * 32 + b"\x02" * 32)
    assert tpm.predicted_values("sha256", [0, 7], tmp_path / "v", None) == [
        b"\x01" * 32, b"\x02" * 32]
    (tmp_path / "v").write_bytes(b"\x01" * 40)
    assert tpm.predicted_values("sha1", [0, 7], tmp_path / "v", None) == [
        b"\x01" * 20, b"\x01" * 20]


@pytest.mark.parametrize("size", [31, 33, 64])
def test_raw_values_of_another_size_are_refused(tmp_path: Path, size: int) -> None:
    (tmp_path / "v").write_bytes(bytes(size))
    with pytest.raises(FormatError) as refused:
        tpm.predicted_values("sha256", [7], tmp_path / "v", None)
    assert str(refused.value) == (f"{tmp_path / 'v'}: {size} bytes, expected 32 "
                                  "(1 sha256 values)")


def test_a_logs_values_are_its_replay_and_untouched_pcrs_their_reset_value(log: Path) -> None:
    replayed = replay(EventLog.parse(log.read_bytes()), (0x000B,))["sha256"]
    values = tpm.predicted_values("sha256", [0, 7, 17, 23], None, log)
    assert values[:2] == [replayed[0], replayed[7]]
    assert values[2:] == [b"\xff" * 32, bytes(32)]  # PCR 17 resets to ones, 23 to zeros
    assert 17 not in replayed and 23 not in replayed


def test_the_pin_is_in_the_policy_exactly_when_asked(tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(b"\x07" * 32)
    selection = PcrSelectionList.of("sha256", [7])
    plain = PolicyDigest.start().pcr(selection, [b"\x07" * 32])
    assert tpm.pcr_policy("sha256", "7", tmp_path / "v", None, False) == {
        "policy": plain.hex(), "bank": "sha256", "pcrs": [7], "pin": False,
        "pcr_values": {"7": "07" * 32}}
    assert tpm.pcr_policy("sha256", "7", tmp_path / "v", None, True)["policy"] == (
        plain.auth_value().hex())


def test_an_authorize_policy_names_the_key_and_its_reference(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    name = public_from_pem(pem).name()
    assert tpm.authorize_policy(tmp_path / "k.pem", "abcd") == {
        "policy": PolicyDigest.start().authorize(name, b"\xab\xcd").hex(),
        "key_name": name.hex()}
    with pytest.raises(UsageError) as refused:
        tpm.authorize_policy(tmp_path / "k.pem", "xyz")
    assert str(refused.value) == "--policy-ref must be hex"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.write_bytes(b"\x11" * 32)
    tpm.manufactured(tmp_path / "state", key, tmp_path / "ring.json")
    return tmp_path / "state"


class Calls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_shutdown: bool = False) -> None:
        self.seen: list[str] = []
        startup, shutdown, save = TpmClient.startup, TpmClient.shutdown, StateStore.save

        def on_startup(client: TpmClient, clear: bool = True) -> None:
            self.seen.append(f"startup clear={clear}")
            startup(client, clear)

        def on_shutdown(client: TpmClient, clear: bool = True) -> None:
            self.seen.append(f"shutdown clear={clear}")
            if fail_shutdown:
                raise StatusError("failure mode", 0x101)
            shutdown(client, clear)

        def on_save(store: StateStore, *args: Any) -> None:
            self.seen.append("save")
            save(store, *args)

        monkeypatch.setattr(TpmClient, "startup", on_startup)
        monkeypatch.setattr(TpmClient, "shutdown", on_shutdown)
        monkeypatch.setattr(StateStore, "save", on_save)


def _key(state: Path) -> tuple[Path, Path]:
    return state.parent / "key", state.parent / "ring.json"


def test_a_run_starts_clear_shuts_down_orderly_and_saves_whatever_happened(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    with tpm.running_tpm(state, *_key(state)) as (_, client):
        calls.seen.append("command")
        client.get_random(8)
    assert calls.seen[0] == "startup clear=True" and calls.seen[-1] == "save"
    assert "shutdown clear=True" in calls.seen[calls.seen.index("command"):]
    calls.seen.clear()
    with pytest.raises(RuntimeError), tpm.running_tpm(state, *_key(state)):
        calls.seen.append("command")
        raise RuntimeError("the caller failed")
    assert calls.seen[-1] == "save"
    assert "shutdown clear=True" in calls.seen[calls.seen.index("command"):]


def test_a_tpm_that_refuses_its_shutdown_is_saved_all_the_same(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch, fail_shutdown=True)
    store, tpm_object, client = tpm.started_tpm(state, *_key(state), 0)
    tpm.stopped_tpm(store, tpm_object, client)
    assert calls.seen[-2:] == ["shutdown clear=True", "save"]


def test_a_run_is_at_the_locality_given(state: Path) -> None:
    _, _, client = tpm.started_tpm(state, *_key(state), 3)
    value = client.pcr_read(PcrSelectionList.of("sha256", [0]))[2][0]
    assert value == bytes(31) + b"\x03"


def test_the_logs_measurements_are_extended_and_nothing_else(state: Path, log: Path) -> None:
    parsed = EventLog.parse(log.read_bytes())
    replayed = replay(parsed, (0x000B, 0x0004))
    with tpm.boot_from_eventlog(state, log, *_key(state)) as (_, client):
        for bank, size in (("sha256", 32), ("sha1", 20)):
            pcrs = sorted(replayed[bank])
            values = client.pcr_read(PcrSelectionList.of(bank, pcrs[:8]))[2]
            assert values == [replayed[bank][p] for p in pcrs[:8]]
            assert client.pcr_read(PcrSelectionList.of(bank, [23]))[2] == [bytes(size)]


def test_manufacture_says_what_the_state_is_sealed_under(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"\x22" * 32)
    line = tpm.manufactured(tmp_path / "a", key, tmp_path / "ring.json")
    assert line.startswith(f"{tmp_path / 'a'}: a new vTPM, sealed under the key file {key} "
                           "(key id ")
    assert line.endswith(f", counter in {tmp_path / 'ring.json'})")
    line = tpm.manufactured(tmp_path / "b", None, tmp_path / "ring.json")
    assert f"sealed under a key kept in {tmp_path / 'ring.json'} (key id " in line
    with pytest.raises(UsageError):
        StateStore.open(tmp_path / "b", tpm.keyring_at(tmp_path / "other.json"), None)
    StateStore.open(tmp_path / "b", tpm.keyring_at(tmp_path / "ring.json"), None)


def test_a_secret_sealed_without_a_pin_unseals_without_one(state: Path, log: Path) -> None:
    blob = tpm.sealed_secret(state, "sha256", "0,7", None, log, None, b"secret", *_key(state))
    (state.parent / "blob").write_bytes(blob.to_bytes())
    assert tpm.unsealed_secret(state.parent / "blob", state, "sha256", "0,7", log, None,
                               *_key(state)) == b"secret"
    assert blob.public.auth_policy.hex() == tpm.pcr_policy("sha256", "0,7", None, log,
                                                           False)["policy"]


def test_a_secret_sealed_with_a_pin_needs_it(state: Path, log: Path) -> None:
    (state.parent / "pin").write_bytes(b"4711\n")
    blob = tpm.sealed_secret(state, "sha256", "7", None, log, state.parent / "pin", b"s",
                             *_key(state))
    assert blob.public.auth_policy.hex() == tpm.pcr_policy("sha256", "7", None, log,
                                                           True)["policy"]
    (state.parent / "blob").write_bytes(blob.to_bytes())
    assert tpm.unsealed_secret(state.parent / "blob", state, "sha256", "7", log,
                               state.parent / "pin", *_key(state)) == b"s"
    with pytest.raises(StatusError):
        tpm.unsealed_secret(state.parent / "blob", state, "sha256", "7", log, None,
                            *_key(state))


def test_inspect_tries_each_structure_strictly(tmp_path: Path) -> None:
    public = srk_template("ecc")
    for name, data in (("TPM2B_PUBLIC", public.to_tpm2b()), ("TPMT_PUBLIC", public.to_bytes())):
        (tmp_path / "f").write_bytes(data)
        described = tpm.describe(tmp_path / "f")
        assert described["structure"] == name and described["name"] == public.name().hex()
    (tmp_path / "f").write_bytes(public.to_bytes() + b"\x00")
    with pytest.raises(FormatError) as refused:
        tpm.describe(tmp_path / "f")
    assert str(refused.value) == (f"{tmp_path / 'f'} is not a TPM public area, sealed blob or "
                                  "quote")


@pytest.mark.parametrize("port", [1, 2321, 65534])
def test_serve_takes_a_port_with_a_platform_port_after_it(port: int) -> None:
    assert tpm.serve_port(port) == port


@pytest.mark.parametrize("port", [0, -1, 65535, 65536])
def test_serve_refuses_a_port_without_one(port: int) -> None:
    with pytest.raises(UsageError) as refused:
        tpm.serve_port(port)
    assert str(refused.value) == "--port must be between 1 and 65534"


def test_the_cmd_loop_answers_each_command_and_saves_at_the_end(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    sink = io.BytesIO()
    tpm.serve_stdio(state, *_key(state), io.BytesIO(GET_RANDOM_16 * 2 + b"\x80\x01"), sink)
    responses = sink.getvalue()
    assert len(responses) == 2 * (10 + 2 + 16)
    assert responses[:10] == bytes.fromhex("80010000001c00000000")
    assert responses[28:38] == bytes.fromhex("80010000001c00000000")
    assert calls.seen[0] == "startup clear=True" and calls.seen[-1] == "save"
    calls.seen.clear()
    tpm.serve_stdio(state, *_key(state), io.BytesIO(b""), io.BytesIO())
    assert calls.seen == ["save"]  # the volatile state restored: no second Startup


def test_the_output_is_the_main_value_or_indented_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    tpm._emit({"policy": "ab", "pcrs": [7]}, False, "policy")
    tpm._emit({"policy": "ab", "pcrs": [7]}, True, "policy")
    assert capsys.readouterr().out == (
        'ab\n{\n  "policy": "ab",\n  "pcrs": [\n    7\n  ]\n}\n')


def test_a_public_area_is_described_with_its_attributes_by_name() -> None:
    public = srk_template("ecc")
    assert tpm._describe_public(public) == {
        "type": "0x0023", "name_alg": "sha256", "attributes": "0x00030072",
        "attribute_names": ["fixed_tpm", "fixed_parent", "sensitive_data_origin",
                            "user_with_auth", "restricted", "decrypt"],
        "auth_policy": "", "name": public.name().hex()}


def test_a_served_tpm_saves_when_its_lockout_counts_a_failure(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    served = tpm.TpmServer.open(state, *_key(state))
    served.execute(GET_RANDOM_16)
    calls.seen.clear()
    assert served.tpm.on_da_used is not None
    served.tpm.on_da_used()
    assert calls.seen == ["save"]


def test_mssim_serving_uses_the_states_key_and_saves_each_change(
        state: Path, monkeypatch: pytest.MonkeyPatch, free_port_pair: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cvm.vtpm.mssim_server import MssimServer

    calls = Calls(monkeypatch)
    port = free_port_pair()
    served: list[MssimServer] = []

    def serve_then_stop(server: MssimServer) -> None:
        served.append(server)
        calls.seen.append("serving")
        assert server.on_change is not None and server.tpm.on_da_used is not None
        server.on_change(server.tpm)
        server.tpm.on_da_used()
        server.stop()

    monkeypatch.setattr(MssimServer, "serve_forever", serve_then_stop)
    tpm.serve_mssim(state, port, "127.0.0.1", *_key(state))
    assert calls.seen == ["serving", "save", "save", "save"]
    assert capsys.readouterr().err == (f"vTPM listening on 127.0.0.1:{port} (platform "
                                       f"{port + 1})\n")
    with pytest.raises(UsageError, match=r"give --key-file"):
        tpm.serve_mssim(state, port, "127.0.0.1", None, state.parent / "ring.json")


def test_the_cmd_loop_reads_each_command_by_its_size_field(state: Path) -> None:
    """A size field past 16 MiB is not read as its low three bytes, and a command of a header
    alone takes no byte of the next one: each answered once, in order."""
    huge = bytes.fromhex("800101000000") + GET_RANDOM_16[6:]
    header_only = bytes.fromhex("80010000000a0000017b")
    for stream, answers in ((huge + GET_RANDOM_16, 1), (header_only + GET_RANDOM_16, 2)):
        sink = io.BytesIO()
        tpm.serve_stdio(state, *_key(state), io.BytesIO(stream), sink)
        responses, count = sink.getvalue(), 0
        while responses:
            size = int.from_bytes(responses[2:6], "big")
            responses, count = responses[size:], count + 1
        assert count == answers
    assert sink.getvalue()[-28:-16] == bytes.fromhex("80010000001c000000000010")


def test_the_default_keyring_is_the_data_directorys() -> None:
    from cvm.vtpm.state_store import default_keyring

    assert tpm.keyring_at(None).path == default_keyring()
    assert tpm.keyring_at(Path("ring.json")).path == Path("ring.json")


@pytest.mark.parametrize(("data", "pin"), [
    (b"1234\n", b"1234"), (b"1234\r\n", b"1234"), (b"\n12 4 \r\n", b"\n12 4 "),
    (b"12X\n", b"12X")])
def test_a_pin_file_loses_only_its_line_end(tmp_path: Path, data: bytes, pin: bytes) -> None:
    (tmp_path / "pin").write_bytes(data)
    assert tpm.read_pin(tmp_path / "pin") == pin
    assert tpm.read_pin(None) is None


def test_no_action_events_are_skipped_not_the_end_of_the_log(state: Path, vectors: Path) -> None:
    """A log that starts with a StartupLocality (NO_ACTION) event: the vTPM starts at that
    locality and every measurement after it is extended."""
    from cvm.formats.tcg.event_type import EventType

    log = vectors / "tpm" / "go-tpm-tools" / "glinux-alex.bin"
    parsed = EventLog.parse(log.read_bytes())
    assert parsed.events[0].event_type == EventType.EV_NO_ACTION
    replayed = replay(parsed, (0x000B,))["sha256"]
    with tpm.boot_from_eventlog(state, log, *_key(state)) as (_, client):
        pcrs = sorted(replayed)
        assert client.pcr_read(PcrSelectionList.of("sha256", pcrs[:8]))[2] == [
            replayed[p] for p in pcrs[:8]]


def test_an_untouched_pcr_0_starts_at_the_logs_locality(vectors: Path, tmp_path: Path) -> None:
    from dataclasses import replace as replaced

    from cvm.formats.tcg.event_type import EventType

    parsed = EventLog.parse((vectors / "tpm" / "go-tpm-tools" / "glinux-alex.bin").read_bytes())
    without_0 = replaced(parsed, events=tuple(e for e in parsed.events if e.pcr_index != 0
                                              or e.event_type == EventType.EV_NO_ACTION))
    (tmp_path / "log").write_bytes(without_0.to_bytes())
    assert tpm.predicted_values("sha256", [0], None, tmp_path / "log") == [bytes(31) + b"\x03"]


def test_a_secret_sealed_to_raw_values(state: Path, log: Path, tmp_path: Path) -> None:
    (tmp_path / "v").write_bytes(bytes(32))
    blob = tpm.sealed_secret(state, "sha256", "23", tmp_path / "v", None, None, b"s",
                             *_key(state))
    assert blob.public.auth_policy.hex() == tpm.pcr_policy("sha256", "23", tmp_path / "v",
                                                           None, False)["policy"]


def test_inspect_names_a_sealed_blob_and_a_quote(state: Path, log: Path, tmp_path: Path) -> None:
    from cvm.formats.tpm2.attest import QuoteAttest
    from cvm.formats.tpm2.constants import TpmRh
    from cvm.vtpm.templates import ak_template

    blob = tpm.sealed_secret(state, "sha256", "7", None, log, None, b"s", *_key(state))
    (tmp_path / "blob").write_bytes(blob.to_bytes())
    assert tpm.describe(tmp_path / "blob") == {"structure": "sealed blob",
                                               **tpm._describe_public(blob.public)}
    selection = PcrSelectionList.of("sha256", [0, 7])
    with tpm.running_tpm(state, *_key(state)) as (_, client):
        ak, _ = client.create_primary(TpmRh.OWNER, ak_template())
        message, _ = client.quote(ak, b"nonce", selection)
    (tmp_path / "quote").write_bytes(message)
    quote = QuoteAttest.from_bytes(message)
    assert tpm.describe(tmp_path / "quote") == {
        "structure": "TPMS_ATTEST", "qualified_signer": quote.qualified_signer.hex(),
        "extra_data": b"nonce".hex(), "clock": quote.clock_info.clock,
        "pcr_select": str(selection), "pcr_digest": quote.pcr_digest.hex()}


def test_mssim_serving_listens_on_the_host_given(
        state: Path, monkeypatch: pytest.MonkeyPatch, free_port_pair: Any) -> None:
    from cvm.vtpm.mssim_server import MssimServer

    addresses: list[Any] = []

    def serve_then_stop(server: MssimServer) -> None:
        addresses.extend(listener.server_address for listener in server._servers)
        server.stop()

    monkeypatch.setattr(MssimServer, "serve_forever", serve_then_stop)
    port = free_port_pair()
    tpm.serve_mssim(state, port, "127.0.0.2", *_key(state))
    assert addresses == [("127.0.0.2", port), ("127.0.0.2", port + 1)]


def test_inspect_reads_a_state_files_header_and_names_its_key(state: Path) -> None:
    data = state.read_bytes()
    header = StateFileHeader.parse(data)
    saved = datetime.fromtimestamp(header.saved_at_ms / 1000, UTC)
    assert tpm.describe(state) == {
        "structure": "vTPM state file", "version": 2, "key_source": "key-file", "counter": 1,
        "key_id": key_id(b"\x11" * 32).hex(),
        "saved_at": saved.isoformat(timespec="milliseconds"),
        "sealed_state_bytes": len(data) - USER_HEADER_SIZE}
    assert saved.year >= 2026  # milliseconds since the epoch, not seconds


@pytest.mark.parametrize(("source", "name"), [(1, "psp-derived"), (2, "broker-released"),
                                               (7, "unknown (7)")])
def test_a_version_1_state_file_has_no_key_id_or_time(tmp_path: Path, source: int,
                                                      name: str) -> None:
    fields = {"magic": STATE_FILE_MAGIC, "version": 1, "key_source": source, "counter": 9,
              "iv": bytes(12), "size": 3, "tag": bytes(16)}
    (tmp_path / "state").write_bytes(HEADER_LAYOUT.pack(fields) + b"abc")
    assert tpm.describe(tmp_path / "state") == {
        "structure": "vTPM state file", "version": 1, "key_source": name, "counter": 9,
        "sealed_state_bytes": 3}


def test_a_broken_state_file_is_named_with_what_is_wrong(state: Path) -> None:
    data = state.read_bytes()
    for broken, reason in ((data[:60], "vTPM state file is truncated: 60 bytes, header needs 80"),
                           (data + b"x", f"vTPM state file is truncated or padded: "
                                         f"{len(data) - 79} ciphertext bytes, header says "
                                         f"{len(data) - 80}")):
        state.write_bytes(broken)
        with pytest.raises(FormatError) as refused:
            tpm.describe(state)
        assert str(refused.value) == f"{state}: {reason}"
