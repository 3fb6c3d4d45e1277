// Metrics, access logs, flow records and trace context.
export { AccessLog, ACCESS_LOG_MODES, isFailedRequest, parseAccessLogMode, type AccessLogContext, type AccessLogMode, type AccessLogOptions, type AccessLogStats } from './access-log.js';
export { FlowLog, type FlowRecord, type HboneInfo } from './flows.js';
export { tcpLabels, type PeerInfo, type Reporter, type TcpLabels } from './labels.js';
export { MeshMetrics, type ConnectionErrorReason, type ErrorDirection, type OrigDstMetrics } from './metrics.js';
export { ISTIO_BUCKETS, REQUEST_LABELS, RequestMetrics, type RequestExtras, type RequestFacts, type RequestLabels, type RequestMetricsOptions, type RequestView } from './requests.js';
export { applyTraceHeaders, newSpanId, newTraceId, parseTraceparent, traceHeaders, type TraceHeaders, type TraceOptions, type Traceparent } from './trace.js';
