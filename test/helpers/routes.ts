// Route compiler inputs from YAML text, made the way the config directory makes them (parse,
// validate, snapshot), and readers for the compiled tables, for the route compiler tests.
import { expect } from 'vitest';
import { compileRoutes, type CompileOptions } from '../../src/controlplane/routes.js';
import { buildSnapshot } from '../../src/controlplane/sources.js';
import { DEFAULT_MESH, type MeshSettings } from '../../src/controlplane/translate.js';
import { parseConfigFile, type ConfigProblem } from '../../src/controlplane/validate.js';
import type { RouteTable, ServiceRoutes } from '../../src/state/routes.js';

/** Services most tests route between: web (80, 9000 named admin), web-v2 (80), api in team-b (8080). */
export const SERVICES = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 9000, targetPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: web, version: v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team-b}
spec:
  clusterIP: 10.96.0.12
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432, targetPort: 5432}]
`;

export const WEB = 'shop/web.shop.svc.cluster.local';
export const WEB_V2 = 'shop/web-v2.shop.svc.cluster.local';
export const API = 'team-b/api.team-b.svc.cluster.local';

export interface Compiled {
  routes: ServiceRoutes[];
  problems: ConfigProblem[];
  /** The whole file the resources were read from (SERVICES first), for line numbers. */
  text: string;
}

/** Compiles SERVICES plus `yaml`; the file itself must validate. */
export function compile(yaml: string, options: CompileOptions = {}, mesh: MeshSettings = DEFAULT_MESH): Compiled {
  const text = `${SERVICES}---\n${yaml}`;
  const parsed = parseConfigFile(text, 'routes.yaml');
  expect(parsed.problems).toEqual([]);
  const { routes, problems } = compileRoutes(buildSnapshot(parsed.objects, []), mesh, options);
  return { routes, problems, text };
}

/** The one problem validating `yaml` finds. */
export function invalid(yaml: string): ConfigProblem & { text: string } {
  const parsed = parseConfigFile(yaml, 'bad.yaml');
  expect(parsed.problems).toHaveLength(1);
  return { ...parsed.problems[0]!, text: yaml };
}

/** The 1-based line of the `nth` line of `text` containing `needle`. */
export function lineOf(text: string, needle: string, nth = 1): number {
  let seen = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) if (lines[i]!.includes(needle) && ++seen === nth) return i + 1;
  throw new Error(`${JSON.stringify(needle)} is not in the text ${nth} time(s)`);
}

export function routesFor(c: Compiled, service: string): ServiceRoutes {
  const r = c.routes.find((x) => x.service === service);
  if (!r) throw new Error(`no ServiceRoutes for ${service}; have ${c.routes.map((x) => x.service).join(', ')}`);
  return r;
}

export function tableOf(c: Compiled, service: string, port: number, consumerNamespace?: string): RouteTable {
  const t = routesFor(c, service).tables.find((x) => x.port === port && x.consumerNamespace === consumerNamespace);
  if (!t) throw new Error(`no table for ${service} port ${port}${consumerNamespace ? ` consumer ${consumerNamespace}` : ''}`);
  return t;
}

/** A table's entries as `source: path` lines, in order, for precedence assertions. */
export function order(c: Compiled, service: string, port: number, consumerNamespace?: string): string[] {
  const sr = routesFor(c, service);
  return tableOf(c, service, port, consumerNamespace).entries.map((e) => `${sr.rules[e.rule]!.source}: ${e.match.path ? `${e.match.path.type} ${e.match.path.value}` : '*'}`);
}

/** Problems as `severity line message` strings. */
export function problemLines(c: { problems: ConfigProblem[] }): string[] {
  return c.problems.map((p) => `${p.severity} ${p.line} ${p.message}`);
}
