"""The owner's vTPM without an image build: which tokens each ``--seal`` gives each chain, the
token enrolled (its keyslot, its PCRs, its policy digest computed here from TPM 2.0 Part 3
§23.7 / §23.16, the public key only on a signed token), that it unseals the volume key for the
predicted PCRs only, and the state sealed at rest under the state key at counter 1."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cvm.crypto.drbg import SeededRandom
from cvm.disk.volume import Luks2Volume
from cvm.errors import IntegrityError, StatusError, UsageError
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.tpm.luks_token import tpm2_tokens, unlock
from cvm.image.sealing import OwnerTpm, TokenPlan, token_plans
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state_file import (
    KeySource,
    MonotonicCounter,
    ReleasedKeyProvider,
    StateFileHeader,
    open_state,
)
from cvm.vtpm.templates import public_from_pem

from .reference_samples import Recording

PEM = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)




@pytest.mark.parametrize(("chain", "literal"), [("uki", (4, 7, 11)),
                                                ("shim-grub", (4, 7, 8, 9))])
def test_the_tokens_of_each_seal_option(chain: str, literal: tuple[int, ...]) -> None:
    pcrs, signed = TokenPlan("pcrs", literal, ()), TokenPlan("signed", (7,), (11,))
    assert token_plans(chain, "pcrs") == (pcrs,)
    assert token_plans(chain, "signed") == (signed,)
    assert token_plans(chain, "both") == (pcrs, signed)
    with pytest.raises(KeyError):
        token_plans(chain, "none")


@pytest.fixture
def volume(recovery_volume: tuple[Luks2Volume, bytes]) -> tuple[Luks2Volume, bytes]:
    return recovery_volume


def _boot(owner: OwnerTpm, pcrs: tuple[int, ...], change: int | None = None
          ) -> dict[int, bytes]:
    """Extend each of ``pcrs`` as a boot would; the values the owner would have predicted."""
    for pcr in pcrs:
        owner.client.pcr_extend(pcr, {TpmAlg.SHA256: hashlib.sha256(b"stage %d" % pcr).digest()})
    values = owner.client.pcr_read(PcrSelectionList.of("sha256", list(pcrs)))[2]
    predicted = dict(zip(pcrs, values, strict=True))
    if change is not None:  # the boot measured something else here than predicted
        owner.client.pcr_extend(change, {TpmAlg.SHA256: bytes(32)})
    return predicted


def test_a_pcr_token_unseals_the_volume_key_for_the_predicted_pcrs(
        volume: tuple[Luks2Volume, bytes]) -> None:
    disk, volume_key = volume
    owner = OwnerTpm(os.urandom)
    plan = TokenPlan("pcrs", (4, 7, 11))
    predicted = _boot(owner, (4, 7, 11, 14))  # a PCR outside the plan is not in the policy
    enrolled = owner.enroll(disk, volume_key, plan, predicted, PEM)
    assert enrolled.keyslot == 1 and enrolled.plan == plan
    expected = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [4, 7, 11]),
                                        [predicted[4], predicted[7], predicted[11]]).value
    assert enrolled.policy_digest == expected
    token = tpm2_tokens(disk)[enrolled.token_id]
    assert token.keyslots == (1,) and token.pcrs == (4, 7, 11)
    assert token.policy_hash == expected
    assert token.pubkey_pem is None and token.pubkey_pcrs == ()  # no key on a PCR token
    owner.client.pcr_extend(14, {TpmAlg.SHA256: bytes(32)})
    assert unlock(disk, token, owner.client) == volume_key


@pytest.mark.parametrize("changed", [4, 7, 11])
def test_a_pcr_token_does_not_unseal_for_another_boot(volume: tuple[Luks2Volume, bytes],
                                                      changed: int) -> None:
    disk, volume_key = volume
    owner = OwnerTpm(os.urandom)
    predicted = _boot(owner, (4, 7, 11), change=changed)
    enrolled = owner.enroll(disk, volume_key, TokenPlan("pcrs", (4, 7, 11)), predicted, None)
    with pytest.raises(StatusError):
        unlock(disk, tpm2_tokens(disk)[enrolled.token_id], owner.client)


def test_a_signed_token_carries_the_key_and_both_pcr_lists(
        volume: tuple[Luks2Volume, bytes]) -> None:
    disk, volume_key = volume
    owner = OwnerTpm(os.urandom)
    predicted = _boot(owner, (7, 11))
    plan = TokenPlan("signed", (7,), (11,))
    first = owner.enroll(disk, volume_key, TokenPlan("pcrs", (7, 11)), predicted, None)
    enrolled = owner.enroll(disk, volume_key, plan, predicted, PEM)
    assert (first.keyslot, enrolled.keyslot) == (1, 2)
    assert enrolled.token_id != first.token_id
    signer = public_from_pem(PEM)
    expected = (PolicyDigest.start().authorize(signer.name())
                .pcr(PcrSelectionList.of("sha256", [7]), [predicted[7]]).value)
    assert enrolled.policy_digest == expected
    token = tpm2_tokens(disk)[enrolled.token_id]
    assert token.keyslots == (2,) and token.pcrs == (7,) and token.pubkey_pcrs == (11,)
    assert token.pubkey_pem == PEM and token.policy_hash == expected and token.pin is False


def test_a_signed_token_needs_the_pcr_policy_key(volume: tuple[Luks2Volume, bytes]) -> None:
    disk, volume_key = volume
    owner = OwnerTpm(os.urandom)
    with pytest.raises(UsageError, match=r"^a signed token needs the PCR-policy public key$"):
        owner.enroll(disk, volume_key, TokenPlan("signed", (7,), (11,)), _boot(owner, (7,)),
                     None)
    assert disk.tokens == {} and list(disk.metadata.keyslots) == [0]


def test_the_state_is_sealed_under_the_state_key_at_counter_1() -> None:
    random = Recording()
    owner = OwnerTpm(random)
    state_key = os.urandom(32)
    sealed = owner.sealed_state(state_key)
    header = StateFileHeader.parse(sealed)
    assert header.counter == 1 and header.key_source == KeySource.BROKER_RELEASED
    assert header.iv == random.drawn[-1]
    opened = open_state(sealed, ReleasedKeyProvider(state_key), MonotonicCounter(0))
    assert opened == owner.tpm.state.to_bytes()
    with pytest.raises(IntegrityError):
        open_state(sealed, ReleasedKeyProvider(os.urandom(32)), MonotonicCounter(0))


def test_the_owner_tpm_runs_on_the_owners_random_and_is_started() -> None:
    first, second = Recording(), Recording()
    one, two = OwnerTpm(first), OwnerTpm(second)
    assert one.random is first and first.drawn
    assert one.tpm.state.to_bytes() != two.tpm.state.to_bytes()
    # Started: a PCR read answers (a TPM not started refuses every command but Startup).
    assert one.client.pcr_read(PcrSelectionList.of("sha256", [0]))[2] == [bytes(32)]


def test_a_seeded_owner_tpm_draws_everything_from_the_owners_random() -> None:
    """A build with ``--seed`` is reproducible: the vTPM's manufacture and everything it draws
    later (here GetRandom) come from the owner's random, not the system's."""
    one, two = OwnerTpm(SeededRandom(b"owner")), OwnerTpm(SeededRandom(b"owner"))
    assert one.tpm.state.to_bytes() == two.tpm.state.to_bytes()
    assert one.client.get_random(16) == two.client.get_random(16)
