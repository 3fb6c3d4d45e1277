// Fakes the control plane's end of delta ADS for the xDS fuzz target: a real gRPC server over
// real TLS (a test-CA certificate for the control plane's DNS name) that lets a test write any
// bytes as a DeltaDiscoveryResponse, which the real XdsServer never would, and read each
// request the real XdsClient sends back (subscriptions, ACKs, NACKs).
import * as grpc from '@grpc/grpc-js';
import { adsService, codecs, CONTROL_PLANE_DNS_NAME, type PbDeltaRequest } from '../../src/xds/index.js';
import { createTestCa } from './certs.js';

export interface AdsPeer {
  address: string;
  rootCertPem: string;
  /** Streams the client has opened so far. */
  readonly streams: number;
  /** Whether a stream is open now. */
  readonly open: boolean;
  /** Writes one message on the open stream, verbatim; false if none is open. */
  sendRaw(bytes: Uint8Array): boolean;
  /**
   * The next request on the open stream (queued ones first), or 'closed' when that stream
   * ends first, or 'timeout'.
   */
  next(ms: number): Promise<PbDeltaRequest | 'closed' | 'timeout'>;
  /** Resolves once a stream is open (true) or after `ms` (false). */
  waitOpen(ms: number): Promise<boolean>;
  /** Drops the requests queued so far (answers nobody waited for). */
  drain(): number;
  close(): Promise<void>;
}

type RawCall = grpc.ServerDuplexStream<PbDeltaRequest, Buffer>;

export async function startAdsPeer(): Promise<AdsPeer> {
  const ca = await createTestCa({ name: 'ads peer root' });
  const cert = await ca.issue({ dns: [CONTROL_PLANE_DNS_NAME] });
  const m = adsService.DeltaAggregatedResources;
  // The same method, with the response written as raw bytes.
  const service = { DeltaAggregatedResources: { ...m, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } } satisfies grpc.ServiceDefinition;

  let call: RawCall | undefined;
  let streams = 0;
  let queue: PbDeltaRequest[] = [];
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };

  const server = new grpc.Server();
  server.addService(service, {
    DeltaAggregatedResources: (c: RawCall) => {
      // One stream at a time, as a client holds one: the newest replaces the old.
      call?.end();
      call = c;
      streams++;
      queue = [];
      const gone = () => {
        if (call === c) {
          call = undefined;
          wake();
        }
      };
      c.on('data', (r: PbDeltaRequest) => {
        if (call !== c) return;
        queue.push(r);
        wake();
      });
      c.on('error', gone);
      c.on('cancelled', gone);
      c.on('end', () => {
        gone();
        c.end();
      });
      c.on('close', gone);
      wake();
    },
  });
  const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(cert.certChainPem), private_key: Buffer.from(cert.keyPem) }], false);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? rej(e) : res(p))));

  const wait = (ms: number, done: () => boolean): Promise<boolean> =>
    new Promise((resolve) => {
      if (done()) return resolve(true);
      const w = () => {
        if (!done()) return;
        clearTimeout(t);
        waiters.delete(w);
        resolve(true);
      };
      const t = setTimeout(() => {
        waiters.delete(w);
        resolve(false);
      }, ms);
      waiters.add(w);
    });

  return {
    address: `127.0.0.1:${port}`,
    rootCertPem: ca.rootPem,
    get streams() {
      return streams;
    },
    get open() {
      return call !== undefined;
    },
    sendRaw(bytes) {
      if (!call) return false;
      call.write(Buffer.from(bytes));
      return true;
    },
    async next(ms) {
      const c = call;
      if (!c) return 'closed';
      const ok = await wait(ms, () => queue.length > 0 || call !== c);
      if (queue.length > 0 && call === c) return queue.shift()!;
      return ok ? 'closed' : 'timeout';
    },
    waitOpen: (ms) => wait(ms, () => call !== undefined),
    drain: () => queue.splice(0).length,
    close: () =>
      new Promise<void>((resolve) => {
        call?.end();
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000).unref();
      }),
  };
}

/** Encodes a response object the way the real server does. */
export const encodeResponse = codecs.deltaResponse.encode;
