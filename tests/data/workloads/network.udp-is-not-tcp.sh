# harness workload udp-is-not-tcp
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: connect udp ipv4 127.0.0.1 port 8053
/bin/timeout 3 /bin/nslookup -type=a harness.invalid 127.0.0.1:8053
harness_check 1 $? any 'connect udp ipv4 127.0.0.1 port 8053'
# step 2: connect tcp ipv4 127.0.0.1 port 8083
(
/bin/timeout 60 /bin/nc -l -p 8083 > /dev/null & harness_listener=$!
i=0; while ! /bin/grep -q ':1F93 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do i=$((i+1)); if [ $i -gt 3000 ]; then echo 'harness: no listener on tcp port 8083' >&2; exit 98; fi; /bin/usleep 10000; done
printf '%s' 'harness
' | /bin/timeout 30 /bin/nc 127.0.0.1 8083
harness_rc=$?
wait $harness_listener
exit $harness_rc
)
harness_check 2 $? 0 'connect tcp ipv4 127.0.0.1 port 8083'
