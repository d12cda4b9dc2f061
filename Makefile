# Milo Portal. The README's two commands: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
FLASK   := $(BIN)/flask --app milo_portal
STAMP   := $(VENV)/.installed
PORT    ?= 5000

.PHONY: setup run test browser assets migrate clean screenshots

setup: $(STAMP) assets migrate

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

assets: node_modules/.package-lock.json
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/@picocss/pico/css/pico.min.css static/vendor/pico.min.css

# The schema check first: a database a newer version has upgraded gets its plain message,
# not Alembic's "Can't locate revision".
migrate: $(STAMP)
	$(FLASK) milo check-schema >/dev/null
	$(FLASK) db upgrade

run: setup
	@PORT=$(PORT) $(BIN)/python -m milo_portal.firstrun
	MILO_PUBLIC_BASE_URL=$${MILO_PUBLIC_BASE_URL:-http://127.0.0.1:$(PORT)} $(FLASK) run --host 127.0.0.1 --port $(PORT)

test: setup browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium. As root with apt it is installed here;
# otherwise the one command to run is printed and the tests do not start.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium for the browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	  else \
	    echo "The browser tests need Chromium. Run:  sudo apt-get install chromium  then make test again."; exit 1; \
	  fi; }

# Screenshots of the main pages at 1366 px and 390 px, written to docs/screenshots/.
screenshots: setup browser
	$(BIN)/pytest -q tests/browser/test_screenshots.py

clean:
	rm -rf $(VENV) node_modules static/vendor
