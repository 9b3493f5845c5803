/**
 * What a client's malformed, oversized or too slow request gets: the status Node itself would
 * give (Node answers 431 and 408 when a server has no 'clientError' listener; the worker has one),
 * 414 for a request line past the header limit, one `bad-request` line per kind per interval
 * (`RepeatLog`), and nothing logged for a client that went away or a connection's own error.
 */
import type net from 'node:net';
import type { RepeatLog } from './repeat-log.js';

export type ClientErrorStatus = 400 | 408 | 414 | 431;

const REASON: Record<ClientErrorStatus, string> = {
  400: 'Bad Request', 408: 'Request Timeout', 414: 'URI Too Long', 431: 'Request Header Fields Too Large',
};

type ClientError = Error & { code?: string; rawPacket?: Buffer };

/**
 * Node's parser on a server's socket (undocumented, Node 18-24: what its own headers timeout
 * reads): `headersCompleted()` is false from a request's first byte until its headers end, and
 * after a complete request it stays true until the next one begins.
 */
type ServerSocket = net.Socket & {
  parser?: { headersCompleted?: () => boolean } | null;
  _httpMessage?: { headersSent?: boolean } | null;
};

/** The status for a client error, or undefined when there is no request to answer. */
export function clientErrorStatus(err: ClientError): ClientErrorStatus | undefined {
  const code = err.code ?? '';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408; // --headers-timeout or --request-timeout
  // the parser's packet has no line end yet: the request line itself is past the limit (a header
  // line longer than one whole read would be taken for one too: both are "too large")
  if (code === 'HPE_HEADER_OVERFLOW') return err.rawPacket && !err.rawPacket.includes(10) ? 414 : 431;
  if (code === 'HPE_INVALID_EOF_STATE') return undefined; // the client closed mid-request
  return code.startsWith('HPE_') ? 400 : undefined; // else: ECONNRESET and kin, the socket's own
}

/**
 * Answers a client error (the http.Server's 'clientError') and logs it through `log`, keyed by
 * its kind. A connection already answered, or whose response has begun, is only closed.
 */
export function answerClientError(err: ClientError, socket: net.Socket, log: RepeatLog): void {
  const status = clientErrorStatus(err);
  const s = socket as ServerSocket;
  // a connection that sent nothing has no request to answer: Node's headers timeout and the idle
  // sweep (Connections.sweepIdle) both end it at --headers-timeout, silently either way
  if (status === undefined || !socket.writable || s._httpMessage?.headersSent || (status === 408 && socket.bytesRead === 0)) {
    socket.destroy();
    return;
  }
  rawAnswer(socket, status);
  const error = err.code ?? err.message;
  log.report(error, { remote: socket.remoteAddress, status, error }, { status, error });
}

/** An empty answer written on the socket itself (no request object: a malformed or unfinished request), then its end. */
export function rawAnswer(socket: net.Socket, status: ClientErrorStatus | 503, header = ''): void {
  socket.end(`HTTP/1.1 ${status} ${status === 503 ? 'Service Unavailable' : REASON[status]}\r\n${header}connection: close\r\ncontent-length: 0\r\n\r\n`);
}

/**
 * Where Node's parser has no `headersCompleted()` (Node 24), the worker follows the two parser
 * callbacks that bound a request's head instead: slot 0 (kOnMessageBegin, left empty by
 * node:http) marks a message begun, and when, slot 2 (kOnHeadersComplete, node:http's
 * parserOnHeadersComplete, 9 arguments) its headers done. Costs one call and a clock read per
 * request, on such a Node only; parsers are pooled across connections, so each connection resets
 * the mark.
 */
const IN_HEAD = Symbol('quiesce.inHead');
const BEGUN_AT = Symbol('quiesce.begunAt');
type Callback = (this: HookedParser, ...args: unknown[]) => unknown;
type HookedParser = {
  [slot: number]: Callback | null | undefined;
  [IN_HEAD]?: boolean;
  [BEGUN_AT]?: number;
  /** Node 18-20: false from a message's first byte until its headers end (see ServerSocket). */
  headersCompleted?: () => boolean;
  /** Node 18-20: ms since the parser's last message began (0 before any). */
  duration?: () => number;
  /** node:http's request being parsed, or the last one (its `complete` once all of it is in). */
  incoming?: { complete: boolean } | null;
};
let nodeHeadersComplete: Callback | undefined;
function messageBegin(this: HookedParser): void { this[IN_HEAD] = true; this[BEGUN_AT] = Date.now(); }
function headersComplete(this: HookedParser, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown, f: unknown, g: unknown, h: unknown, i: unknown): unknown {
  this[IN_HEAD] = false;
  return nodeHeadersComplete!.call(this, a, b, c, d, e, f, g, h, i);
}

/** Follow the head of every request on this new connection, where Node's parser cannot tell (see above). */
export function watchHead(socket: net.Socket): void {
  const p = (socket as ServerSocket).parser as HookedParser | null | undefined;
  if (!p || typeof p.headersCompleted === 'function') return;
  p[IN_HEAD] = false;
  if (p[2] !== headersComplete) {
    if (p[0] != null || typeof p[2] !== 'function' || p[2].name !== 'parserOnHeadersComplete') return; // not the parser we know: no signal
    nodeHeadersComplete ??= p[2];
    p[2] = headersComplete;
  }
  p[0] = messageBegin; // (node:http empties slot 0 when it pools a parser, and keeps slot 2)
}

/** A request partly received on this connection (its headers begun, not complete): not idle. */
export function midRequest(socket: net.Socket): boolean {
  const p = (socket as ServerSocket).parser as HookedParser | null | undefined;
  if (!p || socket.bytesRead === 0) return false;
  return inHead(p);
}

function inHead(p: HookedParser): boolean {
  return typeof p.headersCompleted === 'function' ? !p.headersCompleted() : p[IN_HEAD] === true;
}

/**
 * Whether the request on this new connection (after watchHead) can be followed: when it began,
 * whether its head or its body is coming (`receiving`). Node 18-20's parser tells; Node 24's is
 * followed through watchHead's callbacks. False for a parser we do not know (a future Node).
 */
export function followable(socket: net.Socket): boolean {
  const p = (socket as ServerSocket).parser as HookedParser | null | undefined;
  if (!p) return false;
  if (typeof p.headersCompleted === 'function') return typeof p.duration === 'function';
  return p[0] === messageBegin && p[2] === headersComplete;
}

/**
 * The request still coming in on this connection: whether its head (else its body) is, and since
 * when (ms since its first byte); undefined when none is (no byte yet, between requests, or the
 * whole request is in). What Node's own headers and request timeouts read (its connections list:
 * a message begun and not complete).
 */
export function receiving(socket: net.Socket): { head: boolean; ms: number } | undefined {
  const p = (socket as ServerSocket).parser as HookedParser | null | undefined;
  if (!p || socket.bytesRead === 0) return undefined;
  const head = inHead(p);
  if (!head && (p.incoming == null || p.incoming.complete)) return undefined;
  const ms = typeof p.duration === 'function' ? p.duration() : p[BEGUN_AT] !== undefined ? Date.now() - p[BEGUN_AT] : undefined;
  return ms === undefined ? undefined : { head, ms };
}
