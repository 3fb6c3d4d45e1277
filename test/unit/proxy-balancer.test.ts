import { describe, expect, it } from 'vitest';
import { Balancer } from '../../src/proxy/index.js';

describe('service load balancing', () => {
  it('round robin visits every endpoint in turn, per service', () => {
    const b = new Balancer('round-robin');
    const eps = ['a', 'b', 'c'];
    expect([0, 1, 2, 3].map(() => eps[b.pick('svc', eps)!.index])).toEqual(['a', 'b', 'c', 'a']);
    expect(eps[b.pick('other', eps)!.index]).toBe('a');
  });

  it('least connections prefers the endpoint with fewest open connections, and release counts down', () => {
    const b = new Balancer('least-conn');
    const eps = ['a', 'b'];
    const first = b.pick('svc', eps)!;
    const second = b.pick('svc', eps)!;
    expect(new Set([first.index, second.index])).toEqual(new Set([0, 1]));
    second.release();
    // 'a' or 'b' holds one connection, the other none: the idle one wins.
    expect(b.pick('svc', eps)!.index).toBe(second.index);
    second.release(); // double release is harmless
    expect(b.active(eps[first.index]!)).toBe(1);
  });

  it('has nothing to pick from an empty endpoint list', () => {
    expect(new Balancer().pick('svc', [])).toBeUndefined();
  });
});
