// The echo backend (echo-server.ts) as a program, for simulated pods: `make build` compiles it
// to dist-test/ (tsconfig.standin.json), and a Pod's command runs it with node.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startEchoServer, type EchoOptions, type EchoServer } from './echo-server.js';

/** Where `make build` puts this program (as seen from the sources, which is where tests import it). */
export const ECHO_SERVER_MAIN = fileURLToPath(new URL('../../dist-test/test/helpers/echo-server-main.js', import.meta.url));

export const ECHO_HELP = `Usage: node dist-test/test/helpers/echo-server-main.js [options]

An HTTP echo backend modelled on Gateway API's echo-basic (test/helpers/echo-server.ts lists
its paths: /status/<code>, /delay/<ms>, /flaky/<n>, /retry/, ?delay=, X-Echo-Set-Header).
Every port serves HTTP/1.1 and h2c (prior knowledge). Once it listens it prints one line of
JSON on stdout, {"ports":[...],"pid":<pid>}; SIGTERM or SIGINT stops it.

Options (each falls back to the environment variable echo-basic reads):
  --port N        a port to listen on, repeatable or comma-separated (HTTP_PORT; default 3000)
  --host ADDR     listen address (default 0.0.0.0)
  --namespace NS  reported as "namespace" (NAMESPACE)
  --service NAME  reported as "service" (SERVICE_NAME)
  --pod NAME      reported as "pod" (POD_NAME, else HOSTNAME, which the simulator sets)
  --ingress NAME  reported as "ingress" (INGRESS_NAME; default empty)
  -h, --help      this text
`;

/** The echo's options from its command line and environment, `help`, or a usage error. */
export function parseEchoArgs(argv: string[], env: NodeJS.ProcessEnv): { help: true } | { help: false; options: EchoOptions } | { error: string } {
  let values: { port?: string[]; host?: string; namespace?: string; service?: string; pod?: string; ingress?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        port: { type: 'string', multiple: true },
        host: { type: 'string' },
        namespace: { type: 'string' },
        service: { type: 'string' },
        pod: { type: 'string' },
        ingress: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return { error: (err as Error).message };
  }
  if (values.help) return { help: true };
  const words = (values.port ?? [env.HTTP_PORT ?? '3000']).flatMap((p) => p.split(',')).map((p) => p.trim());
  const ports = words.map(Number);
  const bad = words.find((w, i) => !/^\d+$/.test(w) || ports[i]! > 65535);
  if (bad !== undefined) return { error: `--port must be a port number 0-65535, got ${JSON.stringify(bad)}` };
  return {
    help: false,
    options: {
      ports,
      ...(values.host ? { host: values.host } : {}),
      context: {
        namespace: values.namespace ?? env.NAMESPACE ?? '',
        service: values.service ?? env.SERVICE_NAME ?? '',
        pod: values.pod ?? env.POD_NAME ?? env.HOSTNAME ?? '',
        ingress: values.ingress ?? env.INGRESS_NAME ?? '',
      },
    },
  };
}

/** Starts the echo for `argv`: the running server, or the exit code after --help (0) or a usage error (2). */
export async function runEcho(argv: string[], env: NodeJS.ProcessEnv, out: { write(s: string): unknown }, err: { write(s: string): unknown }): Promise<{ server: EchoServer } | { exitCode: number }> {
  const args = parseEchoArgs(argv, env);
  if ('error' in args) {
    err.write(`echo-server: ${args.error}\n\n${ECHO_HELP}`);
    return { exitCode: 2 };
  }
  if (args.help) {
    out.write(ECHO_HELP);
    return { exitCode: 0 };
  }
  const server = await startEchoServer(args.options);
  out.write(`${JSON.stringify({ ports: server.ports, pid: process.pid })}\n`);
  return { server };
}

async function main(): Promise<void> {
  const started = await runEcho(process.argv.slice(2), process.env, process.stdout, process.stderr);
  if ('exitCode' in started) {
    process.exitCode = started.exitCode;
    return;
  }
  const stop = (): void => void started.server.close().then(() => process.exit(0), () => process.exit(1));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  main().catch((e: unknown) => {
    process.stderr.write(`echo-server failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
