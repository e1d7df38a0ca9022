#!/usr/bin/env bash
# The abstractions' compile_fail examples, checked for real: every doc example
# under rust/kernel/ whose fence says compile_fail (the kernel's doctest runner
# cannot run those, hence `ignore` as in the tree) is built as an out-of-tree
# module against the built kernel and must fail with the error code its fence
# names (`compile_fail,E0499`). A module with the same boilerplate and no
# example must build, so a failure is the example's. Prints KTAP-like lines and
# "compile-fail: N passed, N failed"; exits non-zero on a failure.
source "$(dirname "$0")/common.sh"
source "$REPO/scripts/toolchain.sh"

work=$VMR_CACHE/compile-fail
rm -rf "$work"; mkdir -p "$work"

# Extract the examples: one file per example, named N, holding "FILE:LINE CODE" on
# its first line and the code after it (doc prefixes stripped, hidden lines kept).
python3 - "$REPO" "$work" <<'PY'
import os, re, sys
repo, work = sys.argv[1], sys.argv[2]
n = 0
for root, _, files in os.walk(os.path.join(repo, 'rust', 'kernel')):
    for name in sorted(files):
        if not name.endswith('.rs'):
            continue
        path = os.path.join(root, name)
        lines = open(path).read().split('\n')
        i = 0
        while i < len(lines):
            m = re.match(r'\s*//[/!] ```(\S*)$', lines[i])
            if m and 'compile_fail' in m.group(1).split(','):
                code = next((t for t in m.group(1).split(',') if re.fullmatch(r'E\d{4}', t)), '')
                start, body = i + 1, []
                i += 1
                while not re.match(r'\s*//[/!] ```$', lines[i]):
                    text = re.sub(r'^\s*//[/!] ?', '', lines[i])
                    body.append(text[2:] if text.startswith('# ') else ('' if text == '#' else text))
                    i += 1
                n += 1
                with open(os.path.join(work, str(n)), 'w') as f:
                    f.write('%s:%d %s\n' % (os.path.relpath(path, repo), start, code))
                    f.write('\n'.join(body) + '\n')
            i += 1
PY

# module DIR NAME [SNIPPET]: a module source around a snippet.
module() {
    mkdir -p "$1"
    echo "obj-m := $2.o" >"$1/Kbuild"
    {
        echo '// SPDX-License-Identifier: GPL-2.0'
        echo '#![allow(dead_code, unused_imports, unused_variables)]'
        echo 'use kernel::prelude::*;'
        echo "module! { type: Check, name: \"$2\", authors: [\"virtio-mem-rust\"], description: \"compile_fail check\", license: \"GPL\", }"
        echo 'struct Check;'
        echo 'impl kernel::Module for Check { fn init(_: &'"'"'static ThisModule) -> Result<Self> { Ok(Check) } }'
        [ $# -lt 3 ] || cat "$3"
    } >"$1/$2.rs"
}
build() { make -C "$KSRC" O="$KBUILD" "${KMAKE_ARGS[@]}" M="$1" modules >"$1/build.log" 2>&1; }

passed=0 failed=0
module "$work/control" cf_control
if build "$work/control"; then
    echo "ok 0 the boilerplate alone builds"; passed=$((passed + 1))
else
    echo "not ok 0 the boilerplate alone builds"; failed=$((failed + 1))
    sed 's/^/# /' "$work/control/build.log" | tail -n 20
fi
for f in $(ls "$work" | grep -E '^[0-9]+$' | sort -n); do
    read -r where code <"$work/$f"
    tail -n +2 "$work/$f" >"$work/$f.rs"
    module "$work/t$f" "cf_$f" "$work/$f.rs"
    if build "$work/t$f"; then
        echo "not ok $f $where: compiles, but must not"; failed=$((failed + 1))
    elif [ -n "$code" ] && ! grep -q "error\[$code\]" "$work/t$f/build.log"; then
        echo "not ok $f $where: fails, but not with $code"; failed=$((failed + 1))
        grep -E '^error' "$work/t$f/build.log" | head -n 5 | sed 's/^/# /'
    else
        echo "ok $f $where: does not compile (${code:-any error})"; passed=$((passed + 1))
    fi
done
echo "compile-fail: $passed passed, $failed failed"
[ "$failed" = 0 ]
