// Where the agent books finished HTTP requests: Istio's request metrics on its registry, and
// the access log when one is asked for (--access-log).
import { AccessLog, type AccessLogMode, type MeshMetrics } from '../telemetry/index.js';
import type { RequestTelemetry } from '../proxy/index.js';

export interface AgentRequestTelemetry extends RequestTelemetry {
  close(): Promise<void>;
}

export function requestTelemetry(metrics: MeshMetrics, mode: AccessLogMode = 'off'): AgentRequestTelemetry {
  const log = mode === 'off' ? undefined : new AccessLog({ mode });
  const requests = metrics.requests;
  return {
    record: log
      ? (view, r) => {
          requests.record(view, r);
          if (log.wants(r)) log.write(view, r);
        }
      : (view, r) => requests.record(view, r),
    close: async () => {
      await log?.close();
    },
  };
}
