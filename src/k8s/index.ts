// Kubernetes resources as nodemesh reads them from YAML, and the field checks every loader uses.
export {
  cidrString,
  enumOf,
  fieldError,
  fieldPathOf,
  formatPath,
  isRecord,
  list,
  map,
  onlyKeys,
  port,
  portString,
  str,
  strList,
  strMap,
} from './fields.js';
export type { FieldPath } from './fields.js';
export { isAmbient, isCyclic, listConfigFiles, loadConfigDir, loadConfigDirStrict, objectFromRaw, parseConfigText } from './load.js';
export type { LoadedConfig } from './load.js';
export type { K8sObject, Namespace, Pod, Service, ServiceAccount, SourcePos } from './types.js';
