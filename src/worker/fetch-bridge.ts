/**
 * The Node <-> fetch bridge: runs a fetch-style handler (`(request) => Response`) on a Node
 * http.Server. Bodies stream both ways: the request body is a ReadableStream fed from `req` with
 * backpressure (never buffered whole), the response body is written to `res` chunk by chunk,
 * waiting for 'drain'. The Request's signal aborts when the client goes away before the response
 * finished.
 *
 * What makes it cheap (the ideas of @hono/node-server):
 * - the handler gets a lightweight Request (`instanceof Request`): method and url are plain
 *   strings (the URL parser runs only for unusual targets), Headers are built on first use, the
 *   AbortController and its 'close' listener only when `signal` is read, and the real Request
 *   (with its body stream) only when the handler touches the body or anything else;
 * - in a worker serving a fetch app, `globalThis.Response` is a lightweight Response (see
 *   LightResponse) as long as its body is a string or null: constructing undici's Response (and
 *   its body stream) is most of the cost of a small request on Node 20; where undici cannot take
 *   the lightweight Request as input (Node 24: private fields), `globalThis.Request` and `fetch`
 *   unwrap it (BridgeRequest), else every request would build a real Request (half the speed);
 * - a Response whose body is a string or bytes is written with one writeHead (a flat header
 *   list) and one end(), without reading its stream; other bodies are streamed.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { RequestListener } from './app-types.js';
import { failResponse, report, type ErrorSink } from './app-guard.js';
import { markWhole } from './h2-no-trailers.js';

/** The second argument handed to the fetch handler (Hono reads `c.env.incoming` for conn info). */
export type NodeBindings = { incoming: IncomingMessage; outgoing: ServerResponse };
export type FetchHandler = (request: Request, env: NodeBindings) => unknown;

// ─── the request URL ────────────────────────────────────────────────────────────────────────────

const ABSOLUTE_URL = /^[a-z][a-z0-9+.-]*:\/\//i;
// Characters the WHATWG URL parser keeps as they are, in the path and in the query of an http(s)
// URL (the query also encodes `'`). '%' stays as is too, but "%2e" can spell a dot segment.
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
const PLAIN_QUERY = /^[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*$/;
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;
// A lowercase host name the parser keeps as is: no IDNA ('--' covers "xn--"), no empty label.
const PLAIN_HOSTNAME = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/;
const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
// The last label makes the host an IPv4 address (WHATWG "ends in a number").
const NUMERIC_LABEL = /(?:^|\.)(?:\d+|0x[0-9a-f]*)$/;

/** Whether `http(s)://${host}` is already in the form `new URL()` serializes it to. */
function plainHost(host: string, https: boolean): boolean {
  const colon = host.lastIndexOf(':');
  let name = host;
  if (colon >= 0) {
    const port = host.slice(colon + 1);
    if (!/^[1-9]\d{0,4}$/.test(port) || Number(port) > 65535 || port === (https ? '443' : '80')) return false;
    name = host.slice(0, colon);
  }
  if (!PLAIN_HOSTNAME.test(name) || name.includes('--')) return false;
  return !NUMERIC_LABEL.test(name) || DOTTED_QUAD.test(name);
}

/** Whether an origin-form target is already in the form `new URL()` serializes it to. */
function plainTarget(target: string): boolean {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  if (!PLAIN_PATH.test(path) || DOT_SEGMENT.test(path)) return false;
  return q < 0 || PLAIN_QUERY.test(target.slice(q + 1));
}

/**
 * The absolute URL (serialized, as `new Request(url).url` has it) of a Node request; throws
 * (TypeError) when the Host header is unusable. Common requests skip the URL parser.
 */
export function requestUrl(req: IncomingMessage): string {
  const target = req.url ?? '/';
  if (ABSOLUTE_URL.test(target)) return new URL(target).href;
  const https = (req.socket as { encrypted?: boolean } | null)?.encrypted === true;
  const host = hostHeader(req.rawHeaders) || 'localhost';
  // Concatenate rather than resolve: new URL('//x/y', base) would read 'x' as a host.
  const url = `${https ? 'https' : 'http'}://${host}${target.startsWith('/') ? target : `/${target}`}`;
  if (plainHostCached(host, https) && plainTarget(target)) return url;
  return new URL(url).href;
}

/** The first Host header (as `req.headers.host`), or HTTP/2's `:authority`, without making Node build `req.headers`. */
function hostHeader(raw: string[]): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') return raw[i + 1];
    if (name === ':authority') return raw[i + 1];
  }
  return undefined;
}

// The Host header rarely changes from one request to the next.
let lastHost = '';
let lastHostHttps = false;
let lastHostPlain = false;
function plainHostCached(host: string, https: boolean): boolean {
  if (host !== lastHost || https !== lastHostHttps) {
    lastHost = host;
    lastHostHttps = https;
    lastHostPlain = plainHost(host, https);
  }
  return lastHostPlain;
}

// ─── the request ────────────────────────────────────────────────────────────────────────────────

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

/** Methods a fetch Request refuses (undici throws): answered 400 before the handler runs. */
const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK']);

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

/** The client went away before the response finished. */
function clientGone(res: ServerResponse): boolean {
  return res.destroyed && !res.writableFinished;
}

/**
 * What the handler gets: `instanceof Request`, with method, url and headers of its own, and
 * everything else (body, body readers, clone(), the other attributes, and undici's internal
 * slots, so that `new Request(request)` and `fetch(request)` work) taken from a real Request built
 * on first use. `signal` is our own AbortController's, which the real Request follows.
 */
/** undici's Request, as the global was when this module loaded (a fetch app may get a subclass: see useLightClasses). */
const RealRequest: typeof Request = globalThis.Request;

class NodeRequest {
  readonly #incoming: IncomingMessage;
  readonly #outgoing: ServerResponse;
  readonly #url: string;
  #headers: Headers | undefined;
  #controller: AbortController | undefined;
  #request: Request | undefined;

  /** Throws (TypeError) when the request cannot form a fetch Request. */
  constructor(incoming: IncomingMessage, outgoing: ServerResponse) {
    const method = incoming.method ?? 'GET';
    if (FORBIDDEN_METHODS.has(method)) throw new TypeError(`'${method}' HTTP method is unsupported.`);
    this.#incoming = incoming;
    this.#outgoing = outgoing;
    this.#url = requestUrl(incoming);
  }

  get method(): string {
    return this.#incoming.method ?? 'GET';
  }

  get url(): string {
    return this.#url;
  }

  get headers(): Headers {
    return (this.#headers ??= requestHeaders(this.#incoming));
  }

  get signal(): AbortSignal {
    return this.#abortController().signal;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this.#request === undefined && !hasRequestBody(this.#incoming)) return null;
    return this.#real().body;
  }

  get bodyUsed(): boolean {
    return this.#request?.bodyUsed ?? false;
  }

  #abortController(): AbortController {
    if (this.#controller) return this.#controller;
    const controller = new AbortController();
    this.#controller = controller;
    const res = this.#outgoing;
    if (clientGone(res)) controller.abort();
    else if (!res.destroyed) {
      res.once('close', () => {
        if (!res.writableFinished) controller.abort();
      });
    }
    return controller;
  }

  #real(): Request {
    if (this.#request) return this.#request;
    const req = this.#incoming;
    const res = this.#outgoing;
    const init: RequestInit & { duplex?: 'half' } = { method: this.method, headers: this.headers, signal: this.signal };
    let discard: (() => void) | undefined;
    if (hasRequestBody(req)) {
      const body = requestBodyStream(req);
      init.body = body.stream;
      init.duplex = 'half'; // required by undici for a streamed body
      discard = body.discard;
    }
    this.#request = new RealRequest(this.#url, init);
    if (discard) {
      if (res.destroyed) discard();
      else {
        res.once('finish', discard);
        res.once('close', discard);
      }
    }
    return this.#request;
  }

  /** The real Request behind `r`, built now if need be. */
  static real(r: NodeRequest): Request {
    return r.#real();
  }

  /** Whether `r`'s signal is (or would be, once read) aborted; creates no signal. */
  static aborted(r: NodeRequest): boolean {
    return r.#controller ? r.#controller.signal.aborted : clientGone(r.#outgoing);
  }

  [Symbol.for('nodejs.util.inspect.custom')](depth: number, options: object, inspect: (v: unknown, o: object) => string): string {
    const shown = { method: this.method, url: this.url, headers: this.headers, bodyUsed: this.bodyUsed };
    return `Request (quiesce) ${inspect(shown, { ...options, depth: depth - 1 })}`;
  }
}

/**
 * Gives `proto` every member of `realProto` it does not define itself, taken from the real object
 * `real(this)` returns; and undici's internal symbol-keyed slots (those of `sample`, Node 20/22),
 * which e.g. `new Request(input)` and `fetch(input)` read from their input. Then chains `proto`
 * to `realProto`, so that instanceof holds.
 */
function delegateToReal(proto: object, realProto: object, sample: object, real: (self: unknown) => object): void {
  const target = proto as Record<PropertyKey, unknown>;
  const of = (self: unknown): Record<PropertyKey, unknown> => real(self) as Record<PropertyKey, unknown>;
  for (const [name, d] of Object.entries(Object.getOwnPropertyDescriptors(realProto))) {
    if (Object.hasOwn(target, name)) continue;
    if (d.get) {
      Object.defineProperty(target, name, { configurable: true, enumerable: d.enumerable ?? false, get: function (this: unknown) { return of(this)[name]; } });
    } else if (typeof d.value === 'function') {
      Object.defineProperty(target, name, {
        configurable: true,
        writable: true,
        enumerable: d.enumerable ?? false,
        value: function (this: unknown, ...args: unknown[]) {
          const r = of(this);
          return (r[name] as (...a: unknown[]) => unknown).apply(r, args);
        },
      });
    }
  }
  for (const sym of Object.getOwnPropertySymbols(sample)) {
    if (Object.hasOwn(target, sym)) continue;
    Object.defineProperty(target, sym, {
      configurable: true,
      get: function (this: unknown) { return of(this)[sym]; },
      set: function (this: unknown, v: unknown) { of(this)[sym] = v; },
    });
  }
  Object.setPrototypeOf(proto, realProto);
}

delegateToReal(NodeRequest.prototype, RealRequest.prototype, new RealRequest('http://localhost/'), (self) => NodeRequest.real(self as NodeRequest));
// `request.constructor` is Request, as for a real one.
Object.defineProperty(NodeRequest.prototype, 'constructor', { configurable: true, writable: true, enumerable: false, value: RealRequest });

/**
 * Whether the lightweight request can stand for a real one here: `new Request(light)` must work
 * (it does not with an undici that keeps its state in private fields). If not, every request gets
 * a real Request built at once (slower, same behaviour).
 */
const NATIVE_LIGHT_REQUESTS: boolean = (() => {
  try {
    const incoming = new IncomingMessage(new Socket());
    incoming.method = 'GET';
    incoming.url = '/probe?x=1';
    incoming.headers = { host: 'localhost:8080', 'x-probe': '1' };
    incoming.rawHeaders = ['Host', 'localhost:8080', 'X-Probe', '1'];
    const copy = new RealRequest(new NodeRequest(incoming, new ServerResponse(incoming)) as unknown as Request);
    return copy.url === 'http://localhost:8080/probe?x=1' && copy.method === 'GET' && copy.headers.get('x-probe') === '1';
  } catch {
    return false;
  }
})();

/** Whether handlers get the lightweight request: natively, or once useLightClasses() installed BridgeRequest. */
let lightRequests = NATIVE_LIGHT_REQUESTS;

/**
 * For an undici that keeps a Request's state in private fields (Node 24): a global Request that
 * takes the real request behind a lightweight one (`new Request(light)`, `new Request(light, init)`),
 * as @hono/node-server does. `instanceof` holds for every real Request as before.
 */
/** A lightweight request as undici's own; any other input as it is. */
function unwrap(input: RequestInfo | URL): RequestInfo | URL {
  return input instanceof NodeRequest ? NodeRequest.real(input) : input;
}

class BridgeRequest extends RealRequest {
  constructor(input: RequestInfo | URL, init?: RequestInit) {
    super(unwrap(input), init);
  }

  static override [Symbol.hasInstance](x: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(RealRequest, x);
  }
}
Object.defineProperty(BridgeRequest, 'name', { value: 'Request' });

// ─── the response ───────────────────────────────────────────────────────────────────────────────

/** What a handler must return: a Response, or anything shaped like one (e.g. another fetch polyfill). */
type ResponseLike = {
  status: number;
  statusText?: string;
  headers: { forEach(cb: (value: string, key: string) => void): void; getSetCookie?: () => string[] };
  body: ReadableStream<Uint8Array> | null;
};

export function isResponseLike(v: unknown): v is ResponseLike {
  if (v instanceof RealResponse) return true; // lightweight ones too
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Partial<ResponseLike>;
  return typeof r.status === 'number' && typeof r.headers?.forEach === 'function' && 'body' in r;
}

// ─── the lightweight Response ───────────────────────────────────────────────────────────────────

const RealResponse: typeof Response = globalThis.Response;
const TEXT_PLAIN = 'text/plain;charset=UTF-8';
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
const NULL_BODY_STATUS = new Set([204, 205, 304]);

/** What the bridge reads from a lightweight Response that was not materialised. */
type Unmaterialised = { status: number; statusText: string; body: string | null; headers: Headers | undefined };

/**
 * A Response whose body is a string or null (what routers make for text, JSON and HTML: Hono's
 * c.text(), c.json(), c.html()) keeps status, statusText, body and Headers as plain fields; the
 * real Response (whose construction, with its body ReadableStream, is most of a small request's
 * cost on Node 20) is only built when something reads more (body, text(), clone(), …, undici's
 * internal slots). Anything else — another body type, an init the real constructor would refuse
 * or convert — is a real Response built at once, so that errors are thrown where they would be.
 * `x instanceof Response` holds for real and lightweight ones alike.
 */
class LightResponse {
  #real: Response | undefined;
  #status = 200;
  #statusText = '';
  #body: string | null = null;
  #headers: Headers | undefined;

  constructor(body: unknown = null, init?: unknown) {
    let headersInit: unknown;
    let status: unknown;
    let statusText: unknown;
    const dictionary = typeof init === 'object' && init !== null;
    if (dictionary) {
      // read once each, in the order WebIDL reads a ResponseInit
      const i = init as { headers?: unknown; status?: unknown; statusText?: unknown };
      headersInit = i.headers;
      status = i.status;
      statusText = i.statusText;
    }
    let simple =
      (body === null || typeof body === 'string') &&
      (init === undefined || init === null || dictionary) &&
      (status === undefined || (typeof status === 'number' && Number.isInteger(status) && status >= 200 && status <= 599 && !(body !== null && NULL_BODY_STATUS.has(status)))) &&
      (statusText === undefined || (typeof statusText === 'string' && REASON_PHRASE.test(statusText)));
    let headers: Headers | undefined;
    if (simple && headersInit !== undefined) {
      try {
        headers = new Headers(headersInit as HeadersInit);
        if (body !== null && !headers.has('content-type')) headers.append('content-type', TEXT_PLAIN);
      } catch {
        simple = false; // the real constructor throws its own error
      }
    }
    if (!simple) {
      const realInit = dictionary ? { headers: headersInit, status, statusText } : init;
      this.#real = new RealResponse(body as BodyInit | null, realInit as ResponseInit | undefined);
      return;
    }
    this.#body = body as string | null;
    if (status !== undefined) this.#status = status as number;
    if (statusText !== undefined) this.#statusText = statusText as string;
    this.#headers = headers;
  }

  get status(): number {
    return this.#real ? this.#real.status : this.#status;
  }

  get statusText(): string {
    return this.#real ? this.#real.statusText : this.#statusText;
  }

  get ok(): boolean {
    const status = this.status;
    return status >= 200 && status <= 299;
  }

  get headers(): Headers {
    if (this.#real) return this.#real.headers;
    return (this.#headers ??= this.#body === null ? new Headers() : new Headers([['content-type', TEXT_PLAIN]]));
  }

  get bodyUsed(): boolean {
    return this.#real ? this.#real.bodyUsed : false;
  }

  #materialise(): Response {
    if (this.#real) return this.#real;
    const headers = this.#headers;
    const real = new RealResponse(this.#body, { status: this.#status, statusText: this.#statusText, headers });
    // the constructor adds a Content-Type to a text body: not if it was deleted since
    if (headers !== undefined && !headers.has('content-type')) real.headers.delete('content-type');
    this.#real = real;
    return real;
  }

  /** The real Response behind `r`, built now if need be. */
  static real(r: LightResponse): Response {
    return r.#materialise();
  }

  /** `r`'s fields when it is a lightweight Response not materialised yet, else undefined. */
  static peek(r: unknown): Unmaterialised | undefined {
    if (typeof r !== 'object' || r === null || !(#real in r) || r.#real !== undefined) return undefined;
    return { status: r.#status, statusText: r.#statusText, body: r.#body, headers: r.#headers };
  }

  static [Symbol.hasInstance](x: unknown): boolean {
    // a subclass of the global Response checks its own prototype chain
    if (this !== LightResponse) return Function.prototype[Symbol.hasInstance].call(this, x);
    return x instanceof RealResponse;
  }

  [Symbol.for('nodejs.util.inspect.custom')](depth: number, options: object, inspect: (v: unknown, o: object) => string): string {
    const shown = { status: this.status, statusText: this.statusText, headers: this.headers, materialised: this.#real !== undefined };
    return `Response (quiesce) ${inspect(shown, { ...options, depth: depth - 1 })}`;
  }
}

delegateToReal(LightResponse.prototype, RealResponse.prototype, new RealResponse(''), (self) => LightResponse.real(self as LightResponse));
Object.defineProperty(LightResponse, 'name', { value: 'Response' });
Object.setPrototypeOf(LightResponse, RealResponse); // Response.error(), .json(), .redirect()

/**
 * Makes `globalThis.Response` the lightweight one (as @hono/node-server does by default), and,
 * where undici cannot take a lightweight Request as input, `globalThis.Request` and
 * `globalThis.fetch` the ones that unwrap it (BridgeRequest); each unless something else already
 * replaced it. Called when a fetch app is loaded, i.e. only in workers serving one.
 */
export function useLightClasses(): void {
  const hidden = { writable: true, configurable: true, enumerable: false };
  if (globalThis.Response === RealResponse) Object.defineProperty(globalThis, 'Response', { value: LightResponse, ...hidden });
  if (lightRequests || globalThis.Request !== RealRequest) return;
  const realFetch = globalThis.fetch;
  const fetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => realFetch(unwrap(input), init);
  Object.defineProperty(globalThis, 'Request', { value: BridgeRequest, ...hidden });
  Object.defineProperty(globalThis, 'fetch', { value: fetch, ...hidden });
  Object.defineProperty(NodeRequest.prototype, 'constructor', { value: BridgeRequest, ...hidden });
  lightRequests = true;
}

/** undici's (v6) internal state of a Response: the body keeps what it was made from. */
type UndiciBody = { stream: ReadableStream<Uint8Array>; source: unknown; length: number | null };
type UndiciState = { body?: UndiciBody | null };

/** The symbol of undici's Response state slot, if this undici has one whose body we understand. */
const RESPONSE_STATE: symbol | undefined = (() => {
  try {
    const probe = new RealResponse('héllo');
    const empty = new RealResponse(null);
    for (const sym of Object.getOwnPropertySymbols(probe)) {
      const body = (probe as unknown as Record<symbol, Partial<UndiciState> | undefined>)[sym]?.body;
      const none = (empty as unknown as Record<symbol, Partial<UndiciState> | undefined>)[sym];
      if (body?.source === 'héllo' && body.length === 6 && body.stream instanceof ReadableStream && none !== undefined && none.body == null) return sym;
    }
  } catch {
    // no usable state slot: every body is read through its stream
  }
  return undefined;
})();

/**
 * The body of a real Response as it was given to the constructor, when that is a string or bytes
 * nobody read yet (then writing it is the same as reading its stream); `null` for no body;
 * `undefined` when the body must be read through its stream.
 */
function givenBody(response: ResponseLike): string | Uint8Array | null | undefined {
  if (RESPONSE_STATE === undefined || !(response instanceof RealResponse)) return undefined;
  const state = (response as unknown as Record<symbol, UndiciState | undefined>)[RESPONSE_STATE];
  if (state === undefined) return undefined;
  const body = state.body;
  if (body == null) return null;
  if (body.stream.locked || response.bodyUsed) return undefined;
  const source = body.source;
  return typeof source === 'string' || source instanceof Uint8Array ? source : undefined;
}

const STRIPPED_HEADERS = new Set(['transfer-encoding', 'connection', 'keep-alive']);

type Head = { status: number; statusText: string | undefined; headers: string[]; hasLength: boolean };

/** Status and headers (a flat [name, value, …] list for writeHead, Set-Cookie kept apart). */
function responseHead(status: number, statusText: string | undefined, headers: ResponseLike['headers']): Head {
  const list: string[] = [];
  let hasLength = false;
  let cookies: string[] | undefined;
  headers.forEach((value, key) => {
    const name = key.toLowerCase();
    if (name === 'set-cookie') (cookies ??= []).push(value);
    else if (!STRIPPED_HEADERS.has(name)) {
      if (name === 'content-length') hasLength = true;
      list.push(key, value);
    }
  });
  if (cookies !== undefined) {
    const all = typeof headers.getSetCookie === 'function' ? headers.getSetCookie() : cookies;
    for (const c of all) list.push('set-cookie', c);
  }
  return { status, statusText, headers: list, hasLength };
}

function writeHead(res: ServerResponse, head: Head): void {
  markWhole(res); // a fetch Response has no trailers: over HTTP/2, no trailers round (h2-no-trailers.ts)
  if (head.statusText) res.writeHead(head.status, head.statusText, head.headers);
  else res.writeHead(head.status, head.headers);
}

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

type ReadResult = ReadableStreamReadResult<Uint8Array>;

/** The read's result if it settles within a few microtasks (the chunk is there), else undefined. */
function readNow(p: Promise<ReadResult>): Promise<ReadResult | undefined> {
  return Promise.race([p, Promise.resolve().then(() => Promise.resolve(undefined))]);
}

/**
 * Writes a fetch Response to `res`. A body given as a string or bytes is written at once, with a
 * Content-Length (then this returns undefined); other bodies are streamed with backpressure and
 * the returned promise resolves when the response ended (or the client went away: then the body
 * is cancelled). Throws / rejects on a header or body error; the caller then answers 500 or
 * destroys `res`.
 */
export function writeResponse(req: IncomingMessage, res: ServerResponse, response: ResponseLike): Promise<void> | undefined {
  const light = LightResponse.peek(response);
  if (light !== undefined) {
    const head: Head =
      light.headers !== undefined
        ? responseHead(light.status, light.statusText, light.headers)
        : { status: light.status, statusText: light.statusText, headers: light.body === null ? [] : ['content-type', TEXT_PLAIN], hasLength: false };
    writeWhole(req, res, head, light.body);
    return undefined;
  }
  const head = responseHead(response.status, response.statusText, response.headers);
  const given = givenBody(response);
  if (given !== undefined) {
    writeWhole(req, res, head, given);
    return undefined;
  }
  const body = response.body;
  if (body === null || bodyless(head.status) || req.method === 'HEAD') {
    if (body !== null) body.cancel().catch(() => {});
    writeHead(res, head);
    res.end();
    return undefined;
  }
  return writeStream(res, head, body.getReader());
}

function bodyless(status: number): boolean {
  return status < 200 || status === 204 || status === 205 || status === 304;
}

/**
 * Writes a response whose whole body is at hand, with its Content-Length (HEAD too, what a GET
 * would have; but a HEAD answered with a null body, as Hono does, says nothing of the length).
 */
function writeWhole(req: IncomingMessage, res: ServerResponse, head: Head, body: string | Uint8Array | null): void {
  const none = bodyless(head.status);
  const isHead = req.method === 'HEAD';
  if (!none && !head.hasLength && !(isHead && body === null)) {
    head.headers.push('content-length', String(body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength));
  }
  writeHead(res, head);
  if (body === null || none || isHead) res.end();
  else res.end(body);
}

async function writeStream(res: ServerResponse, head: Head, reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  let clientGone = false;
  const onClose = (): void => {
    if (res.writableFinished) return;
    clientGone = true;
    reader.cancel().catch(() => {});
  };
  res.on('close', onClose);
  // every read is awaited, except maybe the last one when the client went away: never let it
  // become an unhandled rejection
  const read = (): Promise<ReadResult> => {
    const p = reader.read();
    p.catch(() => {});
    return p;
  };
  try {
    // What the body has at once: one or two chunks then its end (new Response(blob), a stream
    // enqueuing in start()) get a Content-Length instead of chunked encoding.
    const ready: Uint8Array[] = [];
    let next: Promise<ReadResult> | undefined = read();
    let done = false;
    while (ready.length < 2) {
      const r = await readNow(next);
      if (r === undefined) break;
      if (r.done) {
        done = true;
        next = undefined;
        break;
      }
      ready.push(r.value);
      next = read();
    }
    if (clientGone || res.destroyed) return;
    if (done && !head.hasLength && ready.every((c) => c instanceof Uint8Array)) {
      head.headers.push('content-length', String(ready.reduce((n, c) => n + c.byteLength, 0)));
    }
    writeHead(res, head);
    // Headers go out with the first chunk; if there is none yet (SSE, slow producer), send them
    // now so that the client sees the status line.
    if (ready.length === 0 && !done) res.flushHeaders();
    for (const chunk of ready) res.write(chunk);
    while (next !== undefined) {
      if (clientGone || res.destroyed) return;
      if (res.writableNeedDrain) await waitWritable(res);
      const r: ReadResult = await next;
      if (r.done || clientGone || res.destroyed) break;
      next = read();
      res.write(r.value);
    }
    if (!clientGone && !res.destroyed) res.end();
  } catch (err) {
    if (!clientGone) throw err;
  } finally {
    res.off('close', onClose);
  }
}

// ─── the listener ───────────────────────────────────────────────────────────────────────────────

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * A Node request listener running a fetch-style handler. Never throws and never rejects: errors
 * from the handler (throw, rejection, not a Response) answer 500 and go to `onError`; a body
 * error after the headers were sent destroys the response.
 */
export function fetchListener(handler: FetchHandler, onError: ErrorSink): RequestListener {
  useLightClasses();
  return (req, res) => {
    let light: NodeRequest;
    try {
      light = new NodeRequest(req, res);
    } catch {
      failResponse(res, 400, 'Bad Request');
      return;
    }
    let result: unknown;
    try {
      result = handler(lightRequests ? (light as unknown as Request) : NodeRequest.real(light), { incoming: req, outgoing: res });
    } catch (err) {
      handlerFailed(light, res, err, onError);
      return;
    }
    if (isThenable(result)) {
      Promise.resolve(result).then(
        (response) => respond(req, res, response, onError),
        (err: unknown) => handlerFailed(light, res, err, onError),
      );
    } else respond(req, res, result, onError);
  };
}

function handlerFailed(light: NodeRequest, res: ServerResponse, err: unknown, onError: ErrorSink): void {
  if (!NodeRequest.aborted(light)) report(onError, err, 'fetch', res.req);
  failResponse(res);
}

function respond(req: IncomingMessage, res: ServerResponse, response: unknown, onError: ErrorSink): void {
  if (res.writableEnded || res.destroyed) {
    // the handler answered through env.outgoing, or the client left: drop the body it made
    // (a lightweight Response holds no stream)
    if (LightResponse.peek(response) === undefined && isResponseLike(response) && response.body !== null) response.body.cancel().catch(() => {});
    return;
  }
  if (!isResponseLike(response)) {
    report(onError, new TypeError(`the fetch handler returned ${describe(response)} instead of a Response`), 'fetch', req);
    failResponse(res);
    return;
  }
  try {
    writeResponse(req, res, response)?.catch((err: unknown) => writeFailed(res, err, onError));
  } catch (err) {
    writeFailed(res, err, onError);
  }
}

function writeFailed(res: ServerResponse, err: unknown, onError: ErrorSink): void {
  report(onError, err, 'fetch', res.req);
  failResponse(res);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return `an object (${(v as object).constructor?.name ?? 'Object'})`;
  return typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`;
}
