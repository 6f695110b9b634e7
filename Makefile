# The two commands of the README:
#   make run    install missing packages, build, start the whole system
#   make test   install missing packages, build, run every test (ctest)
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
DATA       ?= ./data

.PHONY: all deps build run test test-sanitize fuzz format format-check bench kafka kafka-stop clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/tidings run --data $(DATA)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs it),
# but for the browser test and the kafka tier: `make test` runs that on the
# real cluster, and its code paths are the e2e tier's, which runs here too
# (a second cluster run under ASan would cost CI minutes for no new code).
test-sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTIDINGS_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE "browser|kafka"

# The libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan), each run for
# FUZZ_SECONDS; fails if any of them finds a crash, leak or broken invariant.
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DTIDINGS_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# A local Apache Kafka cluster (3 KRaft nodes on loopback, PLAINTEXT and
# SASL_SSL listeners) from Maven Central, cached under $(BUILD)/kafka;
# prints the bootstrap lists and client settings. scripts/kafka.sh has
# fetch, start, stop, status.
KAFKA_DIR ?= $(abspath $(BUILD))/kafka
kafka: deps
	@KAFKA_DIR=$(KAFKA_DIR) scripts/kafka.sh start

kafka-stop:
	@KAFKA_DIR=$(KAFKA_DIR) scripts/kafka.sh stop

FORMAT_FILES = $(shell git ls-files '*.c' '*.h')
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

bench: build
	@for b in $(BUILD)/bench_*; do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
