// The netlink client in one import: `import * as nl from "../netlink"`.
export * from "./socket";
export * from "./link";
export * from "./addr";
export * from "./route";
export * from "./sriov";
export { parseVfInfoList } from "./vfinfo";
export { parseIP, parsePrefix, formatIP } from "./ip";
export type { Prefix } from "./ip";
