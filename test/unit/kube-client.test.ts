// The Kubernetes API client's connections, against the stand-in kube-apiserver (test/helpers/
// kube-apiserver.ts stands in for kube-apiserver, which cannot run here): sequential requests
// share one keep-alive TLS connection instead of a handshake each, as the client library's own
// per-request agents would make them do.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KubeApi, loadKubeConfig } from '../../src/kube/index.js';
import { startKubeStandIn, type KubeStandIn } from '../helpers/kube-apiserver.js';

let api: KubeStandIn;
beforeAll(async () => {
  api = await startKubeStandIn();
});
afterAll(async () => {
  await api?.close();
});

it('reuses one connection for sequential requests, and a second client opens its own', async () => {
  const a = new KubeApi(loadKubeConfig({ kubeconfig: api.kubeconfigPath }));
  const before = api.connectionsAccepted();
  for (let i = 0; i < 10; i++) {
    const ns = (await a.get('/api/v1/namespaces/default')) as { metadata: { name: string } };
    expect(ns.metadata.name).toBe('default');
  }
  expect(api.connectionsAccepted() - before).toBe(1);
  // The counter counts: another client is another connection.
  const b = new KubeApi(loadKubeConfig({ kubeconfig: api.kubeconfigPath }));
  await b.get('/api/v1/namespaces/default');
  expect(api.connectionsAccepted() - before).toBe(2);
  // An error answer leaves the connection usable.
  await expect(a.get('/api/v1/namespaces/nope')).rejects.toMatchObject({ statusCode: 404 });
  await a.get('/api/v1/namespaces/default');
  expect(api.connectionsAccepted() - before).toBe(2);
  a.close();
  b.close();
});
