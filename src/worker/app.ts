/**
 * Loading the user's app: the public entry of the app loader (the worker core imports this).
 *
 * - `resolveAppSpec()` (./app-spec.js, light enough for the master to import) turns the CLI's positional argument into an AppSpec.
 * - `loadApp()` turns an AppSpec into a LoadedApp: the bundled welcome site or a directory are
 *   served as static files (./static.js); a module is imported and its exports (or the server
 *   it called listen() on) are served (./app-module.js, ./app-adopt.js, ./fetch-bridge.js).
 */
import type { AppSpec, LoadedApp, LoadOptions } from './app-types.js';
import { loadModuleApp } from './app-module.js';
import type { StaticListener } from './static.js';
import { staticModule, welcomeModule } from './own-modules.js';

export { AppError } from './app-types.js';
export { resolveAppSpec } from './app-spec.js';
export type { AppErrorCode, AppSpec, LoadedApp, LoadOptions, RequestListener, UpgradeListener } from './app-types.js';

export async function loadApp(spec: AppSpec, opts: LoadOptions): Promise<LoadedApp> {
  switch (spec.kind) {
    case 'site': {
      const { createStaticListener, locateSiteDir } = await staticModule(); // mime and friends only where files are served
      const { welcomeListener } = await welcomeModule();
      const dir = locateSiteDir();
      const files = await createStaticListener(dir, { autoindex: false, onError: opts.onError, fileCache: spec.fileCache, maxAgeMs: spec.staticMaxAge, immutable: spec.staticImmutable });
      return { ...staticApp(files), listener: welcomeListener(dir, opts.admin ?? '', files) };
    }
    case 'dir': {
      const { createStaticListener } = await staticModule();
      return staticApp(await createStaticListener(spec.root, { autoindex: spec.autoindex, onError: opts.onError, fileCache: spec.fileCache, maxAgeMs: spec.staticMaxAge, immutable: spec.staticImmutable }));
    }
    case 'module':
      return loadModuleApp(spec.path, opts);
  }
}

function staticApp(listener: StaticListener): LoadedApp {
  const cache = listener.fileCache;
  // over HTTP/2 too: the static handler uses only what Node's compat request and response share with HTTP/1's
  return { kind: 'static', listener, fileCacheBytes: () => cache?.bytes ?? 0, http2: true };
}
