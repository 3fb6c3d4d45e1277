// A failure digest printed last: every failed test, suite hook or module with the first lines
// of its error and where it was thrown. The default reporter prints the same errors in full
// further up; CI logs are often read from the tail, and this keeps each failure's cause there.
import type { Reporter, TestModule } from 'vitest/node';

interface ErrorLike {
  name?: string;
  message?: string;
  stack?: string;
  stacks?: { file: string; line: number; column: number }[];
}

const MESSAGE_LINES = 6;

function where(e: ErrorLike): string {
  const s = e.stacks?.find((f) => !f.file.includes('node_modules'));
  return s ? ` (${s.file.replace(`${process.cwd()}/`, '')}:${s.line})` : '';
}

function lines(e: ErrorLike): string[] {
  const msg = `${e.name ?? 'Error'}: ${e.message ?? String(e)}`.split('\n').filter((l) => l.trim() !== '');
  const head = msg.slice(0, MESSAGE_LINES);
  if (msg.length > MESSAGE_LINES) head.push(`… ${msg.length - MESSAGE_LINES} more lines`);
  head[head.length - 1] += where(e);
  return head;
}

export default class FailureDigest implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandled: ReadonlyArray<ErrorLike>): void {
    const out: string[] = [];
    const add = (title: string, errors: ReadonlyArray<ErrorLike>) => {
      for (const e of errors) out.push(`  ✗ ${title}`, ...lines(e).map((l) => `      ${l}`));
    };
    for (const m of modules) {
      const file = m.moduleId.replace(`${process.cwd()}/`, '');
      add(`${file} (module)`, m.errors());
      for (const s of m.children.allSuites()) add(`${file} > ${s.fullName} (a hook of the suite)`, s.errors());
      for (const t of m.children.allTests('failed')) add(`${file} > ${t.fullName}`, t.result().errors ?? []);
    }
    add('unhandled error', unhandled);
    if (out.length === 0) return;
    process.stdout.write(`\n==> failure digest (the full reports are above)\n${out.join('\n')}\n`);
  }
}
