# virtio-mem, written in Rust for Linux: entry points.
#
#   make run     boot a guest with virtio_mem_rust and a virtio-mem device
#   make check   install, build and run every test; ends with "N passed, N failed"
#   make build   fetch, overlay, configure and build the kernel (+ modules)
#   make setup   install the host tools only
#   make vmctl   build the QMP control tool

.PHONY: run check build setup vmctl overlay clean-build

run: setup build vmctl
	scripts/demo.sh

check:
	scripts/test.sh

build: setup
	scripts/build.sh

setup:
	scripts/setup-host.sh

vmctl:
	cd tools/vmctl && cargo build --release --quiet

overlay:
	scripts/fetch-kernel.sh && scripts/overlay.sh

clean-build:
	scripts/clean.sh
