// Kubernetes resources as nodemesh reads them from YAML.
export * from './types.js';
export { deriveUid, formatLoadErrors, isAmbient, listConfigFiles, loadConfigDir, loadConfigDirStrict, parseConfigText } from './load.js';
export type { LoadError, LoadResult, LoadedConfig } from './load.js';
