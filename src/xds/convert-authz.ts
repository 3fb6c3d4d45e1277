// istio.security.Authorization's rules both ways, with nodemesh's HTTP attributes (Match.http,
// only in l7_rules): the control plane encodes its compiled rules with l7RulesToProto, the
// agent decodes them in authorizationFromProto (convert.ts).
import type { HttpAttributes, Match, Rule, ValueCondition } from '../state/index.js';
import { bad, cidrsFromProto, cidrToProto, headerName, nonEmpty, stringMatchFromProto, stringMatchToProto } from './convert-common.js';
import type { PbMatch, PbRule, PbServiceAccountMatch, PbStringMatch } from './proto.js';
import type { PbHttpAttributes, PbValueCondition } from './proto-l7.js';

function ports(list: number[] | undefined, field: string): number[] {
  return (list ?? []).map((p, i) => {
    if (!Number.isInteger(p) || p < 0 || p > 65535) bad(`${field}[${i}]`, `${p} is not a port`);
    return p;
  });
}

const sms = (l: PbStringMatch[] | undefined, f: string) => (l ?? []).map((x, i) => stringMatchFromProto(x, `${f}[${i}]`));

function condition(c: PbValueCondition, f: string, isHeader: boolean): ValueCondition {
  const key = isHeader ? headerName(c.key, `${f}.key`) : nonEmpty(c.key, `${f}.key`);
  // The proxy looks request headers up by their lower-case name.
  if (isHeader && key !== key.toLowerCase()) bad(`${f}.key`, `header names are lower case, got ${JSON.stringify(key)}`);
  return { key, values: sms(c.values, `${f}.values`), notValues: sms(c.notValues, `${f}.not_values`) };
}

export function httpAttributesFromProto(h: PbHttpAttributes, f: string): HttpAttributes {
  return {
    methods: sms(h.methods, `${f}.methods`),
    notMethods: sms(h.notMethods, `${f}.not_methods`),
    paths: sms(h.paths, `${f}.paths`),
    notPaths: sms(h.notPaths, `${f}.not_paths`),
    hosts: sms(h.hosts, `${f}.hosts`),
    notHosts: sms(h.notHosts, `${f}.not_hosts`),
    requestPrincipals: sms(h.requestPrincipals, `${f}.request_principals`),
    notRequestPrincipals: sms(h.notRequestPrincipals, `${f}.not_request_principals`),
    remoteIps: cidrsFromProto(h.remoteIps, `${f}.remote_ips`),
    notRemoteIps: cidrsFromProto(h.notRemoteIps, `${f}.not_remote_ips`),
    headers: (h.headers ?? []).map((c, i) => condition(c, `${f}.headers[${i}]`, true)),
    claims: (h.claims ?? []).map((c, i) => condition(c, `${f}.claims[${i}]`, false)),
  };
}

const condToProto = (c: ValueCondition): PbValueCondition => ({ key: c.key, values: c.values.map(stringMatchToProto), notValues: c.notValues.map(stringMatchToProto) });

export function httpAttributesToProto(h: HttpAttributes): PbHttpAttributes {
  return {
    methods: h.methods.map(stringMatchToProto),
    notMethods: h.notMethods.map(stringMatchToProto),
    paths: h.paths.map(stringMatchToProto),
    notPaths: h.notPaths.map(stringMatchToProto),
    hosts: h.hosts.map(stringMatchToProto),
    notHosts: h.notHosts.map(stringMatchToProto),
    requestPrincipals: h.requestPrincipals.map(stringMatchToProto),
    notRequestPrincipals: h.notRequestPrincipals.map(stringMatchToProto),
    remoteIps: h.remoteIps.map(cidrToProto),
    notRemoteIps: h.notRemoteIps.map(cidrToProto),
    headers: h.headers.map(condToProto),
    claims: h.claims.map(condToProto),
  };
}

/**
 * One Match. `http` is decoded only where `l7` says it may be: in the standard rules a stock
 * ztunnel skips it and would match more than meant, so it is rejected there.
 */
export function matchFromProto(m: PbMatch, f: string, l7: boolean): Match {
  const sa = (l: PbServiceAccountMatch[] | undefined) => (l ?? []).map((x) => ({ namespace: x.namespace, serviceAccount: x.serviceAccount }));
  const out: Match = {
    namespaces: sms(m.namespaces, `${f}.namespaces`),
    notNamespaces: sms(m.notNamespaces, `${f}.not_namespaces`),
    principals: sms(m.principals, `${f}.principals`),
    notPrincipals: sms(m.notPrincipals, `${f}.not_principals`),
    serviceAccounts: sa(m.serviceAccounts),
    notServiceAccounts: sa(m.notServiceAccounts),
    sourceIps: cidrsFromProto(m.sourceIps, `${f}.source_ips`),
    notSourceIps: cidrsFromProto(m.notSourceIps, `${f}.not_source_ips`),
    destinationIps: cidrsFromProto(m.destinationIps, `${f}.destination_ips`),
    notDestinationIps: cidrsFromProto(m.notDestinationIps, `${f}.not_destination_ips`),
    destinationPorts: ports(m.destinationPorts, `${f}.destination_ports`),
    notDestinationPorts: ports(m.notDestinationPorts, `${f}.not_destination_ports`),
  };
  if (m.http) {
    if (!l7) bad(`${f}.http`, 'HTTP attributes belong in l7_rules; the L4 rules must stay what a stock ztunnel enforces');
    out.http = httpAttributesFromProto(m.http, `${f}.http`);
  }
  return out;
}

export function rulesFromProto(rules: PbRule[] | undefined, field: string, l7: boolean): Rule[] {
  return (rules ?? []).map((r, ri) => ({
    clauses: (r.clauses ?? []).map((c, ci) => ({
      matches: (c.matches ?? []).map((m, mi) => matchFromProto(m, `${field}[${ri}].clauses[${ci}].matches[${mi}]`, l7)),
    })),
  }));
}

export function matchToProto(m: Match): PbMatch {
  return {
    namespaces: m.namespaces.map(stringMatchToProto),
    notNamespaces: m.notNamespaces.map(stringMatchToProto),
    principals: m.principals.map(stringMatchToProto),
    notPrincipals: m.notPrincipals.map(stringMatchToProto),
    sourceIps: m.sourceIps.map(cidrToProto),
    notSourceIps: m.notSourceIps.map(cidrToProto),
    destinationIps: m.destinationIps.map(cidrToProto),
    notDestinationIps: m.notDestinationIps.map(cidrToProto),
    destinationPorts: [...m.destinationPorts],
    notDestinationPorts: [...m.notDestinationPorts],
    serviceAccounts: m.serviceAccounts.map((s) => ({ ...s })),
    notServiceAccounts: m.notServiceAccounts.map((s) => ({ ...s })),
    ...(m.http ? { http: httpAttributesToProto(m.http) } : {}),
  };
}

/** Rules as istio.security.Rule messages, their matches' `http` included. */
export function rulesToProto(rules: readonly Rule[]): PbRule[] {
  return rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.matches.map(matchToProto) })) }));
}

/**
 * Authorization.l7_rules (field 1000) for the control plane's PbAuthorization. An empty list
 * reads back as no l7Rules (the repeated field cannot tell them apart): leave it out instead.
 */
export function l7RulesToProto(rules: readonly Rule[]): PbRule[] {
  return rulesToProto(rules);
}
