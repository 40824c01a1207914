#!/usr/bin/env bash
# The layout is the architecture (README.md, "Layout"): data flows one way,
# library folders never include a program's folder, programs include no other
# program's folder (except the subcommand dispatch in tracer/main.c), and
# only format/ sees <hdf5.h>. One check per folder and rule.
set -u
cd "$(dirname "$0")/.."
declare -A allowed=(
    [common]=""
    [format]="common"
    [kernels]="common"
    [model]="common kernels"
    [tokenizer]="common format model"
    [policy]="common format"
    [tracer]="common format kernels model tokenizer policy"
    [fidelity]="common format kernels model tokenizer policy"
    [analyzer]="common format policy"
    [plots]="common format policy"
)
passed=0 failed=0
check() { # label, ok (0/1), detail
    if [ "$2" -eq 1 ]; then passed=$((passed + 1)); echo "  ok   $1"; else failed=$((failed + 1)); echo "  FAIL $1: $3"; fi
}
for dir in "${!allowed[@]}"; do
    bad=""
    for f in "$dir"/*.c "$dir"/*.h "$dir"/*.cu; do
        [ -e "$f" ] || continue
        for inc in $(sed -n 's#^\#include "\([a-z_]*\)/.*#\1#p' "$f" | sort -u); do
            [ "$inc" = "$dir" ] && continue
            case " ${allowed[$dir]} " in *" $inc "*) continue ;; esac
            [ "$f" = tracer/main.c ] && [ "$inc" = fidelity ] && continue   # kvtrace fidelity is a subcommand
            bad+=" $f->$inc/"
        done
    done
    check "$dir/ includes only ${allowed[$dir]:-nothing of the project} " "$([ -z "$bad" ] && echo 1 || echo 0)" "$bad"
done
h5=$(grep -l '^#include <hdf5.h>' $(ls -d */ | grep -v '^tests/\|^bench/\|^build\|^bin/\|^models/' | sed 's#/$##' | xargs -I{} sh -c 'ls {}/*.c {}/*.h 2>/dev/null') | grep -v '^format/')
check "<hdf5.h> only in format/" "$([ -z "$h5" ] && echo 1 || echo 0)" "$h5"
undeclared=$(ls -d */ | sed 's#/$##' | while read -r d; do
    ls "$d"/*.c >/dev/null 2>&1 || continue
    case " ${!allowed[*]} tests bench tools " in *" $d "*) ;; *) echo "$d" ;; esac
done)
check "every source folder has a place in the layout" "$([ -z "$undeclared" ] && echo 1 || echo 0)" "$undeclared"
echo "layout: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
