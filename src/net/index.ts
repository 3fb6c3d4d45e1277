// Addresses, CIDRs, the well-known ports and the node's well-known paths: the leaf every
// other folder may use.
export {
  bytesToIp,
  cidr,
  cidrContains,
  formatCidr,
  intToIpv4,
  ipToBytes,
  ipv4CidrContains,
  ipv4ToInt,
  isIp,
  isIPv4,
  normalizedIpBytes,
  parseCidr,
  parseIpv4Cidr,
  prefixMask,
  type Cidr,
  type Ipv4Cidr,
} from './ip.js';
export { HBONE_PORT, hostPort, INBOUND_PORT, MESH_PORTS, OUTBOUND_PORT, PORTS } from './ports.js';
export { agentPaths, CNI_PLUGIN_NAME, DEFAULT_BPFFS, DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, DEFAULT_PIN_ROOT, DEFAULT_STATE_DIR, STATE_DIR_ENV, stateDir, type AgentPaths } from './paths.js';
