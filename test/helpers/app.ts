// A throwaway TCP app on 127.0.0.1, port 0, for the proxy tests: the handler decides what it
// does with each connection; close() destroys open connections and stops listening.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export interface TestApp {
  port: number;
  server: Server;
  close(): Promise<void>;
}

export async function startApp(onConnection: (s: Socket) => void, opts: { allowHalfOpen?: boolean } = {}): Promise<TestApp> {
  const conns = new Set<Socket>();
  const server = createServer({ allowHalfOpen: opts.allowHalfOpen ?? false }, (s) => {
    conns.add(s);
    s.once('close', () => conns.delete(s));
    s.on('error', () => {});
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () => {
      for (const s of conns) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
