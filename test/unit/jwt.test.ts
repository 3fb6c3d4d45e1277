// RequestAuthentication's JWT check at the proxy (rbac/jwt.ts): real keys and tokens made with
// jose, verified against inline JWKS the way Envoy's jwt_authn answers Istio's JwtRules.
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { JwtVerifier, type TokenSource } from '../../src/rbac/jwt.js';
import type { JwtRule } from '../../src/state/index.js';

const ISS = 'https://issuer.example';
const NOW = new Date('2030-01-01T00:00:00Z');
const secs = (d: Date) => Math.floor(d.getTime() / 1000);

type Key = CryptoKey;
let key: Key;
let otherKey: Key;
let jwk: JWK;
let otherJwk: JWK;

beforeAll(async () => {
  const a = await generateKeyPair('ES256');
  const b = await generateKeyPair('ES256');
  key = a.privateKey;
  otherKey = b.privateKey;
  jwk = { ...(await exportJWK(a.publicKey)), kid: 'k1', alg: 'ES256' };
  otherJwk = { ...(await exportJWK(b.publicKey)), kid: 'k2', alg: 'ES256' };
});

function rule(over: Partial<JwtRule> = {}): JwtRule {
  return { issuer: ISS, audiences: [], jwks: JSON.stringify({ keys: [jwk] }), fromHeaders: [], fromParams: [], forwardOriginalToken: false, ...over };
}

interface TokenOpts {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: Date;
  nbf?: Date;
  kid?: string;
  signWith?: Key;
  claims?: Record<string, unknown>;
}

async function token(o: TokenOpts = {}): Promise<string> {
  const t = new SignJWT({ ...o.claims })
    .setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'k1' })
    .setIssuer(o.iss ?? ISS)
    .setSubject(o.sub ?? 'alice')
    .setIssuedAt(secs(NOW) - 10)
    .setExpirationTime(secs(o.exp ?? new Date(NOW.getTime() + 3600_000)));
  if (o.aud) t.setAudience(o.aud);
  if (o.nbf) t.setNotBefore(secs(o.nbf));
  return t.sign(o.signWith ?? key);
}

function req(headers: Record<string, string> = {}, path = '/'): TokenSource {
  const h = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { header: (n) => h[n], path };
}

const bearer = (t: string) => req({ authorization: `Bearer ${t}` });
const verifier = () => new JwtVerifier({ now: () => NOW });

describe('JwtVerifier', () => {
  it('accepts a valid token: principal iss/sub, its claims, and the header to strip', async () => {
    const r = await verifier().verify([rule()], bearer(await token({ claims: { groups: ['a', 'b'] } })));
    expect(r).toMatchObject({ principal: `${ISS}/alice`, claims: { iss: ISS, sub: 'alice', groups: ['a', 'b'] }, strip: ['authorization'] });
  });

  it('leaves the token on the request with forwardOriginalToken', async () => {
    const r = await verifier().verify([rule({ forwardOriginalToken: true })], bearer(await token()));
    expect(r).toMatchObject({ principal: `${ISS}/alice` });
    expect(r).not.toHaveProperty('strip');
  });

  it('gives no principal and no error without a token', async () => {
    expect(await verifier().verify([rule()], req())).toEqual({});
    // A Basic credential is not a bearer token: also nothing to verify.
    expect(await verifier().verify([rule()], req({ authorization: 'Basic dXNlcjpwdw==' }))).toEqual({});
  });

  it('refuses an expired token, and accepts it within the 60 s clock skew', async () => {
    const v = verifier();
    expect(await v.verify([rule()], bearer(await token({ exp: new Date(NOW.getTime() - 3600_000) })))).toEqual({ error: 'Jwt is expired' });
    expect(await v.verify([rule()], bearer(await token({ exp: new Date(NOW.getTime() - 30_000) })))).toMatchObject({ principal: `${ISS}/alice` });
  });

  it('refuses a token not yet valid (nbf)', async () => {
    expect(await verifier().verify([rule()], bearer(await token({ nbf: new Date(NOW.getTime() + 3600_000) })))).toEqual({ error: 'Jwt not yet valid' });
  });

  it('refuses a token of an issuer no rule accepts', async () => {
    const r = await verifier().verify([rule()], bearer(await token({ iss: 'https://other.example' })));
    expect(r).toEqual({ error: 'Jwt issuer is not configured' });
    // The same token is fine once a rule names its issuer.
    expect(await verifier().verify([rule(), rule({ issuer: 'https://other.example' })], bearer(await token({ iss: 'https://other.example' })))).toMatchObject({ principal: 'https://other.example/alice' });
  });

  it('checks audiences when the rule lists some, any of them', async () => {
    const r = rule({ audiences: ['httpbin', 'web'] });
    expect(await verifier().verify([r], bearer(await token({ aud: 'other' })))).toEqual({ error: 'Audiences in Jwt are not allowed' });
    expect(await verifier().verify([r], bearer(await token()))).toEqual({ error: 'Audiences in Jwt are not allowed' });
    expect(await verifier().verify([r], bearer(await token({ aud: ['x', 'web'] })))).toMatchObject({ principal: `${ISS}/alice` });
    expect(await verifier().verify([rule()], bearer(await token({ aud: 'anything' })))).toMatchObject({ principal: `${ISS}/alice` });
  });

  it('refuses a bad signature and a key the JWKS does not have', async () => {
    const forged = await token({ signWith: otherKey }); // claims kid k1, signed by k2's key
    expect(await verifier().verify([rule()], bearer(forged))).toEqual({ error: 'Jwt verification fails' });
    expect(await verifier().verify([rule()], bearer(await token({ kid: 'k2', signWith: otherKey })))).toEqual({ error: "Jwks doesn't have key to match kid or alg from Jwt" });
    // With both keys in the JWKS the k2 token verifies.
    const both = rule({ jwks: JSON.stringify({ keys: [jwk, otherJwk] }) });
    expect(await verifier().verify([both], bearer(await token({ kid: 'k2', signWith: otherKey })))).toMatchObject({ principal: `${ISS}/alice` });
  });

  it('tries each key when several fit a token without kid', async () => {
    const noKid = [{ ...jwk, kid: undefined }, { ...otherJwk, kid: undefined }];
    const t = await new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setIssuer(ISS).setSubject('bob').setExpirationTime(secs(NOW) + 60).sign(otherKey);
    expect(await verifier().verify([rule({ jwks: JSON.stringify({ keys: noKid }) })], bearer(t))).toMatchObject({ principal: `${ISS}/bob` });
    expect(await verifier().verify([rule({ jwks: JSON.stringify({ keys: [noKid[0]] }) })], bearer(t))).toEqual({ error: 'Jwt verification fails' });
  });

  it('refuses garbage without throwing', async () => {
    const v = verifier();
    const good = await token();
    const [h, p] = good.split('.');
    for (const t of ['garbage', 'a.b.c', `${h}.${p}.`, `${h}.!!!.sig`, '..', 'e30.e30.e30', `${h}.${Buffer.from('[1,2]').toString('base64url')}.x`]) {
      const r = await v.verify([rule()], bearer(t));
      expect('error' in r, t).toBe(true);
    }
    // alg none never verifies.
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: ISS, sub: 'x' })).toString('base64url')}.`;
    expect(await v.verify([rule()], bearer(none))).toHaveProperty('error');
    // A broken JWKS is an error for the token, not a throw.
    expect(await v.verify([rule({ jwks: '{not json' })], bearer(good))).toEqual({ error: 'Jwks is invalid' });
    expect(await v.verify([rule({ jwks: '{"keys": 1}' })], bearer(good))).toEqual({ error: 'Jwks is invalid' });
    // A header accessor that throws is a refusal too.
    const throwing: TokenSource = { header: () => { throw new Error('boom'); }, path: '/' };
    expect(await v.verify([rule()], throwing)).toEqual({ error: 'Jwt verification fails' });
  });

  it('reads fromHeaders with their prefix, and only there', async () => {
    const t = await token();
    const r = rule({ fromHeaders: [{ name: 'x-jwt-assertion', prefix: 'Token ' }] });
    expect(await verifier().verify([r], req({ 'x-jwt-assertion': `Token ${t}` }))).toMatchObject({ principal: `${ISS}/alice`, strip: ['x-jwt-assertion'] });
    expect(await verifier().verify([r], req({ 'x-jwt-assertion': t }))).toEqual({}); // prefix missing: no token
    expect(await verifier().verify([r], bearer(t))).toEqual({}); // the default place is not read
    const bare = rule({ fromHeaders: [{ name: 'X-Token', prefix: '' }] });
    expect(await verifier().verify([bare], req({ 'x-token': t }))).toMatchObject({ principal: `${ISS}/alice` });
  });

  it('reads fromParams from the query string', async () => {
    const t = await token();
    const r = rule({ fromParams: ['my_token'] });
    expect(await verifier().verify([r], req({}, `/api?x=1&my_token=${t}`))).toMatchObject({ principal: `${ISS}/alice` });
    expect(await verifier().verify([r], req({}, `/api?other=${t}`))).toEqual({});
    expect(await verifier().verify([r], req({}, '/api?my_token=bad'))).toEqual({ error: 'Jwt is not in the form of Header.Payload.Signature' });
  });

  it('defaults to the bearer header (any case of the scheme) and ?access_token=', async () => {
    const t = await token();
    expect(await verifier().verify([rule()], req({ authorization: `bearer ${t}` }))).toMatchObject({ principal: `${ISS}/alice` });
    const r = await verifier().verify([rule()], req({}, `/?access_token=${t}`));
    expect(r).toMatchObject({ principal: `${ISS}/alice` });
    expect(r).not.toHaveProperty('strip');
  });

  it('accepts a request when one of its tokens verifies', async () => {
    const r = rule({ fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }, { name: 'x-second', prefix: '' }] });
    const good = await token({ sub: 'carol' });
    expect(await verifier().verify([r], req({ authorization: 'Bearer junk', 'x-second': good }))).toMatchObject({ principal: `${ISS}/carol` });
    expect(await verifier().verify([r], req({ authorization: 'Bearer junk' }))).toHaveProperty('error');
  });

  it('keeps claims without a subject but gives no principal', async () => {
    const t = await new SignJWT({ scope: 'read' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuer(ISS).setExpirationTime(secs(NOW) + 60).sign(key);
    const r = await verifier().verify([rule()], bearer(t));
    expect(r).toMatchObject({ claims: { scope: 'read' } });
    expect(r).not.toHaveProperty('principal');
  });
});
