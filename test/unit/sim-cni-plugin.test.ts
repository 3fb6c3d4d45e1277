// The nodemesh-cni binary against a fake agent (test/helpers/fake-cni-agent.ts): the relay
// of docs/cni.md, fail-closed ADD, always-succeeding DEL, and CNI errors. Needs no root.
import { rmSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeCniAgent, type FakeCniAgent } from '../helpers/fake-cni-agent.js';
import { cniPluginBinary, runProgram, tempDir } from '../helpers/sim.js';
import { join } from 'node:path';

let bin: string;
let agent: FakeCniAgent | undefined;

beforeAll(() => {
  bin = cniPluginBinary();
});

afterEach(async () => {
  await agent?.close();
  agent = undefined;
});

const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'nm-br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/nm-demo-web' }],
  ips: [{ interface: 2, address: '10.244.0.7/24' }],
};

function env(command: string | undefined, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    CNI_CONTAINERID: 'c0ffee',
    CNI_NETNS: '/run/netns/nm-demo-web',
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web;K8S_POD_UID=1234',
    CNI_PATH: '/usr/lib/cni:/opt/x',
    ...extra,
  };
  if (command !== undefined) e.CNI_COMMAND = command;
  for (const [k, v] of Object.entries(e)) if (v === undefined) delete e[k];
  return e;
}

function conf(socket: string, more: Record<string, unknown> = {}): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'nodemesh-sim', type: 'nodemesh-cni', agentSocket: socket, ...more });
}

const tempDirs: string[] = [];
/** A socket path nobody listens on. */
function deadSocket(): string {
  const d = tempDir('nm-no-agent-');
  tempDirs.push(d);
  return join(d, 'cni.sock');
}

afterAll(() => {
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('nodemesh-cni plugin', () => {
  it('answers VERSION itself, with no agent and no stdin', async () => {
    const r = await runProgram(bin, [], { env: env('VERSION') });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it('relays ADD with the environment and the stdin config verbatim, and prints the answer', async () => {
    agent = await startFakeCniAgent();
    const answer = JSON.stringify({ ...PREV, note: 'from agent' });
    agent.respond(() => ({ ok: true, body: answer }));
    // Whitespace, escapes and unicode in the config must arrive intact.
    const stdin = `  {"cniVersion" : "1.0.0", "name":"nodemesh-sim",\n "type":"nodemesh-cni",\t"agentSocket": ${JSON.stringify(agent.socketPath)},\n "odd":"quote\\" back\\\\ \\u00e9 \\ud83d\\ude00 tab\\t", "prevResult": ${JSON.stringify(PREV)}}\n`;
    const r = await runProgram(bin, [], { env: env('ADD', { CNI_ARGS: 'K8S_POD_NAME=we"b\\x;K8S_POD_UID=u\nid' }), stdin });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(answer);
    expect(agent.requests).toHaveLength(1);
    const req = agent.requests[0]!;
    expect(req).toMatchObject({
      command: 'ADD',
      containerId: 'c0ffee',
      netns: '/run/netns/nm-demo-web',
      ifName: 'eth0',
      args: 'K8S_POD_NAME=we"b\\x;K8S_POD_UID=u\nid',
      path: '/usr/lib/cni:/opt/x',
    });
    expect(req.config).toEqual(JSON.parse(stdin));
    expect(req.config.odd).toBe('quote" back\\ é 😀 tab\t');
  });

  it('waits for an agent that answers after doing its work', async () => {
    agent = await startFakeCniAgent();
    agent.respond(async (req) => {
      await new Promise((r) => setTimeout(r, 300));
      return { ok: true, body: JSON.stringify(req.config.prevResult) };
    });
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: conf(agent.socketPath, { prevResult: PREV }) });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(PREV);
  });

  it('finds agentSocket written with JSON escapes', async () => {
    agent = await startFakeCniAgent();
    const escaped = JSON.stringify(agent.socketPath).replace(/\//g, '\\/').replace(/c/g, '\\u0063');
    const stdin = `{"cniVersion":"1.0.0","name":"n","type":"nodemesh-cni","agentSocket":${escaped}}`;
    const r = await runProgram(bin, [], { env: env('DEL'), stdin });
    expect(r.code).toBe(0);
    expect(agent.requests.map((q) => q.command)).toEqual(['DEL']);
  });

  it('prints the agent error and exits 1 when the agent answers ERR', async () => {
    agent = await startFakeCniAgent();
    const body = JSON.stringify({ cniVersion: '1.0.0', code: 7, msg: 'pod demo/web is unknown', details: 'uid 1234' });
    agent.respond(() => ({ ok: false, code: 7, body }));
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: conf(agent.socketPath, { prevResult: PREV }) });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(body);
  });

  it('fails ADD and CHECK with CNI error 11 naming the socket when the agent is down', async () => {
    const sock = deadSocket();
    for (const cmd of ['ADD', 'CHECK']) {
      const r = await runProgram(bin, [], { env: env(cmd), stdin: conf(sock, { prevResult: PREV }) });
      expect(r.code).toBe(1);
      const err = JSON.parse(r.stdout) as { code: number; msg: string; details: string; cniVersion: string };
      expect(err.code).toBe(11);
      expect(err.cniVersion).toBe('1.0.0');
      expect(err.msg).toContain(sock);
      expect(err.msg).toContain('uncaptured');
    }
  });

  it('succeeds DEL silently when the agent is down', async () => {
    const r = await runProgram(bin, [], { env: env('DEL'), stdin: conf(deadSocket()) });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('gives up after timeoutSeconds: ADD fails with 11, DEL succeeds', async () => {
    agent = await startFakeCniAgent();
    agent.respond(() => ({ hang: true }));
    const add = await runProgram(bin, [], { env: env('ADD'), stdin: conf(agent.socketPath, { timeoutSeconds: 1 }) });
    expect(add.code).toBe(1);
    expect(JSON.parse(add.stdout)).toMatchObject({ code: 11 });
    expect((JSON.parse(add.stdout) as { msg: string }).msg).toContain('no answer within 1 s');
    const del = await runProgram(bin, [], { env: env('DEL'), stdin: conf(agent.socketPath, { timeoutSeconds: 1 }) });
    expect(del).toMatchObject({ code: 0, stdout: '' });
  });

  it('treats a malformed answer like no answer', async () => {
    agent = await startFakeCniAgent();
    agent.respond(() => ({ raw: 'HELLO\n{}' }));
    const add = await runProgram(bin, [], { env: env('ADD'), stdin: conf(agent.socketPath) });
    expect(add.code).toBe(1);
    expect(JSON.parse(add.stdout)).toMatchObject({ code: 11 });
    const del = await runProgram(bin, [], { env: env('DEL'), stdin: conf(agent.socketPath) });
    expect(del.code).toBe(0);
  });

  it('passes prevResult on when the agent answers OK without a body', async () => {
    agent = await startFakeCniAgent();
    agent.respond(() => ({ ok: true }));
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: conf(agent.socketPath, { prevResult: PREV }) });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(PREV);
  });

  it('reports a missing CNI_NETNS on ADD as CNI error 4 naming the variable', async () => {
    agent = await startFakeCniAgent();
    const r = await runProgram(bin, [], { env: env('ADD', { CNI_NETNS: undefined }), stdin: conf(agent.socketPath) });
    expect(r.code).toBe(1);
    const err = JSON.parse(r.stdout) as { code: number; msg: string };
    expect(err.code).toBe(4);
    expect(err.msg).toContain('invalid environment variables');
    expect(err.msg).toContain('CNI_NETNS');
    expect(agent.requests).toHaveLength(0);
  });

  it('reports a missing CNI_COMMAND as CNI error 4 naming the variable', async () => {
    const r = await runProgram(bin, [], { env: env(undefined), stdin: conf(deadSocket()) });
    expect(r.code).toBe(1);
    const err = JSON.parse(r.stdout) as { code: number; msg: string };
    expect(err.code).toBe(4);
    expect(err.msg).toContain('CNI_COMMAND');
  });

  it('rejects a config that is not JSON with CNI error 6, stamped with no agent contact', async () => {
    agent = await startFakeCniAgent();
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: `{"cniVersion":"0.4.0","agentSocket":${JSON.stringify(agent.socketPath)},}` });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 6 });
    expect(agent.requests).toHaveLength(0);
  });

  it("stamps errors with the config's cniVersion", async () => {
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: conf(deadSocket(), { cniVersion: '0.4.0' }) });
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: '0.4.0', code: 11 });
  });

  it('rejects a timeoutSeconds that is not a sane number', async () => {
    const r = await runProgram(bin, [], { env: env('ADD'), stdin: conf(deadSocket(), { timeoutSeconds: 'soon' }) });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ code: 7 });
  });
});
