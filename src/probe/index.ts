// quiesce probe: sends load and classifies every request from the client's side,
// to prove that a graceful stop or reload cut nothing.
export { runProbe, normalizeOptions } from './engine.js';
export { probeMain, parseProbeArgs, USAGE } from './cli.js';
export { classify, FORCED_HEADER } from './classify.js';
export { ResponseParser, type ParsedResponse, type ParseResult } from './parser.js';
export { parseTarget, resolveTarget, formatTarget, UsageError } from './target.js';
export { formatSummary, toReport } from './report.js';
export { renderTimeline, bucketize, BUCKET_MS } from './timeline.js';
export { GENERATION_HEADER, countOutcomes } from './tally.js';
export * from './types.js';
