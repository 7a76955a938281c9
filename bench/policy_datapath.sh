#!/usr/bin/env bash
# Per-packet cost of the policy plugin: ping, TCP_RR/TCP_CRR (bench/policy_rr)
# and iperf3 between two pods of a trellisd, with no policy and with 10,000
# policies that all select the server pod (so every new connection to it
# walks the biggest chain and sets), in rounds that alternate the phases.
#
#   bench/policy_datapath.sh [ROUNDS]      (root; builds nothing: run after a build)
#
# Phases:
#   none        no policy
#   10k/any     10,000 policies; the client is allowed on every port (looked up
#               in the group's address interval set, ~5,000 elements)
#   10k/ports   10,000 policies; the client is allowed on TCP 5201 and 7000
#               only (looked up in the addr . proto . port set, ~5,000 elements)
# Everything lives in namespaces named after this script's pid.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TRELLIS_BUILD_DIR:-$root/build}
bin=$build/bin
rounds=${1:-3}
secs=${BENCH_SECONDS:-5}

work=$(mktemp -d /tmp/trellis-polbench.XXXXXX)
mkdir -m 0755 "$work/plugins" "$work/policies"
install -m 0644 "$build"/lib/trellis/plugins/*.so "$work/plugins/"
node=pbn-$$ client=pbc-$$ server=pbs-$$
sock=$work/trellis.sock
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for n in "$client" "$server" "$node"; do ip netns delete "$n" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/trellis.yaml" <<EOF
modules:
  ipam: {config: {ranges: [{subnet: 10.199.0.0/24}]}}
  qos: {enabled: false}
  policy: {config: {policy_dir: $work/policies, rescan_interval: 3600}}
EOF
ip netns add "$node"
ip -n "$node" link set lo up
ip netns exec "$node" "$bin/trellisd" --socket "$sock" --state-dir "$work/state" --plugin-dir "$work/plugins" \
  --metrics-addr 127.0.0.1:0 --config "$work/trellis.yaml" >"$work/trellisd.log" 2>&1 &
pids+=($!)
ctl() { "$bin/trellisctl" --socket "$sock" "$@"; }
for _ in $(seq 1 300); do ctl health --ready >/dev/null 2>&1 && break; sleep 0.1; done

declare -A ip
for pod in client server; do
  ns=${!pod}
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  conf="{\"cniVersion\":\"1.1.0\",\"name\":\"bench\",\"type\":\"trellis\",\"socket\":\"$sock\",
         \"args\":{\"cni\":{\"labels\":[{\"key\":\"app\",\"value\":\"$pod\"}]}}}"
  out=$(echo "$conf" | CNI_COMMAND=ADD CNI_CONTAINERID=$ns CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$ns \
        CNI_PATH=/usr/lib/cni CNI_ARGS="K8S_POD_NAMESPACE=bench;K8S_POD_NAME=$pod" "$bin/trellis")
  ip[$pod]=$(echo "$out" | grep -oE '"address":"[0-9.]+' | head -1 | cut -d'"' -f4)
done
# TCP_CRR opens thousands of connections per second: without TIME_WAIT reuse
# the client runs out of ephemeral ports after a few seconds and connect()
# itself becomes the bottleneck (~20 ms), whatever the policy.
ip netns exec "$client" sysctl -q -w net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"
ip netns exec "$server" "$bin/policy_rr" server 7000 & pids+=($!)
ip netns exec "$server" iperf3 -s -p 5201 >/dev/null 2>&1 & pids+=($!)

policies() {  # $1: any | ports
  python3 - "$1" <<'EOF'
import sys
mode = sys.argv[1]
head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
out = []
client_ports = "" if mode == "any" else "\n    ports: [{port: 5201}, {port: 7000}]"
out.append(head + "metadata: {name: allow-client, namespace: bench}\nspec:\n  podSelector: {matchLabels: {app: server}}\n"
           "  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]" + client_ports + "\n")
for i in range(1, 10000):
    cidr = "172.%d.%d.%d/32" % (16 + i // 65536, (i // 256) % 256, i % 256)
    ports = "\n    ports: [{port: %d}]" % (1000 + i % 20000) if i % 2 else ""
    out.append(head + "metadata: {name: p%d, namespace: bench}\nspec:\n  podSelector: {matchLabels: {app: server}}\n"
               "  ingress:\n  - from: [{ipBlock: {cidr: %s}}]%s\n" % (i, cidr, ports))
print("---\n".join(out))
EOF
}
status() {
  ctl -o json modules | python3 -c '
import json, sys
for m in json.load(sys.stdin)["modules"]:
    if m["name"] == "policy":
        s = json.loads(m.get("statusJson") or m.get("status_json"))
        print(s["policies"], s["last_apply_ms"], s["nft"]["elements"], s["nft"]["chains"], s["nft"]["sets"])'
}
apply() {  # $1: none | any | ports
  local want=0 t0 t1
  rm -f "$work/policies/p.yaml"
  if [ "$1" != none ]; then policies "$1" >"$work/policies/.p.tmp"; want=10000; fi
  t0=$(date +%s%N)
  [ "$1" != none ] && mv "$work/policies/.p.tmp" "$work/policies/p.yaml"
  until [ "$(status | cut -d' ' -f1)" = "$want" ]; do sleep 0.05; done
  t1=$(date +%s%N)
  read -r n ms elements chains sets < <(status)
  echo "apply $1: $n policies loaded in $(((t1 - t0) / 1000000)) ms wall (nft transaction ${ms%.*} ms); table: $chains chains, $sets sets, $elements elements" >&2
}
measure() {  # prints: ping_avg_us rr_tps rr_mean_us crr_tps crr_mean_us gbps
  local ping rr crr bps
  if [ "$1" = ports ]; then
    ping=-
  else
    ping=$(ip netns exec "$client" ping -q -c 300 -i 0.005 "${ip[server]}" | awk -F/ '/rtt/ {printf "%.0f", $5 * 1000}')
  fi
  rr=$(ip netns exec "$client" "$bin/policy_rr" rr "${ip[server]}" 7000 "$secs")
  crr=$(ip netns exec "$client" "$bin/policy_rr" crr "${ip[server]}" 7000 "$secs")
  bps=$(ip netns exec "$client" iperf3 -c "${ip[server]}" -p 5201 -t "$secs" -J |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')
  echo "$ping $(echo "$rr" | awk '{print $2, $3}') $(echo "$crr" | awk '{print $2, $3}') $bps"
}

echo "| round | phase | ping avg µs | TCP_RR tx/s | TCP_RR mean µs | TCP_CRR tx/s | TCP_CRR mean µs | iperf3 Gbit/s |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
  for phase in none any ports; do
    apply "$phase"
    read -r ping rrt rrm crrt crrm gbps < <(measure "$phase")
    label=$phase; [ "$phase" = any ] && label=10k/any; [ "$phase" = ports ] && label=10k/ports
    echo "| $r | $label | $ping | $rrt | $rrm | $crrt | $crrm | $gbps |"
  done
done
