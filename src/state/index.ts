// What the proxy knows: workloads, services and policies (later routes), the one updater every
// xDS handler goes through, and which policies apply to a workload (ztunnel's `state/`).
export { ProxyState } from './store.js';
export type { ProxyStateUpdater, StateChange } from './store.js';
export { ACTIONS, policyKey, SCOPES } from './policy.js';
export type { Action, Authorization, Clause, Connection, Decision, DryRunHit, HttpAttributes, HttpRequestFacts, JwtRule, Match, RejectedResource, RequestAuthentication, Rule, Scope, StringMatch, ValueCondition } from './policy.js';
export type {
  BackendRef,
  FaultPolicy,
  HeaderModifier,
  HttpMatch,
  LbAlgorithm,
  PathMatchType,
  PathModifier,
  RetryPolicy,
  RouteEntry,
  RouteFilter,
  RouteRule,
  RouteTable,
  ServiceRoutes,
  TrafficPolicy,
  ValueMatch,
  ValueMatchType,
} from './routes.js';
export { APP_PROTOCOLS, TUNNEL_PROTOCOLS, WORKLOAD_STATUSES, WORKLOAD_TYPES } from './types.js';
export type { AddressResource, AppProtocol, Service, ServicePort, TunnelProtocol, Workload, WorkloadStatus, WorkloadType } from './types.js';
