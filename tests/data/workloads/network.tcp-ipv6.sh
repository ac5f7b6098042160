# harness workload tcp-ipv6
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: connect tcp ipv6 ::1 port 8081
(
/bin/timeout 60 /bin/nc -l -p 8081 > /dev/null & harness_listener=$!
i=0; while ! /bin/grep -q ':1F91 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do i=$((i+1)); if [ $i -gt 3000 ]; then echo 'harness: no listener on tcp port 8081' >&2; exit 98; fi; /bin/usleep 10000; done
printf '%s' 'harness
' | /bin/timeout 30 /bin/nc ::1 8081
harness_rc=$?
wait $harness_listener
exit $harness_rc
)
harness_check 1 $? 0 'connect tcp ipv6 ::1 port 8081'
