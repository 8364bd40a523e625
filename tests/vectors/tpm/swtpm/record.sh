#!/bin/sh
# Records this folder's vectors from swtpm and tpm2-tools (see PROVENANCE.md).
# Usage: sh record.sh PORT   (PORT and PORT+1 free on 127.0.0.1); writes into the current folder.
set -eu
port=${1:?port}
state=$(mktemp -d)
swtpm socket --tpm2 --tpmstate dir="$state" \
    --server type=tcp,port="$port",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear &
tpm=$!
trap 'kill $tpm; rm -rf "$state"' EXIT
sleep 1
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
work=$(mktemp -d)

# TPM2_ContextSave of a primary key at 0x80000000: the response's parameters are TPMS_CONTEXT.
tpm2_createprimary -C o -c "$work/primary.ctx" -Q
printf '\200\001\000\000\000\016\000\000\001\142\200\000\000\000' | tpm2_send -o "$work/save.rsp"
tail -c +11 "$work/save.rsp" > context-save-primary.bin
tpm2_flushcontext -t

# Sealed data objects: TPM2B_PRIVATE and TPM2B_PUBLIC as tpm2_create writes them, and their Names.
printf 'cvm sealed secret' > "$work/secret"
tpm2_createpolicy -Q --policy-pcr -l sha256:7 -L pcr7.policy
for name in sealed policy-pcr7; do
    tpm2_createprimary -C o -c "$work/primary.ctx" -Q
    if [ "$name" = sealed ]; then
        tpm2_create -Q -C "$work/primary.ctx" -i "$work/secret" -r $name.priv -u $name.pub
    else
        tpm2_create -Q -C "$work/primary.ctx" -i "$work/secret" -L pcr7.policy \
            -a "fixedtpm|fixedparent|noda" -r $name.priv -u $name.pub
    fi
    tpm2_flushcontext -t
    tpm2_print -t TPM2B_PUBLIC $name.pub > $name.pub.yaml
    tpm2_createprimary -C o -c "$work/primary.ctx" -Q
    tpm2_load -Q -C "$work/primary.ctx" -u $name.pub -r $name.priv -n $name.name -c "$work/o.ctx"
    tpm2_flushcontext -t
done

# TPMA_OBJECT as tpm2_print names each bit: sealed.pub with objectAttributes (bytes 6..9, after
# the TPM2B size, type and nameAlg) replaced by that one bit.
bit=0
while [ $bit -lt 32 ]; do
    python3 -c "import sys; p = open('sealed.pub', 'rb').read()
sys.stdout.buffer.write(p[:6] + (1 << $bit).to_bytes(4, 'big') + p[10:])" > "$work/bit.pub"
    printf '%s %s\n' $bit "$(tpm2_print -t TPM2B_PUBLIC "$work/bit.pub" | sed -n '/^attributes:/{n;s/^  value: //p}')"
    bit=$((bit + 1))
done > tpma-object-bits.txt

# The algorithms, commands and curves swtpm implements, with their values.
tpm2_getcap algorithms > getcap-algorithms.yaml
tpm2_getcap commands > getcap-commands.yaml
tpm2_getcap ecc-curves > getcap-ecc-curves.yaml

# Response codes: every format-zero code of TPM 2.0 (errors 0x100.., warnings 0x900..), every
# format-one base, and two bases (TPM_RC_VALUE, TPM_RC_HANDLE) at every handle, parameter and
# session number.
codes() {
    printf '0x000\n0x01e\n'
    i=0; while [ $i -lt 128 ]; do printf '%#05x\n%#05x\n' $((0x100 + i)) $((0x900 + i)); i=$((i + 1)); done
    i=0; while [ $i -lt 64 ]; do printf '%#05x\n' $((0x080 + i)); i=$((i + 1)); done
    for base in 0x084 0x08b; do
        n=0; while [ $n -lt 16 ]; do
            printf '%#05x\n%#05x\n' $((base | (n << 8))) $((base | 0x040 | (n << 8))); n=$((n + 1))
        done
    done
}
codes | sort -u | while read -r code; do
    printf '%s %s\n' "$code" "$(tpm2_rc_decode "$code")"
done > rc-decode.txt
rm -rf "$work"
chmod 644 ./*
