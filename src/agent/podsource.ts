// Pod metadata the CNI request does not carry (labels, service account, namespace labels),
// looked up by namespace/name as istio-cni does through the API server. In local mode the
// source is the config directory, re-read when it changes.
import { statSync } from 'node:fs';
import { isAmbient, listConfigFiles, loadConfigDir, type LoadedConfig, type Pod } from '../k8s/index.js';
import type { Logger } from '../log.js';

export interface PodMeta {
  uid: string;
  namespace: string;
  name: string;
  serviceAccount: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Whether the pod or its namespace opts into the mesh. */
  ambient: boolean;
}

export interface PodSource {
  lookup(namespace: string, name: string): PodMeta | undefined;
}

function metaOf(p: Pod, cfg: LoadedConfig): PodMeta {
  return {
    uid: p.metadata.uid,
    namespace: p.metadata.namespace,
    name: p.metadata.name,
    serviceAccount: p.spec.serviceAccountName,
    labels: p.metadata.labels,
    annotations: p.metadata.annotations,
    ambient: isAmbient(p, cfg.namespaces),
  };
}

export class ConfigDirPodSource implements PodSource {
  readonly #dir: string;
  readonly #log: Logger;
  #stamp = '';
  #cfg: LoadedConfig | undefined;

  constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log.child({ component: 'podsource' });
  }

  #fresh(): LoadedConfig {
    const files = listConfigFiles(this.#dir);
    const stamp = files.map((f) => `${f}:${statSync(f).mtimeMs}`).join('|');
    if (this.#cfg && stamp === this.#stamp) return this.#cfg;
    const r = loadConfigDir(this.#dir);
    for (const e of r.errors) this.#log.warn({ file: e.file, line: e.line, code: e.code }, e.message);
    this.#cfg = r.config;
    this.#stamp = stamp;
    return r.config;
  }

  lookup(namespace: string, name: string): PodMeta | undefined {
    const cfg = this.#fresh();
    const p = cfg.pods.find((x) => x.metadata.namespace === namespace && x.metadata.name === name);
    return p ? metaOf(p, cfg) : undefined;
  }
}
