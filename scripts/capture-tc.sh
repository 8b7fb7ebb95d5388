#!/usr/bin/env bash
# Regenerates test/fixtures/iproute2/tc/*.json: the exact rtnetlink messages
# that iproute2's `tc` and `ip` send to shape a pod interface (tbf, ingress qdisc, u32
# redirect filter to an ifb device), the same way scripts/capture-iproute2.sh does for links,
# addresses and routes: each command runs under `strace -e trace=sendmsg,sendto -e write=all`
# in a throwaway namespace, and the last message of the expected nlmsg_type is kept.
#
# Needs root, iproute2 (ip, tc), strace, jq. Usage: scripts/capture-tc.sh [outdir]
set -euo pipefail

OUT=${1:-"$(cd "$(dirname "$0")/.." && pwd)/test/fixtures/iproute2/tc"}
for tool in ip tc strace jq; do
  command -v "$tool" >/dev/null || { echo "capture-tc: $tool is required" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "capture-tc: run as root (creates network namespaces)" >&2; exit 1; }

NS="berthcaptc-$$"
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link add cap0 type veth peer name cap1
ip -n "$NS" link add capifb0 type ifb
ip -n "$NS" link set cap0 up
TCVER=$(tc -V)
IPVER=$(ip -V)
ifindex() { ip -n "$NS" -o link show "$1" | cut -d: -f1; }
CAP0=$(ifindex cap0)
IFB=$(ifindex capifb0)
mkdir -p "$OUT"
# shellcheck source=lib/netlink-capture.sh
source "$(dirname "$0")/lib/netlink-capture.sh"

# capture NAME TYPEHEX INPUTS_JSON NOTE -- tool args...
capture() {
  local name=$1 type=$2 inputs=$3 note=$4; shift 5
  local tool=$1; shift
  local log="$TMP/$name.strace" rc=0 err
  strace -o "$log" -e trace=sendmsg,sendto -e write=all "$tool" "$@" 2>"$TMP/err" >/dev/null || rc=$?
  err=$(tr '\n' ' ' <"$TMP/err" | sed 's/ *$//')
  local hex; hex=$(extract_hex "$log" "$type")
  if [ -z "$hex" ]; then echo "capture-tc: no message of type 0x$type for $name" >&2; cat "$log" >&2; exit 1; fi
  local shown="$tool $*" version=$IPVER
  [ "$tool" = tc ] && version=$TCVER
  shown=${shown//$NS/NS}
  write_fixture "$OUT/$name.json" "$name" "$shown" "$hex" "$inputs" "$version" "$rc" "$err" "$note"
  echo "captured $name ($tool exit $rc)"
}

NEWLINK=0010; NEWQDISC=0024; DELQDISC=0025; GETQDISC=0026; NEWTFILTER=002c; GETTFILTER=002e
RUN=(-n "$NS")
TICKS_NOTE="tbf times are in the kernel's psched ticks, as tc computes them from /proc/net/psched"

# --- the ifb device that takes a pod interface's ingress traffic
capture link-add-ifb $NEWLINK '{"name":"bwi0"}' "" -- ip "${RUN[@]}" link add bwi0 type ifb
capture link-add-ifb-mtu $NEWLINK '{"name":"bwi1","mtu":1400}' "" -- ip "${RUN[@]}" link add bwi1 mtu 1400 type ifb

# --- tbf: egress limit on the pod interface, ingress limit on the ifb (rate in bytes/s, burst in bytes)
capture tc-qdisc-add-tbf $NEWQDISC "{\"index\":$CAP0,\"rate\":1250000,\"burst\":12500,\"latencyUs\":25000}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 10000000bit burst 12500 latency 25ms
tc "${RUN[@]}" qdisc del dev cap0 root
capture tc-qdisc-add-tbf-ifb $NEWQDISC "{\"index\":$IFB,\"rate\":125000,\"burst\":3028,\"latencyUs\":25000}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev capifb0 root handle 1: tbf rate 1000000bit burst 3028 latency 25ms
tc "${RUN[@]}" qdisc del dev capifb0 root
capture tc-qdisc-add-tbf-max32 $NEWQDISC "{\"index\":$CAP0,\"rate\":4294967295,\"burst\":536870911,\"latencyUs\":25000}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 34359738360bit burst 536870911 latency 25ms
tc "${RUN[@]}" qdisc del dev cap0 root
# from 2^32 bytes/s on the rate needs TCA_TBF_RATE64
capture tc-qdisc-add-tbf-rate64 $NEWQDISC "{\"index\":$CAP0,\"rate\":5000000000,\"burst\":1000000,\"latencyUs\":25000}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 40000000000bit burst 1000000 latency 25ms
tc "${RUN[@]}" qdisc del dev cap0 root
# a peak rate brings TCA_TBF_PBURST (the mtu) and TCA_TBF_PTAB
capture tc-qdisc-add-tbf-peakrate $NEWQDISC \
  "{\"index\":$CAP0,\"rate\":1250000,\"burst\":12500,\"latencyUs\":25000,\"peakRate\":2500000,\"mtu\":1514}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 10000000bit burst 12500 latency 25ms peakrate 20000000bit mtu 1514
tc "${RUN[@]}" qdisc del dev cap0 root
capture tc-qdisc-add-tbf-limit $NEWQDISC "{\"index\":$CAP0,\"rate\":1250000,\"burst\":12500,\"limit\":100000}" "$TICKS_NOTE" -- \
  tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 10000000bit burst 12500 limit 100000
tc "${RUN[@]}" qdisc del dev cap0 root

# --- ingress qdisc and the u32 match-all filter that redirects to the ifb (as the reference bandwidth plugin sets up)
capture tc-qdisc-add-ingress $NEWQDISC "{\"index\":$CAP0}" "" -- tc "${RUN[@]}" qdisc add dev cap0 handle ffff: ingress
capture tc-filter-add-redirect $NEWTFILTER "{\"index\":$CAP0,\"ifbIndex\":$IFB}" "" -- \
  tc "${RUN[@]}" filter add dev cap0 parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev capifb0

# --- reading back and removing
capture tc-qdisc-show $GETQDISC "{\"index\":$CAP0}" "" -- tc "${RUN[@]}" qdisc show dev cap0
capture tc-filter-show-ingress $GETTFILTER "{\"index\":$CAP0}" "" -- tc "${RUN[@]}" filter show dev cap0 parent ffff:
capture tc-qdisc-del-ingress $DELQDISC "{\"index\":$CAP0}" "" -- tc "${RUN[@]}" qdisc del dev cap0 ingress
tc "${RUN[@]}" qdisc add dev cap0 root handle 1: tbf rate 10000000bit burst 12500 latency 25ms
capture tc-qdisc-del-root $DELQDISC "{\"index\":$CAP0}" "" -- tc "${RUN[@]}" qdisc del dev cap0 root

echo "fixtures written to $OUT"
