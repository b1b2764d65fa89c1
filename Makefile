# pgvision — `make demo` and `make test` are all a new machine needs (Debian 12).
#
#   make install   Debian packages, server-side venv, extension files, offline models, and
#                  the `pgvision` command (make uninstall removes what it added)
#   make start     the project-local Postgres cluster (.pg/, Unix socket only)
#   make demo      install + start + migrate + load sample images + extract + summary
#   make test      pytest against the local cluster (real Postgres, real TensorFlow)
#   make test-fast the tests that need no server (seconds)
#   make docs      README.md + docs/ + CHANGELOG.md as a site in out/site (a broken link fails)
#   make bench     benchmarks, printed as ratios to a baseline measured in the same run
#   make migrate   alembic upgrade head against DSN (default: the local cluster)
#   make shards    a local sharded pgvision: 1 coordinator + SHARDS shard clusters (PL/Proxy)
#   make dsn | psql | stop | status | clean

VENV      ?= /opt/pgvision/venv
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGBIN     ?= $(shell $(PG_CONFIG) --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CLUSTER   := VENV=$(VENV) PGBIN=$(PGBIN) scripts/cluster.sh
PYTHON    := $(VENV)/bin/python
PYTEST_ARGS ?=

export VENV PG_CONFIG

.PHONY: install install-dev install-runtime uninstall start stop status dsn psql migrate downgrade demo test test-fast docs \
        bench map \
        bench-quality bench-extract bench-search bench-classify bench-recommend bench-sessions bench-scale \
        bench-chart bench-security bench-upkeep bench-serving bench-compact bench-load bench-map bench-duplicates bench-text \
        shards shards-stop shards-psql clean

install:
	$(SUDO) env VENV=$(VENV) PG_CONFIG=$(PG_CONFIG) scripts/install.sh

install-dev:
	$(SUDO) env VENV=$(VENV) PG_CONFIG=$(PG_CONFIG) WITH_DEV=1 scripts/install.sh

# Serving only (docker/Dockerfile's runtime stage): no TensorFlow, no node; the converted
# models must already be in $(VENV)/share/pgvision/models.
install-runtime:
	$(SUDO) env VENV=$(VENV) PG_CONFIG=$(PG_CONFIG) RUNTIME_ONLY=1 scripts/install.sh

# Removes the local cluster (asked first; YES=1), extension files, command and venv.
uninstall:
	$(SUDO) env VENV=$(VENV) PG_CONFIG=$(PG_CONFIG) scripts/uninstall.sh

start:
	@$(CLUSTER) start

stop:
	@$(CLUSTER) stop

status:
	@$(CLUSTER) status

# Prints only the libpq URI of the local cluster, for `psql "$$(make -s dsn)"`.
dsn:
	@$(CLUSTER) dsn

psql:
	@$(CLUSTER) psql

DSN ?= $(shell $(CLUSTER) dsn)

# The DSN goes through the environment: make does not echo it and ps does not show it.
migrate:
	@DATABASE_URL='$(DSN)' $(VENV)/bin/pgvision migrate

downgrade:
	@DATABASE_URL='$(DSN)' $(VENV)/bin/pgvision migrate --to -1

demo: install-dev start migrate
	@$(PYTHON) demo/demo.py --dsn '$(DSN)'

test: install-dev start docs
	PGVISION_SOCKET_DIR="$$($(CLUSTER) socket-dir)" $(PYTHON) -m pytest $(PYTEST_ARGS)

# The server-free tier: validation, search logic, wrappers, learners (seconds, no cluster).
test-fast: install-dev
	PYTHONPATH=plpython $(PYTHON) -m pytest -m fast $(PYTEST_ARGS)

# --strict: a warning (a link to a missing page or anchor, a page outside the nav) fails.
docs: install-dev
	$(VENV)/bin/mkdocs build --strict --quiet

bench: bench-quality bench-load bench-extract bench-search bench-classify bench-recommend bench-duplicates bench-text \
       bench-sessions bench-scale \
       bench-security bench-upkeep bench-serving
	@$(MAKE) --no-print-directory bench-chart

# One PNG of all ratios and cold starts from the JSON the benchmarks wrote (out/bench.png).
bench-chart: install-dev
	@$(PYTHON) bench/chart.py --dir out --out out/bench.png

# Which features see best: every candidate layer and pooling beside raw-pixel baselines, on
# labelled images shipped by packages (no server needed; --quick: 300 images a set).
bench-quality: install-dev
	@$(PYTHON) bench/quality.py $(BENCH_ARGS)

bench-extract: install-dev start migrate
	@$(PYTHON) bench/extract.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-search: install-dev start migrate
	@$(PYTHON) bench/search.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-classify: install-dev start migrate
	@$(PYTHON) bench/classify.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-recommend: install-dev start migrate
	@$(PYTHON) bench/recommend.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-duplicates: install-dev start migrate
	@$(PYTHON) bench/duplicates.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-text: install-dev start migrate
	@$(PYTHON) bench/text.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-sessions: install-dev start migrate
	@$(PYTHON) bench/sessions.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-scale: install-dev start migrate
	@$(PYTHON) bench/scale.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-serving: install-dev start migrate
	@$(PYTHON) bench/serving.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-security: install-dev start migrate
	@$(PYTHON) bench/security.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-map: install-dev start migrate
	@$(PYTHON) bench/map.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-load: install-dev start migrate
	@$(PYTHON) bench/load.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-upkeep: install-dev start migrate
	@$(PYTHON) bench/upkeep.py --dsn '$(DSN)' $(BENCH_ARGS)

bench-compact: install-dev start migrate
	@$(PYTHON) bench/compact.py --dsn '$(DSN)' $(BENCH_ARGS)

# A coordinator and SHARDS (2) shard clusters on Unix sockets, pgvision_cluster set up.
SHARDS ?= 2
shards: install-dev
	@SHARDS=$(SHARDS) VENV=$(VENV) PGBIN=$(PGBIN) scripts/shards.sh start

shards-stop:
	@SHARDS=$(SHARDS) VENV=$(VENV) PGBIN=$(PGBIN) scripts/shards.sh stop

shards-psql:
	@SHARDS=$(SHARDS) VENV=$(VENV) PGBIN=$(PGBIN) scripts/shards.sh psql

# The catalog map of a table as a PNG: make map SOURCE=demo_images [COLOR_BY=cluster]
SOURCE ?= demo_images
COLOR_BY ?= cluster
map: start
	@mkdir -p out
	@psql '$(DSN)' -XAtc "SELECT encode(vision.plot_map(source => '$(SOURCE)', \
	  color_by => '$(COLOR_BY)', thumbnails => true), 'base64')" | base64 -d > out/map.png
	@echo "wrote out/map.png"

clean: stop shards-stop
	rm -rf .pg out
