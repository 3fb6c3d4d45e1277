// The redirect facade's argument checks (they run before anything reaches the addon) and
// the addon loader's error when no build exists. Runs without root and without a build.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isNodemeshError } from '../../src/errors.js';
import { Redirector, listenInNetns, socketsInNetns } from '../../src/redirect/index.js';
import { netnsCookie, socketInNetns } from '../../src/redirect/netns.js';
import { defaultAddonDir, loadNative } from '../../src/redirect/native.js';
import { checkPodSpec, parseCidr4 } from '../../src/redirect/validate.js';

const good = {
  uid: '3f1c2a9e-1111-4a5b-9c3d-0123456789ab',
  cgroupPath: '/sys/fs/cgroup/kubepods/pod1',
  netnsPath: '/run/netns/pod1',
  ip: '10.244.1.5',
};

describe('pod spec validation', () => {
  it('accepts a minimal spec and fills in empty exclusion lists', () => {
    expect(checkPodSpec(good)).toEqual({
      ...good,
      excludeOutboundPorts: [],
      excludeOutboundCidrs: [],
      excludeInboundPorts: [],
      inboundFailOpen: false,
    });
  });

  it('rejects an IP that is not dotted-quad IPv4 with a TypeError naming the field', () => {
    expect(() => checkPodSpec({ ...good, ip: '10.244.1' })).toThrow(TypeError);
    expect(() => checkPodSpec({ ...good, ip: '10.244.1' })).toThrow(/spec\.ip must be an IPv4 address/);
    expect(() => checkPodSpec({ ...good, ip: 'fd00::1' })).toThrow(/spec\.ip/);
    expect(() => checkPodSpec({ ...good, ip: 167772161 })).toThrow(/spec\.ip must be a string/);
  });

  it('rejects more than 8 excluded ports with a RangeError', () => {
    const nine = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    expect(() => checkPodSpec({ ...good, excludeOutboundPorts: nine })).toThrow(RangeError);
    expect(() => checkPodSpec({ ...good, excludeOutboundPorts: nine })).toThrow(/spec\.excludeOutboundPorts holds at most 8 entries/);
    expect(() => checkPodSpec({ ...good, excludeInboundPorts: nine })).toThrow(/spec\.excludeInboundPorts/);
  });

  it('rejects out-of-range and non-integer ports, naming the index', () => {
    expect(() => checkPodSpec({ ...good, excludeInboundPorts: [15021, 70000] })).toThrow(RangeError);
    expect(() => checkPodSpec({ ...good, excludeInboundPorts: [15021, 70000] })).toThrow(/spec\.excludeInboundPorts\[1\] must be in \[1, 65535\]/);
    expect(() => checkPodSpec({ ...good, excludeOutboundPorts: [80.5] })).toThrow(TypeError);
    expect(() => checkPodSpec({ ...good, excludeOutboundPorts: [0] })).toThrow(RangeError);
  });

  it('rejects malformed CIDRs, too many CIDRs and CIDRs with host bits', () => {
    expect(() => checkPodSpec({ ...good, excludeOutboundCidrs: ['10.96.0.0'] })).toThrow(/must be an IPv4 CIDR/);
    expect(() => checkPodSpec({ ...good, excludeOutboundCidrs: ['10.96.0.0/33'] })).toThrow(RangeError);
    expect(() => checkPodSpec({ ...good, excludeOutboundCidrs: ['10.96.0.300/12'] })).toThrow(TypeError);
    expect(() => checkPodSpec({ ...good, excludeOutboundCidrs: ['10.96.0.1/12'] })).toThrow(/host bits set; did you mean "10\.96\.0\.0\/12"/);
    expect(() => checkPodSpec({ ...good, excludeOutboundCidrs: Array(9).fill('10.0.0.0/8') })).toThrow(RangeError);
    expect(parseCidr4('0.0.0.0/0', 'c')).toEqual({ addr: '0.0.0.0', prefix: 0 });
  });

  it('rejects a UID that is not one safe path component', () => {
    expect(() => checkPodSpec({ ...good, uid: '../etc' })).toThrow(/spec\.uid must be/);
    expect(() => checkPodSpec({ ...good, uid: '' })).toThrow(TypeError);
    expect(() => checkPodSpec({ ...good, uid: 'a/b' })).toThrow(TypeError);
  });

  it('rejects relative cgroup and netns paths', () => {
    expect(() => checkPodSpec({ ...good, cgroupPath: 'kubepods/pod1' })).toThrow(/spec\.cgroupPath must be an absolute path/);
    expect(() => checkPodSpec({ ...good, netnsPath: 'pod1' })).toThrow(/spec\.netnsPath must be an absolute path/);
  });
});

describe('namespace socket and open() argument checks', () => {
  it('rejects a listen host that is not an IP and a port out of range', async () => {
    await expect(listenInNetns('/run/netns/x', { host: 'localhost', port: 15001 })).rejects.toThrow(/options\.host must be an IPv4 or IPv6 address/);
    await expect(listenInNetns('/run/netns/x', { host: '127.0.0.1', port: 65536 })).rejects.toThrow(RangeError);
    await expect(listenInNetns('run/netns/x', { host: '127.0.0.1', port: 1 })).rejects.toThrow(/netnsPath must be an absolute path/);
  });

  it('rejects a bad bind IP, family and fd', async () => {
    await expect(socketInNetns('/run/netns/x', { bindIp: '10.0.0.256' })).rejects.toThrow(/options\.bindIp/);
    await expect(socketInNetns('/run/netns/x', { family: 5 as 4 })).rejects.toThrow(/options\.family must be 4 or 6/);
    expect(() => netnsCookie(-1)).toThrow(RangeError);
  });

  it('rejects a batch of sockets of a bad size', async () => {
    await expect(socketsInNetns('/run/netns/x', 0)).rejects.toThrow(RangeError);
    await expect(socketsInNetns('/run/netns/x', 1025)).rejects.toThrow(RangeError);
    await expect(socketsInNetns('/run/netns/x', 1.5)).rejects.toThrow(TypeError);
  });

  it('rejects a relative pin root and a bad outbound port before needing root', async () => {
    await expect(Redirector.open({ pinRoot: 'nodemesh' })).rejects.toThrow(/options\.pinRoot must be an absolute path/);
    await expect(Redirector.open({ pinRoot: '/sys/fs/bpf/x', outboundPort: 0 })).rejects.toThrow(RangeError);
  });
});

describe('native addon loader', () => {
  const dirs: string[] = [];
  const savedEnv = process.env.NODEMESH_ADDON_DIR;
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    if (savedEnv === undefined) delete process.env.NODEMESH_ADDON_DIR;
    else process.env.NODEMESH_ADDON_DIR = savedEnv;
  });

  it('throws NM_ERR_NATIVE_MISSING listing the Release and Debug paths and the fix', () => {
    const empty = mkdtempSync(join(tmpdir(), 'nmt-addon-'));
    dirs.push(empty);
    let caught: unknown;
    try {
      loadNative(empty);
    } catch (err) {
      caught = err;
    }
    expect(isNodemeshError(caught, 'NM_ERR_NATIVE_MISSING')).toBe(true);
    const e = caught as Error & { details: { tried: string[] } };
    expect(e.details.tried).toHaveLength(2);
    expect(e.message).toContain(join(empty, 'Release', 'nodemesh_native.node'));
    expect(e.message).toContain(join(empty, 'Debug', 'nodemesh_native.node'));
    expect(e.message).toContain('make build');
  });

  it('takes the build directory from NODEMESH_ADDON_DIR', () => {
    const empty = mkdtempSync(join(tmpdir(), 'nmt-addon-'));
    dirs.push(empty);
    process.env.NODEMESH_ADDON_DIR = empty;
    expect(defaultAddonDir()).toBe(empty);
    expect(() => loadNative()).toThrow(expect.objectContaining({ code: 'NM_ERR_NATIVE_MISSING' }));
  });
});
