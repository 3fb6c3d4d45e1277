// Authorization evaluation, pure: depends on state/ types and net/ only.
export { evaluate, policyMatches, stringMatches } from './evaluate.js';
