"""Registering an image with a key broker: its reference values and its vTPM state key.

``cvm image register IMAGE --kbs URL --admin-token-file F`` (docs/kbs.md, "Booting through the
broker"): the owner, on a trusted machine, converts the bundle's ``reference-values.json`` into
the broker's ``cvm-reference/1`` document (:func:`broker_reference`) and posts it
(``POST /kbs/v0/reference-values``), then opens ``owner/vtpm-state-key.wrapped`` with the
provisioning key and posts the state key as the resource ``<repository>/vtpm/state-key``
(``POST /kbs/v0/resource/...``), where only the SVSM's launch evidence can fetch it, and starts
the broker's rollback counter for it at the counter of the bundle's sealed state file
(``PUT /kbs/v0/counter/...``; a counter the broker already holds is kept — registering again,
say for new reference values, does not open a rollback).

The conversion: ``measurement`` = every SEV-SNP launch digest the image predicts (one per vCPU
configuration); ``pcrs`` = the predicted sha256 PCRs a guest quotes; ``boot_images`` = the
Authenticode digests of the images the owner's boot loaded (PCR 4 events of its log);
``vmpl`` and ``guest_policy`` from the SNP claims; the reference event log to explain PCR
differences; ``minimum_tcb`` when given, else listed unchecked with the ID-block fields the
image does not use (``host_data``, ``id_key_digest``, ...).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx

from cvm.errors import ExternalToolError, FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.tcg.algorithm import SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.guest.attest import DEFAULT_QUOTED_PCRS
from cvm.guest.svsm.kbs_agent import DEFAULT_RESOURCE
from cvm.image.provisioning import owner_keys, owner_reference, unwrap_state_key
from cvm.image.reference_values import ImageReferenceValues
from cvm.vtpm.state_file import StateFileHeader

BOOT_IMAGE_PCR = 4
NO_ID_BLOCK = ("host_data", "id_key_digest", "author_key_digest", "family_id", "image_id",
               "chip_id", "minimum_guest_svn", "minimum_firmware")


def broker_reference(reference: ImageReferenceValues, minimum_tcb: TcbVersion | None = None,
                     quoted_pcrs: tuple[int, ...] = DEFAULT_QUOTED_PCRS) -> dict[str, Any]:
    """The broker's ``cvm-reference/1`` document for an image's reference values."""
    digests = [entry.digest.hex() for entry in reference.launch if entry.mode == "sev-snp"]
    if not digests:
        raise UsageError("the image predicts no sev-snp launch: build it with --mode sev-snp")
    sha256 = reference.pcrs.get("sha256", {})
    images = sorted(_boot_images(EventLog.parse(reference.event_log)))
    document: dict[str, Any] = {
        "version": "cvm-reference/1",
        "measurement": digests,
        "pcrs": {"sha256": {str(pcr): sha256[pcr].hex() for pcr in quoted_pcrs
                            if pcr in sha256}},
        "boot_images": images,
        "vmpl": reference.snp.vmpl,
        "guest_policy": {"allow_debug": reference.snp.allow_debug,
                         "allow_migration_agent": reference.snp.allow_migration_agent},
        "event_log": base64.b64encode(reference.event_log).decode(),
        "unchecked": list(NO_ID_BLOCK),
    }
    if minimum_tcb is None:
        document["unchecked"].insert(0, "minimum_tcb")
    else:
        components = minimum_tcb.components()
        document["minimum_tcb"] = {name: components[name] for name in
                                   ("boot_loader", "tee", "snp", "microcode")}
    return document


def _boot_images(log: EventLog) -> set[str]:
    """The sha256 Authenticode digests (hex) of the images the log's boot loaded in PCR 4."""
    images = set()
    for event in log.events:
        if (event.pcr_index == BOOT_IMAGE_PCR
                and event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION):
            digest = event.digest(SHA256.alg_id)
            if digest is None:
                raise UsageError("the reference event log has no sha256 digest of a boot image "
                                 "(PCR 4): the broker checks boot images in that bank")
            images.add(digest.hex())
    return images


def image_state_key(folder: Path) -> bytes:
    """The vTPM state key of the bundle ``folder``, opened with its owner's provisioning key."""
    return unwrap_state_key(*owner_keys(folder, "registering"))


def state_counter(folder: Path) -> int:
    """The rollback counter in the header of the bundle's sealed vTPM state file."""
    try:
        manifest = json.loads((folder / "image.json").read_bytes())
        name = manifest["vtpm"]["state"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        raise FormatError(f"{folder}/image.json: names no vTPM state file") from None
    try:
        return StateFileHeader.parse((folder / name).read_bytes()).counter
    except FileNotFoundError:
        raise UsageError(f"{folder}: the image has no {name}") from None


def _resource(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts) or parts[1] != "vtpm":
        raise UsageError(f"--resource {text!r}: expected REPOSITORY/vtpm/TAG (the type vtpm is "
                         "what the SVSM's launch evidence may open)")
    return text


def register(folder: Path, url: str, admin_token: str, resource: str = DEFAULT_RESOURCE,
             minimum_tcb: TcbVersion | None = None,
             client: httpx.Client | None = None) -> dict[str, Any]:
    """Post the image's reference values and state key to the broker at ``url``; returns
    what was registered (reference version, resource path, measurements)."""
    path = _resource(resource)
    if not (folder / "image.json").is_file():
        raise UsageError(f"{folder}: not an image bundle (no image.json)")
    reference = owner_reference(folder, "registering the image")
    document = broker_reference(reference, minimum_tcb)
    key = image_state_key(folder)
    http = client or httpx.Client(base_url=url.rstrip("/"), timeout=30.0)
    headers = {"authorization": f"Bearer {admin_token}"}
    try:
        answer = http.post("/kbs/v0/reference-values", content=json.dumps(document),
                           headers={**headers, "content-type": "application/json"})
        _check(answer, "reference values")
        _check(http.post(f"/kbs/v0/resource/{path}", content=key, headers=headers), path)
        counter = http.put(f"/kbs/v0/counter/{path}", json={"value": state_counter(folder)},
                           headers=headers)
        _check(counter, f"the rollback counter of {path}")
    except httpx.HTTPError as error:
        raise ExternalToolError(f"cannot reach the key broker at {url} ({error})") from None
    finally:
        if client is None:
            http.close()
    try:
        version = int(answer.json()["version"])
    except (ValueError, KeyError, TypeError):
        raise FormatError("the broker's answer to the reference values has no version") from None
    try:
        started = counter.json()
        value, kept = int(started["value"]), bool(started["kept"])
    except (ValueError, KeyError, TypeError):
        raise FormatError("the broker's answer to the rollback counter has no value") from None
    return {"reference_version": version, "resource": path, "measurement":
            document["measurement"], "unchecked": document["unchecked"], "counter": value,
            "counter_kept": kept}


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 401:
        raise UsageError(f"the broker refused the admin token registering {what}")
    if response.status_code >= 400:
        raise UsageError(f"the broker refused {what}: {response.status_code} "
                         f"{response.text[:200]}")
