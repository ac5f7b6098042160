# harness workload setuid-by-su
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: exec /bin/id -u as harness
/bin/su -s /bin/sh harness -c '/bin/id -u'
harness_check 1 $? 0 'exec /bin/id -u as harness'
