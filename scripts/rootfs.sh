#!/usr/bin/env bash
# The root file system of a guest whose architecture is not the host's (the
# arm64 lane): x86_64 guests run the host's own root through virtme-ng, an
# arm64 guest needs arm64 programs. A minimal Debian bookworm for arm64 from
# the machine's own mirror, with what the guest tests run: bash, coreutils,
# grep, sed, awk, util-linux, kmod (insmod), procps, python3, udev, kexec-tools and a
# static busybox (virtme-ng's initramfs).
#
# debootstrap's first stage only (--foreign): it downloads every package and
# unpacks the required ones; the rest are unpacked here. The second stage
# would run the maintainer scripts with arm64 programs, which this host cannot
# run (no binfmt_misc to hand them to qemu-user). What those scripts would
# have made that the tests need (the users and groups) is written here. Quick and a no-op when the root exists
# for the same package list.
# Usage: rootfs.sh ARCH   (prints the root's path)
source "$(dirname "$0")/common.sh"

arch=${1:?usage: rootfs.sh ARCH}
suite=bookworm
include=busybox-static,python3-minimal,kmod,procps,udev,bc,kexec-tools
root=$VMR_CACHE/rootfs-$arch
want="$suite $arch $include v4"
if [ "$(cat "$root/.vmr-rootfs" 2>/dev/null)" = "$want" ]; then
    echo "$root"
    exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed: run scripts/setup-host.sh"
mirror=$(debian_mirror) || die "cannot find a Debian mirror in this machine's apt sources"
log "building the $arch guest root ($suite, minbase + $include)"
start=$(date +%s)
rm -rf "$root.tmp" "$root"
debootstrap --foreign --arch="$arch" --variant=minbase --include="$include" \
    "$suite" "$root.tmp" "$mirror" >"$VMR_CACHE/rootfs-$arch.log" 2>&1 ||
    { tail -n 20 "$VMR_CACHE/rootfs-$arch.log" >&2; die "debootstrap for $arch failed"; }

# The packages of debootstrap's second stage (--include among them), unpacked
# as dpkg would, keeping merged /usr's directory links (/bin -> usr/bin).
for deb in "$root.tmp"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -C "$root.tmp" -x --keep-directory-symlink -f - ||
        die "unpacking ${deb##*/} failed"
done

# The alternatives the maintainer scripts would have set up (awk -> mawk, ...):
# every `update-alternatives --install LINK NAME PATH` and `--slave LINK NAME
# PATH` of a postinst, as a link, unless the link is there already.
for deb in "$root.tmp"/var/cache/apt/archives/*.deb; do
    { dpkg-deb -I "$deb" postinst 2>/dev/null || true; } | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
        { grep -oE -- '--(install|slave) +/[^ ]+ +[^ ]+ +/[^ ]+' || true; } |
        while read -r _ link _ target; do
            [ -e "$root.tmp$link" ] || [ -L "$root.tmp$link" ] || ln -s "$target" "$root.tmp$link"
        done
done

# What base-passwd's and the other maintainer scripts would have written.
cp "$root.tmp/usr/share/base-passwd/passwd.master" "$root.tmp/etc/passwd"
cp "$root.tmp/usr/share/base-passwd/group.master" "$root.tmp/etc/group"
echo "vmr-$arch" >"$root.tmp/etc/hostname"
# virtme-ng's init ends a guest with `poweroff -f`, which minbase does not have (systemd is
# not in it); without it init exited and the kernel panicked at the end of every guest
# ("Attempted to kill init!", found by test.sh's console scan). busybox's powers off.
[ -e "$root.tmp/usr/sbin/poweroff" ] || ln -s /bin/busybox "$root.tmp/usr/sbin/poweroff"
# The first stage links /proc to the host's; the guest mounts its own there.
rm -f "$root.tmp/proc"; mkdir -p "$root.tmp/proc"
# debootstrap keeps its downloaded packages and its own scripts in the root.
rm -rf "$root.tmp/debootstrap" "$root.tmp"/var/cache/apt/archives/*.deb
echo "$want" >"$root.tmp/.vmr-rootfs"
mv "$root.tmp" "$root"
log "guest root for $arch ready in $(( $(date +%s) - start ))s: $(du -sh "$root" | cut -f1)"
echo "$root"
