// Metrics, access logs, flow records and trace context.
export { AccessLog, parseAccessLogMode, type AccessLogMode } from './access-log.js';
export { FlowLog, type FlowRecord, type HboneInfo } from './flows.js';
export { TcpLabelCache, type PeerInfo, type Reporter, type TcpLabels } from './labels.js';
export { MeshMetrics, type ConnectionErrorReason, type ErrorDirection, type OrigDstMetrics } from './metrics.js';
export { runtimeMonitor, type RuntimeWindow } from './runtime.js';
export { applyTraceHeaders, traceHeaders } from './trace.js';
