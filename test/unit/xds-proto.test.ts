// The .proto files keep the field numbers of the public APIs they are compatible with
// (DESIGN.md "Protocols and compatibility"; Istio's workload/authorization/CA protos; Envoy's
// delta discovery). A renumbered field would silently break interop, so each is pinned here.
import { describe, expect, it } from 'vitest';
import { protoRoot } from '../../src/xds/index.js';

function ids(type: string): Record<string, number> {
  const t = protoRoot().lookupType(type);
  return Object.fromEntries(Object.values(t.fields).map((f) => [f.name, f.id]));
}

function enumValues(name: string): Record<string, number> {
  return protoRoot().lookupEnum(name).values;
}

describe('wire compatibility of the .proto files', () => {
  it('istio.workload', () => {
    expect(ids('istio.workload.Address')).toEqual({ workload: 1, service: 2 });
    expect(ids('istio.workload.Workload')).toMatchObject({
      name: 1, namespace: 2, addresses: 3, network: 4, tunnelProtocol: 5, trustDomain: 6, serviceAccount: 7, waypoint: 8, node: 9,
      canonicalName: 10, canonicalRevision: 11, workloadType: 12, workloadName: 13, authorizationPolicies: 16, status: 17, clusterId: 18, uid: 20, services: 22,
    });
    expect(ids('istio.workload.Service')).toMatchObject({ name: 1, namespace: 2, hostname: 3, addresses: 4, ports: 5, subjectAltNames: 6 });
    expect(ids('istio.workload.NetworkAddress')).toEqual({ network: 1, address: 2 });
    expect(ids('istio.workload.Port')).toEqual({ servicePort: 1, targetPort: 2, appProtocol: 3 });
    expect(ids('istio.workload.PortList')).toEqual({ ports: 1 });
    expect(enumValues('istio.workload.TunnelProtocol')).toEqual({ NONE: 0, HBONE: 1 });
    expect(enumValues('istio.workload.WorkloadStatus')).toEqual({ HEALTHY: 0, UNHEALTHY: 1 });
    expect(enumValues('istio.workload.WorkloadType')).toEqual({ DEPLOYMENT: 0, CRONJOB: 1, POD: 2, JOB: 3 });
  });

  it('istio.security', () => {
    expect(ids('istio.security.Authorization')).toEqual({ name: 1, namespace: 2, scope: 3, action: 4, rules: 5, dryRun: 6, l7Rules: 1000 });
    expect(ids('istio.security.Rule')).toEqual({ clauses: 1 });
    expect(ids('istio.security.Clause')).toEqual({ matches: 2 });
    expect(ids('istio.security.Match')).toEqual({
      namespaces: 1, notNamespaces: 2, principals: 3, notPrincipals: 4, sourceIps: 5, notSourceIps: 6, destinationIps: 7, notDestinationIps: 8,
      destinationPorts: 9, notDestinationPorts: 10, serviceAccounts: 11, notServiceAccounts: 12, http: 1000,
    });
    expect(ids('istio.security.StringMatch')).toEqual({ exact: 1, prefix: 2, suffix: 3, presence: 4 });
    expect(ids('istio.security.Address')).toEqual({ address: 1, length: 2 });
    expect(enumValues('istio.security.Scope')).toEqual({ GLOBAL: 0, NAMESPACE: 1, WORKLOAD_SELECTOR: 2 });
    expect(enumValues('istio.security.Action')).toEqual({ ALLOW: 0, DENY: 1 });
  });

  it('envoy delta discovery and the CA', () => {
    expect(ids('envoy.service.discovery.v3.DeltaDiscoveryRequest')).toEqual({
      node: 1, typeUrl: 2, resourceNamesSubscribe: 3, resourceNamesUnsubscribe: 4, initialResourceVersions: 5, responseNonce: 6, errorDetail: 7,
    });
    expect(ids('envoy.service.discovery.v3.DeltaDiscoveryResponse')).toEqual({ systemVersionInfo: 1, resources: 2, typeUrl: 4, nonce: 5, removedResources: 6 });
    expect(ids('envoy.service.discovery.v3.Resource')).toEqual({ version: 1, resource: 2, name: 3, aliases: 4, ttl: 6 });
    expect(ids('envoy.service.discovery.v3.Node')).toMatchObject({ id: 1, cluster: 2, metadata: 3 });
    expect(ids('google.rpc.Status')).toEqual({ code: 1, message: 2, details: 3 });
    expect(ids('istio.v1.auth.IstioCertificateRequest')).toEqual({ csr: 1, validityDuration: 3, metadata: 4 });
    expect(ids('istio.v1.auth.IstioCertificateResponse')).toEqual({ certChain: 1 });
  });
});
