# harness workload udp-is-not-tcp
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: connect udp ipv4 127.0.0.1 port 8053
/bin/timeout 3 /bin/nslookup -type=a harness.invalid 127.0.0.1:8053
harness_check 1 $? any 'connect udp ipv4 127.0.0.1 port 8053'
