#!/usr/bin/env bash
# Refreshes wit/deps/ — the WASI 0.2 packages wkube's world includes — from
# the WIT that ships inside the wasmtime-wasi-http crate, i.e. exactly the
# interfaces the host's wasmtime implements. Nothing here is written by hand.
#
# Which crate version:
#   1. the wasmtime-wasi-http the host crate (../Cargo.toml) resolves to, when
#      it depends on it: `cargo metadata` finds its sources in ~/.cargo/registry;
#   2. otherwise WASMTIME_VERSION (default 48.0.8): a throw-away project that
#      depends on it is `cargo fetch`ed (downloads sources, compiles nothing).
#
# WIT dependency tools (wit-deps) fetch tarballs from GitHub, which this
# project's machines cannot reach; the crate on crates.io carries the same
# files. Run after bumping wasmtime; commit the result.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
crate=wasmtime-wasi-http
version="${WASMTIME_VERSION:-48.0.8}"

# Prints the directory of $crate's sources, per the host crate's lock file.
from_host() {
    [[ -f "$root/Cargo.toml" ]] || return 1
    cargo metadata --locked --manifest-path "$root/Cargo.toml" --format-version 1 2>/dev/null |
        python3 -c '
import json, os, sys
m = json.load(sys.stdin)
for p in m["packages"]:
    if p["name"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]), p["version"])
        break
' "$crate"
}

# Prints the directory of $crate $version's sources after a cargo fetch.
from_registry() {
    local scratch
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' RETURN
    mkdir -p "$scratch/src"
    printf '[package]\nname = "wit-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n' \
        "$crate" "$version" >"$scratch/Cargo.toml"
    : >"$scratch/src/lib.rs"
    cargo fetch --manifest-path "$scratch/Cargo.toml" >&2
    cargo metadata --manifest-path "$scratch/Cargo.toml" --format-version 1 |
        python3 -c '
import json, os, sys
m = json.load(sys.stdin)
for p in m["packages"]:
    if p["name"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]), p["version"])
' "$crate"
}

found="$(from_host || true)"
if [[ -z "$found" ]]; then
    echo "update-deps.sh: host crate does not depend on $crate; fetching $crate $version" >&2
    found="$(from_registry)"
fi
src_dir="${found% *}"
src_version="${found##* }"
src="$src_dir/wit/deps"
[[ -d "$src" ]] || { echo "update-deps.sh: no wit/deps in $src_dir" >&2; exit 1; }

# Every package the WASI 0.2 proxy and cli worlds reference. sockets is
# needed to resolve wasi:cli (its `imports` world names it) even though
# wkube's worlds do not import it.
packages=(cli clocks filesystem http io random sockets)

tmp="$(mktemp -d "$here/.deps.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
for p in "${packages[@]}"; do
    [[ -f "$src/$p.wit" ]] || { echo "update-deps.sh: $src/$p.wit missing" >&2; exit 1; }
    mkdir -p "$tmp/$p"
    cp "$src/$p.wit" "$tmp/$p/package.wit"
done
cat >"$tmp/SOURCE" <<EOF
These WIT packages are copied verbatim by wit/update-deps.sh from the
crates.io crate $crate $src_version (its wit/deps/<name>.wit files,
one directory per package here). Do not edit them; re-run the script.
EOF
(cd "$tmp" && sha256sum */package.wit >>SOURCE)

rm -rf "$here/deps"
mv "$tmp" "$here/deps"
trap - EXIT
echo "update-deps.sh: wit/deps now holds WASI from $crate $src_version:"
grep -h '^package ' "$here"/deps/*/package.wit | sed 's/^/  /'
