// Byte layouts of bpf/redirect.h structs as written into the maps, and the mountinfo
// parsing that finds cgroup v2 and bpffs.
import { endianness } from 'node:os';
import { describe, expect, it } from 'vitest';
import { isNodemeshError } from '../../src/errors.js';
import {
  SIZES,
  decodeAddr4,
  decodeEnrolled,
  decodePodCfg,
  encodeEnrolled,
  encodeListenerKey,
  encodeOrigDstKey,
  encodePodCfg,
  ipv4Key,
} from '../../src/redirect/layout.js';
import { findBpffsMounts, findCgroup2Root, parseMountinfo } from '../../src/redirect/mounts.js';

const le = endianness() === 'LE';

describe('map layouts', () => {
  it('encodes nm_pod_cfg: pod ip, counts, host-order ports, network-order CIDRs', () => {
    const b = encodePodCfg({ podIp: '10.244.1.5', excludePorts: [22, 15021], excludeCidrs: [{ addr: '10.96.0.0', prefix: 12 }] });
    expect(b.length).toBe(SIZES.podCfg);
    expect([...b.subarray(0, 4)]).toEqual([10, 244, 1, 5]);
    if (le) {
      expect(b.readUInt16LE(4)).toBe(2);
      expect(b.readUInt16LE(6)).toBe(1);
      expect(b.readUInt16LE(8)).toBe(22);
      expect(b.readUInt16LE(10)).toBe(15021);
    }
    expect([...b.subarray(24, 32)]).toEqual([10, 96, 0, 0, 0xff, 0xf0, 0, 0]);
    expect(decodePodCfg(b)).toEqual({ podIp: '10.244.1.5', excludePorts: [22, 15021], excludeCidrs: [{ addr: '10.96.0.0', prefix: 12 }] });
  });

  it('decodes /0 and /32 prefixes', () => {
    const b = encodePodCfg({ podIp: '1.2.3.4', excludePorts: [], excludeCidrs: [{ addr: '0.0.0.0', prefix: 0 }, { addr: '1.1.1.1', prefix: 32 }] });
    expect(decodePodCfg(b).excludeCidrs).toEqual([{ addr: '0.0.0.0', prefix: 0 }, { addr: '1.1.1.1', prefix: 32 }]);
  });

  it('encodes nm_enrolled with the netns cookie at offset 24', () => {
    const b = encodeEnrolled({ flags: 1, excludePorts: [15021], netnsCookie: 0x1122334455667788n });
    expect(b.length).toBe(SIZES.enrolled);
    expect(decodeEnrolled(b)).toEqual({ flags: 1, excludePorts: [15021], netnsCookie: 0x1122334455667788n });
    if (le) expect(b.readBigUInt64LE(24)).toBe(0x1122334455667788n);
  });

  it('encodes keys: pod ip, listener key, orig-dst key', () => {
    expect([...ipv4Key('10.0.0.1')]).toEqual([10, 0, 0, 1]);
    const lk = encodeListenerKey('10.0.0.1', 1);
    expect(lk.length).toBe(SIZES.listenerKey);
    expect([...lk.subarray(0, 4)]).toEqual([10, 0, 0, 1]);
    const ok = encodeOrigDstKey(7n, '127.0.0.1', 40000);
    expect(ok.length).toBe(SIZES.origDstKey);
    expect([...ok.subarray(8, 12)]).toEqual([127, 0, 0, 1]);
    if (le) expect(ok.readUInt16LE(12)).toBe(40000);
    const v = Buffer.alloc(8);
    v.set([10, 250, 0, 2], 0);
    if (le) v.writeUInt16LE(8080, 4);
    else v.writeUInt16BE(8080, 4);
    expect(decodeAddr4(v)).toEqual({ ip: '10.250.0.2', port: 8080 });
  });
});

const hybrid = [
  '25 31 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw',
  '38 25 0:33 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
  '41 38 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw',
  '42 38 0:39 / /sys/fs/cgroup/net_cls rw,relatime shared:11 - cgroup cgroup rw,net_cls',
  '60 25 0:50 / /sys/fs/bpf rw,relatime shared:30 - bpf bpf rw,mode=700',
  '61 31 0:51 / /mnt/with\\040space rw - bpf none rw',
].join('\n');

describe('mountinfo', () => {
  it('finds cgroup v2 at /sys/fs/cgroup/unified on a hybrid node', () => {
    expect(findCgroup2Root(parseMountinfo(hybrid))).toBe('/sys/fs/cgroup/unified');
  });

  it('prefers /sys/fs/cgroup on a unified node', () => {
    const unified = parseMountinfo('30 25 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n31 25 0:27 / /x rw - cgroup2 cgroup2 rw');
    expect(findCgroup2Root(unified)).toBe('/sys/fs/cgroup');
  });

  it('throws NM_ERR_NO_CGROUP2 when no cgroup2 is mounted', () => {
    let caught: unknown;
    try {
      findCgroup2Root(parseMountinfo('25 31 0:23 / /sys rw - sysfs sysfs rw'));
    } catch (err) {
      caught = err;
    }
    expect(isNodemeshError(caught, 'NM_ERR_NO_CGROUP2')).toBe(true);
  });

  it('lists bpffs mounts, unescaping octal escapes', () => {
    expect(findBpffsMounts(parseMountinfo(hybrid))).toEqual(['/sys/fs/bpf', '/mnt/with space']);
  });
});
