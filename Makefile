# The two commands of the README.
#   make run   - a local 3-member cluster on loopback (own etcd + PostgreSQL 15); Ctrl-C stops it
#   make test  - the whole test suite (unit, simulation, integration with real PostgreSQL and etcd,
#                the chaos suite's network-namespace tests; the release build is what they run)
#   make soak  - a million simulated fault schedules through the real agent runtime (hours)
#   make fresh-check - `make run` on a fresh minimal Debian 12 root (debootstrap; as root, 15-25 min):
#                install-deps, build, cluster, a write through the router, Ctrl-C
#                (scripts/fresh-debian-check.sh; options in FRESH_CHECK_ARGS, e.g. --keep)

CARGO ?= cargo

.PHONY: run test deps build lint bench chaos deb fresh-check soak

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --release -p pgbaton

run: build
	./target/release/pgbaton local up $(ARGS)

test: deps
	$(CARGO) build --release -p pgbaton -p pgbaton-chaos
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found (cargo install cargo-nextest); using cargo test"; \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The Debian package (binary, systemd units, /etc/pgbaton examples): target/debian/*.deb
deb: build
	./scripts/build-deb.sh

bench: build
	$(CARGO) run --release -p pgbaton-bench -- all

# The simulator's long soak: a million random fault schedules through the real agent runtime
# (500,000 asynchronous, 300,000 synchronous over six configurations, 200,000 of DCS trouble in
# failsafe mode), seeds from SOAK_FIRST_SEED (default 100000, past the ones `make test` runs).
# Hours on a 2-core machine; a failing seed prints how to replay it. A smaller soak, e.g. the
# 80,000 seeds of docs/ARCHITECTURE.md's third batch (about an hour):
#   make soak SOAK_FIRST_SEED=300000 SOAK_SEEDS=12500 SOAK_SYNC_SEEDS=5000 SOAK_FAILSAFE_SEEDS=10000
# (per shard: four asynchronous shards, six synchronous configurations, two failsafe shards).
SOAK_FIRST_SEED ?= 100000
SOAK_SEEDS ?= 125000
SOAK_SYNC_SEEDS ?= 50000
SOAK_FAILSAFE_SEEDS ?= 100000
soak:
	PGBATON_SIM_REAL_SEEDS=$(SOAK_SEEDS) PGBATON_SIM_REAL_SYNC_SEEDS=$(SOAK_SYNC_SEEDS) \
	PGBATON_SIM_REAL_FAILSAFE_SEEDS=$(SOAK_FAILSAFE_SEEDS) PGBATON_SIM_REAL_FIRST_SEED=$(SOAK_FIRST_SEED) \
	$(CARGO) nextest run --release --profile soak -p pgbaton-sim --success-output final \
		-E 'test(/^real_runtime_random_schedules|^real_sync_(first|quorum)|^real_failsafe_mode/)'

# A short seeded fault-injection run (part of CI); see bench/chaos/README.md for long runs.
chaos: deps
	bench/chaos.sh --duration 60 --seed 1 --mode sync

# The README's `make run` on a fresh minimal Debian 12 (a debootstrap root; clones the committed HEAD).
fresh-check:
	./scripts/fresh-debian-check.sh $(FRESH_CHECK_ARGS)
