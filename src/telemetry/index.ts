// Metrics, access logs and flow records.
export { FlowLog, type FlowRecord, type HboneInfo } from './flows.js';
export { tcpLabels, type PeerInfo, type Reporter, type TcpLabels } from './labels.js';
export { MeshMetrics, type ConnectionErrorReason, type ErrorDirection, type OrigDstMetrics } from './metrics.js';
