import { describe, expect, it } from 'vitest';
import { Balancer, newCursors } from '../../src/proxy/index.js';

describe('service load balancing', () => {
  it('goes round the endpoints node-wide when the proxies share their cursors, however connections fall on them', () => {
    const eps = ['a', 'b'];
    // Five connections land on one proxy and three on the other (the kernel's hash decides).
    const spread = (x: Balancer, y: Balancer): Record<string, number> => {
      const by: Record<string, number> = {};
      for (const b of [x, y, x, y, x, y, x, x]) {
        const k = eps[b.pick('svc', eps)!.index]!;
        by[k] = (by[k] ?? 0) + 1;
      }
      return by;
    };
    const shared = newCursors();
    expect(spread(new Balancer('round-robin', shared), new Balancer('round-robin', shared))).toEqual({ a: 4, b: 4 });
    // Each with its own cursor: each goes round on its own, and the node does not.
    expect(spread(new Balancer('round-robin'), new Balancer('round-robin'))).toEqual({ a: 5, b: 3 });
    // Another service keeps its own turn in the shared table.
    const b = new Balancer('round-robin', shared);
    expect(['x', 'y', 'z'].map(() => b.pick('other', ['x', 'y', 'z'])!.index)).toEqual([0, 1, 2]);
  });

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
