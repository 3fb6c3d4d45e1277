// The CNI spec's network configuration: conflist types, parsing, and which file a runtime uses.
export { confFiles, findPrimaryConfFile, parseConfFile, readConfFile, type CniConfList, type CniPluginConf } from './conflist.js';
