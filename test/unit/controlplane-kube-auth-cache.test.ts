// The TokenReview cache of the Kubernetes node authenticator (src/controlplane/kube-auth.ts),
// against the stand-in API server with a test clock: a positive review is reused until the
// cache period ends or the token's exp passes, whichever is first; the cache holds a bounded
// number of tokens; calls at once share one review; refusals are never cached.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { KubeNodeAuthenticator } from '../../src/controlplane/kube-auth.js';
import { KubeApi, loadKubeConfig } from '../../src/kube/index.js';
import { log } from '../../src/log.js';
import { startKubeStandIn, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { agentPod, agentToken, projectedToken } from '../helpers/kube-agent.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function md(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${token}`);
  return m;
}

async function setup(opts: { cacheMs?: number; cacheMax?: number } = {}): Promise<{ api: KubeStandIn; auth: KubeNodeAuthenticator; clock: { t: number }; reviews: () => number }> {
  const api = await startKubeStandIn({ seed: true });
  cleanups.push(() => api.close());
  const clock = { t: Date.now() };
  const auth = new KubeNodeAuthenticator({ api: new KubeApi(loadKubeConfig({ kubeconfig: api.kubeconfigPath })), adminToken: 'admin-token-not-a-jwt', log, now: () => clock.t, ...opts });
  const reviews = () => api.requests.filter((r) => r.method === 'POST' && r.path.includes('/tokenreviews')).length;
  return { api, auth, clock, reviews };
}

describe('the TokenReview cache', () => {
  it('reuses a positive review for the cache period, then asks again', async () => {
    const { api, auth, clock, reviews } = await setup({ cacheMs: 120_000 });
    const token = await agentToken(api, 'node-a', { expirationSeconds: 3600 });
    await expect(auth.authenticate(md(token))).resolves.toMatchObject({ node: 'node-a', agentPod: 'nodemesh-system/nodemesh-agent-node-a', podCidrs: [{ prefixLen: 8 }] });
    clock.t += 100_000;
    await auth.authenticate(md(token));
    expect(reviews()).toBe(1);
    clock.t += 30_000; // 130 s after the review
    await auth.authenticate(md(token));
    expect(reviews()).toBe(2);
  });

  it('never keeps a review past the token\'s exp, even inside the cache period', async () => {
    const { api, auth, clock, reviews } = await setup({ cacheMs: 120_000 });
    // exp in 30 s (the API still takes it a while after: go-jose's 60 s leeway).
    const token = await agentToken(api, 'node-a', { expirationSeconds: 30 });
    await auth.authenticate(md(token));
    clock.t += 20_000;
    await auth.authenticate(md(token));
    expect(reviews()).toBe(1);
    clock.t += 11_000; // past exp, well inside the 120 s period
    await auth.authenticate(md(token));
    expect(reviews()).toBe(2);
  });

  it('holds a bounded number of tokens, forgetting the oldest first', async () => {
    const { api, auth, reviews } = await setup({ cacheMax: 2 });
    const pod = agentPod(api, 'node-a');
    const tokens = [await projectedToken(api, pod), await projectedToken(api, pod), await projectedToken(api, pod)];
    for (const t of tokens) await auth.authenticate(md(t));
    expect(auth.cached).toBe(2);
    expect(reviews()).toBe(3);
    await auth.authenticate(md(tokens[2]!)); // still cached
    expect(reviews()).toBe(3);
    await auth.authenticate(md(tokens[0]!)); // forgotten: asked again
    expect(reviews()).toBe(4);
    expect(auth.cached).toBe(2);
  });

  it('sends one review for calls made at once, and caches no refusal', async () => {
    const { api, auth, reviews } = await setup();
    const token = await agentToken(api, 'node-a');
    const callers = await Promise.all([auth.authenticate(md(token)), auth.authenticate(md(token)), auth.authenticate(md(token))]);
    expect(callers.map((c) => c.node)).toEqual(['node-a', 'node-a', 'node-a']);
    expect(reviews()).toBe(1);
    const wrong = await projectedToken(api, 'nodemesh-agent-node-a', { audiences: [] });
    await expect(auth.authenticate(md(wrong))).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(auth.authenticate(md(wrong))).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(reviews()).toBe(3);
    expect(auth.cached).toBe(1);
  });

  it('gives a node without a readable pod CIDR none (its reports are then believed only for the API\'s pod IPs)', async () => {
    const { api, auth } = await setup();
    const withCidr = await agentToken(api, 'node-a', { podCidr: '10.1.0.0/24' });
    const without = await agentToken(api, 'node-b', { podCidr: null });
    await expect(auth.authenticate(md(withCidr))).resolves.toMatchObject({ node: 'node-a', podCidrs: [{ prefixLen: 24 }] });
    await expect(auth.authenticate(md(without))).resolves.toMatchObject({ node: 'node-b', podCidrs: [] });
  });
});
