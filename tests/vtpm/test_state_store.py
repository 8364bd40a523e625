"""The cvm command's sealed vTPM state: keys, the keyring's counters, the save window, and the
running TPM that ``cvm tpm serve`` keeps between invocations."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.cli.tpm import TpmServer
from cvm.errors import FormatError, PolicyError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.state_store import Keyring, StateStore, default_keyring
from cvm.vtpm.templates import sealed_template, srk_template

KEY = b"\x5a" * 32
SECRET = b"never in the file in clear"


def test_a_new_state_under_a_used_key_supersedes_the_old(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    first, second = tmp_path / "first", tmp_path / "second"
    StateStore.manufacture(first, keyring, KEY)
    StateStore.manufacture(second, keyring, KEY)
    StateStore.open(second, keyring, KEY)
    with pytest.raises(PolicyError, match="old copy"):
        StateStore.open(first, keyring, KEY)
    with pytest.raises(PolicyError, match="no counter"):
        StateStore.open(second, Keyring(tmp_path / "elsewhere.json"), KEY)


def test_a_save_cut_before_the_counter_moved_still_opens(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    store = StateStore.manufacture(tmp_path / "state", keyring)
    _, tpm, _ = StateStore.open(store.path, keyring)
    before = store.counter.read()

    def cut(value: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(store.counter, "advance", cut)
    with pytest.raises(KeyboardInterrupt):
        store.save(tpm)
    assert store.counter.read() == before
    StateStore.open(store.path, keyring)
    assert store.counter.read() == before + 1


def test_a_damaged_keyring_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    StateStore.manufacture(tmp_path / "state", Keyring(path))
    for text in ("not json", '{"format": "cvm vTPM keyring", "version": 1, "entries": []}',
                 '{"format": "cvm vTPM keyring", "version": 1, "entries": {"a": '
                 '{"counter": -1}}}'):
        path.write_text(text)
        with pytest.raises(FormatError, match="not a cvm vTPM keyring"):
            StateStore.open(tmp_path / "state", Keyring(path))


def test_served_tpm_keeps_running_sealed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    StateStore.manufacture(state, Keyring(default_keyring()))
    served = TpmServer.open(state, None, None)
    client = TpmClient(served.execute)
    client.pcr_extend(16, {TpmAlg.SHA256: b"\x01" * 32})
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template(no_da=True))
    blob, public = client.create(srk, sealed_template(), data=SECRET)
    client.load(srk, blob, public)
    served.save()
    assert SECRET not in state.read_bytes()
    again = TpmServer.open(state, None, None)
    assert again.tpm.objects and again.tpm.started
    selection = PcrSelectionList.of("sha256", [16])
    assert TpmClient(again.execute).pcr_read(selection)[2] == \
        client.pcr_read(selection)[2]
