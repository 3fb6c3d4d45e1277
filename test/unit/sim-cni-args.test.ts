// What the simulator hands CNI plugins: CNI_ARGS, the environment, and reading the pod IP
// back out of a result; plus the names it derives for netns, cgroups and sandboxes.
import { describe, expect, it } from 'vitest';
import { buildCniArgs, parseCniArgs, pluginEnv, resultIPv4 } from '../../src/sim/cni.js';
import { podCgroupPath, cgroupRelativePath } from '../../src/sim/cgroup.js';
import { netnsNameFor } from '../../src/sim/host.js';
import { containerIdFor, containerPlans, podSpecHash } from '../../src/sim/pod.js';
import { parseConfigText, type Pod } from '../../src/k8s/index.js';

const pod = { namespace: 'demo', name: 'web', uid: '0b6a3c7e-1d2f-4a5b-8c9d-0e1f2a3b4c5d', containerId: 'abc123' };

describe('CNI_ARGS', () => {
  it("is built as containerd's CRI builds it, IgnoreUnknown first", () => {
    expect(buildCniArgs(pod)).toBe(
      'IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b6a3c7e-1d2f-4a5b-8c9d-0e1f2a3b4c5d',
    );
  });

  it('parses back into a map', () => {
    expect(parseCniArgs(buildCniArgs(pod))).toEqual({
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: 'demo',
      K8S_POD_NAME: 'web',
      K8S_POD_INFRA_CONTAINER_ID: 'abc123',
      K8S_POD_UID: pod.uid,
    });
  });

  it('refuses values that would break the K=V;K=V format', () => {
    for (const bad of ['a;b', 'a=b', 'sp ace', '']) {
      try {
        buildCniArgs({ ...pod, namespace: bad });
        expect.unreachable();
      } catch (e) {
        expect((e as { code: string }).code).toBe('NM_ERR_CONFIG_INVALID');
      }
    }
  });
});

describe('plugin environment', () => {
  it('sets every CNI_ variable and drops stale ones inherited from the caller', () => {
    process.env.CNI_STALE_TEST = 'x';
    try {
      const env = pluginEnv('ADD', { containerId: 'c', netnsPath: '/run/netns/n', ifName: 'eth0', args: 'IgnoreUnknown=1', cniPath: ['/usr/lib/cni', '/r/native/build'] });
      expect(env).toMatchObject({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/run/netns/n', CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1', CNI_PATH: '/usr/lib/cni:/r/native/build' });
      expect(env.CNI_STALE_TEST).toBeUndefined();
      expect(env.PATH).toBe(process.env.PATH);
    } finally {
      delete process.env.CNI_STALE_TEST;
    }
  });
});

describe('reading a CNI result', () => {
  it("takes the IPv4 address of the sandbox's interface", () => {
    const result = {
      cniVersion: '1.0.0',
      interfaces: [{ name: 'nm-br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [
        { interface: 0, address: '10.244.0.1/24' },
        { interface: 2, address: 'fd00::5/64' },
        { interface: 2, address: '10.244.0.5/24', gateway: '10.244.0.1' },
      ],
    };
    expect(resultIPv4(result, 'eth0')).toBe('10.244.0.5');
    expect(resultIPv4({ cniVersion: '1.0.0' }, 'eth0')).toBeUndefined();
  });
});

describe('names', () => {
  it('names pod cgroups as the kubelet cgroupfs driver does, under nodemesh-sim', () => {
    const p = podCgroupPath('/sys/fs/cgroup', pod.uid);
    expect(p).toBe(`/sys/fs/cgroup/nodemesh-sim/kubepods/besteffort/pod${pod.uid}`);
    expect(cgroupRelativePath('/sys/fs/cgroup', p)).toBe(`/nodemesh-sim/kubepods/besteffort/pod${pod.uid}`);
    expect(() => podCgroupPath('/sys/fs/cgroup', '../x')).toThrow();
  });

  it('names a netns nm-<ns>-<pod>, hashing long or taken names', () => {
    expect(netnsNameFor('demo', 'web', () => false)).toBe('nm-demo-web');
    // "a-b"/"c" and "a"/"b-c" would share nm-a-b-c: the second one gets a hashed name.
    const taken = new Set(['nm-a-b-c']);
    const second = netnsNameFor('a', 'b-c', (n) => taken.has(n));
    expect(second).toMatch(/^nm-a-b-c-[0-9a-f]{8}$/);
    const long = netnsNameFor('a-very-long-namespace-name', 'and-an-even-longer-pod-name-here', () => false);
    expect(long.length).toBeLessThanOrEqual(48);
    expect(long.startsWith('nm-')).toBe(true);
  });

  it('derives the sandbox id from the netns name, so a stateless teardown can rebuild it', () => {
    expect(containerIdFor('nm-demo-web')).toMatch(/^[0-9a-f]{64}$/);
    expect(containerIdFor('nm-demo-web')).toBe(containerIdFor('nm-demo-web'));
    expect(containerIdFor('nm-demo-web')).not.toBe(containerIdFor('nm-demo-db'));
  });
});

function podFrom(yaml: string): Pod {
  const r = parseConfigText(yaml, 'pods.yaml');
  expect(r.errors).toEqual([]);
  return r.objects[0] as Pod;
}

describe('containers as processes', () => {
  const yaml = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo}
spec:
  containers:
    - name: srv
      image: ignored
      command: [python3, -m, http.server]
      args: ["8080"]
      env: [{name: A, value: "1"}]
      ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}]
    - name: side
      command: [sleep, infinity]
      workingDir: sub
`;

  it('runs command + args with env from the config dir, waiting only on TCP ports', () => {
    const plans = containerPlans(podFrom(yaml), '/cfg');
    expect(plans).toEqual([
      { name: 'srv', argv: ['python3', '-m', 'http.server', '8080'], env: { A: '1' }, cwd: '/cfg', ports: [8080] },
      { name: 'side', argv: ['sleep', 'infinity'], env: {}, cwd: '/cfg/sub', ports: [] },
    ]);
  });

  it('hashes the spec the simulator runs: labels do not matter, commands do', () => {
    const a = podSpecHash(podFrom(yaml), 'n1');
    expect(podSpecHash(podFrom(yaml.replace('metadata: {name: web, namespace: demo}', 'metadata: {name: web, namespace: demo, labels: {x: y}}')), 'n1')).toBe(a);
    expect(podSpecHash(podFrom(yaml.replace('"8080"', '"8081"')), 'n1')).not.toBe(a);
    expect(podSpecHash(podFrom(yaml), 'n2')).not.toBe(a);
  });
});
