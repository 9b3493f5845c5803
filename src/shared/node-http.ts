/**
 * node:http, loaded with require(). On Node >= 22 an ESM import of node:http builds its namespace
 * by reading every export, the lazy `WebSocket` getter too, which loads undici and with it crypto,
 * tls, http2 and zlib: about 14 MB more RSS in every process (measured on Node 24), for nothing we
 * use. Import `http` from here; `import type` from node:http stays as it is (erased).
 */
import { createRequire } from 'node:module';

export const http = createRequire(import.meta.url)('node:http') as typeof import('node:http');
