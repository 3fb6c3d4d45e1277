// `--check`: validates a config directory the way the control plane would serve it, without
// starting anything, and lists every problem as file:line: message.
import { buildPolicySet } from './authz.js';
import { translateRequestAuthentications } from './request-authn.js';
import { compileRoutes } from './routes.js';
import { loadSnapshot, type ConfigSnapshot } from './sources.js';
import { DEFAULT_MESH, type MeshSettings } from './translate.js';
import type { ConfigProblem } from './validate.js';

export interface CheckResult {
  problems: ConfigProblem[];
  errors: number;
  warnings: number;
  resources: { pods: number; services: number; authorizationPolicies: number; peerAuthentications: number; httpRoutes: number; virtualServices: number; destinationRules: number; requestAuthentications: number };
}

/**
 * What the control plane serves besides workloads and services, translated from a snapshot:
 * policies, routes and RequestAuthentications, with their problems. One translation for the
 * control plane and `--check`, so the check finds exactly what serving would.
 */
export function translateConfig(snap: ConfigSnapshot, mesh: MeshSettings) {
  const policySet = buildPolicySet(snap.authorizationPolicies, snap.peerAuthentications, mesh);
  const routes = compileRoutes(snap, mesh);
  const authns = translateRequestAuthentications(snap.requestAuthentications, mesh);
  return { policySet, routes: routes.routes, authns: authns.authns, problems: [...policySet.problems, ...routes.problems, ...authns.problems] };
}

export function checkConfigDir(dir: string, mesh: Partial<MeshSettings> = {}): CheckResult {
  const snap = loadSnapshot(dir);
  const problems = [...snap.problems, ...translateConfig(snap, { ...DEFAULT_MESH, ...mesh }).problems];
  return {
    problems,
    errors: problems.filter((p) => p.severity === 'error').length,
    warnings: problems.filter((p) => p.severity === 'warning').length,
    resources: {
      pods: snap.pods.length,
      services: snap.services.length,
      authorizationPolicies: snap.authorizationPolicies.length,
      peerAuthentications: snap.peerAuthentications.length,
      httpRoutes: snap.httpRoutes.length,
      virtualServices: snap.virtualServices.length,
      destinationRules: snap.destinationRules.length,
      requestAuthentications: snap.requestAuthentications.length,
    },
  };
}

export function formatProblems(problems: ConfigProblem[]): string {
  return problems.map((p) => `${p.file}:${p.line}: ${p.severity}: ${p.message} (${p.code})`).join('\n');
}
