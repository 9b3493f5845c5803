/**
 * The Node <-> fetch bridge: runs a fetch-style handler (`(request) => Response`) on a Node
 * http.Server. Bodies stream both ways: the request body is a ReadableStream fed from `req` with
 * backpressure (never buffered whole), the response body is written to `res` chunk by chunk,
 * waiting for 'drain'. The Request's signal aborts when the client goes away before the response
 * finished.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestListener } from './app-types.js';
import { failResponse, report, type ErrorSink } from './app-guard.js';

/** The second argument handed to the fetch handler (Hono reads `c.env.incoming` for conn info). */
export type NodeBindings = { incoming: IncomingMessage; outgoing: ServerResponse };
export type FetchHandler = (request: Request, env: NodeBindings) => unknown;

const ABSOLUTE_URL = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Builds the absolute URL of a Node request; throws (TypeError) when the Host header is unusable. */
export function requestUrl(req: IncomingMessage): URL {
  const target = req.url ?? '/';
  if (ABSOLUTE_URL.test(target)) return new URL(target);
  const encrypted = (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
  const host = req.headers.host || 'localhost';
  // Concatenate rather than resolve: new URL('//x/y', base) would read 'x' as a host.
  return new URL(`${encrypted ? 'https' : 'http'}://${host}${target.startsWith('/') ? target : `/${target}`}`);
}

function requestHeaders(req: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.startsWith(':')) continue; // HTTP/2 pseudo-headers
    try {
      headers.append(name, raw[i + 1] as string);
    } catch {
      // a header value undici refuses: leave it out rather than fail the request
    }
  }
  return headers;
}

function hasRequestBody(req: IncomingMessage): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return false;
  const len = req.headers['content-length'];
  if (len !== undefined) return len.trim() !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/**
 * The request body as a byte stream, read from `req` only when the consumer pulls (the stream
 * holds no queue of its own: `req` is paused between reads). A body nobody touches is left to
 * Node, which discards it after the response. `discard()` (called when the response finished)
 * and cancel() stop reading and let Node drop the rest, so that the connection stays usable.
 */
export function requestBodyStream(req: IncomingMessage): { stream: ReadableStream<Uint8Array>; discard(): void } {
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  let reading = false;
  let settled = false;
  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    try {
      controller?.enqueue(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch {
      return; // closed or errored meanwhile
    }
    if ((controller?.desiredSize ?? 0) <= 0) req.pause();
  };
  const settle = (fn: () => void): void => {
    if (settled) return;
    settled = true;
    req.off('data', onData);
    req.off('end', onEnd);
    req.off('error', onError);
    req.off('close', onClose);
    try {
      fn();
    } catch {
      // the stream was already closed or errored
    }
  };
  const onEnd = (): void => settle(() => controller?.close());
  const onError = (err: Error): void => settle(() => controller?.error(err));
  const onClose = (): void => {
    if (!req.complete) onError(new Error('the client aborted the request'));
  };
  // 'error' and 'close' do not consume the body: watch them from the start.
  req.on('error', onError);
  req.on('close', onClose);
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        if (settled) return;
        if (!reading) {
          reading = true;
          req.on('data', onData);
          req.on('end', onEnd);
        }
        req.resume();
      },
      cancel() {
        settle(() => {});
        if (reading) req.resume(); // drain and drop the rest
      },
    },
    { highWaterMark: 0 },
  );
  const discard = (): void => {
    if (settled) return;
    if (!reading) {
      settle(() => {}); // untouched: Node dumps it
      return;
    }
    settle(() => controller?.error(new Error('the response finished before the request body was read')));
    req.resume();
  };
  return { stream, discard };
}

/**
 * Builds a fetch Request for a Node request. Its signal aborts when `res` closes before it
 * finished (the client went away). Throws when URL, method or headers cannot form a Request.
 */
export function toRequest(req: IncomingMessage, res: ServerResponse): Request {
  const controller = new AbortController();
  const url = requestUrl(req);
  const init: RequestInit & { duplex?: 'half' } = {
    method: req.method ?? 'GET',
    headers: requestHeaders(req),
    signal: controller.signal,
  };
  let discard: (() => void) | undefined;
  if (hasRequestBody(req)) {
    const body = requestBodyStream(req);
    init.body = body.stream;
    init.duplex = 'half'; // required by undici for a streamed body
    discard = body.discard;
  }
  const request = new Request(url, init);
  if (discard) res.once('finish', discard);
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
    discard?.();
  });
  return request;
}

/** What a handler must return: a Response, or anything shaped like one (e.g. another fetch polyfill). */
type ResponseLike = {
  status: number;
  statusText?: string;
  headers: { forEach(cb: (value: string, key: string) => void): void; getSetCookie?: () => string[] };
  body: ReadableStream<Uint8Array> | null;
};

export function isResponseLike(v: unknown): v is ResponseLike {
  if (v instanceof Response) return true;
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Partial<ResponseLike>;
  return typeof r.status === 'number' && typeof r.headers?.forEach === 'function' && 'body' in r;
}

const NO_BODY_STATUS = new Set([204, 205, 304]);
const STRIPPED_HEADERS = new Set(['transfer-encoding', 'connection', 'keep-alive']);

function waitWritable(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Writes a fetch Response to `res`, streaming its body with backpressure. Resolves when the
 * response ended (or the client went away: then the body is cancelled). Rejects on a body error;
 * the caller then destroys `res`.
 */
export async function writeResponse(req: IncomingMessage, res: ServerResponse, response: ResponseLike): Promise<void> {
  res.statusCode = response.status;
  if (response.statusText) res.statusMessage = response.statusText;
  const cookies: string[] = [];
  response.headers.forEach((value, key) => {
    const name = key.toLowerCase();
    if (name === 'set-cookie') cookies.push(value);
    else if (!STRIPPED_HEADERS.has(name)) res.setHeader(key, value);
  });
  const setCookies = typeof response.headers.getSetCookie === 'function' ? response.headers.getSetCookie() : cookies;
  if (setCookies.length > 0) res.setHeader('set-cookie', setCookies);

  const body = response.body;
  if (body === null || req.method === 'HEAD' || NO_BODY_STATUS.has(response.status) || response.status < 200) {
    if (body !== null) body.cancel().catch(() => {});
    res.end();
    return;
  }

  const reader = body.getReader();
  let clientGone = false;
  const onClose = (): void => {
    if (res.writableFinished) return;
    clientGone = true;
    reader.cancel().catch(() => {});
  };
  res.on('close', onClose);
  // Headers go out with the first chunk; if that chunk is not there at once (SSE, slow producer),
  // send them now so that the client sees the status line.
  const flush = setImmediate(() => {
    if (!res.headersSent && !res.destroyed) res.flushHeaders();
  });
  // every read is awaited, except maybe the last one when the client went away: never let it
  // become an unhandled rejection
  const read = (): Promise<ReadableStreamReadResult<Uint8Array>> => {
    const p = reader.read();
    p.catch(() => {});
    return p;
  };
  try {
    let next = read();
    const first = await next;
    clearImmediate(flush);
    if (first.done) {
      if (!res.headersSent && !res.hasHeader('content-length')) res.setHeader('content-length', 0);
      if (!res.destroyed) res.end();
      return;
    }
    next = read();
    // A body that is one chunk already there (new Response('text'), c.json()): send it with a
    // Content-Length instead of chunked encoding.
    const second = await Promise.race([next, new Promise<null>((r) => setImmediate(r, null))]);
    if (second?.done === true && first.value instanceof Uint8Array && !res.headersSent && !res.destroyed) {
      if (!res.hasHeader('content-length')) res.setHeader('content-length', first.value.byteLength);
      res.end(first.value);
      return;
    }
    let chunk: ReadableStreamReadResult<Uint8Array> = first;
    for (;;) {
      if (clientGone || res.destroyed) break;
      if (!res.write(chunk.value)) await waitWritable(res);
      chunk = await next;
      if (chunk.done) break;
      next = read();
    }
    if (!clientGone && !res.destroyed) res.end();
  } catch (err) {
    if (!clientGone) throw err;
  } finally {
    clearImmediate(flush);
    res.off('close', onClose);
  }
}

/**
 * A Node request listener running a fetch-style handler. Never throws and never rejects: errors
 * from the handler (throw, rejection, not a Response) answer 500 and go to `onError`; a body
 * error after the headers were sent destroys the response.
 */
export function fetchListener(handler: FetchHandler, onError: ErrorSink): RequestListener {
  return (req, res) => {
    void serve(handler, req, res, onError);
  };
}

async function serve(handler: FetchHandler, req: IncomingMessage, res: ServerResponse, onError: ErrorSink): Promise<void> {
  let request: Request;
  try {
    request = toRequest(req, res);
  } catch {
    failResponse(res, 400, 'Bad Request');
    return;
  }
  let response: unknown;
  try {
    response = await handler(request, { incoming: req, outgoing: res });
  } catch (err) {
    if (!request.signal.aborted) report(onError, err, 'fetch');
    failResponse(res);
    return;
  }
  if (res.writableEnded || res.destroyed) {
    // the handler answered through env.outgoing, or the client left: drop the body it made
    if (isResponseLike(response) && response.body !== null) response.body.cancel().catch(() => {});
    return;
  }
  if (!isResponseLike(response)) {
    report(onError, new TypeError(`the fetch handler returned ${describe(response)} instead of a Response`), 'fetch');
    failResponse(res);
    return;
  }
  try {
    await writeResponse(req, res, response);
  } catch (err) {
    report(onError, err, 'fetch');
    failResponse(res);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return `an object (${(v as object).constructor?.name ?? 'Object'})`;
  return typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`;
}
