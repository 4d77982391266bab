#!/usr/bin/env bash
# Builds wkube's example pods and copies them to guest-examples/out/:
#
#   out/hello-http.wasm   component, exports wasi:http/incoming-handler  (wasm32-wasip2)
#   out/echo-http.wasm    component, exports wasi:http/incoming-handler  (wasm32-wasip2)
#   out/job.wasm          component, exports wasi:cli/run                (wasm32-wasip2)
#   out/sandbox-probe.wasm component, exports wasi:cli/run: tries to leave its sandbox
#   out/hello-p1.wasm     core module, exports _start                    (wasm32-wasip1)
#
# `build.sh --update-prebuilt` also copies them to guest-examples/prebuilt/,
# the checked-in copies that `wkube example` embeds (a unit test fails when
# those are stale).
#
# Idempotent: cargo rebuilds only what changed and the copies are replaced
# atomically. Builds are reproducible: the absolute paths of this checkout,
# the cargo home and the target directory are remapped, so the same sources
# give the same bytes wherever they are checked out. Checks that each output is what it claims to be (component or
# core module, by its preamble; when wasm-tools is on the PATH, also
# `wasm-tools validate` and, for components, `wasm-tools component targets`
# against wkube's world in ../wit) and prints the sizes.
#
# The guest workspace builds in its own target directory (default
# ~/.cache/wkube/target-guests; set WKUBE_GUEST_TARGET_DIR to change it) so it
# never contends for the host crate's target-directory lock. An inherited
# CARGO_TARGET_DIR is deliberately ignored for that reason.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

export CARGO_TARGET_DIR="${WKUBE_GUEST_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wkube/target-guests}"
out="$here/out"
prebuilt="$here/prebuilt"
update_prebuilt=false
case "${1:-}" in
    "") ;;
    --update-prebuilt) update_prebuilt=true ;;
    *)
        echo "usage: build.sh [--update-prebuilt]" >&2
        exit 2
        ;;
esac

# Absolute paths end up in panic locations; remap them so the output does
# not depend on where the checkout, the cargo home or the target dir are.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="--remap-path-prefix=$here=/guest-examples --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$CARGO_TARGET_DIR=/target"

p2_crates=(hello-http echo-http job sandbox-probe)
p1_crates=(hello-p1)
# The world in ../wit each component must target (checked with wasm-tools).
declare -A world=([hello-http]=pod-http [echo-http]=pod-http [job]=pod-command [sandbox-probe]=pod-command)
wit_dir="$here/../wit"

# --- targets ---------------------------------------------------------------
# rustup picks the toolchain from ../rust-toolchain.toml; add the targets to
# that toolchain when they are missing.
if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed)"
    for t in wasm32-wasip2 wasm32-wasip1; do
        if ! grep -qx "$t" <<<"$installed"; then
            echo "build.sh: installing rust target $t"
            rustup target add "$t"
        fi
    done
else
    echo "build.sh: rustup not found; assuming wasm32-wasip2 and wasm32-wasip1 are installed" >&2
fi

# --- build -------------------------------------------------------------------
pkg_args() { local c; for c in "$@"; do printf -- '-p\n%s\n' "$c"; done; }
mapfile -t p2_args < <(pkg_args "${p2_crates[@]}")
mapfile -t p1_args < <(pkg_args "${p1_crates[@]}")

cargo build --locked --release --target wasm32-wasip2 "${p2_args[@]}"
cargo build --locked --release --target wasm32-wasip1 "${p1_args[@]}"

# --- copy and check ----------------------------------------------------------
component_preamble="0061736d0d000100" # \0asm, version 0x0d, layer 1
module_preamble="0061736d01000000"    # \0asm, version 1

preamble() { head -c 8 "$1" | od -An -tx1 | tr -d ' \n'; }

have_wasm_tools=false
command -v wasm-tools >/dev/null 2>&1 && have_wasm_tools=true

mkdir -p "$out"
status=0

place() { # place TARGET CRATE EXPECTED_PREAMBLE KIND
    local target="$1" crate="$2" want="$3" kind="$4"
    local src="$CARGO_TARGET_DIR/$target/release/${crate//-/_}.wasm"
    [[ -f "$src" ]] || src="$CARGO_TARGET_DIR/$target/release/$crate.wasm"
    if [[ ! -f "$src" ]]; then
        echo "build.sh: $crate: no output found under $CARGO_TARGET_DIR/$target/release" >&2
        status=1
        return
    fi
    local got
    got="$(preamble "$src")"
    if [[ "$got" != "$want" ]]; then
        echo "build.sh: $crate: expected a $kind (preamble $want), found preamble $got" >&2
        status=1
        return
    fi
    if $have_wasm_tools && ! wasm-tools validate --features all "$src"; then
        echo "build.sh: $crate: wasm-tools validate failed" >&2
        status=1
        return
    fi
    if $have_wasm_tools && [[ -n "${world[$crate]:-}" ]] &&
        ! wasm-tools component targets "$wit_dir" "$src" --world "${world[$crate]}"; then
        echo "build.sh: $crate: does not target world ${world[$crate]} of $wit_dir" >&2
        status=1
        return
    fi
    local dst="$out/$crate.wasm"
    cp "$src" "$dst.tmp"
    mv -f "$dst.tmp" "$dst"
    printf '  %-16s %8d bytes  %s (%s)\n' "$crate.wasm" "$(stat -c %s "$dst")" "$kind" "$target"
}

echo "build.sh: outputs in $out"
for c in "${p2_crates[@]}"; do place wasm32-wasip2 "$c" "$component_preamble" component; done
for c in "${p1_crates[@]}"; do place wasm32-wasip1 "$c" "$module_preamble" "core module"; done
if $update_prebuilt && [[ $status -eq 0 ]]; then
    mkdir -p "$prebuilt"
    for c in "${p2_crates[@]}" "${p1_crates[@]}"; do
        cp "$out/$c.wasm" "$prebuilt/$c.wasm.tmp"
        mv -f "$prebuilt/$c.wasm.tmp" "$prebuilt/$c.wasm"
    done
    echo "build.sh: copied to $prebuilt (commit them: \`wkube example\` embeds these)"
fi
if $have_wasm_tools; then
    [[ $status -eq 0 ]] && echo "build.sh: validated, and worlds checked, with $(wasm-tools --version)"
else
    echo "build.sh: (wasm-tools not on PATH: checked preambles only)"
fi

exit "$status"
