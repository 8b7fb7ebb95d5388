#!/usr/bin/env bash
# `make demo`: ipamd and berth-macvlan on this machine, driven the way kubelet drives them.
# Pods are network namespaces; a veth end stands in for the host's trunked NIC.
# Everything it creates is removed at the end, also on Ctrl-C.
set -euo pipefail
DEMO=demo
source "$(dirname "$0")/lib/demo.sh"
for tool in ip ping; do
  command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install -y iproute2 iputils-ping"
done
[ -x dist/bin/berth-macvlan ] && [ -f dist/ipamd/ipamd.mjs ] || fail "dist/ is not built: run make build"

bin=$root/dist/bin
tag=bd$(( $$ % 100000 ))
nic=${tag}nic
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
daemon_pid=
pods=()          # "netns containerID podName" of pods that currently exist

cni() { # cni COMMAND CONTAINER_ID NETNS POD_NAME
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$bin \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$4;K8S_POD_INFRA_CONTAINER_ID=$2" \
    "$bin/berth-macvlan" < "$work/berth-macvlan.conf"
}

cleanup() {
  trap - EXIT INT TERM
  set +e
  echo
  step "cleaning up"
  for pod in "${pods[@]}"; do
    read -r ns id name <<<"$pod"
    cni DEL "$id" "$ns" "$name" >/dev/null 2>&1
    ip netns del "$ns" 2>/dev/null
  done
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  ip link del "$nic" 2>/dev/null
  rm -rf "$work"
  say "removed the pods' namespaces, the stand-in NIC, the daemon and $work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM

pod_ip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }

add_pod() { # add_pod NETNS CONTAINER_ID POD_NAME
  ip netns add "$1"
  pods+=("$1 $2 $3")
  cni ADD "$2" "$1" "$3" > "$work/$3.result.json"
  say "$3 (netns $1, container ${2:0:12}): eth0 $(ip -n "$1" -br addr show dev eth0 | awk '{$1=$2=""; print $0}' | xargs)"
}

del_pod() { # del_pod NETNS CONTAINER_ID POD_NAME
  cni DEL "$2" "$1" "$3"
  ip netns del "$1"
  local kept=()
  for pod in "${pods[@]}"; do [ "$pod" != "$1 $2 $3" ] && kept+=("$pod"); done
  pods=("${kept[@]}")
}

step "starting ipamd with conf/demo/ipamd.json (state in $work)"
node dist/ipamd/ipamd.mjs --config conf/demo/ipamd.json --socket "$work/ipamd.sock" \
  --db "$work/ipam.db" --log-file "$work/ipamd.log" &
daemon_pid=$!
for _ in $(seq 100); do "$bin/ipamctl" --socket "$work/ipamd.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/ipamctl" --socket "$work/ipamd.sock" status >/dev/null || fail "ipamd did not start; see $work/ipamd.log"
say "ipamd is serving on $work/ipamd.sock (pid $daemon_pid); StatefulSet default/web is known to it"

step "creating a stand-in host NIC"
ip link add "$nic" type veth peer name "${nic}p"
ip link set "${nic}p" up
ip link set "$nic" up
vlan_json=
modprobe 8021q 2>/dev/null || true
if ip link add link "$nic" name "$tag.probe" type vlan id 4000 2>/dev/null; then
  ip link del "$tag.probe"
  vlan_json='"vlan": 101,'
  say "$nic (veth); this kernel has 802.1Q, so pods go on VLAN 101: $nic.101 is created on demand"
else
  say "$nic (veth); this kernel has no 802.1Q (modprobe 8021q failed), so pods are untagged on $nic"
fi

cat > "$work/10-demo.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "demo",
  "plugins": [
    { "type": "berth-macvlan", "master": "$nic", $vlan_json "mode": "bridge",
      "ipam": { "type": "berth-ipam", "socket": "$work/ipamd.sock" } }
  ]
}
CONF
# What a runtime (libcni >= 1.2) hands the first plugin of a conflist: the plugin's entry plus
# the list's name and the highest version of cniVersions it implements (1.1.0).
node -e '
  const list = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const cniVersion = list.cniVersions.includes("1.1.0") ? "1.1.0" : list.cniVersion;
  process.stdout.write(JSON.stringify({ ...list.plugins[0], cniVersion, name: list.name }));
' "$work/10-demo.conflist" > "$work/berth-macvlan.conf"

step "1. ADD two pods through $bin/berth-macvlan, as kubelet does (CNI_* env, config on stdin)"
web_id=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
api_id=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
add_pod "$tag-web-0" "$web_id" web-0
add_pod "$tag-api" "$api_id" api-7f9c5d-x2x4q
web_ip=$(pod_ip "$tag-web-0")
api_ip=$(pod_ip "$tag-api")
say "web-0 is a member of StatefulSet default/web: its IP is sticky. api-7f9c5d-x2x4q is a Deployment pod."

step "2. ping from api-7f9c5d-x2x4q ($api_ip) to web-0 ($web_ip)"
ip netns exec "$tag-api" ping -c 2 -W 2 "$web_ip" | sed 's/^/   /'

step "3. delete web-0 and create it again (new sandbox, new container ID)"
del_pod "$tag-web-0" "$web_id" web-0
say "web-0 deleted: DEL ran and its namespace is gone; its reservation is kept (detached)"
web_id2=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
add_pod "$tag-web-0b" "$web_id2" web-0
web_ip2=$(pod_ip "$tag-web-0b")
if [ "$web_ip2" = "$web_ip" ]; then
  say "web-0 came back with the same IP: $web_ip2"
else
  fail "web-0 came back with $web_ip2, not $web_ip"
fi

step "4. what ipamd holds"
"$bin/ipamctl" --socket "$work/ipamd.sock" pools | sed 's/^/   /'
echo
"$bin/ipamctl" --socket "$work/ipamd.sock" reservations | sed 's/^/   /'

step "done"
