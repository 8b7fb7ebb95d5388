// The conf/cni examples against conf/ipamd.json in the 802.1Q kernel: the suite of
// test/ship/examples.test.ts, where 30-berth-macvlan-vlan (VLAN 101 of its master) runs as well.
import "../ship/examples.test";
