# crikit — build, test, bench and demo. `make help` lists the targets.
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
CARGO ?= cargo
BINS := imgpull bundlegen ctrmon crid imgserve
S1 := imgpull bundlegen imgserve
S8 := ctrmon crid
REL := target/release

# Debian packages the tests, the benchmarks and the demo use.
DEPS := docker-registry skopeo umoci runc crun conmon containerd busybox-static debootstrap curl jq openssl zstd criu \
        python3 util-linux ca-certificates protobuf-compiler containernetworking-plugins iproute2 iptables \
        qemu-system-x86 qemu-utils e2fsprogs gnupg

FUZZ_SECONDS ?= 60

.PHONY: all build release test test-node test-node-cri test-cri lint fmt clippy docs man completions check-docs deps demo bench bench-kubelet fuzz install help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## build every binary (debug)
	$(CARGO) build --workspace --locked

release: ## build every binary (release)
	$(CARGO) build --workspace --release --locked

# The suites that run containers, run a second time under each other runtime.
RUNTIME_SUITES := --test crid --test crid_pods --test crid_resources --test crid_security --test crid_crash --test crid_events \
                  --test crid_checkpoint --test crid_errors --test crid_crictl --test crid_stream --test bundlegen \
                  --test kubelet --test crid_images --test layers
OTHER_RUNTIMES ?= crun

test: deps build ## unit, cli and integration tests, the runtime suites under runc and crun (root); reports what did not run
	CARGO=$(CARGO) OTHER_RUNTIMES="$(OTHER_RUNTIMES)" RUNTIME_SUITES="$(RUNTIME_SUITES)" scripts/test.sh

test-node: deps build ## the test node: a systemd, cgroup v2 Debian VM under qemu running crid's unit with both cgroup managers (root)
	$(CARGO) test --locked --test node a_systemd_node -- --nocapture

test-node-cri: deps build ## critest in the test node, crid under systemd on cgroup v2, its images from CRI_MIRROR=HOST:PORT (root)
	$(CARGO) test --locked --test node critest_passes -- --nocapture

test-cri: release ## critest against a crid of its own (CRITEST/CRICTL or PATH; CRI_MIRROR=HOST:PORT offline)
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) scripts/test-cri.sh

fmt: ## check formatting
	$(CARGO) fmt --all -- --check

clippy: ## lints, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

lint: fmt clippy ## fmt and clippy

docs: man completions ## regenerate man/ and completions/ from the clap definitions

man: build
	for b in $(S1); do target/debug/$$b --generate=man > man/$$b.1; done
	for b in $(S8); do target/debug/$$b --generate=man > man/$$b.8; done

completions: build
	for b in $(BINS); do \
	  target/debug/$$b --generate=bash > completions/$$b.bash; \
	  target/debug/$$b --generate=zsh > completions/_$$b; \
	  target/debug/$$b --generate=fish > completions/$$b.fish; \
	done

check-docs: docs ## generated files must be committed and current
	git diff --exit-code -- man completions

deps: ## install the Debian packages tests, benchmarks and the demo need (root; only what is missing)
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@scripts/cgroup-hybrid.sh
	@scripts/criu.sh || echo "deps: no CRIU that runs here; CheckpointContainer will say why" >&2

demo: deps release ## the pipeline on a throwaway loopback registry holding a busybox image
	$(CARGO) build --release --locked -p crid --example cri
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) scripts/demo.sh

bench: deps release ## imgpull, bundlegen, ctrmon, crid, imgserve against skopeo, umoci, conmon, containerd, docker-registry (root)
	$(CARGO) build --release --locked --example hashspeed --example floor
	$(CARGO) build --release --locked -p crid --example cri
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/pull.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/bundle.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/monitor.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/crid.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/stream.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/lifecycle.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/images.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/events.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/serve.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/policy.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/peers.py
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/kubelet.py

bench-kubelet: deps release ## kubelet (KUBELET or PATH) driving crid and containerd: pods Ready, stopped, RSS, CPU (root; KUBELET_BENCH_ARGS)
	$(CARGO) build --release --locked -p crid --example cri
	CRIKIT_BIN_DIR=$(CURDIR)/$(REL) bench/kubelet.py $(KUBELET_BENCH_ARGS)

fuzz: ## fuzz the layer applier, then crid's request checks and spec fitting, FUZZ_SECONDS each (installs cargo-fuzz when missing)
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	mkdir -p lib/fuzz/corpus/apply_layer bins/crid/fuzz/corpus/cri_request
	cd lib/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run apply_layer corpus/apply_layer seeds -- -max_total_time=$(FUZZ_SECONDS)
	cd bins/crid/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run cri_request corpus/cri_request -- -max_total_time=$(FUZZ_SECONDS)

install: release ## install binaries, man pages, completions, crid.service under DESTDIR/PREFIX; crid.toml, crictl.yaml under DESTDIR/SYSCONFDIR unless there
	install -d $(DESTDIR)$(PREFIX)/bin
	for b in $(BINS); do install -m755 $(REL)/$$b $(DESTDIR)$(PREFIX)/bin/$$b; done
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/man/man1 man/*.1
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/man/man8 man/*.8
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/man/man5 man/*.5
	for b in $(BINS); do \
	  install -Dm644 completions/$$b.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/$$b; \
	  install -Dm644 completions/_$$b $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_$$b; \
	  install -Dm644 completions/$$b.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/$$b.fish; \
	done
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|@PREFIX@|$(PREFIX)|g' bins/crid/dist/crid.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/crid.service
	chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/crid.service
	# An operator's own configuration stays as it is.
	[ -e $(DESTDIR)$(SYSCONFDIR)/crikit/crid.toml ] || install -Dm644 bins/crid/dist/crid.toml $(DESTDIR)$(SYSCONFDIR)/crikit/crid.toml
	[ -e $(DESTDIR)$(SYSCONFDIR)/crictl.yaml ] || install -Dm644 bins/crid/dist/crictl.yaml $(DESTDIR)$(SYSCONFDIR)/crictl.yaml
