// docs/benchmarks.md is shared by several benchmarks: each owns one marked section and
// rewrites only that, so running one benchmark never erases another's figures.

export function sectionMarkers(name: string): { start: string; end: string } {
  return { start: `<!-- bench:${name}:start -->`, end: `<!-- bench:${name}:end -->` };
}

/** The file with section `name` replaced (or appended), every other byte kept. */
export function replaceSection(existing: string | undefined, name: string, section: string): string {
  const { start, end } = sectionMarkers(name);
  const block = `${start}\n${section.trim()}\n${end}`;
  if (existing === undefined || existing.trim() === '') return `# Benchmarks\n\n${block}\n`;
  const a = existing.indexOf(start);
  const b = existing.indexOf(end);
  if (a < 0 && b < 0) return `${existing.replace(/\n*$/, '')}\n\n${block}\n`;
  if (a < 0 || b < a || existing.indexOf(start, a + 1) >= 0 || existing.indexOf(end, b + 1) >= 0) {
    throw new Error(`docs/benchmarks.md has unbalanced ${start} / ${end} markers; fix them by hand, then rerun`);
  }
  return existing.slice(0, a) + block + existing.slice(b + end.length);
}
