// XdsServer under HTTP/2 flow control: a client that stops reading makes the server stop
// writing to it (write() said its buffer is full) and fold every later push into one queued
// response per type, so the server's memory for that stream stays bounded; once the client
// reads again it gets the latest state. A client that keeps up gets every push.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { adsService, TYPE_AUTHORIZATION, XdsServer, type PbDeltaRequest, type PbDeltaResponse } from '../../src/xds/index.js';
import { resourceVersion } from '../../src/xds/server.js';

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

async function start(): Promise<{ xds: XdsServer; call: grpc.ClientDuplexStream<PbDeltaRequest, PbDeltaResponse>; received: PbDeltaResponse[] }> {
  const xds = new XdsServer({ typeUrls: [TYPE_AUTHORIZATION] });
  const server = new grpc.Server();
  server.addService(adsService, { DeltaAggregatedResources: xds.handler });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  cleanup.push(() => server.forceShutdown());
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  cleanup.push(() => client.close());
  const m = adsService.DeltaAggregatedResources;
  const call = client.makeBidiStreamRequest<PbDeltaRequest, PbDeltaResponse>(m.path, m.requestSerialize, m.responseDeserialize, new grpc.Metadata());
  call.on('error', () => {}); // cancelled at clean-up
  cleanup.push(() => call.cancel());
  const received: PbDeltaResponse[] = [];
  call.on('data', (r: PbDeltaResponse) => received.push(r));
  call.write({ typeUrl: TYPE_AUTHORIZATION });
  await until(() => received.length === 1, 'the first response');
  return { xds, call, received };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Version i of one 64 KiB policy: distinct bytes per version. */
function version(i: number): Buffer {
  const b = Buffer.alloc(64 * 1024, i % 251);
  b.writeUInt32BE(i, 0);
  return b;
}

const versionOf = (r: PbDeltaResponse): string | undefined => r.resources?.[0]?.version;

describe('XdsServer flow control', () => {
  it('stops writing to a client that does not read, queues one response per type, and sends it the latest state once it reads', async () => {
    const { xds, call, received } = await start();
    let writes = 0;
    xds.on('push', () => writes++);
    call.pause(); // stops reading: the HTTP/2 window fills, then the server's stream buffer

    // Push in rounds until the writes stop: the transport (the HTTP/2 windows, the client's
    // own buffer) takes a few responses, then the stream's buffer fills and stays full.
    let pushes = 0;
    let unchanged = 0;
    let last = -1;
    for (let round = 0; round < 40 && unchanged < 3; round++) {
      for (let i = 0; i < 100; i++) xds.setResources(TYPE_AUTHORIZATION, [{ name: 'ns/p', value: version(++pushes) }]);
      await new Promise((r) => setTimeout(r, 50));
      unchanged = writes === last ? unchanged + 1 : 0;
      last = writes;
    }
    // Writes stopped although pushes went on: three rounds of 100 pushes, not one more write.
    expect(unchanged).toBe(3);
    const [st] = xds.streams();
    expect(st!.backpressure.blocked).toBe(true);
    expect(st!.backpressure.queued).toEqual([TYPE_AUTHORIZATION]); // one response owed, not hundreds
    expect(st!.backpressure.coalesced).toBe(pushes - writes - 1);
    expect(st!.backpressure.buffered).toBeLessThanOrEqual(writes);

    // The latest state only, once the client reads.
    const PUSHES = pushes + 1;
    xds.setResources(TYPE_AUTHORIZATION, [{ name: 'ns/p', value: version(PUSHES) }]);
    expect(writes).toBe(last);
    const latest = resourceVersion(version(PUSHES));
    const before = received.length;
    call.resume();
    await until(() => received.length > before && versionOf(received.at(-1)!) === latest, 'the latest version');
    // Everything written arrived, and the last response carries the latest bytes.
    await until(() => !xds.streams()[0]!.backpressure.blocked, 'the stream to drain');
    expect(received.length - 1).toBe(writes);
    expect(Buffer.from(received.at(-1)!.resources![0]!.resource!.value!).equals(version(PUSHES))).toBe(true);
    expect(xds.streams()[0]!.backpressure.queued).toEqual([]);
  });

  it('gives a client that keeps up every push, in order', async () => {
    const { xds, received } = await start();
    const sent: string[] = [];
    for (let i = 1; i <= 50; i++) {
      xds.setResources(TYPE_AUTHORIZATION, [{ name: 'ns/p', value: version(i) }]);
      sent.push(resourceVersion(version(i)));
      await until(() => received.length === i + 1, `push ${i}`);
    }
    expect(received.slice(1).map(versionOf)).toEqual(sent);
    const [st] = xds.streams();
    expect(st!.backpressure).toEqual({ blocked: false, queued: [], buffered: 0, coalesced: 0 });
  });
});
