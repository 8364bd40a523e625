"""TPM 2.0 marshalling (TCG TPM 2.0 Library, Part 2 "Structures", revision 1.59).

Big-endian throughout. One module per structure family: :mod:`.constants` (algorithm IDs,
command codes, tags, handles, attribute bits), :mod:`.response_code` (TPM_RC and its
handle/parameter/session numbering), :mod:`.tpm2b` (sized buffers), :mod:`.command` (command
and response buffers with their authorization areas), :mod:`.pcr_selection`, :mod:`.public`
(TPMT_PUBLIC and Names), :mod:`.sensitive` (TPMT_SENSITIVE, TPM2B_PRIVATE),
:mod:`.signature` (signatures, schemes, tickets), :mod:`.attest` (TPMS_ATTEST for quotes) and
:mod:`.nv_public`.
"""
