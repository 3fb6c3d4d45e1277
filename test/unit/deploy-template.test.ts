// The Go-template interpreter that renders the chart without helm: each construct the chart
// uses, against what Go's text/template and helm's functions give, and errors naming file:line.
import { describe, expect, it } from 'vitest';
import { chartFuncs, toYaml } from '../../src/deploy/funcs.js';
import { parseTemplate, Renderer } from '../../src/deploy/template.js';

function render(src: string, data: unknown, defs = ''): string {
  const r = new Renderer(chartFuncs);
  if (defs) parseTemplate(defs, '_helpers.tpl', r.defs);
  return r.run(parseTemplate(src, 't.yaml', r.defs), data, 't.yaml');
}

function errorOf(f: () => unknown): { code?: string; message: string } {
  try {
    f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

const V = { Values: { name: 'x', n: 2, on: true, off: false, empty: '', list: ['a', 'b'], map: { b: 2, a: 1 }, nested: { deep: { v: 'd' } } }, Release: { Namespace: 'ns' } };

describe('the chart template interpreter', () => {
  it('prints fields and trims whitespace at {{- and -}} only', () => {
    expect(render('a: {{ .Values.name }}\nb: {{ .Values.nested.deep.v }}', V)).toBe('a: x\nb: d');
    expect(render('x  \n  {{- .Values.n -}}  \n  y', V)).toBe('x2y');
    expect(render('x  {{ .Values.n }}  y', V)).toBe('x  2  y');
    expect(render('a{{/* a comment */}}b{{- /* trimmed */ -}}  c', V)).toBe('abc');
    expect(render('{{ .Values.missing }}|', V)).toBe('|'); // helm prints a missing value as nothing
  });

  it('follows Go truth in if / else if / else', () => {
    const t = '{{ if .Values.off }}1{{ else if .Values.empty }}2{{ else if .Values.list }}3{{ else }}4{{ end }}';
    expect(render(t, V)).toBe('3');
    expect(render(t, { Values: { ...V.Values, list: [] } })).toBe('4');
    expect(render(t, { Values: { ...V.Values, off: 1 } })).toBe('1');
    expect(render('{{ if and .Values.on (not .Values.off) }}yes{{ end }}{{ if or .Values.off .Values.empty }}no{{ end }}', V)).toBe('yes');
  });

  it('rebinds the dot in with and range, sorts map keys, and scopes variables', () => {
    expect(render('{{ with .Values.nested.deep }}{{ .v }}{{ end }}{{ with .Values.empty }}no{{ else }}else{{ end }}', V)).toBe('delse');
    expect(render('{{ range .Values.list }}[{{ . }}]{{ end }}', V)).toBe('[a][b]');
    expect(render('{{ range $k, $v := .Values.map }}{{ $k }}={{ $v }};{{ end }}', V)).toBe('a=1;b=2;');
    expect(render('{{ range $i, $x := .Values.list }}{{ $i }}{{ $x }}{{ $.Release.Namespace }}{{ end }}', V)).toBe('0ans1bns');
    expect(render('{{ range .Values.none }}x{{ else }}none{{ end }}', V)).toBe('none');
    expect(render('{{- $x := .Values.name }}{{ if true }}{{ $x = "y" }}{{ $z := 1 }}{{ end }}{{ $x }}', V)).toBe('y');
    expect(errorOf(() => render('{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}', V)).message).toMatch(/undefined variable \$z/);
  });

  it('includes defined templates with nindent, and pipes toYaml, quote and default as helm does', () => {
    const defs = '{{- define "labels" -}}\napp: {{ .Values.name }}\nns: {{ .Release.Namespace }}\n{{- end }}';
    expect(render('labels:\n  {{- include "labels" . | nindent 2 }}\n', V, defs)).toBe('labels:\n  app: x\n  ns: ns\n');
    expect(render('m:\n  {{- toYaml .Values.map | nindent 2 }}', V)).toBe('m:\n  a: 1\n  b: 2');
    expect(render('{{ .Values.n | quote }} {{ quote .Values.name }} {{ .Values.empty | default "dflt" }} {{ .Values.name | default "dflt" }}', V)).toBe('"2" "x" dflt x');
    expect(render('{{ printf "%s-%d" .Values.name .Values.n }} {{ add (int .Values.n) 15 }} {{ .Values.name | b64enc }}', V)).toBe('x-2 17 eA==');
    expect(render('{{ if eq .Values.name "x" }}eq{{ end }}{{ if gt (int .Values.n) 1 }}gt{{ end }}{{ if ne .Values.n 2 }}ne{{ end }}', V)).toBe('eqgt');
    expect(toYaml({ z: [{ b: 1, a: 'x' }], a: {} })).toBe('a: {}\nz:\n  - a: x\n    b: 1');
  });

  it('fails with NM_ERR_CHART naming the file and line: required, fail, nil fields, bad syntax', () => {
    const cases: [string, RegExp][] = [
      ['ok\n{{ required "image.repository is required" .Values.nope }}', /t\.yaml:2: image\.repository is required/],
      ['{{ fail "no" }}', /t\.yaml:1: no/],
      ['\n\n{{ .Values.nope.deeper }}', /t\.yaml:3: nil pointer evaluating .*nope\.deeper/],
      ['{{ if .Values.on }}never closed', /missing its \{\{end\}\}|an \{\{end\}\} is missing/],
      ['{{ end }}', /unexpected \{\{end\}\}/],
      ['{{ nosuch 1 }}', /function "nosuch" not defined/],
      ['{{ include "undefined" . }}', /no template "undefined"/],
      ['{{ .Values.map }}', /pipe it to toYaml/],
    ];
    for (const [src, why] of cases) {
      const e = errorOf(() => render(src, V));
      expect(e.code, src).toBe('NM_ERR_CHART');
      expect(e.message, src).toMatch(why);
    }
    // The twin: the same lookups with the values present render.
    expect(render('{{ required "x" .Values.name }}{{ .Values.nested.deep.v }}', V)).toBe('xd');
  });
});
