// Metrics, access logs and flow records.
export { FlowLog, type Direction, type FlowRecord, type HboneInfo } from './flows.js';
export { TCP_LABELS, tcpLabels, type ConnectionLabelInput, type PeerInfo, type Reporter, type TcpLabels } from './labels.js';
export { MeshMetrics } from './metrics.js';
