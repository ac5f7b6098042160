# harness workload outside-etc-not-seen
harness_check() {
    [ "$3" = any ] || [ "$2" -eq "$3" ] && return 0
    echo "harness: step $1 ($4) exited $2, expected $3" >&2
    exit 97
}
# step 1: write /tmp/harness-file
printf '%s' 'harness
' | /bin/tee /tmp/harness-file > /dev/null
harness_check 1 $? 0 'write /tmp/harness-file'
# step 2: open /tmp/harness-file (append)
/bin/dd if=/dev/null of=/tmp/harness-file conv=notrunc oflag=append status=none
harness_check 2 $? 0 'open /tmp/harness-file (append)'
# step 3: read /tmp/harness-file
/bin/cat /tmp/harness-file > /dev/null
harness_check 3 $? 0 'read /tmp/harness-file'
# step 4: unlink /tmp/harness-file
/bin/unlink /tmp/harness-file
harness_check 4 $? 0 'unlink /tmp/harness-file'
# step 5: read /etc/hosts
/bin/cat /etc/hosts > /dev/null
harness_check 5 $? 0 'read /etc/hosts'
