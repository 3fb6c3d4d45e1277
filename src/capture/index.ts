// Node-level capture: flow records joined from the proxy and the kernel, the hub that streams
// them (and plaintext) to /debug/capture consumers, filters, the table and the pcap writer.
export { loadOrCreateAdminToken, readAdminToken } from './auth.js';
export { CAPTURE_PATH, serveCapture } from './endpoint.js';
export { FILTER_NAMES, filterParams, parseFilter, type FilterName } from './filter.js';
export { CaptureHub } from './hub.js';
export { CaptureRecorder } from './recorder.js';
export { PcapWriter } from './pcap.js';
export { CaptureSession, lineSplitter } from './session.js';
