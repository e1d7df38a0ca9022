# virtio-mem, written in Rust for Linux: entry points.
#
#   make run     boot a guest with virtio_mem_rust and a virtio-mem device
#   make check   install, build and run the tests (the debug and arm64 lanes run what
#                only they find); ends with "N passed, N failed, N skipped"
#   make check-all  the same with every guest test on every lane, and kunit.py run on
#                a kernel of its own
#   make bench   the C driver and ours in one run: plug and unplug times with the
#                ratio, and a timeline drawn to bench-results/timeline.svg
#   make build   fetch, overlay, configure and build the kernel (+ modules)
#   make setup   install the host tools only
#   make vmctl   build the tools: vmctl (QMP control) and vmem-status (guest)
#   make series  export the work as a patch series against 7.3 (git format-patch)

.PHONY: run check check-all bench build setup vmctl overlay series clean-build

run: setup build vmctl
	scripts/demo.sh

bench:
	scripts/bench.sh

check:
	scripts/test.sh

check-all:
	VMR_DEPTH=all scripts/test.sh

build: setup
	scripts/build.sh

setup:
	scripts/setup-host.sh

vmctl:
	scripts/build-tools.sh

overlay:
	scripts/fetch-kernel.sh && scripts/overlay.sh

series:
	scripts/series.sh

clean-build:
	scripts/clean.sh
