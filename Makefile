# mesh-agent: the two commands are `make demo` and `make test` (see README.md).
BUILD       ?= build
BUILD_ASAN  ?= build-asan
BUILD_FUZZ  ?= build-fuzz
BUILD_TSAN  ?= build-tsan
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 30
CMAKE_FLAGS ?=

.PHONY: all deps build build-asan test test-fast test-asan test-tsan fuzz demo bench packages format clean

all: build

deps:
	./scripts/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(BUILD_ASAN)/CMakeCache.txt:
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DMESH_SANITIZE=address,undefined $(CMAKE_FLAGS)

build-asan: $(BUILD_ASAN)/CMakeCache.txt
	cmake --build $(BUILD_ASAN) -j$(JOBS)

# Every test, in the release build and again under AddressSanitizer/UBSan (leaks included;
# the packaging test builds its own packages, so it runs once). Both suites run whatever
# the first gives, a failed build included; both summaries come last, and the exit status
# is non-zero when either failed (scripts/run-tests).
test: deps
	./scripts/run-tests $(BUILD) $(BUILD_ASAN)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j2

test-asan: build-asan
	cd $(BUILD_ASAN) && ctest --output-on-failure -j2 -LE packaging

# The multi-threaded data plane under ThreadSanitizer (see tests/tsan.supp).
test-tsan: deps
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMESH_SANITIZE=thread $(CMAKE_FLAGS)
	cmake --build $(BUILD_TSAN) -j$(JOBS)
	cd $(BUILD_TSAN) && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -L integration -R 'tcp_proxy|lifecycle|http_routes|http_proxy|mtls|controller|tracing|istio_edges|http2'

# libFuzzer (clang) on every target for FUZZ_SECONDS each, starting from the seed corpora.
fuzz: deps
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMESH_FUZZ=ON \
	  -DMESH_SANITIZE=address,undefined $(CMAKE_FLAGS)
	cmake --build $(BUILD_FUZZ) -j$(JOBS)
	./scripts/fuzz $(BUILD_FUZZ) $(FUZZ_SECONDS)

# The .deb and .rpm into out/ (see packaging/CMakeLists.txt).
packages: deps
	for f in deb rpm; do \
	  cmake -S . -B build-$$f -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	    -DMESH_TESTS=OFF -DMESH_PACKAGE=$$f $(CMAKE_FLAGS) && \
	  cmake --build build-$$f -j$(JOBS) && \
	  (cd build-$$f && cpack) || exit 1; \
	done
	mkdir -p out
	cp build-deb/*.deb build-rpm/*.rpm out/
	ls -l out/

demo: deps build
	./scripts/demo $(BUILD)

bench: build
	./bench/startup $(BUILD)
	./bench/tcp $(BUILD)
	./bench/http $(BUILD)
	./bench/tls $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) $(BUILD_TSAN) build-deb build-rpm out
