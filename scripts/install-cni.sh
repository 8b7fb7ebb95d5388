#!/bin/sh
# Installs the Berth plugins on a node (the DaemonSet's init container). Every file appears
# atomically: written under a temporary name in the target directory, then renamed, so the
# runtime never executes or parses half a file.
#
# Secondary network by default: only binaries; pods attach through Multus NADs and nothing is
# written to the runtime's conf dir. BERTH_PRIMARY=1 also installs CNI_CONFLIST there, which makes
# Berth the network of every new pod on the node (see docs/install.md for what that gives up).
set -eu
src=${BERTH_BIN_SRC:-/usr/lib/berth/bin}
bin_dir=${CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/etc/cni/net.d}
conflist=${CNI_CONFLIST:-/etc/berth/10-berth.conflist}
primary=${BERTH_PRIMARY:-0}

case "$primary" in
  0|1) ;;
  *) echo "install-cni: BERTH_PRIMARY must be 0 (secondary network, the default) or 1 (primary), not \"$primary\"" >&2; exit 2 ;;
esac

mkdir -p "$bin_dir"
cp "$src/berth" "$bin_dir/.berth.tmp"
chmod 0755 "$bin_dir/.berth.tmp"
mv -f "$bin_dir/.berth.tmp" "$bin_dir/berth"
for name in berth-macvlan berth-hostdev berth-sriov berth-ipam ipamctl; do
  ln -sf berth "$bin_dir/.$name.tmp"
  mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
done

# containerd runs `loopback` for every pod sandbox. Answer as it only where the node has none:
# a loopback already there (the reference plugin, or our link from an earlier run) is kept.
if [ ! -e "$bin_dir/loopback" ] && [ ! -L "$bin_dir/loopback" ]; then
  ln -sf berth "$bin_dir/.loopback.tmp"
  mv -f "$bin_dir/.loopback.tmp" "$bin_dir/loopback"
  echo "no loopback plugin in $bin_dir: installed berth's"
fi

target="$conf_dir/$(basename "$conflist")"
if [ "$primary" = 1 ]; then
  mkdir -p "$conf_dir"
  cp "$conflist" "$target.tmp"
  chmod 0644 "$target.tmp"
  mv -f "$target.tmp" "$target"
  echo "installed berth plugins in $bin_dir and $target: BERTH_PRIMARY=1, Berth is the primary network of new pods"
else
  echo "installed berth plugins in $bin_dir; secondary network: nothing written to $conf_dir (attach pods with Multus NADs)"
  if [ -e "$target" ]; then
    echo "warning: $target (from an earlier BERTH_PRIMARY=1 install?) still makes Berth the primary network; remove it if it should not" >&2
  fi
fi
