// How an agent names the control plane it verifies: TLS SNI may not carry an IP, so an agent
// dialing an IP verifies the fixed DNS name every serving certificate carries.
import { describe, expect, it } from 'vitest';
import { channelOptions } from '../../src/xds/credentials.js';
import { CONTROL_PLANE_DNS_NAME, type ControlPlaneConnection } from '../../src/xds/index.js';

const conn = (address: string, serverName?: string): ControlPlaneConnection => ({ address, rootCertPem: '', token: 't', nodeName: 'n', ...(serverName ? { serverName } : {}) });

describe('control plane channel options', () => {
  it('verifies the fixed DNS name when the address is an IPv4 or IPv6 literal', () => {
    expect(channelOptions(conn('10.240.0.254:15012'))['grpc.ssl_target_name_override']).toBe(CONTROL_PLANE_DNS_NAME);
    expect(channelOptions(conn('[::1]:15012'))['grpc.ssl_target_name_override']).toBe(CONTROL_PLANE_DNS_NAME);
  });

  it('leaves a DNS address to be verified as it is, and honours an explicit serverName', () => {
    expect(channelOptions(conn('cp.example.internal:15012'))['grpc.ssl_target_name_override']).toBeUndefined();
    expect(channelOptions(conn('10.0.0.1:15012', 'istiod.istio-system.svc'))['grpc.ssl_target_name_override']).toBe('istiod.istio-system.svc');
  });
});
