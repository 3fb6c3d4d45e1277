// A gRPC echo (test/fixtures/grpc/echo.proto, @grpc/grpc-js) for the L7 tests: the server's unary
// Echo echoes or fails with the status the request names, Count streams replies; the client runs
// one of each over one channel and reports the codes and messages it got.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/** The proto, from the sources (test/helpers/) or from the build (dist-test/test/helpers/). */
function protoPath(): string {
  for (const rel of ['../fixtures/grpc/echo.proto', '../../../test/fixtures/grpc/echo.proto']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('test/fixtures/grpc/echo.proto not found next to the sources or the build');
}

interface EchoRequest {
  message: string;
  failWith: number;
}
interface EchoReply {
  message: string;
  pod: string;
  index: number;
}

type Unary = (req: EchoRequest, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: EchoReply) => void) => grpc.ClientUnaryCall;
interface EchoClient extends grpc.Client {
  Echo: Unary;
  Count(req: { count: number }, opts: grpc.CallOptions): grpc.ClientReadableStream<EchoReply>;
}

function echoService(): { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  const def = loadSync(protoPath(), { keepCase: false, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { nodemesh: { test: { Echo: grpc.ServiceClientConstructor } } };
  const Client = pkg.nodemesh.test.Echo;
  return { service: Client.service, Client };
}

export interface GrpcEcho {
  port: number;
  close(): Promise<void>;
}

/** Serves Echo on `host:port` (0 picks one); replies name `pod`. */
export async function startGrpcEcho(o: { port: number; host?: string; pod: string }): Promise<GrpcEcho> {
  const server = new grpc.Server();
  server.addService(echoService().service, {
    Echo: (call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, cb: grpc.sendUnaryData<EchoReply>) => {
      const { message, failWith } = call.request;
      if (failWith) cb({ code: failWith, details: `asked to fail with ${failWith}: ${message}` });
      else cb(null, { message, pod: o.pod, index: 0 });
    },
    Count: (call: grpc.ServerWritableStream<{ count: number }, EchoReply>) => {
      for (let i = 0; i < call.request.count; i++) call.write({ message: `n${i}`, pod: o.pod, index: i });
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${o.host ?? '0.0.0.0'}:${o.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // Calls still open (a client that went away) must not hold the shutdown.
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}

export interface GrpcCallsResult {
  /** Echo that should succeed: its status code, and the reply. */
  ok: { code: number; message?: string; pod?: string; details?: string };
  /** Echo asked to fail with `failWith`: the status code and details that came back. */
  failed: { code: number; details?: string };
  /** Count: the stream's final status, and the messages in the order they came. */
  stream: { code: number; messages: string[]; pods: string[]; details?: string };
}

/** One unary OK, one unary failing with `failWith`, one stream of `count`, in order on one channel. */
export async function runGrpcCalls(target: string, o: { message: string; failWith: number; count: number; timeoutMs?: number }): Promise<GrpcCallsResult> {
  const { Client } = echoService();
  const client = new Client(target, grpc.credentials.createInsecure()) as unknown as EchoClient;
  const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + (o.timeoutMs ?? 10_000) });
  const unary = (req: EchoRequest) =>
    new Promise<{ err: grpc.ServiceError | null; res?: EchoReply }>((resolve) =>
      client.Echo(req, new grpc.Metadata(), deadline(), (err, res) => resolve({ err, ...(res ? { res } : {}) })),
    );
  try {
    const a = await unary({ message: o.message, failWith: 0 });
    const ok = a.err ? { code: a.err.code, details: a.err.details } : { code: 0, message: a.res!.message, pod: a.res!.pod };
    const b = await unary({ message: o.message, failWith: o.failWith });
    const failed = { code: b.err ? b.err.code : 0, ...(b.err ? { details: b.err.details } : {}) };
    const stream = await new Promise<GrpcCallsResult['stream']>((resolve) => {
      const s: GrpcCallsResult['stream'] = { code: -1, messages: [], pods: [] };
      const call = client.Count({ count: o.count }, deadline());
      call.on('data', (r: EchoReply) => {
        s.messages.push(r.message);
        if (!s.pods.includes(r.pod)) s.pods.push(r.pod);
      });
      call.on('error', (e: grpc.ServiceError) => resolve({ ...s, code: e.code, details: e.details }));
      call.on('status', (st: grpc.StatusObject) => {
        if (st.code === grpc.status.OK) resolve({ ...s, code: 0 });
      });
    });
    return { ok, failed, stream };
  } finally {
    client.close();
  }
}
