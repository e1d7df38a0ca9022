#!/usr/bin/env bash
# Install everything the build and the guest tests need. Quick and a no-op
# when run again: every step checks first.
source "$(dirname "$0")/common.sh"

stamp=$VMR_CACHE/.host-ready-v4
if [ -f "$stamp" ] && [ "${1:-}" != --force ] &&
   command -v qemu-system-x86_64 >/dev/null && command -v qemu-system-aarch64 >/dev/null &&
   command -v bindgen >/dev/null && command -v gnuplot >/dev/null &&
   [ -x "$LIBCLANG_VENV/bin/vng" ] && command -v ccache >/dev/null && command -v clang-19 >/dev/null; then
    exit 0
fi
mkdir -p "$VMR_CACHE"

# --- Debian packages --------------------------------------------------------
pkgs=(flex bison bc libelf-dev libssl-dev cpio ccache udev make gcc git rsync
      kmod busybox-static python3-venv socat zstd xz-utils libdw-dev kexec-tools
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross debootstrap
      python3-ply python3-git  # checkpatch's SPDX check (series-check.sh)
      gnuplot-nox              # make bench's picture (bench-plot.sh)
      clang-19 lld-19 llvm-19) # the KASAN lane's compiler (LLVM=-19; make check-all)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- QEMU 10 from bookworm-backports (fallback: bookworm's 7.2) ------------
# qemu-system-arm brings qemu-system-aarch64 for the arm64 lane; both from the
# same suite, so both guests run the same QEMU.
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null &&
    qemu-system-x86_64 -device help 2>/dev/null | grep -q virtio-mem-pci &&
    command -v qemu-system-aarch64 >/dev/null &&
    qemu-system-aarch64 -M virt -device help 2>/dev/null | grep -q virtio-mem-pci
}
if ! qemu_ok; then
    log "installing QEMU from bookworm-backports"
    if private_apt --with-system bookworm-backports -- -qq update &&
       DEBIAN_FRONTEND=noninteractive private_apt --with-system bookworm-backports -- \
           install -y -qq --no-install-recommends -t bookworm-backports \
           qemu-system-x86 qemu-system-arm qemu-system-data ipxe-qemu seabios >/dev/null; then
        :
    else
        echo "WARNING: bookworm-backports not reachable; installing bookworm's QEMU 7.2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            qemu-system-x86 qemu-system-arm >/dev/null
    fi
    qemu_ok || die "QEMU with virtio-mem-pci could not be installed"
fi
log "$(qemu-system-x86_64 --version | head -n1); $(qemu-system-aarch64 --version | head -n1)"

# --- Rust: rust-src and bindgen-cli 0.73.2 ---------------------------------
rustup component list --installed 2>/dev/null | grep -q '^rust-src' || {
    log "rustup component add rust-src"; rustup component add rust-src >/dev/null; }
# test.sh checks the tools with cargo fmt and cargo clippy.
for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component-" || {
        log "rustup component add $component"; rustup component add "$component" >/dev/null; }
done
# The guest tools (vmctl, vmem-status) for the arm64 lane's guests.
rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' || {
    log "rustup target add aarch64-unknown-linux-gnu"; rustup target add aarch64-unknown-linux-gnu >/dev/null; }
if ! bindgen --version 2>/dev/null | grep -q ' 0\.73\.2'; then
    log "cargo install bindgen-cli 0.73.2"
    cargo install --locked --quiet --version 0.73.2 bindgen-cli
fi

# --- Python venv: libclang 18.1.1 and virtme-ng -----------------------------
if [ ! -x "$LIBCLANG_VENV/bin/python" ]; then
    python3 -m venv "$LIBCLANG_VENV"
fi
"$LIBCLANG_VENV/bin/pip" show libclang 2>/dev/null | grep -q '^Version: 18.1.1' ||
    "$LIBCLANG_VENV/bin/pip" install -q 'libclang==18.1.1'
"$LIBCLANG_VENV/bin/pip" show virtme-ng >/dev/null 2>&1 ||
    "$LIBCLANG_VENV/bin/pip" install -q 'virtme-ng==1.42'
touch "$stamp"
log "host ready"
