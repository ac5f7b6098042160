# harness workload passwd-open
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: read /etc/passwd
/bin/cat /etc/passwd > /dev/null
harness_check 1 $? 0 'read /etc/passwd'
