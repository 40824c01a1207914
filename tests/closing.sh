# The closing line of a shell test, which tests/run.sh counts:
#   NAME: P passed, F failed   (or NAME: 0 passed, 0 failed, 1 skipped on exit 77)
# printed on every exit, an early one too. Usage, from a test script:
#   source tests/closing.sh NAME      then count checks in $passed and $failed
# A non-zero exit that no check counted is one failed check.
passed=0; failed=0
closing_name=$1
closing() {
    local rc=$?
    if [ "$rc" -eq 77 ]; then echo "$closing_name: 0 passed, 0 failed, 1 skipped"; return; fi
    [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
    echo "$closing_name: $passed passed, $failed failed"
}
trap closing EXIT
