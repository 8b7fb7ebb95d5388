#!/bin/sh
# Removes from a node what scripts/install-cni.sh put there (the uninstall DaemonSet runs it,
# conf/kubernetes/uninstall.yaml): berth, its plugin links, the loopback link when it is Berth's,
# and the conflist when it is Berth's (named as CNI_CONFLIST and naming a berth plugin).
# BERTH_PURGE=1 also removes ipamd's database and socket dir (BERTH_STATE_DIR, BERTH_RUN_DIR):
# every reservation, sticky StatefulSet IPs included, is then forgotten.
set -eu
bin_dir=${CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/etc/cni/net.d}
conflist=${CNI_CONFLIST:-/etc/berth/10-berth.conflist}
state_dir=${BERTH_STATE_DIR:-/var/lib/berth}
run_dir=${BERTH_RUN_DIR:-/run/berth}
purge=${BERTH_PURGE:-0}

target="$conf_dir/$(basename "$conflist")"
if [ -f "$target" ] && grep -q '"type": *"berth-' "$target"; then
  rm -f "$target"
  echo "removed $target"
fi
if [ "$(readlink "$bin_dir/loopback" 2>/dev/null || true)" = berth ]; then
  rm -f "$bin_dir/loopback"
fi
for name in berth-macvlan berth-hostdev berth-sriov berth-ipam ipamctl berth; do
  rm -f "$bin_dir/$name"
done
echo "removed berth plugins from $bin_dir"
if [ "$purge" = 1 ]; then
  # In the uninstall pod both are mount points: empty them, then remove them where that is possible.
  for dir in "$state_dir" "$run_dir"; do
    [ -d "$dir" ] || continue
    find "$dir" -mindepth 1 -delete
    rmdir "$dir" 2>/dev/null || true
  done
  echo "BERTH_PURGE=1: removed $state_dir (ipamd's database: every reservation) and $run_dir"
else
  echo "kept $state_dir (ipamd's database; BERTH_PURGE=1 removes it)"
fi
