// Validation of the routing resources (HTTPRoute filters, timeouts and retries; VirtualService;
// DestinationRule): each refusal names the field path and the line of the offending field.
import { describe, expect, it } from 'vitest';
import { fromApi } from '../../src/controlplane/kube-translate.js';
import { parseConfigFile } from '../../src/controlplane/validate.js';
import { invalid, lineOf } from '../helpers/routes.js';

const HTTPROUTE = (rule: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 80}]
  rules:
${rule}`;

const VS = (http: string, extra = '') => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: shop}
spec:
  hosts: [web]${extra}
  http:
${http}`;

const DR = (spec: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: shop}
spec:
  host: web
${spec}`;

/** [case, resource text, message pattern, text on the line the problem must point at]. */
type Case = [string, string, RegExp, string];

function check([, text, message, at]: Case): void {
  const p = invalid(text);
  expect(p).toMatchObject({ code: 'NM_ERR_CONFIG_INVALID', severity: 'error', file: 'bad.yaml' });
  expect(p.message).toMatch(message);
  expect(p.line).toBe(lineOf(text, at));
}

describe('HTTPRoute validation', () => {
  const cases: Case[] = [
    [
      'an unknown path modifier type',
      HTTPROUTE(`    - matches: [{path: {value: /a}}]\n      filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier: {set: [{name: a, value: b}]}\n        - type: URLRewrite\n          urlRewrite:\n            path: {type: ReplacePrefix, replacePrefixMatch: /b}\n      backendRefs: [{name: web, port: 80}]\n`),
      /^HTTPRoute shop\/r: spec\.rules\[0\]\.filters\[1\]\.urlRewrite\.path\.type: unknown value "ReplacePrefix"; expected one of ReplaceFullPath, ReplacePrefixMatch$/,
      'path: {type: ReplacePrefix',
    ],
    [
      'ReplacePrefixMatch without a PathPrefix match',
      HTTPROUTE(`    - matches: [{path: {type: Exact, value: /a}}]\n      filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n      backendRefs: [{name: web, port: 80}]\n`),
      /spec\.rules\[0\]\.filters: a path\.replacePrefixMatch filter needs exactly one match, of type PathPrefix/,
      'filters: [{type: URLRewrite',
    ],
    ['a value for the other modifier type', HTTPROUTE(`    - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /b}}}]\n`), /urlRewrite\.path\.replacePrefixMatch must not be set when type is ReplaceFullPath/, 'filters:'],
    ['a redirect with backendRefs', HTTPROUTE(`    - filters: [{type: RequestRedirect, requestRedirect: {hostname: a.example}}]\n      backendRefs: [{name: web, port: 80}]\n`), /spec\.rules\[0\]\.filters: a RequestRedirect filter must not be used together with backendRefs/, 'filters:'],
    ['a redirect and a rewrite', HTTPROUTE(`    - filters:\n        - {type: URLRewrite, urlRewrite: {hostname: a.example}}\n        - {type: RequestRedirect, requestRedirect: {hostname: b.example}}\n`), /spec\.rules\[0\]\.filters\[1\]: RequestRedirect and URLRewrite filters cannot be used together/, 'type: RequestRedirect'],
    ['a repeated header modifier', HTTPROUTE(`    - filters:\n        - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}\n        - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}\n`), /spec\.rules\[0\]\.filters\[1\]: RequestHeaderModifier filter cannot be repeated/, 'remove: [b]'],
    ['a redirect status outside 301/302/303/307/308', HTTPROUTE(`    - filters:\n        - type: RequestRedirect\n          requestRedirect: {statusCode: 304}\n`), /filters\[0\]\.requestRedirect\.statusCode: unsupported value 304/, 'statusCode: 304'],
    ['a redirect scheme other than http/https', HTTPROUTE(`    - filters:\n        - type: RequestRedirect\n          requestRedirect: {scheme: ftp}\n`), /requestRedirect\.scheme: unknown value "ftp"; expected one of http, https/, 'scheme: ftp'],
    ['a filter field for another type', HTTPROUTE(`    - filters:\n        - type: RequestHeaderModifier\n          responseHeaderModifier: {remove: [a]}\n`), /filters\[0\]\.responseHeaderModifier must not be set for a RequestHeaderModifier filter \(only requestHeaderModifier\)/, 'responseHeaderModifier:'],
    ['a filter without its field', HTTPROUTE(`    - filters:\n        - type: RequestMirror\n`), /filters\[0\]\.requestMirror must be specified for a RequestMirror filter/, 'type: RequestMirror'],
    ['an unknown filter type', HTTPROUTE(`    - filters:\n        - type: Rewrite\n`), /filters\[0\]\.type: unknown value "Rewrite"/, 'type: Rewrite'],
    ['two actions for one header', HTTPROUTE(`    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{name: X-A, value: "1"}]\n            remove: [x-a]\n`), /requestHeaderModifier\.remove: header "x-a" already has an action \(set\)/, 'remove: [x-a]'],
    ['a header name that is no token', HTTPROUTE(`    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{name: "x a", value: "1"}]\n`), /requestHeaderModifier\.set\[0\]\.name: "x a" is not a valid HTTP header name/, 'set: [{name: "x a"'],
    ['a header value with CR LF', HTTPROUTE(`    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            add: [{name: x, value: "a\\r\\nEvil: 1"}]\n`), /requestHeaderModifier\.add\[0\]\.value must not contain CR, LF or NUL/, 'add: [{name: x'],
    ['a mirror with percent and fraction', HTTPROUTE(`    - filters:\n        - type: RequestMirror\n          requestMirror:\n            backendRef: {name: web, port: 80}\n            percent: 5\n            fraction: {numerator: 1}\n`), /requestMirror: only one of percent or fraction may be specified/, 'fraction: {numerator: 1}'],
    ['a mirror fraction above 1', HTTPROUTE(`    - filters:\n        - type: RequestMirror\n          requestMirror:\n            backendRef: {name: web, port: 80}\n            fraction: {numerator: 3, denominator: 2}\n`), /requestMirror\.fraction: numerator must be less than or equal to denominator/, 'fraction: {numerator: 3'],
    ['a mirror backend without a port', HTTPROUTE(`    - filters:\n        - type: RequestMirror\n          requestMirror:\n            backendRef: {name: web}\n`), /requestMirror\.backendRef\.port is required for a Service backend/, 'backendRef: {name: web}'],
    ['a Service backend without a port', HTTPROUTE(`    - backendRefs: [{name: web}]\n`), /spec\.rules\[0\]\.backendRefs\[0\]\.port is required for a Service backend/, 'backendRefs: [{name: web}]'],
    ['a float duration', HTTPROUTE(`    - timeouts: {request: 1.5s}\n`), /timeouts\.request: "1\.5s" is not a Gateway API duration/, 'timeouts:'],
    ['a day duration', HTTPROUTE(`    - timeouts:\n        backendRequest: 1d\n`), /timeouts\.backendRequest: "1d" is not a Gateway API duration/, 'backendRequest: 1d'],
    ['a backend timeout above the request timeout', HTTPROUTE(`    - timeouts:\n        request: 1s\n        backendRequest: 2s\n`), /timeouts\.backendRequest: backendRequest timeout cannot be longer than request timeout/, 'backendRequest: 2s'],
    ['a retry code outside 400-599', HTTPROUTE(`    - retry:\n        codes: [503, 600]\n`), /retry\.codes\[1\] must be an HTTP status 400-599, got 600/, 'codes: [503, 600]'],
    ['a repeated retry code', HTTPROUTE(`    - retry:\n        codes: [503, 503]\n`), /retry\.codes\[1\]: 503 is listed twice/, 'codes: [503, 503]'],
    ['a negative retry count', HTTPROUTE(`    - retry:\n        attempts: -1\n`), /retry\.attempts must be an integer 0-1000, got -1/, 'attempts: -1'],
    ['an unknown retry field', HTTPROUTE(`    - retry:\n        perTryTimeout: 1s\n`), /retry\.perTryTimeout: unknown field; expected one of attempts, backoff, codes/, 'perTryTimeout: 1s'],
    ['a relative path', HTTPROUTE(`    - matches:\n        - path: {type: PathPrefix, value: api}\n`), /matches\[0\]\.path\.value: "api" must be an absolute path starting with \//, 'path: {type: PathPrefix'],
    ['a path with //', HTTPROUTE(`    - matches:\n        - path: {type: Exact, value: /a//b}\n`), /path\.value: "\/a\/\/b" must not contain \/\//, 'path: {type: Exact'],
  ];
  it.each(cases)('refuses %s, naming the field and its line', (...c) => check(c));

  it('accepts every field it types (the same route, with one field changed, is refused above)', () => {
    const ok = parseConfigFile(
      HTTPROUTE(`    - matches: [{path: {type: PathPrefix, value: /a}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}
        - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, fraction: {numerator: 1, denominator: 2}}}
      timeouts: {request: 2s, backendRequest: 1s}
      retry: {attempts: 1, backoff: 10ms, codes: [503]}
      backendRefs: [{name: web, port: 80}]
`),
      'ok.yaml',
    );
    expect(ok.problems).toEqual([]);
    expect(ok.objects[0]).toMatchObject({ route: { rules: [{ timeouts: { request: 2000, backendRequest: 1000 }, retry: { attempts: 1, backoffMs: 10, codes: [503] } }] } });
  });
});

describe('VirtualService validation', () => {
  const cases: Case[] = [
    ['route and redirect together', VS(`    - route: [{destination: {host: web}}]\n      redirect: {uri: /x}\n`), /^VirtualService shop\/vs: spec\.http\[0\]: an HTTP route cannot have both route and redirect$/, 'redirect: {uri: /x}'],
    ['no action at all', VS(`    - match: [{uri: {prefix: /a}}]\n`), /spec\.http\[0\]: route, redirect or directResponse is required/, 'match: [{uri'],
    ['destinations whose weights are all 0', VS(`    - route:\n        - destination: {host: web}\n        - destination: {host: web-v2}\n`), /spec\.http\[0\]\.route: total destination weight is 0/, 'destination: {host: web}'],
    ['an unknown retryOn policy', VS(`    - route: [{destination: {host: web}}]\n      retries: {attempts: 2, retryOn: "5xx,sometimes"}\n`), /spec\.http\[0\]\.retries\.retryOn: "sometimes" is not a valid retryOn policy/, 'retries:'],
    ['a retry policy with 0 attempts', VS(`    - route: [{destination: {host: web}}]\n      retries:\n        attempts: 0\n        perTryTimeout: 1s\n`), /spec\.http\[0\]\.retries: a retry policy is configured while attempts is 0/, 'attempts: 0'],
    ['a duration below 1ms', VS(`    - route: [{destination: {host: web}}]\n      timeout: 0s\n`), /spec\.http\[0\]\.timeout: "0s" is not a duration of at least 1ms/, 'timeout: 0s'],
    ['a duration without a unit', VS(`    - route: [{destination: {host: web}}]\n      retries:\n        attempts: 1\n        perTryTimeout: "10"\n`), /retries\.perTryTimeout: "10" is not a duration/, 'perTryTimeout'],
    ['a fault with neither delay nor abort', VS(`    - route: [{destination: {host: web}}]\n      fault: {}\n`), /spec\.http\[0\]\.fault: fault injection must have an abort and\/or a delay/, 'fault: {}'],
    ['an unknown gRPC status', VS(`    - route: [{destination: {host: web}}]\n      fault:\n        abort: {grpcStatus: "14"}\n`), /fault\.abort\.grpcStatus: "14" is not a gRPC status name/, 'abort: {grpcStatus'],
    ['an abort status out of range', VS(`    - route: [{destination: {host: web}}]\n      fault:\n        abort: {httpStatus: 700}\n`), /fault\.abort\.httpStatus must be an integer 200-599, got 700/, 'abort: {httpStatus'],
    ['a percentage above 100', VS(`    - route: [{destination: {host: web}}]\n      mirror: {host: web-v2}\n      mirrorPercentage: {value: 150}\n`), /spec\.http\[0\]\.mirrorPercentage\.value must be a number 0-100, got 150/, 'mirrorPercentage'],
    ['a redirect code outside 301/302/303/307/308', VS(`    - redirect:\n        uri: /x\n        redirectCode: 200\n`), /spec\.http\[0\]\.redirect\.redirectCode: unsupported value 200/, 'redirectCode: 200'],
    ['two string match kinds at once', VS(`    - match:\n        - uri: {exact: /a, prefix: /b}\n      route: [{destination: {host: web}}]\n`), /spec\.http\[0\]\.match\[0\]\.uri: only one of exact, prefix or regex may be set/, 'uri: {exact'],
    ['a typo of a field', VS(`    - route: [{destination: {host: web}}]\n      retires: {attempts: 2}\n`), /spec\.http\[0\]\.retires: unknown field/, 'retires:'],
    ['mirror and mirrors together', VS(`    - route: [{destination: {host: web}}]\n      mirror: {host: web-v2}\n      mirrors: [{destination: {host: web-v2}}]\n`), /an HTTP route cannot have both mirror and mirrors/, 'mirrors:'],
    ['a destination without host', VS(`    - route: [{destination: {subset: v1}}]\n`), /spec\.http\[0\]\.route\[0\]\.destination\.host is required/, 'route: [{destination'],
  ];
  it.each(cases)('refuses %s, naming the field and its line', (...c) => check(c));

  it('refuses a VirtualService without hosts', () => {
    const p = invalid(`apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: shop}\nspec:\n  http: [{route: [{destination: {host: web}}]}]\n`);
    expect(p.message).toMatch(/spec\.hosts must name at least one host/);
  });

  it('accepts v1, v1beta1 and v1alpha3, and the Kubernetes API source types it too', () => {
    for (const v of ['v1', 'v1beta1', 'v1alpha3']) {
      const r = parseConfigFile(VS(`    - route: [{destination: {host: web}}]\n`).replace('networking.istio.io/v1', `networking.istio.io/${v}`), 'vs.yaml');
      expect(r.problems).toEqual([]);
      expect(r.objects[0]).toMatchObject({ kind: 'VirtualService', vs: { hosts: ['web'], http: [{ route: [{ destination: { host: 'web' } }] }] } });
    }
    const api = fromApi({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'vs', namespace: 'shop' }, spec: { hosts: ['web'], http: [{ timeout: 'soon', route: [{ destination: { host: 'web' } }] }] } });
    expect(api).toMatchObject({ kind: 'invalid', problem: { file: 'kubernetes', line: 0, message: expect.stringMatching(/VirtualService shop\/vs: spec\.http\[0\]\.timeout: "soon" is not a duration/) } });
  });
});

describe('DestinationRule validation', () => {
  const cases: Case[] = [
    ['a subset defined twice', DR(`  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v1, labels: {version: v2}}\n`), /^DestinationRule shop\/dr: spec\.subsets\[1\]\.name: subset "v1" is defined twice$/, 'labels: {version: v2}'],
    ['an unknown load balancer', DR(`  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n`), /spec\.trafficPolicy\.loadBalancer\.simple: unknown value "FASTEST"/, 'simple: FASTEST'],
    ['a negative connection limit', DR(`  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: -1}\n`), /connectionPool\.tcp\.maxConnections must be an integer 0-2147483647, got -1/, 'tcp: {maxConnections'],
    ['an ejection percent above 100', DR(`  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 101\n`), /outlierDetection\.maxEjectionPercent must be an integer 0-100, got 101/, 'maxEjectionPercent: 101'],
    ['a bad interval', DR(`  trafficPolicy:\n    outlierDetection:\n      interval: 5 minutes\n`), /outlierDetection\.interval: "5 minutes" is not a duration/, 'interval: 5 minutes'],
    ['a typo in a subset', DR(`  subsets:\n    - name: v1\n      label: {version: v1}\n`), /spec\.subsets\[0\]\.label: unknown field/, 'label: {version'],
  ];
  it.each(cases)('refuses %s, naming the field and its line', (...c) => check(c));
});
