// The L7 engine (docs/l7.md): HTTP/1.1 and prior-knowledge HTTP/2 served on connections the
// proxy accepted, routed per request by the caller's hook, through pooled upstream connections
// over TCP or HBONE. types.ts holds the rest of the surface (HttpRequestHead, RouteDecision,
// DirectResponse, EngineOptions, ...): export each here as another folder comes to import it.
export { HttpEngine } from './engine.js';
export type { DirectResponse, EngineOptions, HttpRequestHead, HttpResponseHead, RequestRecord, RouteDecision, SessionHooks, UpstreamTarget } from './types.js';
