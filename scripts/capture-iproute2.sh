#!/usr/bin/env bash
# Regenerates test/fixtures/iproute2/*.json: the exact rtnetlink message that
# iproute2's `ip` sends for each operation our encoders implement.
#
# Every command runs under `strace -e trace=sendmsg,sendto -e write=all`, which
# hexdumps the iovecs of each sendmsg. The last message of the expected
# nlmsg_type is kept. Commands run inside a throwaway network namespace with its
# own veth pair, so ifindexes are small and recorded in each fixture's inputs.
# The kernel may refuse a request (no 802.1Q module, no SR-IOV here): the
# message is captured anyway, and the kernel's answer is recorded in "exit".
#
# Needs root, iproute2, strace, jq. Usage: scripts/capture-iproute2.sh [outdir]
set -euo pipefail

OUT=${1:-"$(cd "$(dirname "$0")/.." && pwd)/test/fixtures/iproute2"}
for tool in ip strace jq; do
  command -v "$tool" >/dev/null || { echo "capture-iproute2: $tool is required" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "capture-iproute2: run as root (creates network namespaces)" >&2; exit 1; }

NS="berthcap-$$-a"
NSB="berthcap-$$-b"
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; ip netns del "$NSB" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

ip netns add "$NS"
ip netns add "$NSB"
ip -n "$NS" link add cap0 type veth peer name cap1
ip -n "$NS" link add cap2 type veth peer name cap3
ip -n "$NS" link set cap0 up
ip -n "$NS" addr add 10.99.0.2/24 dev cap0
ip -n "$NS" addr add fd00:99::2/64 dev cap0 nodad
IPVER=$(ip -V)

ifindex() { ip -n "$NS" -o link show "$1" | cut -d: -f1; }
CAP0=$(ifindex cap0)
CAP1=$(ifindex cap1)
CAP2=$(ifindex cap2)
mkdir -p "$OUT"
# shellcheck source=lib/netlink-capture.sh
source "$(dirname "$0")/lib/netlink-capture.sh"

# value of the first 4-byte-aligned IFLA_NET_NS_FD attribute (len 8, type 28) in a hex message
nsfd_from_hex() {
  local le; le=$(awk -v h="$1" 'BEGIN { for (i = 1; i + 15 <= length(h); i += 8)
    if (substr(h, i, 8) == "08001c00") { print substr(h, i + 8, 8); exit } }')
  [ -n "$le" ] && printf '%d\n' "0x${le:6:2}${le:4:2}${le:2:2}${le:0:2}"
}

# capture NAME TYPEHEX INPUTS_JSON NOTE -- ip args...
capture() {
  local name=$1 type=$2 inputs=$3 note=$4; shift 5
  local log="$TMP/$name.strace" rc=0 err
  strace -o "$log" -e trace=sendmsg,sendto -e write=all ip "$@" 2>"$TMP/err" || rc=$?
  err=$(tr '\n' ' ' <"$TMP/err" | sed 's/ *$//')
  local hex; hex=$(extract_hex "$log" "$type")
  if [ -z "$hex" ]; then echo "capture-iproute2: no message of type 0x$type for $name" >&2; cat "$log" >&2; exit 1; fi
  # the fd number ip passed for "netns NSB" goes into the inputs under $NSFD_KEY
  if [ -n "${NSFD_KEY:-}" ]; then
    local fd; fd=$(nsfd_from_hex "$hex")
    [ -n "$fd" ] || { echo "capture-iproute2: no IFLA_NET_NS_FD in $name" >&2; exit 1; }
    inputs=$(jq -c --arg k "$NSFD_KEY" --argjson fd "$fd" '. + {($k): $fd}' <<<"$inputs")
  fi
  local shown="ip $*"
  shown=${shown//$NSB/NSB}; shown=${shown//$NS/NS}
  write_fixture "$OUT/$name.json" "$name" "$shown" "$hex" "$inputs" "$IPVER" "$rc" "$err" "$note"
  echo "captured $name (ip exit $rc)"
}

NEWLINK=0010; DELLINK=0011; NEWADDR=0014; DELADDR=0015; NEWROUTE=0018; DELROUTE=0019
RUN=(-n "$NS")
# ip opens /run/netns/NSB; the fd number it passes is read back from the captured bytes by the test.
NSFD_NOTE="the netns fd input is the descriptor number ip had open for /run/netns/NSB, read back from IFLA_NET_NS_FD of the captured message"

# --- links: macvlan, each mode
for mode in private vepa bridge passthru source; do
  capture "link-add-macvlan-$mode" $NEWLINK "{\"name\":\"mv0\",\"parentIndex\":$CAP0,\"mode\":\"$mode\"}" "" -- \
    "${RUN[@]}" link add link cap0 name mv0 type macvlan mode "$mode"
  ip "${RUN[@]}" link del mv0 2>/dev/null || true
done
capture link-add-macvlan-mtu-mac $NEWLINK \
  "{\"name\":\"mv1\",\"parentIndex\":$CAP0,\"mode\":\"bridge\",\"mtu\":1400,\"mac\":\"02:00:00:00:00:42\"}" "" -- \
  "${RUN[@]}" link add link cap0 name mv1 mtu 1400 address 02:00:00:00:00:42 type macvlan mode bridge
NSFD_KEY=netnsFd capture link-add-macvlan-netns $NEWLINK \
  "{\"name\":\"tmp0\",\"parentIndex\":$CAP0,\"mode\":\"bridge\"}" "$NSFD_NOTE" -- \
  "${RUN[@]}" link add link cap0 name tmp0 netns "$NSB" type macvlan mode bridge
# the CNI form: macvlan created directly inside the pod namespace under a temporary name
NSFD_KEY=netnsFd capture link-add-macvlan-netns-mtu-mac $NEWLINK \
  "{\"name\":\"tmp1\",\"parentIndex\":$CAP0,\"mode\":\"bridge\",\"mtu\":1400,\"mac\":\"02:00:00:00:00:43\"}" "$NSFD_NOTE" -- \
  "${RUN[@]}" link add link cap0 name tmp1 mtu 1400 address 02:00:00:00:00:43 netns "$NSB" type macvlan mode bridge
# --- links: 802.1Q / 802.1ad vlan (this kernel has no 8021q: the kernel refuses, the message is captured)
capture link-add-vlan-8021q $NEWLINK "{\"name\":\"cap0.101\",\"parentIndex\":$CAP0,\"id\":101}" "" -- \
  "${RUN[@]}" link add link cap0 name cap0.101 type vlan id 101
capture link-add-vlan-8021q-explicit $NEWLINK \
  "{\"name\":\"cap0.102\",\"parentIndex\":$CAP0,\"id\":102,\"protocol\":\"802.1Q\"}" "" -- \
  "${RUN[@]}" link add link cap0 name cap0.102 type vlan id 102 protocol 802.1Q
capture link-add-vlan-8021ad $NEWLINK \
  "{\"name\":\"cap0.103\",\"parentIndex\":$CAP0,\"id\":103,\"protocol\":\"802.1ad\"}" "" -- \
  "${RUN[@]}" link add link cap0 name cap0.103 type vlan id 103 protocol 802.1ad
# --- links: veth
capture link-add-veth $NEWLINK '{"name":"ve0","peerName":"ve1"}' "" -- \
  "${RUN[@]}" link add ve0 type veth peer name ve1
NSFD_KEY=peerNetnsFd capture link-add-veth-peer-netns $NEWLINK '{"name":"ve2","peerName":"ve3"}' "$NSFD_NOTE" -- \
  "${RUN[@]}" link add ve2 type veth peer name ve3 netns "$NSB"
# --- links: set
capture link-set-up $NEWLINK "{\"index\":$CAP2}" "" -- "${RUN[@]}" link set dev cap2 up
capture link-set-down $NEWLINK "{\"index\":$CAP2}" "" -- "${RUN[@]}" link set dev cap2 down
capture link-set-name $NEWLINK "{\"index\":$CAP2,\"name\":\"cap2x\"}" "" -- "${RUN[@]}" link set dev cap2 name cap2x
ip "${RUN[@]}" link set dev cap2x name cap2
capture link-set-mtu $NEWLINK "{\"index\":$CAP2,\"mtu\":1280}" "" -- "${RUN[@]}" link set dev cap2 mtu 1280
capture link-set-address $NEWLINK "{\"index\":$CAP2,\"mac\":\"02:00:00:00:00:99\"}" "" -- \
  "${RUN[@]}" link set dev cap2 address 02:00:00:00:00:99
capture link-set-alias $NEWLINK "{\"index\":$CAP2,\"alias\":\"berth pod eth0\"}" "" -- \
  "${RUN[@]}" link set dev cap2 alias "berth pod eth0"
capture link-set-name-alias $NEWLINK "{\"index\":$CAP2,\"name\":\"cap2x\",\"alias\":\"berth pod eth0\"}" "" -- \
  "${RUN[@]}" link set dev cap2 name cap2x alias "berth pod eth0"
ip "${RUN[@]}" link set dev cap2x name cap2
NSFD_KEY=netnsFd capture link-set-netns $NEWLINK "{\"index\":$CAP1}" "$NSFD_NOTE" -- "${RUN[@]}" link set dev cap1 netns "$NSB"
capture link-del $DELLINK "{\"index\":$CAP2}" "" -- "${RUN[@]}" link del dev cap2

# --- addresses
capture addr-add-v4 $NEWADDR "{\"index\":$CAP0,\"cidr\":\"10.99.1.2/24\",\"broadcast\":false}" "" -- \
  "${RUN[@]}" addr add 10.99.1.2/24 dev cap0
capture addr-add-v4-brd $NEWADDR "{\"index\":$CAP0,\"cidr\":\"10.99.2.2/24\"}" "" -- \
  "${RUN[@]}" addr add 10.99.2.2/24 brd + dev cap0
capture addr-add-v4-32 $NEWADDR "{\"index\":$CAP0,\"cidr\":\"10.99.3.2/32\"}" "" -- \
  "${RUN[@]}" addr add 10.99.3.2/32 dev cap0
capture addr-add-v6 $NEWADDR "{\"index\":$CAP0,\"cidr\":\"fd00:98::2/64\"}" "" -- \
  "${RUN[@]}" addr add fd00:98::2/64 dev cap0
capture addr-add-v6-nodad $NEWADDR "{\"index\":$CAP0,\"cidr\":\"fd00:97::2/64\",\"nodad\":true}" "" -- \
  "${RUN[@]}" addr add fd00:97::2/64 dev cap0 nodad
capture addr-del-v4 $DELADDR "{\"index\":$CAP0,\"cidr\":\"10.99.1.2/24\"}" "" -- \
  "${RUN[@]}" addr del 10.99.1.2/24 dev cap0
capture addr-del-v6 $DELADDR "{\"index\":$CAP0,\"cidr\":\"fd00:98::2/64\"}" "" -- \
  "${RUN[@]}" addr del fd00:98::2/64 dev cap0

# --- routes
capture route-add-default-v4 $NEWROUTE "{\"index\":$CAP0,\"dst\":\"0.0.0.0/0\",\"gateway\":\"10.99.0.1\"}" "" -- \
  "${RUN[@]}" route add default via 10.99.0.1 dev cap0
capture route-add-default-v6 $NEWROUTE "{\"index\":$CAP0,\"dst\":\"::/0\",\"gateway\":\"fd00:99::1\"}" "" -- \
  "${RUN[@]}" -6 route add default via fd00:99::1 dev cap0
capture route-add-scope-link $NEWROUTE "{\"index\":$CAP0,\"dst\":\"10.98.0.0/16\",\"scope\":\"link\"}" "" -- \
  "${RUN[@]}" route add 10.98.0.0/16 dev cap0 scope link
capture route-add-link-implicit $NEWROUTE "{\"index\":$CAP0,\"dst\":\"10.95.0.0/16\"}" "" -- \
  "${RUN[@]}" route add 10.95.0.0/16 dev cap0
capture route-add-host-onlink $NEWROUTE "{\"index\":$CAP0,\"dst\":\"192.168.255.1/32\",\"scope\":\"link\"}" "" -- \
  "${RUN[@]}" route add 192.168.255.1/32 dev cap0 scope link
capture route-add-onlink $NEWROUTE "{\"index\":$CAP0,\"dst\":\"10.97.0.0/16\",\"gateway\":\"192.168.255.1\",\"onLink\":true}" "" -- \
  "${RUN[@]}" route add 10.97.0.0/16 via 192.168.255.1 dev cap0 onlink
capture route-add-metric-table $NEWROUTE "{\"index\":$CAP0,\"dst\":\"10.96.0.0/16\",\"gateway\":\"10.99.0.1\",\"metric\":100,\"table\":100}" "" -- \
  "${RUN[@]}" route add 10.96.0.0/16 via 10.99.0.1 metric 100 table 100 dev cap0
capture route-add-table-1000 $NEWROUTE "{\"index\":$CAP0,\"dst\":\"0.0.0.0/0\",\"gateway\":\"10.99.0.1\",\"table\":1000}" "" -- \
  "${RUN[@]}" route add default via 10.99.0.1 table 1000 dev cap0
capture route-add-v6-metric $NEWROUTE "{\"index\":$CAP0,\"dst\":\"fd00:96::/48\",\"gateway\":\"fd00:99::1\",\"metric\":1024}" "" -- \
  "${RUN[@]}" -6 route add fd00:96::/48 via fd00:99::1 metric 1024 dev cap0
capture route-del-default-v4 $DELROUTE "{\"index\":$CAP0,\"dst\":\"0.0.0.0/0\",\"gateway\":\"10.99.0.1\"}" "" -- \
  "${RUN[@]}" route del default via 10.99.0.1 dev cap0
capture route-del-metric-table $DELROUTE "{\"index\":$CAP0,\"dst\":\"10.96.0.0/16\",\"gateway\":\"10.99.0.1\",\"metric\":100,\"table\":100}" "" -- \
  "${RUN[@]}" route del 10.96.0.0/16 via 10.99.0.1 metric 100 table 100 dev cap0
capture route-del-v6 $DELROUTE "{\"index\":$CAP0,\"dst\":\"fd00:96::/48\",\"gateway\":\"fd00:99::1\",\"metric\":1024}" "" -- \
  "${RUN[@]}" -6 route del fd00:96::/48 via fd00:99::1 metric 1024 dev cap0

# --- SR-IOV VF settings on a PF (cap0 stands in for the PF: this kernel has no SR-IOV and refuses)
vf() { local name=$1 settings=$2; shift 2
  capture "vf-$name" $NEWLINK "{\"pfIndex\":$CAP0,\"vf\":0,\"settings\":$settings}" "" -- "${RUN[@]}" link set dev cap0 vf 0 "$@"; }
vf mac '{"mac":"02:00:00:00:01:01"}' mac 02:00:00:00:01:01
vf vlan '{"vlan":100,"qos":3}' vlan 100 qos 3
vf vlan-8021q '{"vlan":100,"qos":0,"vlanProto":"802.1Q"}' vlan 100 qos 0 proto 802.1Q
vf vlan-8021ad '{"vlan":100,"qos":3,"vlanProto":"802.1ad"}' vlan 100 qos 3 proto 802.1ad
vf vlan-clear '{"vlan":0}' vlan 0
vf spoofchk-on '{"spoofChk":true}' spoofchk on
vf spoofchk-off '{"spoofChk":false}' spoofchk off
vf trust-on '{"trust":true}' trust on
vf trust-off '{"trust":false}' trust off
vf rate '{"minTxRate":100,"maxTxRate":1000}' min_tx_rate 100 max_tx_rate 1000
vf state-enable '{"linkState":"enable"}' state enable
vf state-disable '{"linkState":"disable"}' state disable
vf state-auto '{"linkState":"auto"}' state auto
vf all '{"mac":"02:00:00:00:01:02","vlan":200,"qos":1,"vlanProto":"802.1ad","spoofChk":false,"trust":true,"linkState":"enable","minTxRate":10,"maxTxRate":500}' \
  mac 02:00:00:00:01:02 vlan 200 qos 1 proto 802.1ad spoofchk off trust on state enable min_tx_rate 10 max_tx_rate 500

echo "fixtures written to $OUT"
