#!/usr/bin/env bash
# Runs the libFuzzer harnesses of a fuzz build (cmake -DTIDINGS_FUZZ=ON) one
# after the other, each for a fixed time, starting from the checked-in seeds
# plus what earlier runs in the same build dir found. Fails when any harness
# crashes, leaks, hangs or breaks an invariant; the input that did it is kept
# under <build>/fuzz-artifacts/<name>/ and the command to replay it printed.
#   tests/fuzz/run.sh BUILD_DIR SECONDS [NAME...]     (used by `make fuzz`)
set -euo pipefail

src="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:?usage: run.sh BUILD_DIR SECONDS [NAME...]}" && pwd)"
seconds="${2:?usage: run.sh BUILD_DIR SECONDS [NAME...]}"
shift 2

# Longest input per harness: a bit above the largest sensible input, so the
# fuzzer does not spend its time on megabyte-long strings.
declare -A max_len=(
  [envelope]=4096 [json_money]=1024 [jwt]=1024
  [traceparent_time]=256 [webpush_sub]=4096 [http]=2048 [sse_frame]=1024
  [urlguard]=512
)
declare -A dict=([envelope]=envelope.dict [json_money]=json.dict [http]=http.dict
  [urlguard]=urlguard.dict)
# The HTTP server frees on its own threads, so libFuzzer's per-input leak
# check (mallocs != frees) would rerun nearly every input under LSan; leaks
# are still caught by LeakSanitizer when the run ends.
declare -A extra=([http]="-detect_leaks=0")

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for d in "$src"/corpus/*/; do names+=("$(basename "$d")"); done
fi

export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
failed=()
for name in "${names[@]}"; do
  bin="$build/tests/fuzz/fuzz_$name"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is not built" >&2
    failed+=("$name")
    continue
  fi
  work="$build/fuzz-corpus/$name"
  art="$build/fuzz-artifacts/$name"
  log="$build/fuzz-$name.log"
  mkdir -p "$work" "$art"
  args=(-max_total_time="$seconds" -max_len="${max_len[$name]:-4096}" -timeout=20
        -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$art/")
  if [ -n "${dict[$name]:-}" ]; then args+=(-dict="$src/${dict[$name]}"); fi
  if [ -n "${extra[$name]:-}" ]; then args+=(${extra[$name]}); fi
  echo "fuzz: $name for ${seconds}s"
  if "$bin" "${args[@]}" "$work" "$src/corpus/$name" >"$log" 2>&1; then
    # "#123456 DONE cov: 590 ft: 1536 corp: 170/31Kb lim: 456 exec/s: 486 rss: 143Mb"
    done_line="$(grep -a 'DONE ' "$log" | tail -n 1 || true)"
    echo "fuzz: $name ok: ${done_line:-finished}"
  else
    rc=$?
    echo "fuzz: $name FAILED (exit $rc); the end of $log:" >&2
    grep -av '^#[0-9]' "$log" | tail -n 60 >&2
    for f in "$art"/*; do
      [ -e "$f" ] && echo "fuzz: replay with: $bin $f" >&2
    done
    failed+=("$name")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#names[@]} harnesses ran ${seconds}s each without a finding"
