// The CNI protocol core shared by all Berth plugins.
export { runPlugin, pluginMain, processIo, buildContext, type PluginIo } from "./dispatch";
export { definePlugin, type CniPlugin, type CniContext, type PodRef } from "./plugin";
export { CniError, ErrorCode, toCniError, isCniError } from "./errors";
export { CURRENT_VERSION, SUPPORTED_VERSIONS, versionInfo, compareVersions, atLeast, type CniVersion } from "./version";
export { parseCniArgs, readCommand, readEnv, validateIfName, validateContainerId, validateNetns, type CniArgs, type CniEnv, type Command } from "./env";
export { parseConfig, decodeConfig, type NetConf, type IpamConf, type RuntimeConfig } from "./config";
export { encodeResult, parseResult, type Result, type Interface, type IpConfig, type Route, type Dns } from "./result";
export { extendResult, requirePrevResult, findInterface, ipsForInterface } from "./chain";
export { ipamAdd, ipamDel, ipamCheck, ipamStatus, ipamGc, hasIpam, berthIpamConf, BERTH_IPAM, DEFAULT_IPAMD_SOCKET, type IpamAllocation, type IpamAddress } from "./ipam";
export { delegateIpam, findPlugin, type DelegateRequest } from "./delegate";
export { UndoStack, withUndo } from "./undo";
export { createLogger, nullLogger, type Logger, type LogLevel } from "./log";
export { parseCidr, canonicalCidr, canonicalIp } from "./cidr";
