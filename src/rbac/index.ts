// Authorization evaluation, pure: depends on state/ types and net/ only.
export { evaluate } from './evaluate.js';
export { claimKey } from './http-match.js';
export { JwtVerifier } from './jwt.js';
export { jwtRulesOf, requestAuthnFor } from './request-authn.js';
