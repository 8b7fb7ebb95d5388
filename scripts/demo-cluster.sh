#!/usr/bin/env bash
# `make demo-cluster`: cluster mode on this machine. A 3-member etcd on loopback ports, ipamd on "node A" and
# "node B" sharing one pool through it, and a third ipamd ("node C") as another vantage point. web-0 is ADDed on
# node A through berth-macvlan (driven the way kubelet drives it), deleted, and created on node B with a new
# container ID: it keeps its IP. Everything it creates is removed at the end, also on Ctrl-C.
set -euo pipefail
DEMO=demo-cluster
source "$(dirname "$0")/lib/demo.sh"
ETCD=${BERTH_ETCD:-/usr/bin/etcd}
ETCDCTL=${BERTH_ETCDCTL:-/usr/bin/etcdctl}
[ -x "$ETCD" ] && [ -x "$ETCDCTL" ] || fail "etcd is missing: apt-get install -y etcd-server etcd-client (or set BERTH_ETCD/BERTH_ETCDCTL)"
command -v ip >/dev/null || fail "ip is missing: apt-get install -y iproute2"
[ -x dist/bin/berth-macvlan ] && [ -f dist/ipamd/ipamd.mjs ] || fail "dist/ is not built: run make build"

bin=$root/dist/bin
tag=bc$(( $$ % 100000 ))
nic=${tag}nic
work=$(mktemp -d /tmp/berth-demo-cluster.XXXXXX)
pids=()          # etcd members and ipamd daemons
pods=()          # "netns containerID podName socket" of pods that currently exist

cni() { # cni COMMAND CONTAINER_ID NETNS POD_NAME SOCKET
  sed "s#@SOCKET@#$5#" "$work/berth-macvlan.conf" | \
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$bin \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$4;K8S_POD_INFRA_CONTAINER_ID=$2" \
    "$bin/berth-macvlan"
}

cleanup() {
  trap - EXIT INT TERM
  set +e
  echo
  step "cleaning up"
  for pod in "${pods[@]}"; do
    read -r ns id name sock <<<"$pod"
    cni DEL "$id" "$ns" "$name" "$sock" >/dev/null 2>&1
    ip netns del "$ns" 2>/dev/null
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  ip link del "$nic" 2>/dev/null
  rm -rf "$work"
  say "removed the pods' namespaces, the stand-in NIC, the three ipamd, the three etcd members and $work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

ports=$(node -e '
  const net = require("net"); const n = 6; const servers = [];
  let done = 0;
  for (let i = 0; i < n; i++) { const s = net.createServer(); servers.push(s); s.listen(0, "127.0.0.1", () => { if (++done === n) {
    console.log(servers.map((x) => x.address().port).join(" ")); servers.forEach((x) => x.close()); } }); }')
read -r c0 p0 c1 p1 c2 p2 <<<"$ports"
endpoints="http://127.0.0.1:$c0,http://127.0.0.1:$c1,http://127.0.0.1:$c2"
cluster="m0=http://127.0.0.1:$p0,m1=http://127.0.0.1:$p1,m2=http://127.0.0.1:$p2"

step "starting a 3-member etcd on loopback (state in $work)"
i=0
for pair in "$c0 $p0" "$c1 $p1" "$c2 $p2"; do
  read -r c p <<<"$pair"
  "$ETCD" --name "m$i" --data-dir "$work/etcd-m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" --initial-cluster "$cluster" \
    --initial-cluster-token "berth-demo-$$" --initial-cluster-state new --log-level error --logger zap --log-outputs "$work/etcd-m$i.log" &
  pids+=($!)
  i=$((i + 1))
done
for _ in $(seq 100); do ETCDCTL_API=3 "$ETCDCTL" --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
ETCDCTL_API=3 "$ETCDCTL" --endpoints "$endpoints" endpoint health 2>&1 | sed 's/^/   /'

start_node() { # start_node NAME
  node -e '
    const [name, endpoints] = process.argv.slice(1);
    const c = JSON.parse(require("fs").readFileSync("conf/demo/ipamd.json", "utf8"));
    c.node = { name, labels: { "berth.dev/rack": "demo" } };
    c.cooldownSeconds = 0;
    c.cluster = { etcd: { endpoints: endpoints.split(","), prefix: "/berth-demo" } };
    process.stdout.write(JSON.stringify(c, null, 2));
  ' "$1" "$endpoints" > "$work/$1.json"
  node dist/ipamd/ipamd.mjs --config "$work/$1.json" --socket "$work/$1/ipamd.sock" --db "$work/$1/ipam.db" \
    --log-file "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do "$bin/ipamctl" --socket "$work/$1/ipamd.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
  "$bin/ipamctl" --socket "$work/$1/ipamd.sock" status >/dev/null || fail "ipamd $1 did not start; see $work/$1.log"
  say "ipamd $1 serves $work/$1/ipamd.sock, sharing pool demo-v4 through etcd"
}
step "starting ipamd on node-a, node-b and node-c (one shared pool; StatefulSet default/web is known)"
for n in node-a node-b node-c; do start_node "$n"; done
"$bin/ipamctl" --socket "$work/node-a/ipamd.sock" status | grep -E '^(node|etcd|buffer):' | sed 's/^/   node-a /'

step "creating a stand-in host NIC"
ip link add "$nic" type veth peer name "${nic}p"
ip link set "${nic}p" up
ip link set "$nic" up
say "$nic (veth); pods are untagged macvlans on it"
cat > "$work/berth-macvlan.conf" <<CONF
{ "cniVersion": "1.0.0", "name": "demo", "type": "berth-macvlan", "master": "$nic", "mode": "bridge",
  "ipam": { "type": "berth-ipam", "socket": "@SOCKET@" } }
CONF

pod_ip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
add_pod() { # add_pod NETNS CONTAINER_ID POD_NAME NODE
  ip netns add "$1"
  pods+=("$1 $2 $3 $work/$4/ipamd.sock")
  cni ADD "$2" "$1" "$3" "$work/$4/ipamd.sock" > "$work/$3.result.json"
  say "$3 on $4 (netns $1, container ${2:0:12}): eth0 $(pod_ip "$1")"
}
del_pod() { # del_pod NETNS CONTAINER_ID POD_NAME NODE
  cni DEL "$2" "$1" "$3" "$work/$4/ipamd.sock"
  ip netns del "$1"
  local kept=()
  for pod in "${pods[@]}"; do [ "$pod" != "$1 $2 $3 $work/$4/ipamd.sock" ] && kept+=("$pod"); done
  pods=("${kept[@]}")
}

step "1. web-0 on node-a"
id_a=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
add_pod "$tag-web-0a" "$id_a" web-0 node-a
ip_a=$(pod_ip "$tag-web-0a")

step "2. delete web-0 on node-a"
del_pod "$tag-web-0a" "$id_a" web-0 node-a
say "DEL ran on node-a; etcd keeps web-0's identity (detached, bound to node-a)"

step "3. web-0 created on node-b with a new container ID"
id_b=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
add_pod "$tag-web-0b" "$id_b" web-0 node-b
ip_b=$(pod_ip "$tag-web-0b")
if [ "$ip_b" = "$ip_a" ]; then
  say "web-0 came back on node-b with the same IP: $ip_b"
else
  fail "web-0 came back on node-b with $ip_b, not $ip_a"
fi

step "4. ipamctl reservations from node-c (a third vantage point: it never saw web-0)"
"$bin/ipamctl" --socket "$work/node-c/ipamd.sock" reservations | sed 's/^/   /'

step "done"
