# harness workload openat-missing
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: exec /bin/cat /etc/harness-missing
/bin/cat /etc/harness-missing
harness_check 1 $? 1 'exec /bin/cat /etc/harness-missing'
