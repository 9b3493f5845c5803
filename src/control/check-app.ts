/**
 * `quiesce configtest APP`: load the app as a worker would, in a child process (forked with this
 * file as its entry), and report what a start would: the same loader, source maps on, the same
 * error text. `init()` runs only when asked (`--init`): it may open connections to production.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../shared/errors.js';
import type { AppSpec } from '../worker/app-types.js';

/** What the child reports: the app's kind when it loaded, else the worker's fatal code and message. */
export type CheckResult = { ok: true; kind: string } | { ok: false; code: string; message: string };

const ENTRY = fileURLToPath(import.meta.url);

/** Loads `spec` in a child process; ends it after `timeoutMs`. */
export function checkApp(spec: AppSpec, opts: { init: boolean; timeoutMs: number }): Promise<CheckResult> {
  return new Promise((resolve) => {
    const child = fork(ENTRY, [], {
      env: { ...process.env, QUIESCE_CHECK_APP: JSON.stringify({ spec, init: opts.init }) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json',
    });
    let result: CheckResult | undefined;
    const timer = setTimeout(() => {
      result ??= { ok: false, code: 'APP_LOAD_FAILED', message: `loading the app took longer than --ready-timeout (${opts.timeoutMs / 1000} s)` };
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('message', (m: unknown) => { result ??= m as CheckResult; });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(result ?? { ok: false, code: 'APP_LOAD_FAILED', message: `the app's process exited before it loaded (code ${code}, signal ${signal})` });
    });
  });
}

/** The child's side: load (and init if asked), report, exit whatever the app left running. */
async function childMain(): Promise<void> {
  const { spec, init } = JSON.parse(process.env.QUIESCE_CHECK_APP ?? '{}') as { spec: AppSpec; init: boolean };
  const report = (r: CheckResult): void => {
    process.send?.(r, () => process.exit(0));
  };
  process.setSourceMapsEnabled(true);
  const { loadApp } = await import('../worker/app.js');
  let app;
  try {
    app = await loadApp(spec, { onError: () => {} });
  } catch (err) {
    return report({ ok: false, code: (err as { code?: string }).code ?? 'APP_LOAD_FAILED', message: errorMessage(err) });
  }
  if (init) {
    try {
      await app.init?.();
    } catch (err) {
      // the worker's wording (worker.ts), so that configtest says what the start would
      return report({ ok: false, code: 'APP_INIT_FAILED', message: `init() failed: ${errorMessage(err)}` });
    }
  }
  report({ ok: true, kind: app.kind });
}

if (process.env.QUIESCE_CHECK_APP && process.send) await childMain();
