#!/usr/bin/env bash
# The main job on the embedded default, on this machine: no cloud, no cluster.
# Builds trellis, starts trellisd with its default modules, creates two pods
# (network namespaces) through the `trellis` CNI binary exactly as a container
# runtime would, shows them reaching each other, then removes everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: run as root (pods are network namespaces)" >&2
  exit 1
fi
umask 022
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
build=${TRELLIS_BUILD_DIR:-$root/build}
bin=$build/bin

work=$(mktemp -d /tmp/trellis-demo.XXXXXX)
mkdir -m 0755 "$work/plugins"
install -m 0644 "$build"/lib/trellis/plugins/*.so "$work/plugins/"
sock=$work/trellis.sock
pods=(demo-a-$$ demo-b-$$)
daemon_pid=
cleanup() {
  set +e
  for p in "${pods[@]}"; do
    echo "{\"cniVersion\":\"1.1.0\",\"name\":\"demo\",\"type\":\"trellis\",\"socket\":\"$sock\"}" |
      CNI_COMMAND=DEL CNI_CONTAINERID=$p CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$p CNI_PATH=/usr/lib/cni \
      "$bin/trellis" >/dev/null 2>&1
    ip netns delete "$p" 2>/dev/null
  done
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  # The policy module's table outlives a stopped daemon on purpose (restarts
  # keep enforcement); the demo daemon is gone for good, so is its table.
  nft delete table inet trellis 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "starting trellisd on the embedded default config"
"$bin/trellisd" --socket "$sock" --state-dir "$work/state" --plugin-dir "$work/plugins" \
  --metrics-addr 127.0.0.1:0 >"$work/trellisd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do
  "$bin/trellisctl" --socket "$sock" health --ready >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/trellisd.log"; exit 1; }
  sleep 0.1
done
"$bin/trellisctl" --socket "$sock" modules

conf="{\"cniVersion\":\"1.1.0\",\"name\":\"demo\",\"type\":\"trellis\",\"socket\":\"$sock\"}"
declare -A ip4 ip6
for p in "${pods[@]}"; do
  step "pod $p: ip netns add, then CNI ADD through $bin/trellis"
  ip netns add "$p"
  ip -n "$p" link set lo up
  out=$(echo "$conf" | CNI_COMMAND=ADD CNI_CONTAINERID=$p CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$p \
        CNI_PATH=/usr/lib/cni CNI_ARGS="K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$p" "$bin/trellis")
  echo "$out"
  ip4[$p]=$(echo "$out" | grep -oE '"address":"[0-9.]+' | head -1 | cut -d'"' -f4)
  ip6[$p]=$(echo "$out" | grep -oE '"address":"[0-9a-f:]+:[0-9a-f:]*' | head -1 | cut -d'"' -f4)
done

a=${pods[0]} b=${pods[1]}
step "$a -> $b (${ip4[$b]}, ${ip6[$b]})"
ip netns exec "$a" ping -c 3 -i 0.2 -W 2 "${ip4[$b]}"
ip netns exec "$a" ping -6 -c 3 -i 0.2 -W 2 "${ip6[$b]}"
step "$b -> $a (${ip4[$a]})"
ip netns exec "$b" ping -c 3 -i 0.2 -W 2 "${ip4[$a]}"

step "trellisctl pods"
"$bin/trellisctl" --socket "$sock" pods

step "CNI CHECK and DEL"
for p in "${pods[@]}"; do
  echo "$conf" | CNI_COMMAND=CHECK CNI_CONTAINERID=$p CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$p \
    CNI_PATH=/usr/lib/cni "$bin/trellis" && echo "CHECK $p: ok"
  echo "$conf" | CNI_COMMAND=DEL CNI_CONTAINERID=$p CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$p \
    CNI_PATH=/usr/lib/cni "$bin/trellis" && echo "DEL $p: ok"
  ip netns delete "$p"
done
"$bin/trellisctl" --socket "$sock" pods
step "done: two pods created, connected and removed by trellis"
