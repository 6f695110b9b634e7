#!/usr/bin/env bash
# The one list of Debian packages tidings needs to build, test and run.
# Installs only what is missing; does nothing (and needs no root) when all
# are present. Used by `make deps` (and so by `make run` / `make test`) and
# by .ci/run.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang-format
  librdkafka-dev libmicrohttpd-dev libjansson-dev libsqlite3-dev
  libssl-dev libsodium-dev uuid-dev libcurl4-openssl-dev libcmocka-dev libmimalloc-dev
  kcat python3 python3-kafka python3-cryptography python3-aiosmtpd curl sqlite3
)
# The browser test drives Debian's chromium with playwright-core (npm).
PACKAGES+=(chromium)
# `make fuzz` builds the libFuzzer harnesses with clang (libFuzzer itself
# comes with compiler-rt).
PACKAGES+=(clang libclang-rt-14-dev)

want=("${PACKAGES[@]}")
# The real Kafka cluster of scripts/kafka.sh (the `kafka` test tier, `make
# kafka`): a JVM and Maven, which fetches the broker from Maven Central. A
# JVM or Maven installed otherwise (sdkman, a JDK tarball) will do.
if ! command -v java >/dev/null 2>&1; then want+=(default-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then want+=(maven); fi
# Node.js may come from elsewhere (nodesource); only install Debian's if
# there is no node/npm at all.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing missing packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
