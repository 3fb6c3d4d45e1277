// Where the agent books finished HTTP requests: Istio's request metrics on its registry (per
// reporter), a capture record per request (docs/capture.md), and the access log when asked for
// (--access-log).
import { AccessLog, type AccessLogMode, type MeshMetrics } from '../telemetry/index.js';
import type { RequestTelemetry } from '../proxy/index.js';
import type { CaptureRecorder } from '../capture/index.js';

export interface AgentRequestTelemetry extends RequestTelemetry {
  close(): Promise<void>;
}

export function requestTelemetry(metrics: MeshMetrics, mode: AccessLogMode = 'off', capture?: () => Pick<CaptureRecorder, 'request'> | undefined): AgentRequestTelemetry {
  const log = mode === 'off' ? undefined : new AccessLog({ mode });
  const requests = metrics.requests;
  return {
    record: (views, r) => {
      for (const v of views) requests.record(v, r);
      // One capture record per request: the destination's view when both halves ran here.
      const last = views[views.length - 1];
      if (!last) return;
      capture?.()?.request(last, r, views.length > 1);
      if (log?.wants(r)) log.write(last, r);
    },
    close: async () => {
      await log?.close();
    },
  };
}
