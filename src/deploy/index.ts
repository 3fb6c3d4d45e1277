// deploy/: renders the Helm chart in deploy/helm without helm. No other folder imports it;
// `make manifests` runs main.ts and the tests import its files directly, so nothing is exported.
export {};
