# Shortcuts for the scripts in scripts/; each target is one command you can also run by hand.
.PHONY: setup run test lint format images services-start services-stop bench load clean

setup:
	bash scripts/setup.sh

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/lint.sh

format:
	bash scripts/lint.sh --fix

images:
	bash scripts/build-images.sh

services-start:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

bench:
	uv run --frozen python -m load_tests.bench_pool

load:
	bash load_tests/run_load.sh

# Throwaway state only: test services, caches. The database in data/ and the images stay.
clean:
	bash scripts/services.sh stop
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +
