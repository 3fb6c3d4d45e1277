// The agent's CNI relay server, spoken to over a real unix socket the way nodemesh-cni does.
import { mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { testTempDir } from '../helpers/tmp.js';
import { pino } from 'pino';
import { CniError } from '../../src/errors.js';
import { CniServer, parseCniArgs, podAddressOf, type CniRequest } from '../../src/agent/cni-server.js';
import { findPodCgroup } from '../../src/agent/cgroups.js';
import { exclusionsFrom } from '../../src/agent/enrollment.js';

const log = pino({ level: 'silent' });
let server: CniServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

function call(path: string, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.end(body);
  });
}

const prevResult = { cniVersion: '1.0.0', ips: [{ address: '10.244.0.7/24', gateway: '10.244.0.1' }] };
const request = (command: string) =>
  JSON.stringify({ command, containerId: 'c1', netns: '/run/netns/x', ifName: 'eth0', args: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=a;K8S_POD_UID=u1', path: '/usr/lib/cni', config: { cniVersion: '1.0.0', name: 'n', type: 'nodemesh-cni', prevResult } });

describe('CNI relay server', () => {
  it('answers ADD with OK and the prevResult passed through, after the handler finishes', async () => {
    const sock = join(testTempDir('nm-cni-'), 'cni.sock');
    const seen: CniRequest[] = [];
    server = await CniServer.listen(sock, async (r) => {
      await new Promise((res) => setTimeout(res, 30));
      seen.push(r);
    }, log);
    const out = await call(sock, request('ADD'));
    expect(seen).toHaveLength(1);
    expect(seen[0]!.args).toEqual({ K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: 'a', K8S_POD_UID: 'u1' });
    expect(out.split('\n')[0]).toBe('OK');
    expect(JSON.parse(out.slice(3))).toEqual(prevResult);
  });

  it('answers ERR with a CNI error object when the handler fails', async () => {
    const sock = join(testTempDir('nm-cni-'), 'cni.sock');
    server = await CniServer.listen(sock, async () => {
      throw new CniError('nodemesh agent: bad annotation', { cniCode: 7 });
    }, log);
    const out = await call(sock, request('ADD'));
    expect(out.split('\n')[0]).toBe('ERR 7');
    expect(JSON.parse(out.slice(out.indexOf('\n') + 1))).toMatchObject({ code: 7, msg: 'nodemesh agent: bad annotation', cniVersion: '1.0.0' });
  });

  it('rejects an undecodable request with CNI code 6', async () => {
    const sock = join(testTempDir('nm-cni-'), 'cni.sock');
    server = await CniServer.listen(sock, async () => {}, log);
    expect((await call(sock, '{not json')).split('\n')[0]).toBe('ERR 6');
  });

  it('parses CNI_ARGS and the pod address', () => {
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b')).toEqual({ IgnoreUnknown: '1', K8S_POD_NAME: 'a=b' });
    expect(podAddressOf({ prevResult })).toEqual({ ip: '10.244.0.7', prefix: 24 });
    expect(podAddressOf({ prevResult: { ips: [{ address: 'fd00::1/64' }] } })).toBeUndefined();
  });
});

describe('enrollment inputs', () => {
  it("reads exclusions from Istio's sidecar annotations and rejects bad ports with the annotation name", () => {
    expect(exclusionsFrom({ 'traffic.sidecar.istio.io/excludeInboundPorts': '8081, 9090', 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12' })).toEqual({
      excludeInboundPorts: [8081, 9090],
      excludeOutboundPorts: [],
      excludeOutboundCidrs: ['10.96.0.0/12'],
    });
    expect(() => exclusionsFrom({ 'traffic.sidecar.istio.io/excludeOutboundPorts': '70000' })).toThrowError(
      expect.objectContaining({ code: 'NM_ERR_ENROLL', message: expect.stringContaining('excludeOutboundPorts') }),
    );
  });

  it('finds a pod cgroup by UID for both kubelet cgroup drivers', () => {
    const root = testTempDir('nm-cg-');
    mkdirSync(join(root, 'kubepods', 'besteffort', 'pod1234-ab'), { recursive: true });
    mkdirSync(join(root, 'kubepods.slice', 'kubepods-burstable.slice', 'kubepods-burstable-pod99_aa.slice'), { recursive: true });
    expect(findPodCgroup(root, '1234-ab')).toBe(join(root, 'kubepods', 'besteffort', 'pod1234-ab'));
    expect(findPodCgroup(root, '99-aa')).toBe(join(root, 'kubepods.slice', 'kubepods-burstable.slice', 'kubepods-burstable-pod99_aa.slice'));
    expect(findPodCgroup(root, 'nope')).toBeUndefined();
  });
});
