#!/usr/bin/env bash
# Installs everything trellis needs to build and to run its whole test suite
# on Debian 12, as root. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config
  libboost-dev libboost-program-options-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libnl-3-dev libnl-route-3-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libnghttp2-dev
  libabsl-dev libc-ares-dev libre2-dev zlib1g-dev libssl-dev
  libsqlite3-dev libnftables-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev
  # fuzzing (tests/fuzz, -DTRELLIS_FUZZ=ON): clang with libFuzzer
  clang libclang-rt-14-dev
  # run and test
  iproute2 nftables iptables iputils-ping procps psmisc
  containernetworking-plugins podman runc busybox-static
  iperf3 prometheus python3 curl ca-certificates openssl
)
# kubectl (client only, for `kubectl kustomize`): Debian's kubernetes-client,
# unless a kubectl is installed already.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The prometheus package starts a server on :9090; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
echo "setup: dependencies present"
