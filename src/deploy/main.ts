// `node dist/deploy/main.js`: renders deploy/helm/nodemesh without helm, as `helm template`
// would, to stdout; with --manifests <dir>, writes the plain manifests (`make manifests`).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parse } from 'yaml';
import { isNodemeshError } from '../errors.js';
import { formatDocs, parseSet, renderChart } from './chart.js';
import { CHART_DIR, plainManifests } from './manifests.js';

const usage = `Usage: node dist/deploy/main.js [--chart <dir>] [-f <values.yaml>]... [--set k=v]...
                                [--namespace <ns>] [--release <name>]
       node dist/deploy/main.js --manifests <dir>

Renders the nodemesh Helm chart (default deploy/helm/nodemesh) as \`helm template\` does:
crds/ first, then the templates' objects in helm's install order. -f and --set override
values.yaml as they do for helm. --manifests writes crds.yaml and nodemesh.yaml, the plain
manifests committed in deploy/manifests/.
`;

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      chart: { type: 'string' },
      values: { type: 'string', short: 'f', multiple: true },
      set: { type: 'string', multiple: true },
      namespace: { type: 'string' },
      release: { type: 'string' },
      manifests: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  const chart = values.chart ?? CHART_DIR;
  if (values.manifests) {
    mkdirSync(values.manifests, { recursive: true });
    for (const [name, text] of Object.entries(plainManifests(chart))) writeFileSync(join(values.manifests, name), text);
    return 0;
  }
  const overrides = [...(values.values ?? []).map((f) => parse(readFileSync(f, 'utf8')) as Record<string, unknown>), ...(values.set ?? []).map(parseSet)];
  const { crds, docs } = renderChart(chart, { namespace: values.namespace, release: values.release, values: overrides });
  process.stdout.write(formatDocs([...crds, ...docs]));
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  // A chart error names its template and line; a wrong argument (parseArgs' TypeError) gets the usage too.
  process.stderr.write(isNodemeshError(e) ? `render: ${e.message}\n` : e instanceof TypeError ? `render: ${e.message}\n${usage}` : `render: ${String(e)}\n`);
  process.exitCode = 1;
}
