// L4 authorization: the policy model and its pure evaluation.
export { evaluate, policyMatches, selectPolicies, stringMatches } from './evaluate.js';
export { policyKey } from './types.js';
export type { Action, Authorization, Cidr, Clause, Connection, Decision, DryRunHit, Match, PolicyTarget, Rule, Scope, ServiceAccountMatch, StringMatch } from './types.js';
