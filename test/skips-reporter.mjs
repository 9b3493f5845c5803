// A node:test reporter (beside the usual one, see run.mjs) that writes one JSON line per skipped
// test: its file, name and reason. run.mjs prints them at the end of the run, so a test skipped
// for a missing tool (chromium, unshare, root) is said, not buried in the TAP output.
export default async function* skips(source) {
  for await (const event of source) {
    if (event.type === 'test:pass' && event.data.skip !== undefined && event.data.skip !== false) {
      const reason = typeof event.data.skip === 'string' ? event.data.skip : '(no reason given)';
      yield `${JSON.stringify({ file: event.data.file ?? '', name: event.data.name, reason })}\n`;
    }
  }
}
