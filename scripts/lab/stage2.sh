#!/bin/bash
# Stage 2 of the kernel lab guest: PID 1 on the host's root (overlaid, see init).
# Loads the network modules (virtio_net drives the lab's isolated NICs
# eth0..eth2), runs /run/berth-lab/cmd.sh with its output on the second serial
# port (the host's stdout), writes its exit status to /run/berth-lab/status and
# powers the guest off. PID 1 must never exit: the kernel would panic.
io=/run/berth-lab
out=/dev/ttyS1

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8 TERM=dumb

finish() {
	sync
	echo o >/proc/sysrq-trigger
	while :; do sleep 60; done
}

stty -F "$out" raw -echo 2>/dev/null
hostname berth-lab
ip link set lo up
echo "berth-lab: booted in $(cut -d' ' -f1 /proc/uptime) s" >>"$io/timing"

# A repository under /tmp or /run: its own 9p share, read-only, under a tmpfs overlay.
if [ -s "$io/repo-mount" ]; then
	repo=$(cat "$io/repo-mount")
	mkdir -p /run/berth-lab-repo/lower /run/berth-lab-repo/upper /run/berth-lab-repo/work "$repo"
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 repo /run/berth-lab-repo/lower &&
		mount -t overlay overlay -o lowerdir=/run/berth-lab-repo/lower,upperdir=/run/berth-lab-repo/upper,workdir=/run/berth-lab-repo/work "$repo" ||
		echo "berth-lab: cannot mount the repository at $repo" >"$out"
fi

# Host directories shared read-write at their own paths (test reports).
while read -r tag dir; do
	mkdir -p "$dir" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$tag" "$dir" ||
		echo "berth-lab: cannot mount $dir read-write (9p tag $tag)" >"$out"
done <"$io/rw-mounts"

if ! modprobe -a 8021q macvlan dummy veth virtio_net 2>"$io/modprobe.err"; then
	{ echo "berth-lab: modprobe of the network modules failed:"; cat "$io/modprobe.err"; } >"$out"
	echo 125 >"$io/status"
	finish
fi

# Piped through cat so the command sees a pipe, not a tty (no live-redraw reporters).
bash "$io/cmd.sh" </dev/null 2>&1 | cat >"$out"
echo "${PIPESTATUS[0]}" >"$io/status.tmp" && mv "$io/status.tmp" "$io/status"
finish
