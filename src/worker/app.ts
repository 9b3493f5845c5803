/**
 * Loading the user's app: the public entry of the app loader (the worker core imports this).
 *
 * - `resolveAppSpec()` turns the CLI's positional argument into an AppSpec.
 * - `loadApp()` turns an AppSpec into a LoadedApp: the bundled welcome site or a directory are
 *   served as static files (./static.js); a module is imported and its exports (or the server
 *   it called listen() on) are served (./app-module.js, ./app-adopt.js, ./fetch-bridge.js).
 */
import { realpathSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { AppError, type AppSpec, type LoadedApp, type LoadOptions } from './app-types.js';
import { createStaticListener, locateSiteDir } from './static.js';
import { loadModuleApp } from './app-module.js';

export { AppError } from './app-types.js';
export type { AppErrorCode, AppSpec, LoadedApp, LoadOptions, RequestListener, UpgradeListener } from './app-types.js';

/**
 * Resolves the CLI's positional argument: undefined → the bundled site; a directory → static
 * files from it; a file → a module (its real path). Anything else throws AppError('APP_NOT_FOUND').
 */
export function resolveAppSpec(arg: string | undefined, cwd: string, autoindex: boolean): AppSpec {
  if (arg === undefined || arg === '') return { kind: 'site' };
  const abs = resolve(cwd, arg);
  let st;
  try {
    st = statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file or directory' : ((err as Error).message ?? String(err));
    throw new AppError('APP_NOT_FOUND', `app ${abs} not found: ${why}`, { cause: err });
  }
  if (st.isDirectory()) return { kind: 'dir', root: abs, autoindex };
  if (st.isFile()) return { kind: 'module', path: realpathSync(abs) };
  throw new AppError('APP_NOT_FOUND', `app ${abs} is neither a file (a module to load) nor a directory (to serve)`);
}

export async function loadApp(spec: AppSpec, opts: LoadOptions): Promise<LoadedApp> {
  switch (spec.kind) {
    case 'site':
      return { kind: 'static', listener: await createStaticListener(locateSiteDir(), { autoindex: false, onError: opts.onError }) };
    case 'dir':
      return { kind: 'static', listener: await createStaticListener(spec.root, { autoindex: spec.autoindex, onError: opts.onError }) };
    case 'module':
      return loadModuleApp(spec.path, opts);
  }
}
