// L7 routing on the source side (docs/l7.md): the route table and match for a request, its
// filters and faults, the weighted backend, and the endpoint per request (DestinationRule
// load balancing, outlier ejection, maxRequests). Pure: the proxy wires it to the engine.
export { matchRoute, noRouteResponse, parseQuery, selectTable, type RouteMatch } from './routing.js';
export { fullMatchRegex } from './regex.js';
export {
  abortResponse,
  applyFilters,
  faultOf,
  modifyHeaders,
  percentHit,
  redirectResponse,
  rewritePath,
  type FaultOutcome,
  type FilterContext,
  type FilterResult,
  type MirrorTarget,
} from './filters.js';
export { noBackendResponse, pickBackend, trafficPolicyFor } from './backends.js';
export { EndpointLease, EndpointPicker, EndpointPool, type Endpoint, type EndpointOutcome, type EndpointPickerOptions, type SubsetRef } from './endpoints.js';
