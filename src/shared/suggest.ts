/** "did you mean …?" for a misspelt flag, config key or verb: the nearest known word, if near enough. */

/** Edit distance (insertions, deletions, substitutions; a swap of two neighbours counts one). */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const prev = d[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** The known word nearest to `word` (case-insensitive), when at most a third of it differs (at least 1, at most 3 edits). */
export function nearest(word: string, known: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  const limit = Math.min(3, Math.max(1, Math.floor(w.length / 3)));
  let best: { k: string; d: number } | undefined;
  for (const k of known) {
    const dist = distance(w, k.toLowerCase());
    if (dist <= limit && (!best || dist < best.d)) best = { k, d: dist };
  }
  return best?.k;
}

/** ` (did you mean X?)`, or '' when nothing is near. */
export function didYouMean(word: string, known: readonly string[], show: (k: string) => string = (k) => k): string {
  const k = nearest(word, known);
  return k === undefined ? '' : ` (did you mean ${show(k)}?)`;
}
