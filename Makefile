# QShape — two commands do everything on a fresh Debian machine:
#   make demo   installs what is missing, builds in release mode, trains the example MLP
#   make test   installs what is missing (with Chromium, GNU parallel and Slurm, which only the tests use)
#               and runs the whole test suite (release mode)
# The test suite builds the exported C with gcc and arm-none-eabi-gcc (picolibc) and runs it under
# qemu-system-arm, so those are installed too.

APT_PACKAGES := libopenblas-dev zlib1g-dev pkg-config dataset-fashion-mnist \
                gcc gcc-arm-none-eabi picolibc-arm-none-eabi qemu-system-arm
APT_TEST_PACKAGES := chromium parallel slurm-wlm munge
SWIFT        ?= swift
QSHAPE       := .build/release/qshape
# Code generation for this machine's processor (AVX2, AVX-512 where it has them), as -march=native
# does for C: the shaping passes and the integer kernels are vector code and run about twice as fast as
# on the x86-64 baseline. `make CPU=x86-64` builds a binary that runs on any x86-64.
CPU          ?= native
# QSHAPE_NATIVE_CPU records the choice in every run's provenance.json.
SWIFTFLAGS   := -c release -Xswiftc -target-cpu -Xswiftc $(CPU) $(if $(filter native,$(CPU)),-Xswiftc -DQSHAPE_NATIVE_CPU,)

.PHONY: all deps test-deps install-missing build demo test bench fuzz install clean
PREFIX       ?= /usr/local

all: build

# Installs only the apt packages that are missing (sudo when not root).
deps:
	@$(MAKE) -s install-missing PACKAGES="$(APT_PACKAGES)"

# What only the tests use: headless Chromium renders the reports; GNU parallel and a one-node Slurm
# (slurm-wlm, munge) run the sweep recipes of Docs/Reports.md.
test-deps:
	@$(MAKE) -s install-missing PACKAGES="$(APT_TEST_PACKAGES)"

install-missing:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build $(SWIFTFLAGS)

# The whole story: the example MLP without and with shaping, each trained with three seeds (seed 0
# in runs/<name>, seeds 1 and 2 in runs/<name>-seeds), converted to integers, then a comparison whose
# headline is the accuracy each keeps in the integer engine at 8, 4 and 3-bit weights, mean ± sd.
DEMO_RUNS := runs/fashion-mlp runs/fashion-mlp-seeds runs/fashion-mlp-kurtosis runs/fashion-mlp-kurtosis-seeds
demo: build
	rm -rf runs/fashion-mlp-seeds runs/fashion-mlp-kurtosis-seeds
	$(QSHAPE) train Examples/fashion-mlp.yaml --force
	$(QSHAPE) sweep Examples/fashion-mlp.yaml --seeds 1,2 --out runs/fashion-mlp-seeds
	$(QSHAPE) train Examples/fashion-mlp-kurtosis.yaml --force
	$(QSHAPE) sweep Examples/fashion-mlp-kurtosis.yaml --seeds 1,2 --out runs/fashion-mlp-kurtosis-seeds
	$(QSHAPE) compare $(DEMO_RUNS) --format html --out runs/compare.html
	$(QSHAPE) compare $(DEMO_RUNS) --format md --out runs/compare.md
	@echo
	@echo "Accuracy kept by the integer engine, 8-bit activations, mean ± sd over seeds 0, 1, 2 (runs/compare.html, runs/compare.md):"
	@$(QSHAPE) compare $(DEMO_RUNS) --headline

test: deps test-deps
	$(SWIFT) test $(SWIFTFLAGS) -Xswiftc -enable-testing --disable-swift-testing

bench: build
	$(QSHAPE) bench

# The executable alone is the program (it links the system's OpenBLAS and zlib).
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(QSHAPE) $(DESTDIR)$(PREFIX)/bin/qshape

# libFuzzer on every file parser (Sources/Workflows/FuzzTargets.swift), FUZZ_SECONDS each, from the
# seeds in Fuzz/corpus and the inputs that once crashed (Fuzz/regressions, replayed by make test).
# New findings land in Fuzz/crashes/<target>/: fix, then move them to Fuzz/regressions/<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= safetensors idx npy csv config checkpoint
FUZZ_FLAGS   := -timeout=10 -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1
fuzz: deps
	$(SWIFT) build -c release --scratch-path .build-fuzz --product qshape-fuzz \
	  -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING -Xswiftc -use-ld=lld
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p .build-fuzz/corpus/$$t Fuzz/crashes/$$t Fuzz/regressions/$$t; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  QSHAPE_FUZZ=$$t .build-fuzz/release/qshape-fuzz .build-fuzz/corpus/$$t Fuzz/corpus/$$t Fuzz/regressions/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=Fuzz/crashes/$$t/ $(FUZZ_FLAGS) || exit 1; \
	done

clean:
	rm -rf .build .build-fuzz runs
