#!/bin/sh
# The guest end of the control channel; see harness/channel.py for the protocol.
# Requests and replies are exact byte counts, read with dd so that no byte of
# the next message is consumed early (busybox head reads ahead).
exec 3<>"$1"
work=/run/harness
mkdir -p "$work"

take() {
    dd bs=65536 count="$1" iflag=count_bytes,fullblock 2>/dev/null <&3
}

printf 'READY %s\n' "$(uname -r)" >&3
while read -r verb id timeout script_len stdin_len <&3; do
    case "$verb" in
    RUN)
        take "$script_len" > "$work/$id.sh"
        take "$stdin_len" > "$work/$id.in"
        timeout -s KILL "$timeout" sh "$work/$id.sh" \
            < "$work/$id.in" > "$work/$id.out" 2> "$work/$id.err" 3>&-
        rc=$?
        printf 'RES %s %s %s %s\n' "$id" "$rc" \
            "$(wc -c < "$work/$id.out")" "$(wc -c < "$work/$id.err")" >&3
        cat "$work/$id.out" "$work/$id.err" >&3
        rm -f "$work/$id".*
        ;;
    OFF)
        printf 'BYE %s\n' "$id" >&3
        sync
        reboot -f
        ;;
    *)
        printf 'ERR %s unknown-verb\n' "$id" >&3
        ;;
    esac
done
