/** The CLI's positional argument → AppSpec. Kept apart from the loader so the master can use it without loading `send` and friends. */
import { realpathSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { AppError, type AppSpec, type StaticSettings } from './app-types.js';

/**
 * Resolves the CLI's positional argument: undefined → the bundled site; a directory → static
 * files from it (served with `statics`); a file → a module (its real path). Anything else throws AppError('APP_NOT_FOUND').
 */
export function resolveAppSpec(arg: string | undefined, cwd: string, statics: StaticSettings): AppSpec {
  const { autoindex, fileCache, staticMaxAge } = statics;
  const immutable = statics.staticImmutable?.length ? { staticImmutable: statics.staticImmutable } : {};
  if (arg === undefined || arg === '') return { kind: 'site', fileCache, staticMaxAge, ...immutable };
  const abs = resolve(cwd, arg);
  let st;
  try {
    st = statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file or directory' : ((err as Error).message ?? String(err));
    throw new AppError('APP_NOT_FOUND', `app ${abs} not found: ${why}`, { cause: err });
  }
  if (st.isDirectory()) return { kind: 'dir', root: abs, autoindex, fileCache, staticMaxAge, ...immutable };
  if (st.isFile()) return { kind: 'module', path: realpathSync(abs) };
  throw new AppError('APP_NOT_FOUND', `app ${abs} is neither a file (a module to load) nor a directory (to serve)`);
}

