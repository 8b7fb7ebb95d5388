#!/bin/sh
# Installs the Berth plugins and the CNI network config on a node (the DaemonSet's init
# container). Every file appears atomically: written under a temporary name in the
# target directory, then renamed, so the runtime never executes or parses half a file.
set -eu
src=${BERTH_BIN_SRC:-/usr/lib/berth/bin}
bin_dir=${CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/etc/cni/net.d}
conflist=${CNI_CONFLIST:-/etc/berth/10-berth.conflist}

mkdir -p "$bin_dir" "$conf_dir"
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
cp "$conflist" "$target.tmp"
chmod 0644 "$target.tmp"
mv -f "$target.tmp" "$target"
echo "installed berth plugins in $bin_dir and $target"
