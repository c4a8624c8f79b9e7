# Every target creates .venv when it is missing or older than the requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test lint typecheck format demo soak fuzz bench deploy credentials resync doctor clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo  # the layers of relay/ (.importlinter)

# Types: what is deployed, the tools around it and the stand-ins, strictly (each `type: ignore` names its code and why).
typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict main.py relay resync doctor standins

# The tests in parallel (a worker per core, at most four), then the quick benchmark alone, so that nothing
# shares the machine with its measurements. Hypothesis' profile "ci": the same seed, so the same examples, on
# every run (printed in the header; `make fuzz` searches anew each run).
test: lint typecheck
	$(BIN)/python -m pytest --numprocesses=auto --maxprocesses=4 --hypothesis-profile=ci --ignore=tests/test_bench.py
	$(BIN)/python -m pytest tests/test_bench.py

soak: $(BIN)/.installed
	$(BIN)/python -m tests.soak --builds 250

# Mutation testing with mutmut (tests/mutate.py; docs/development.md): a score for each module, and the mutants its
# tests let live. make mutate [MODULES="relay/reporting.py relay/config.py:report_buckets"] [JOBS=N]
# By default the modules that protect users; setup.cfg's [mutate] names the test files run on each module's mutants.
.PHONY: mutate
MODULES ?= relay/reporting.py relay/credentials.py relay/repository.py relay/cloud_storage.py relay/config.py relay/masking.py
mutate: $(BIN)/.installed
	$(BIN)/python -m tests.mutate $(if $(JOBS),--jobs $(JOBS)) $(MODULES)

# A new seed each run, printed in the header (and again at the end of a failed run): SEED=N repeats a run.
fuzz: $(BIN)/.installed
	FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest tests/test_fuzz.py -p no:cacheprovider --hypothesis-profile=fuzz \
	  $(if $(SEED),--hypothesis-seed=$(SEED)) --hypothesis-show-statistics

bench: $(BIN)/.installed
	$(BIN)/python -m bench

demo: $(BIN)/.installed
	$(BIN)/python -m demo

# make deploy PROJECT=my-project REGION=europe-west1 [SOURCE=file|secret|bucket] [DRY_RUN=1]
#             [CONNECTIONS="cloud-build-connection ..."] [VPC_CONNECTOR=name | NETWORK=name SUBNET=name]
#             [BUILD_PROJECTS="team-a team-b"] [LOG_EXCERPTS=private|all|off] [TEST_REPORT_BUCKETS="bucket ..."]
#             [ALERTS=off | ALERT_EMAIL=ops@example.com]
deploy:
	PROJECT="$(PROJECT)" REGION="$(REGION)" SOURCE="$(SOURCE)" DRY_RUN="$(DRY_RUN)" CONNECTIONS="$(CONNECTIONS)" BUILD_PROJECTS="$(BUILD_PROJECTS)" \
	  LOG_EXCERPTS="$(LOG_EXCERPTS)" TEST_REPORT_BUCKETS="$(TEST_REPORT_BUCKETS)" ALERTS="$(ALERTS)" ALERT_EMAIL="$(ALERT_EMAIL)" \
	  VPC_CONNECTOR="$(VPC_CONNECTOR)" NETWORK="$(NETWORK)" SUBNET="$(SUBNET)" deploy/deploy.sh deploy

# make credentials PROJECT=my-project [SOURCE=file|secret|bucket] < credentials.json
credentials:
	PROJECT="$(PROJECT)" SOURCE="$(SOURCE)" DRY_RUN="$(DRY_RUN)" deploy/deploy.sh credentials

# make resync PROJECT=my-project REGION=europe-west1 SINCE=24h|7d|2026-11-28T09:00:00Z
#             [FUNCTION_PROJECT=hub] [LOCATIONS="global europe-west1"] [DRY_RUN=1] [SHARE=0.5] [HOURLY_BUDGET=1000]
resync: $(BIN)/.installed
	PYTHON="$(abspath $(BIN)/python)" PROJECT="$(PROJECT)" FUNCTION_PROJECT="$(FUNCTION_PROJECT)" REGION="$(REGION)" SINCE="$(SINCE)" \
	  LOCATIONS="$(LOCATIONS)" DRY_RUN="$(DRY_RUN)" SHARE="$(SHARE)" HOURLY_BUDGET="$(HOURLY_BUDGET)" deploy/deploy.sh resync

# make doctor PROJECT=my-project REGION=europe-west1 [SINCE=24h] [FUNCTION_PROJECT=hub] [LOCATIONS="global ..."]
doctor: $(BIN)/.installed
	PYTHON="$(abspath $(BIN)/python)" PROJECT="$(PROJECT)" FUNCTION_PROJECT="$(FUNCTION_PROJECT)" REGION="$(REGION)" \
	  SINCE="$(SINCE)" LOCATIONS="$(LOCATIONS)" deploy/deploy.sh doctor

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
