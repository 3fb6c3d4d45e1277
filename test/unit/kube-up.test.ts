// `nodemesh up --kubeconfig` before anything runs, against the stand-in API server
// (test/helpers/kube-apiserver.ts; no real kube-apiserver can run here): a bad kubeconfig, an
// API that is gone or refuses the credentials fail at once, naming the file or the server, and
// leave the state dir empty; the kubeconfig the cluster network's processes get (the relay's
// address, the server's own name for TLS); the token files and status the kubelet role writes.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { upCommand } from '../../src/cli/up.js';
import { checkKubeApi } from '../../src/cluster/kube-up.js';
import { rewriteKubeconfig, relayClientEnv, serverTarget } from '../../src/cluster/kube-relay.js';
import { tokenVolumes } from '../../src/cluster/kube-tokens.js';
import { podStatus, statusSignature } from '../../src/cluster/kubelet-status.js';
import type { SimPodInfo } from '../../src/sim/index.js';
import { startKubeStandIn, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { testTempDir } from '../helpers/tmp.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function standIn(): Promise<KubeStandIn> {
  const api = await startKubeStandIn();
  cleanups.push(() => api.close());
  return api;
}

function configDir(): string {
  const dir = testTempDir('nm-kube-up-cfg-');
  writeFileSync(join(dir, 'ns.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: { name: shop }\n');
  return dir;
}

describe('nodemesh up --kubeconfig refuses an API it cannot use, before making anything', () => {
  it('names a kubeconfig that cannot be read (usage error), and one whose server is gone or refuses its credentials (NM_ERR_KUBE_API, the server named)', async () => {
    const sd = testTempDir('nm-kube-up-sd-');
    const dir = configDir();
    await expect(upCommand.run([dir, '--state-dir', sd, '--kubeconfig', join(sd, 'nope')])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringContaining(`cannot load kubeconfig ${join(sd, 'nope')}`) });

    const api = await standIn();
    // Wrong credentials: the server answers 401, and up says so.
    const badUser = join(testTempDir('nm-kube-up-kc-'), 'kubeconfig');
    writeFileSync(badUser, JSON.stringify({ ...JSON.parse(readFileSync(api.kubeconfigPath, 'utf8')), users: [{ name: 'standin-admin', user: { token: 'not-the-token' } }] }));
    await expect(upCommand.run([dir, '--state-dir', sd, '--kubeconfig', badUser])).rejects.toMatchObject({ code: 'NM_ERR_KUBE_API', message: expect.stringMatching(new RegExp(`${api.url}.*refused the kubeconfig's credentials \\(HTTP 401\\)`)) });
    // The server gone: the connection is refused, and the error names the server.
    await api.stop();
    await expect(upCommand.run([dir, '--state-dir', sd, '--kubeconfig', api.kubeconfigPath])).rejects.toMatchObject({ code: 'NM_ERR_KUBE_API', message: expect.stringMatching(new RegExp(`cannot use the Kubernetes API at ${api.url}.*ECONNREFUSED`)) });
    expect(readdirSync(sd)).toEqual([]);
    // The twin: the same kubeconfig passes the check once the server is back on its port.
    await api.start();
    await expect(checkKubeApi(api.kubeconfigPath)).resolves.toMatchObject({ server: api.url });
  });
});

describe('the kubeconfig of the cluster network (through the relay)', () => {
  it('points at the relay, keeps the server name for TLS and the credentials, and makes relative files absolute', () => {
    const d = testTempDir('nm-kube-up-kc-');
    const file = join(d, 'config');
    writeFileSync(file, `apiVersion: v1
kind: Config
current-context: a
clusters:
- { name: ca, cluster: { server: "https://127.0.0.1:41234", certificate-authority: certs/ca.pem } }
- { name: cb, cluster: { server: "https://other:6443" } }
users:
- { name: ua, user: { token: sekret, client-key: keys/k.pem } }
- { name: ub, user: { token: other } }
contexts:
- { name: a, context: { cluster: ca, user: ua, namespace: shop } }
- { name: b, context: { cluster: cb, user: ub } }
`);
    const { text, tlsServerName } = rewriteKubeconfig(file, '10.240.0.254:6443');
    const out = parse(text) as Record<string, unknown>;
    expect(tlsServerName).toBe('127.0.0.1');
    expect(out).toEqual({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'a',
      clusters: [{ name: 'ca', cluster: { server: 'https://10.240.0.254:6443', 'certificate-authority': join(d, 'certs/ca.pem'), 'tls-server-name': '127.0.0.1' } }],
      users: [{ name: 'ua', user: { token: 'sekret', 'client-key': join(d, 'keys/k.pem') } }],
      contexts: [{ name: 'a', context: { cluster: 'ca', user: 'ua', namespace: 'shop' } }],
    });
    // A name the kubeconfig sets itself is kept; a DNS name needs no warning switched off.
    writeFileSync(file, text.replace("tls-server-name: 127.0.0.1", 'tls-server-name: api.example'));
    expect(rewriteKubeconfig(file, '10.240.0.254:6443').tlsServerName).toBe('api.example');
    expect(relayClientEnv('api.example', {}).NODE_OPTIONS).toBeUndefined();
    expect(relayClientEnv('127.0.0.1', { NODE_OPTIONS: '--x' }).NODE_OPTIONS).toBe('--x --disable-warning=DEP0123');
    expect(serverTarget('https://[::1]')).toEqual({ host: '::1', port: 443 });
    expect(serverTarget('http://k:8080/')).toEqual({ host: 'k', port: 8080 });
    expect(() => serverTarget('ftp://k')).toThrow(/not http/);
  });
});

describe('what the kubelet role writes', () => {
  it('gives a pod its API token unless automount is off, and each projected serviceAccountToken its file (never outside the pod dir)', () => {
    const spec = (extra: Record<string, unknown>) => ({ spec: { containers: [], ...extra } });
    expect(tokenVolumes(spec({}), '/p')).toEqual([{ file: '/p/serviceaccount/token', expirationSeconds: 3607 }]);
    const projected = (path: string, audience?: string) => ({ name: 'tok', projected: { sources: [{ serviceAccountToken: { path, ...(audience ? { audience } : {}) } }] } });
    expect(tokenVolumes(spec({ automountServiceAccountToken: false, volumes: [projected('token', 'nodemesh'), projected('../../etc/x'), projected('/abs')] }), '/p')).toEqual([
      { file: '/p/volumes/tok/token', audience: 'nodemesh', expirationSeconds: 3600 },
    ]);
  });

  it('reports a running pod Running and Ready with its IP, a failed one Pending with the reason, and keeps transition times', () => {
    const pod = { ip: '10.244.1.5', containerId: 'abc' } as SimPodInfo;
    const raw = { spec: { containers: [{ name: 'c', image: 'x' }] }, status: { phase: 'Pending' } };
    const running = podStatus(raw, { kind: 'running', pod }, '10.240.0.2');
    expect(running).toMatchObject({ phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }], hostIP: '10.240.0.2', containerStatuses: [{ name: 'c', ready: true }] });
    expect(running.conditions).toContainEqual(expect.objectContaining({ type: 'Ready', status: 'True' }));
    const failed = podStatus(raw, { kind: 'failed', reason: 'SimulatorError', message: 'no command' }, null);
    expect(failed).toMatchObject({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: 'False', reason: 'SimulatorError', message: 'no command' }] });
    expect(statusSignature(failed)).not.toBe(statusSignature(running));
    // Written once, the same outcome asks for no second write, whatever the clock says.
    const again = podStatus({ ...raw, status: running }, { kind: 'running', pod }, '10.240.0.2');
    expect(statusSignature(again)).toBe(statusSignature(running));
    expect((again.conditions as { lastTransitionTime: string }[])[0]!.lastTransitionTime).toBe((running.conditions as { lastTransitionTime: string }[])[0]!.lastTransitionTime);
  });
});
