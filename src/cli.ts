#!/usr/bin/env node
/**
 * Entry point: a worker when forked by the master (QUIESCE_ROLE=worker), else the command line:
 * `quiesce [APP] [flags]` runs a server; `quiesce VERB` talks to a running one.
 */
if (process.env.QUIESCE_ROLE === 'worker') {
  const { workerMain } = await import('./worker/worker.js');
  await workerMain();
} else {
  const { cliMain } = await import('./control/cli.js');
  process.exit(await cliMain(process.argv.slice(2)));
}
