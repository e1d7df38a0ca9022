#!/usr/bin/env bash
# Boot the built kernel in a QEMU guest (TCG: this machine's /dev/kvm cannot
# boot a stock kernel) with virtme-ng, with virtio-mem devices and a QMP
# monitor on a unix socket.
#
# The guest can resize its own devices: a second chardev connects to the same
# QMP socket as a client and backs a virtio-serial port named org.qemu.qmp0,
# which `vmctl` (tools/vmctl) finds and speaks QMP over. The host can use the
# socket directly: vmctl --socket SOCK ...
#
# Usage: run-guest.sh [options] [-- command to run in the guest]
#   --mem SIZE       boot memory (default 2G)
#   --maxmem SIZE    maximum memory (default: boot memory + all regions + 1G)
#   --cpus N         vCPUs (default 2)
#   --nodes N        NUMA nodes; boot memory is split evenly (default 1)
#   --vmem SPEC      add a virtio-mem-pci device (repeatable):
#                    size=16G[,block=2M][,requested=0][,node=0][,id=vmN]
#                    [,backend=ram|memfd|file:PATH][,memaddr=ADDR][,prealloc=on]
#                    (prealloc=on: the device allocates host memory when it
#                    plugs, and answers BUSY when it cannot)
#   --append ARGS    extra kernel command line
#   --rodir G=H      show host directory H read-only at G in the guest
#   --rwdir G=H      show host directory H read-write at G in the guest
#   --phys-bits N    guest physical address bits, 4-level paging (default: QEMU's)
#   --qmp PATH       QMP socket path (default: $VMR_CACHE/run/qmp-PID.sock)
#   --timeout SECS   kill the guest after this long (default: none)
#   --autoload       let udev load a virtio-mem driver by modalias (by default
#                    neither virtio_mem nor virtio_mem_rust is autoloaded, so
#                    the test or the person picks one with insmod)
#   --verbose        show the guest's kernel console
#   --console-log F  write the guest's kernel console (messages of warning level
#                    and above, from the first line of boot to power-off) to the
#                    host file F, for scripts/test.sh's scan for splats
#   --lane LANE      boot the kernel of lane LANE: normal (default, or
#                    $VMR_LANE), debug (lockdep, DEBUG_VM, KFENCE, ...;
#                    build it with scripts/build.sh --lane debug) or arm64
#                    (qemu-system-aarch64 -M virt, the root from
#                    scripts/rootfs.sh arm64 and the tools from
#                    scripts/build-tools.sh --lane arm64) or kasan (clang,
#                    generic KASAN; scripts/build.sh --lane kasan)
# Without a command the guest starts an interactive shell.
source "$(dirname "$0")/common.sh"

mem=2G maxmem= cpus=2 nodes=1 append=() vmems=() qmp= timeout= verbose=() autoload=0 physbits= shares=()
console_log=
while [ $# -gt 0 ]; do
    case "$1" in
        --mem) mem=$2; shift 2 ;;
        --maxmem) maxmem=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --vmem) vmems+=("$2"); shift 2 ;;
        --append) append+=("$2"); shift 2 ;;
        --phys-bits) physbits=$2; shift 2 ;;
        --rodir) shares+=(--rodir "$2"); shift 2 ;;
        --rwdir) shares+=(--rwdir "$2"); shift 2 ;;
        --qmp) qmp=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --verbose|-v) verbose=(--verbose); shift ;;
        --console-log) console_log=$2; shift 2 ;;
        --autoload) autoload=1; shift ;;
        --lane) use_lane "$2"; shift 2 ;;
        --) shift; break ;;
        *) die "run-guest.sh: unknown option $1" ;;
    esac
done

kernel=$KIMAGE
[ -f "$kernel" ] || die "no $LANE kernel at $kernel: run 'scripts/build.sh --lane $LANE' first"

# A guest of the host's architecture runs the host's root (virtme-ng's
# default); another one runs a root of its own architecture, in which the
# checkout, the staged modules and the kernel image (which the kdump test
# loads as its capture kernel) are shown at the same paths as on the host.
arch_opts=()
if [ "$LANE_ARCH" != x86_64 ]; then
    root=$VMR_CACHE/rootfs-$LANE_ARCH
    [ -f "$root/.vmr-rootfs" ] || die "no $LANE_ARCH guest root: run 'scripts/rootfs.sh $LANE_ARCH' first"
    for d in "$REPO" "$KMODS" "$(dirname "$KIMAGE")"; do shares+=(--rodir "$d=$d"); done
    # virtme-ng mounts each share on a directory that must exist in the root.
    for s in "${shares[@]}"; do
        case "$s" in --*) ;; *) mkdir -p "$root${s%%=*}" ;; esac
    done
    arch_opts=(--arch "$LANE_ARCH" --root "$root")
fi

source "$REPO/tools/testing/selftests/drivers/virtio_mem/sizes.sh"

mkdir -p "$VMR_CACHE/run"
qmp=${qmp:-$VMR_CACHE/run/qmp-$$.sock}
rm -f "$qmp"
trap 'rm -f "$qmp" "$qmp.guest"' EXIT

opts=()
region_total=0
i=0
for spec in "${vmems[@]}"; do
    size= block= requested=0 node=0 id=vm$i backend=ram memaddr= prealloc=
    IFS=, read -ra kvs <<<"$spec"
    for kv in "${kvs[@]}"; do
        case "$kv" in
            size=*) size=${kv#size=} ;; block=*) block=${kv#block=} ;;
            requested=*) requested=${kv#requested=} ;; node=*) node=${kv#node=} ;;
            id=*) id=${kv#id=} ;; backend=*) backend=${kv#backend=} ;;
            memaddr=*) memaddr=${kv#memaddr=} ;; prealloc=*) prealloc=${kv#prealloc=} ;;
            *) die "bad --vmem item '$kv' in '$spec'" ;;
        esac
    done
    [ -n "$size" ] || die "--vmem needs size=: '$spec'"
    bytes=$(to_bytes "$size")
    region_total=$((region_total + bytes))
    case "$backend" in
        ram) opts+=(-object "memory-backend-ram,id=mem-$id,size=$bytes,reserve=off") ;;
        memfd) opts+=(-object "memory-backend-memfd,id=mem-$id,size=$bytes,reserve=off") ;;
        file:*) opts+=(-object "memory-backend-file,id=mem-$id,size=$bytes,mem-path=${backend#file:},share=on,reserve=off") ;;
        *) die "bad backend '$backend'" ;;
    esac
    dev="virtio-mem-pci,id=$id,memdev=mem-$id,node=$node,requested-size=$(to_bytes "$requested")"
    [ -n "$block" ] && dev+=",block-size=$(to_bytes "$block")"
    [ -n "$memaddr" ] && dev+=",memaddr=$memaddr"
    [ -n "$prealloc" ] && dev+=",prealloc=$prealloc"
    opts+=(-device "$dev")
    i=$((i + 1))
done

if [ -z "$maxmem" ]; then
    maxmem=$(( $(to_bytes "$mem") + region_total + (1 << 30) ))
else
    maxmem=$(to_bytes "$maxmem")
fi

# QMP: one monitor on a socket for the host, and a second one for the guest,
# whose socket a client chardev connects to at start and exposes as a virtio
# serial port. (A QMP socket serves one client at a time, so the guest's
# permanent connection needs a monitor of its own.)
gqmp=$qmp.guest
rm -f "$gqmp"
# A second serial port (the guest's ttyS1) for tests that put the guest to
# sleep: virtme-ng's virtio-serial ports (the script's output and exit code,
# and the guest's QMP port) do not come back after a sleep cycle, the 8250
# UART does. scripts/serial-relay.py keeps what the guest writes there, which
# is printed after the guest's other output, and runs vmctl on the host for
# the guest (see tools/testing/selftests/drivers/virtio_mem/tmpfs_root.sh).
# A line `vmr-exit: N` stands for the exit code when the script's own cannot
# be sent.
ttys1=$qmp.ttyS1 ttys1_log=$qmp.ttyS1.log
rm -f "$ttys1" "$ttys1_log"
trap 'rm -f "$qmp" "$qmp.guest" "$ttys1" "$ttys1_log"' EXIT
opts+=(-chardev "socket,id=ttys1,path=$ttys1,server=on,wait=off" -serial chardev:ttys1)
opts+=(-chardev "socket,id=qmpsrv,path=$qmp,server=on,wait=off"
       -mon "chardev=qmpsrv,mode=control"
       -chardev "socket,id=qmpgsrv,path=$gqmp,server=on,wait=off"
       -mon "chardev=qmpgsrv,mode=control"
       -chardev "socket,id=qmpcli,path=$gqmp"
       -device virtio-serial-pci,id=vmr-serial
       -device "virtserialport,bus=vmr-serial.0,chardev=qmpcli,name=org.qemu.qmp0")

# The kernel console to a host file: a virtio console (hvc0) on our serial bus, the same on
# every architecture. In script mode virtme-ng sends its own console to /dev/null and sets
# loglevel=0; ours is a second console with loglevel=6 (our --append comes after virtme-ng's
# arguments, and the last one counts), so it gets every message at KERN_NOTICE or above:
# WARN, BUG, lockdep, KFENCE, oopses, panics, the OOM killer and their stack traces (printed
# at the default level), and none of the info chatter that would slow the guest. It starts
# when virtio_console binds its port (what the kernel printed before that, about the first
# second of boot, is dropped by hvc, not replayed) and ends when the port goes at power-off;
# the guest's own dmesg check (lib.sh) covers the boot, and its log buffer is 8M so that it
# never wraps. The command run in the guest first writes "vmr: guest command starts" there,
# which shows that the console was captured.
if [ -n "$console_log" ]; then
    : >"$console_log"
    opts+=(-chardev "file,id=vmrcon,path=$console_log"
           -device "virtconsole,bus=vmr-serial.0,chardev=vmrcon")
    # The UART virtme-ng names stays the preferred console (/dev/console, named last): hvc0
    # appears only when virtio_console has set up its port, from a work item, which can be
    # after the kernel opens /dev/console for init; an arm64 guest whose init found no
    # console there exited at once (the kernel panicked 1.3 s into boot).
    uart=ttyS0; [ "$LANE_ARCH" = arm64 ] && uart=ttyAMA0
    append+=("console=hvc0" "console=$uart" "loglevel=6" "printk.time=1")
fi
append+=("log_buf_len=8M")

numa=()
if [ "$nodes" -gt 1 ]; then
    [ $((cpus % nodes)) = 0 ] || die "--cpus must be a multiple of --nodes"
    per=$(( $(to_bytes "$mem") / nodes ))
    pernode=$((cpus / nodes))
    for ((n = 0; n < nodes; n++)); do
        first=$((n * pernode)) last=$(((n + 1) * pernode - 1))
        numa+=(--numa "$((per >> 20))M,cpus=$first-$last")
    done
    # One socket per node: CPUs of one socket share caches, and the kernel
    # warns when cache siblings sit on different nodes.
    opts+=(-smp "$cpus,sockets=$nodes,cores=$pernode,threads=1")
fi

[ -n "$physbits" ] && opts+=(-cpu "max,phys-bits=$physbits,la57=off")
# vng's --memory appends "M" to whatever it is given, so the memory size and
# maxmem go to QEMU directly (a later -m overrides vng's default).
opts=(-m "$(( $(to_bytes "$mem") >> 10 ))K,maxmem=$((maxmem >> 10))K" "${opts[@]}")
cmd=(vng ${VMR_VNG_DRY_RUN:+--dry-run} --run "$kernel" "${arch_opts[@]}" --disable-kvm --disable-microvm --cpus "$cpus"
     "${numa[@]}" "${verbose[@]}" "${shares[@]}"
     --qemu-opts="${opts[*]}")
[ $autoload = 1 ] || append+=("modprobe.blacklist=virtio_mem,virtio_mem_rust")
# No clocksource watchdog: 7.3's inter-CPU skew check (clocksource_watchdog ->
# watchdog_check_skew) waits with interrupts off, holding watchdog_lock, for
# the other CPU to answer an IPI, while that CPU spins on watchdog_lock with
# interrupts off; its timeout reads a clock that does not advance then. Under
# TCG a guest hung there at boot for good (seen on the debug kernel: CPU0 in
# watchdog_check_skew, CPU1 in queued_spin_lock_slowpath on watchdog_lock).
# With tsc=reliable the TSC needs no watchdog, so none runs. (arm64's
# architected timer has no clocksource watchdog.)
[ "$LANE_ARCH" = x86_64 ] && append+=("tsc=reliable")
# KASAN reports only its first bug unless told otherwise; a lane that looks for them wants all.
[ "$LANE" = kasan ] && append+=("kasan_multi_shot")
for a in "${append[@]}"; do cmd+=(--append "$a"); done
if [ $# -gt 0 ]; then
    if [ -n "$console_log" ]; then
        cmd+=(--exec "echo '<5>vmr: guest command starts' >/dev/kmsg; $*")
    else
        cmd+=(--exec "$*")
    fi
fi

echo "QMP socket: $qmp" >&2
python3 "$REPO/scripts/serial-relay.py" "$ttys1" "$qmp" "$VMCTL_BIN" "$ttys1_log" </dev/null &
relay=$!
rc=0
if [ -n "$timeout" ]; then
    # Without a terminal, timeout runs the guest in a process group of its own and kills all
    # of it (QEMU too: a guest that hangs must not keep running after its test). With one, the
    # guest needs the terminal, so only vng is signalled.
    if [ -t 0 ]; then
        timeout --foreground -k 10 "$timeout" "${cmd[@]}" || rc=$?
    else
        timeout -k 10 "$timeout" "${cmd[@]}" || rc=$?
    fi
else
    "${cmd[@]}" || rc=$?
fi
kill "$relay" 2>/dev/null || true
wait "$relay" 2>/dev/null || true
if [ -s "$ttys1_log" ]; then
    # Appended through a new open file: QEMU opened our standard output anew with O_TRUNC
    # (virtme-ng's chardev path=/proc/self/fd/1), so this script's own offset in a file
    # there is stale, and writing at it would overwrite QEMU's output or leave a hole of
    # NULs before it.
    grep -av '^vmr-exit: ' "$ttys1_log" >>/proc/self/fd/1
    # vng answers 255 when the script's exit code never came.
    code=$(sed -n 's/^vmr-exit: \([0-9]*\)$/\1/p' "$ttys1_log" | tail -n1)
    [ "$rc" = 255 ] && [ -n "$code" ] && rc=$code
fi
exit "$rc"
