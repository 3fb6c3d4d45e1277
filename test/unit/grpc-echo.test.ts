// The gRPC echo of the L7 protocol e2e (test/helpers/grpc-echo.ts) on loopback: the client's
// three calls against the server, with the status the request asks for and the whole stream.
import { afterEach, describe, expect, it } from 'vitest';
import { runGrpcCalls, startGrpcEcho, type GrpcEcho } from '../helpers/grpc-echo.js';

let server: GrpcEcho | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('gRPC echo helper', () => {
  it('unary OK, unary failing with the asked status, and a stream of every message', async () => {
    server = await startGrpcEcho({ port: 0, host: '127.0.0.1', pod: 'g1' });
    const r = await runGrpcCalls(`127.0.0.1:${server.port}`, { message: 'hi', failWith: 5, count: 4 });
    expect(r.ok).toEqual({ code: 0, message: 'hi', pod: 'g1' });
    expect(r.failed).toEqual({ code: 5, details: 'asked to fail with 5: hi' });
    expect(r.stream).toEqual({ code: 0, messages: ['n0', 'n1', 'n2', 'n3'], pods: ['g1'] });
    // Another code comes back as asked: the 5 above is the server's, not a default.
    expect((await runGrpcCalls(`127.0.0.1:${server.port}`, { message: 'x', failWith: 7, count: 0 })).failed.code).toBe(7);
  });

  it('a dead target reports UNAVAILABLE for every call', async () => {
    server = await startGrpcEcho({ port: 0, host: '127.0.0.1', pod: 'g1' });
    const port = server.port;
    await server.close();
    server = undefined;
    const r = await runGrpcCalls(`127.0.0.1:${port}`, { message: 'hi', failWith: 5, count: 2, timeoutMs: 3000 });
    expect([r.ok.code, r.failed.code, r.stream.code]).toEqual([14, 14, 14]);
  });
});
