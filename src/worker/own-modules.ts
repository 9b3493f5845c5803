/**
 * quiesce's own modules a worker loads on demand (mime and friends only where files are served,
 * undici's Response only for a fetch app), each imported once and kept: a second `import()`
 * resolves the path again, which fails once `--user` dropped privileges if quiesce is installed
 * where that user cannot read (a clone in /root). A worker with `--user` loads them all before the
 * drop (`preloadOwnModules`).
 */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= load());
}

export const staticModule = once(() => import('./static.js'));
export const welcomeModule = once(() => import('./welcome.js'));
export const fetchBridgeModule = once(() => import('./fetch-bridge.js'));
/** TLS and HTTP/2 (node:tls, node:http2): only for a worker with a TLS listener or an app that brought its own TLS server. */
export const tlsModule = once(() => import('./tls.js'));

/** `tls`: the worker has a TLS listener (an app's own TLS server is known only once it loaded, as the user). */
export async function preloadOwnModules(tls: boolean): Promise<void> {
  await Promise.all([staticModule(), welcomeModule(), fetchBridgeModule(), ...(tls ? [tlsModule()] : [])]);
}
