// Host devices in sysfs: the PCI address of a netdev and the netdevs of a PCI function.
import { readDir, readLink, realPath } from "../../lib/fileio";
import { basename, dirname, join } from "../../lib/paths";

// A virtio-net netdev (KVM clouds, the kernel lab) hangs off a virtio device, virtioN, which is
// the child of the PCI function: <pci>/virtioN/net/<name> instead of <pci>/net/<name>.
const VIRTIO_DEVICE = /^virtio\d+$/;

/** PCI address (0000:3b:02.0) of a netdev by name, from <sysfs>/class/net/<name>/device; undefined if none. */
export function pciAddressOf(sysfsRoot: string, name: string): string | undefined {
  const device = join(sysfsRoot, "class/net", name, "device");
  try {
    const target = basename(readLink(device));
    if (PCI_ADDRESS.test(target)) return target;
    if (!VIRTIO_DEVICE.test(target)) return undefined;
    const parent = basename(dirname(realPath(device)));
    return PCI_ADDRESS.test(parent) ? parent : undefined;
  } catch {
    return undefined;
  }
}

export const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

function readdirOrEmpty(dir: string): string[] {
  try {
    return readDir(dir);
  } catch {
    return [];
  }
}

/** Netdev names under <sysfs>/bus/pci/devices/<addr>/net/ (or <addr>/virtioN/net/ for virtio-net). */
export function netdevsOfPci(sysfsRoot: string, addr: string): string[] {
  const dir = join(sysfsRoot, "bus/pci/devices", addr);
  const names = readdirOrEmpty(join(dir, "net"));
  for (const child of readdirOrEmpty(dir)) {
    if (VIRTIO_DEVICE.test(child)) names.push(...readdirOrEmpty(join(dir, child, "net")));
  }
  return names.sort();
}

/** Drivers that give a device to user space (DPDK): it has no netdev, and nothing moves into the pod. */
export const USERSPACE_DRIVERS = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/** The driver a PCI function is bound to (<sysfs>/bus/pci/devices/<addr>/driver), if any. */
export function driverOfPci(sysfsRoot: string, addr: string): string | undefined {
  try {
    return basename(readLink(join(sysfsRoot, "bus/pci/devices", addr, "driver")));
  } catch {
    return undefined;
  }
}
