// The plain manifests committed under deploy/manifests/: the chart rendered with the values a
// `kubectl apply` install needs (the namespace included, as `helm install --create-namespace`
// would make it), as crds.yaml and nodemesh.yaml. `make manifests` writes them; a unit test
// fails when the committed files differ from a fresh render.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDocs, renderChart, type RenderOptions } from './chart.js';

/** deploy/helm/nodemesh of this package (src/deploy or dist/deploy: the root is two up). */
export const CHART_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'helm', 'nodemesh');

/** The release the plain manifests are: namespace nodemesh-system, created by them. */
export const PLAIN_RELEASE: RenderOptions = { release: 'nodemesh', namespace: 'nodemesh-system', values: [{ createNamespace: true }] };

const HEADER = (what: string) =>
  `# ${what}\n# Rendered from deploy/helm/nodemesh by \`make manifests\`; edit the chart, not this file.\n`;

/** The files of deploy/manifests/, by name, as `make manifests` writes them. */
export function plainManifests(chartDir = CHART_DIR, o: RenderOptions = PLAIN_RELEASE): Record<string, string> {
  const { crds, docs } = renderChart(chartDir, o);
  return {
    'crds.yaml': HEADER('The CRDs nodemesh reads, for a cluster without Istio or the Gateway API: `kubectl create -f` (never apply over existing ones).') + formatDocs(crds),
    'nodemesh.yaml': HEADER(`nodemesh in namespace ${o.namespace ?? 'nodemesh-system'}: \`kubectl apply -f\` after the CRDs and the Secret nodemesh-bootstrap (deploy/README.md).`) + formatDocs(docs),
  };
}
