// Turns what one exchange saw into one of the seven outcome classes.
import type { Exchange } from './connection.js';
import type { OutcomeKind } from './types.js';

/**
 * The connection never came to be: nothing listens there (ECONNREFUSED; ENOENT for a unix socket
 * path), or a unix socket's accept queue was full at connect() (EAGAIN: where TCP drops the SYN
 * and retries, a unix connect fails at once; nothing was sent either way).
 */
const REFUSED = new Set(['ECONNREFUSED', 'ENOENT', 'EAGAIN', 'REFUSED_STREAM', 'GOAWAY']);
/** The server ended an established connection (H2_RESET: an HTTP/2 stream reset, or its session gone, before its response was complete). */
const RESET = new Set(['ECONNRESET', 'EPIPE', 'EOF', 'ECONNABORTED', 'H2_RESET']);

export const FORCED_HEADER = 'quiesce-forced';

export interface Classified {
  kind: OutcomeKind;
  /** True for a cut after some response bytes had arrived. */
  afterBytes: boolean;
  status?: number;
  code?: string;
}

export function classify(e: Exchange, reused: boolean): Classified {
  switch (e.type) {
    case 'response':
      return {
        kind: e.response.headers.has(FORCED_HEADER) ? 'forced' : 'ok',
        afterBytes: false,
        status: e.response.status,
      };
    case 'timeout':
      return { kind: 'timeout', afterBytes: e.bytes > 0 };
    case 'failed':
      if (!e.established && REFUSED.has(e.code)) return { kind: 'refused', afterBytes: false, code: e.code };
      if (RESET.has(e.code)) {
        // A request on a reused connection that met the close of that idle connection before any
        // response byte is the keep-alive race; on a fresh connection, or after bytes, it is a cut.
        // (A reset reported while connecting still hit an established connection: the kernel had
        // completed the handshake, the request was queued; so it is a cut too.)
        if (reused && e.bytes === 0) return { kind: 'ka_race', afterBytes: false, code: e.code };
        return { kind: 'cut', afterBytes: e.bytes > 0, code: e.code };
      }
      return { kind: 'other', afterBytes: e.bytes > 0, code: e.code };
  }
}
