import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CaRefusal,
  CniError,
  ConfigError,
  ErrorCodes,
  errorFor,
  ErrorFamilies,
  familyOf,
  HboneStatusError,
  isNodemeshError,
  NodemeshError,
  UsageError,
  type ErrorCode,
} from '../../src/errors.js';

/** docs/errors.md as (family heading → code → meaning). */
function documented(): Map<string, { family: string; meaning: string }> {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const out = new Map<string, { family: string; meaning: string }>();
  let family = '';
  for (const line of doc.split('\n')) {
    const h = /^## (\w+)$/.exec(line);
    if (h) family = h[1]!;
    const row = /^\| `(NM_ERR_[A-Z0-9_]+)` \| (.*?) \| (.*) \|$/.exec(line);
    if (row) out.set(row[1]!, { family, meaning: row[2]! });
  }
  return out;
}

function srcFiles(dir: string, out: string[] = []): string[] {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) srcFiles(p, out);
    else if (f.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('error registry', () => {
  it('documents every code under its family with the same meaning, and no unknown code', () => {
    const doc = documented();
    expect([...doc.keys()].sort()).toEqual(Object.keys(ErrorCodes).sort());
    for (const [code, description] of Object.entries(ErrorCodes)) {
      expect({ code, family: doc.get(code)?.family, meaning: doc.get(code)?.meaning }).toEqual({ code, family: familyOf[code as ErrorCode], meaning: description });
    }
  });

  it('gives every code exactly one family', () => {
    const all = Object.values(ErrorFamilies).flatMap((codes) => Object.keys(codes));
    expect(new Set(all).size).toBe(all.length);
  });

  it('prefixes the message with where the problem is and keeps the code', () => {
    const e = new ConfigError('NM_ERR_CONFIG_INVALID', 'spec is required', { where: 'pods.yaml:3' });
    expect(e.code).toBe('NM_ERR_CONFIG_INVALID');
    expect(e.name).toBe('ConfigError');
    expect(e.message).toBe('pods.yaml:3: spec is required');
    expect(isNodemeshError(e, 'NM_ERR_CONFIG_INVALID')).toBe(true);
    expect(isNodemeshError(e, 'NM_ERR_USAGE')).toBe(false);
    expect(isNodemeshError(new Error('plain'))).toBe(false);
  });

  it('refuses a code from another family', () => {
    expect(() => new ConfigError('NM_ERR_USAGE' as never, 'x')).toThrow(/does not belong to ConfigError/);
    expect(new UsageError('x').code).toBe('NM_ERR_USAGE');
  });

  it('builds the right family from a code chosen at run time', () => {
    for (const code of Object.keys(ErrorCodes) as ErrorCode[]) {
      const e = errorFor(code, 'm');
      expect(e).toBeInstanceOf(NodemeshError);
      expect([e.code, e.name]).toEqual([code, familyOf[code]]);
    }
  });

  it('keeps the fields each subclass carries', () => {
    expect(new CniError('bad', { cniCode: 7, cniDetails: 'd' })).toMatchObject({ code: 'NM_ERR_CNI', cniCode: 7, cniDetails: 'd' });
    expect(new CniError('bad').cniCode).toBe(100);
    expect(new CaRefusal('no', 7)).toMatchObject({ code: 'NM_ERR_CA', grpcCode: 7, name: 'IdentityError' });
    expect(new HboneStatusError(401, 'denied', { policy: 'ns/p' })).toMatchObject({ code: 'NM_ERR_HBONE_STATUS', status: 401, policy: 'ns/p' });
  });

  it('has no error class outside src/errors.ts', () => {
    const root = new URL('../../src', import.meta.url).pathname;
    const strays = srcFiles(root)
      .filter((f) => !f.endsWith('/errors.ts') || f.includes('/hbone/'))
      .flatMap((f) => readFileSync(f, 'utf8').split('\n').map((l, i) => ({ where: `${f.slice(root.length - 3)}:${i + 1}`, l })))
      .filter(({ l }) => /class \w+ extends (\w*Error|NodemeshError)\b/.test(l))
      .map(({ where }) => where);
    expect(strays).toEqual([]);
  });
});
