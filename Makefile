# The integration tests read IDEMSQL_POSTGRES_DSN and IDEMSQL_MYSQL_DSN and
# skip a database whose DSN is unset (unless Docker can start one).
# test-local points them at a PostgreSQL and a MariaDB on 127.0.0.1, in
# the database IDEMSQL_TEST_DB names (default idemsql_test), which it
# creates: on a server others share, give each checkout a name of its own.
# IDEMSQL_GALERA_DSNS names the three nodes of a MariaDB Galera cluster,
# comma-separated, for the Galera tests (no container: they skip without
# it). galera-up starts one on loopback (as root) and prints the line, so
# in a shell: export "$(make -s galera-up)"
IDEMSQL_TEST_DB    ?= idemsql_test
LOCAL_POSTGRES_DSN := postgres://postgres@127.0.0.1:5432/$(IDEMSQL_TEST_DB)?sslmode=disable
LOCAL_MYSQL_DSN    := root@tcp(127.0.0.1:3306)/$(IDEMSQL_TEST_DB)?parseTime=true

# The race detector needs cgo: on where a C compiler is at hand.
RACE      := $(shell [ "$$(go env CGO_ENABLED)" = 1 ] && command -v "$$(go env CC)" >/dev/null && echo -race)
TESTFLAGS ?= $(RACE)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: test
test: ## Run unit tests and the integration suite (with -race where cgo works)
	go test -count=1 $(TESTFLAGS) ./...
	cd otel && go test -count=1 $(TESTFLAGS) ./...
	cd integration && go test -count=1 $(TESTFLAGS)

.PHONY: test-crash
test-crash: ## Kill private PostgreSQL and MariaDB servers under load, then check every answer survived (Linux; about 2 min)
	cd integration && IDEMSQL_CRASH=1 go test -count=1 -run '^TestCrash' -v

.PHONY: test-local
test-local: ## Run test against local PostgreSQL and MariaDB, in (and creating) the database IDEMSQL_TEST_DB (default idemsql_test)
	@echo '$(IDEMSQL_TEST_DB)' | grep -Eqx '[a-z_][a-z0-9_]{0,62}' || \
		{ echo "IDEMSQL_TEST_DB='$(IDEMSQL_TEST_DB)': want a lowercase identifier"; exit 2; }
	@if command -v psql >/dev/null; then \
		[ "$$(psql -w -X -U postgres -h 127.0.0.1 -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$(IDEMSQL_TEST_DB)'")" = 1 ] || \
			psql -w -X -q -U postgres -h 127.0.0.1 -d postgres -c 'CREATE DATABASE $(IDEMSQL_TEST_DB)'; \
	fi
	@if command -v mariadb >/dev/null; then \
		mariadb -h 127.0.0.1 -uroot -e 'CREATE DATABASE IF NOT EXISTS $(IDEMSQL_TEST_DB)'; \
	fi
	IDEMSQL_POSTGRES_DSN='$(LOCAL_POSTGRES_DSN)' IDEMSQL_MYSQL_DSN='$(LOCAL_MYSQL_DSN)' $(MAKE) test

.PHONY: galera-up
galera-up: ## Start a 3-node MariaDB Galera cluster on loopback (root); prints IDEMSQL_GALERA_DSNS=...
	@bash .ci/galera start

.PHONY: galera-down
galera-down: ## Stop the Galera cluster of galera-up and remove its state
	@bash .ci/galera stop

# staticcheck runs at a pinned version, fetched by the go command on first use.
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2
MODULES     := . integration bench otel

.PHONY: lint
lint: ## Check gofmt, run go vet and staticcheck in every module (library, integration, bench, otel)
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -l:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && echo "vet, staticcheck: $$m" && go vet ./... && $(STATICCHECK) ./...) || exit 1; done

.PHONY: example
example: ## Run the invoice example
	go run ./examples/invoice

BENCHFLAGS ?=

.PHONY: bench
bench: ## Run the side-by-side benchmark on every database at 0, 0.25 and 1 ms one way (about 20 min; BENCHFLAGS=-quick: under 10); writes bench-results.txt and the figures of docs/performance.md and the README
	cd bench && go run . -docs $(BENCHFLAGS)

.PHONY: bench-growth
bench-growth: ## Run the growth benchmark: 1M rows, purge under load (writes bench-growth-results.txt)
	cd bench && go run . -growth $(BENCHFLAGS)

.PHONY: tidy
tidy: ## Run go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
