// The HBONE request headers: `:authority` as ip:port, RFC 7239 forwarded, W3C traceparent.
import { describe, expect, it } from 'vitest';
import { formatForwarded, isValidTraceparent, newTraceparent, parseAuthority, parseForwardedFor } from '../../src/proxy/hbone/headers.js';

describe('HBONE headers', () => {
  it('accepts an IPv4 or bracketed IPv6 address with a port as :authority', () => {
    expect(parseAuthority('10.0.0.5:8080')).toEqual({ ip: '10.0.0.5', port: 8080 });
    expect(parseAuthority('[fd00::5]:443')).toEqual({ ip: 'fd00::5', port: 443 });
  });

  it('rejects host names, missing or out-of-range ports and malformed addresses as :authority', () => {
    for (const bad of [undefined, '', '10.0.0.5', 'app.default.svc:80', '10.0.0.5:0', '10.0.0.5:65536', '10.0.0.5:8o', '10.0.0.256:80', 'fd00::5:80', '[fd00::5]80', '[10.0.0.5]:80', ' 10.0.0.5:80']) {
      expect(parseAuthority(bad), String(bad)).toBeUndefined();
    }
  });

  it('reads the client IP from forwarded, quoted or not, with or without a port', () => {
    expect(parseForwardedFor('for="10.1.0.7"')).toBe('10.1.0.7');
    expect(parseForwardedFor('for=10.1.0.7')).toBe('10.1.0.7');
    expect(parseForwardedFor('For="10.1.0.7:4711";proto=https')).toBe('10.1.0.7');
    expect(parseForwardedFor('proto=https; for="[fd00::7]:4711"')).toBe('fd00::7');
    expect(parseForwardedFor('for=10.1.0.7, for=10.9.9.9')).toBe('10.1.0.7');
  });

  it('ignores forwarded values that are not IP addresses', () => {
    for (const bad of [undefined, '', 'for=unknown', 'for="_hidden"', 'by=10.0.0.1', 'for="10.1.0.7', 'for=host.example']) {
      expect(parseForwardedFor(bad), String(bad)).toBeUndefined();
    }
    expect(formatForwarded('10.1.0.7')).toBe('for="10.1.0.7"');
  });

  it('validates traceparent per W3C Trace Context and generates valid ones', () => {
    expect(isValidTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toBe(true);
    expect(isValidTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra')).toBe(true);
    for (const bad of [
      undefined,
      '',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    ]) {
      expect(isValidTraceparent(bad), String(bad)).toBe(false);
    }
    const a = newTraceparent();
    expect(isValidTraceparent(a)).toBe(true);
    expect(newTraceparent()).not.toBe(a);
  });
});
