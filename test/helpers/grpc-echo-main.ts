// The gRPC echo (grpc-echo.ts) as a program for simulated pods, built to dist-test/ by
// tsconfig.standin.json: `serve` is the backend a Pod's command runs, `call` the client a test
// runs in a pod with `sim exec`, printing one line of JSON.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runGrpcCalls, startGrpcEcho } from './grpc-echo.js';

/** Where `make ts` puts this program. */
export const GRPC_ECHO_MAIN = fileURLToPath(new URL('../../dist-test/test/helpers/grpc-echo-main.js', import.meta.url));

const HELP = `Usage: node dist-test/test/helpers/grpc-echo-main.js serve [--port N] [--host ADDR] [--pod NAME]
       node dist-test/test/helpers/grpc-echo-main.js call <host:port> [--message S] [--fail-with CODE] [--count N]

serve  the nodemesh.test.Echo service of test/fixtures/grpc/echo.proto (port default 9090, pod
       default $HOSTNAME); prints {"ports":[...],"pid":<pid>} once it listens; SIGTERM stops it.
call   one Echo, one Echo that fails with CODE (default 5, NOT_FOUND), one Count of N (default 5)
       over one channel; prints {"ok":{...},"failed":{...},"stream":{...}}.
`;

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    options: { port: { type: 'string' }, host: { type: 'string' }, pod: { type: 'string' }, message: { type: 'string' }, 'fail-with': { type: 'string' }, count: { type: 'string' } },
    allowPositionals: true,
  });
  const int = (name: string, v: string | undefined, dflt: number): number => {
    if (v === undefined) return dflt;
    if (!/^\d+$/.test(v)) throw new Error(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  if (cmd === 'serve') {
    const server = await startGrpcEcho({ port: int('port', values.port, 9090), ...(values.host ? { host: values.host } : {}), pod: values.pod ?? process.env.HOSTNAME ?? '' });
    process.stdout.write(`${JSON.stringify({ ports: [server.port], pid: process.pid })}\n`);
    const stop = (): void => void server.close().then(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    return;
  }
  if (cmd === 'call' && positionals.length === 1) {
    const r = await runGrpcCalls(positionals[0]!, { message: values.message ?? 'hello', failWith: int('fail-with', values['fail-with'], 5), count: int('count', values.count, 5) });
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  process.stderr.write(HELP);
  process.exitCode = 2;
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`grpc-echo: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
