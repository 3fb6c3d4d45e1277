import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, NodemeshError, isNodemeshError } from '../../src/errors.js';

describe('error registry', () => {
  it('documents every code in docs/errors.md and documents no unknown code', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const documented = new Set([...doc.matchAll(/^\| `(NM_ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(ErrorCodes).sort());
  });

  it('prefixes the message with where the problem is and keeps the code', () => {
    const e = new NodemeshError('NM_ERR_CONFIG_INVALID', 'spec is required', { where: 'pods.yaml:3' });
    expect(e.code).toBe('NM_ERR_CONFIG_INVALID');
    expect(e.message).toBe('pods.yaml:3: spec is required');
    expect(isNodemeshError(e, 'NM_ERR_CONFIG_INVALID')).toBe(true);
    expect(isNodemeshError(e, 'NM_ERR_USAGE')).toBe(false);
  });
});
