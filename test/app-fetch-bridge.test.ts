// The fetch bridge's fast paths keep fetch semantics: the lightweight Request and Response stand
// for real ones, the URL fast path serializes as the URL parser does, and what is written is what
// a real Response says.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { inspect } from 'node:util';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { fetchListener, requestUrl, type FetchHandler } from '../src/worker/fetch-bridge.js';

const servers: http.Server[] = [];
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

type Served = { port: number; errors: unknown[] };

async function serve(handler: FetchHandler): Promise<Served> {
  const errors: unknown[] = [];
  const server = http.createServer(fetchListener(handler, (err) => errors.push(err)));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, errors };
}

type Answer = { status: number; statusText: string; headers: http.IncomingHttpHeaders; rawHeaders: string[]; body: string };

function call(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: res.headers, rawHeaders: res.rawHeaders, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A fake IncomingMessage with just what requestUrl reads. */
function incoming(url: string, host: string | undefined, encrypted = false): IncomingMessage {
  const rawHeaders = host === undefined ? [] : ['Host', host];
  // requestUrl reads url, rawHeaders and socket.encrypted only
  return { url, rawHeaders, socket: { encrypted } } as unknown as IncomingMessage;
}

test('the URL fast path serializes exactly as the URL parser does', () => {
  const hosts = ['localhost', 'localhost:8080', '127.0.0.1:3000', 'Example.COM', 'example.com:80', 'example.com:443', 'a.b.', 'a..b', '127.1', '0x7f.1',
    '1.2.3.256', 'xn--nxasmq6b.com', 'a--b.com', 'host:080', 'host:', 'host:65536', 'host:0', '[::1]:8080', 'h_x', 'foo.123', 'foo.0x1', 'exa mple', ''];
  const targets = ['/', '/a/b?c=d&e=f', '/a/./b', '/a/../b', '/a/%2e%2E/b', '/a/.%2e/', '/a%2e/b', "/it's?q='x'", '/a b', '/a|b^c[d]', '/?a|b', '/%zz/%41',
    '/é', '/a#frag', '/a?b#c', '//x/y', '*', 'noslash', '/a/..', '/a/.', '/~user/!$&()*+,;=:@'];
  for (const encrypted of [false, true]) {
    for (const host of hosts) {
      for (const target of targets) {
        const scheme = encrypted ? 'https' : 'http';
        let expected: string | Error;
        try {
          expected = new URL(`${scheme}://${host || 'localhost'}${target.startsWith('/') ? target : `/${target}`}`).href;
        } catch (err) {
          expected = err as Error;
        }
        if (expected instanceof Error) {
          assert.throws(() => requestUrl(incoming(target, host, encrypted)), TypeError, `${host} ${target}`);
        } else {
          assert.equal(requestUrl(incoming(target, host, encrypted)), expected, `${scheme} ${host} ${target}`);
        }
      }
    }
  }
  assert.equal(requestUrl(incoming('http://other.example/x?y', 'localhost')), 'http://other.example/x?y');
  assert.equal(requestUrl(incoming('/x', undefined)), 'http://localhost/x');
});

test('the lightweight Request stands for a real one', async () => {
  let checks: Record<string, unknown> = {};
  const s = await serve(async (request) => {
    const cloned = request.method === 'POST' ? request.clone() : null;
    const copy = new Request(request); // takes the body: clone first
    const c: Record<string, unknown> = {
      isRequest: request instanceof Request,
      constructor: request.constructor === Request,
      tag: Object.prototype.toString.call(request),
      url: request.url,
      method: request.method,
      header: request.headers.get('x-test'),
      copyUrl: copy.url,
      copyHeader: copy.headers.get('x-test'),
      mode: request.mode,
      nullBody: request.method === 'GET' ? request.body : 'n/a',
      signal: request.signal instanceof AbortSignal && !request.signal.aborted,
    };
    if (cloned) c.cloned = await cloned.text();
    checks = c;
    return new Response('ok');
  });
  await call(s.port, { path: '/p?q=1', headers: { 'x-test': 'yes' } });
  assert.deepEqual({ ...checks }, {
    isRequest: true,
    constructor: true,
    tag: '[object Request]',
    url: `http://127.0.0.1:${s.port}/p?q=1`,
    method: 'GET',
    header: 'yes',
    copyUrl: `http://127.0.0.1:${s.port}/p?q=1`,
    copyHeader: 'yes',
    mode: 'cors',
    nullBody: null,
    signal: true,
  });
  const posted = await call(s.port, { method: 'POST', path: '/p', headers: { 'x-test': 'post' }, body: 'the body' });
  assert.equal(posted.status, 200);
  assert.equal(checks.cloned, 'the body', 'clone() of a lightweight request with a body');
  assert.equal(checks.method, 'POST');

  const text = await serve(async (request) => {
    const body = await request.text();
    const again = await request.text().catch((e: Error) => e.name);
    return new Response(`${request.method} ${body} ${again} ${request.bodyUsed}`);
  });
  assert.equal((await call(text.port, { method: 'PUT', body: 'abc' })).body, 'PUT abc TypeError true', 'a used body cannot be read again');
  assert.equal((await call(text.port, { method: 'TRACE' })).status, 400, 'a method fetch refuses answers 400');
  assert.deepEqual(s.errors, []);
});

test('a lightweight request goes to fetch() and new Request(request, init) as a real one would', async () => {
  // an upstream that echoes what it got
  const upstream = http.createServer((req, res) => res.end(`${req.method} ${req.url} ${req.headers['x-test']} ${req.headers['x-extra'] ?? '-'}`));
  servers.push(upstream);
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const up = (upstream.address() as AddressInfo).port;
  let checks: Record<string, unknown> = {};
  const s = await serve(async (request) => {
    const target = request.url.replace(/:\d+\//, `:${up}/`);
    const proxied = await (await fetch(new Request(target, request))).text();
    const direct = await (await fetch(request.url.replace(/:\d+\//, `:${up}/`), { headers: request.headers })).text();
    const withInit = new Request(request, { headers: { 'x-test': 'init', 'x-extra': '1' } });
    checks = {
      proxied,
      direct,
      withInit: `${withInit.method} ${withInit.url} ${withInit.headers.get('x-test')}`,
      realIsRequest: new Request('http://localhost/') instanceof Request,
      lightIsRequest: request instanceof Request,
      constructor: request.constructor === Request,
      // the fast path on every Node: the handler got the lightweight request
      light: inspect(request).startsWith('Request (quiesce)'),
    };
    return new Response('ok');
  });
  assert.equal((await call(s.port, { path: '/a?b=1', headers: { 'x-test': 'yes' } })).status, 200);
  assert.deepEqual({ ...checks }, {
    proxied: 'GET /a?b=1 yes -',
    direct: 'GET /a?b=1 yes -',
    withInit: `GET http://127.0.0.1:${s.port}/a?b=1 init`,
    realIsRequest: true,
    lightIsRequest: true,
    constructor: true,
    light: true,
  });
  assert.deepEqual(s.errors, []);
});

test('the lightweight Response behaves as undici\'s, errors included', async () => {
  await serve(() => new Response('installs the lightweight Response'));
  assert.notEqual(globalThis.Response.prototype, Object.getPrototypeOf(await fetch('data:,x')), 'a fetch app replaced the global Response');
  const r = new Response('héllo');
  assert.ok(r instanceof Response);
  assert.equal(r.status, 200);
  assert.equal(r.ok, true);
  assert.equal(r.statusText, '');
  assert.equal(r.headers.get('content-type'), 'text/plain;charset=UTF-8');
  assert.equal(r.bodyUsed, false);
  assert.equal(r.type, 'default');
  assert.equal(await r.clone().text(), 'héllo');
  assert.equal(await r.text(), 'héllo');
  assert.equal(r.bodyUsed, true);
  await assert.rejects(r.text(), TypeError);
  assert.equal(new Response(null).headers.get('content-type'), null);
  assert.equal(new Response('x', { headers: { 'content-type': 'text/html' } }).headers.get('content-type'), 'text/html');
  assert.equal(new Response('x', { status: 201, statusText: 'Made' }).statusText, 'Made');
  assert.deepEqual(await Response.json({ a: 1 }).json(), { a: 1 });
  assert.equal(Response.error().type, 'error');
  assert.equal(Response.redirect('http://localhost/x', 301).headers.get('location'), 'http://localhost/x');
  assert.ok((await fetch('data:,x')) instanceof Response, 'real responses are Responses too');
  // errors are thrown by the constructor, as undici's
  assert.throws(() => new Response('x', { status: 99 }), RangeError);
  assert.throws(() => new Response('x', { status: 600 }), RangeError);
  assert.throws(() => new Response('x', { status: 204 }), TypeError);
  assert.throws(() => new Response('x', { statusText: 'bad\nline' }), TypeError);
  assert.throws(() => new Response('x', { headers: { 'bad name': 'x' } }), TypeError);
  // subclasses, other bodies, a Response as init (Hono's HEAD)
  class Tagged extends Response {
    tag = 'mine';
  }
  const t = new Tagged('sub');
  assert.ok(t instanceof Tagged && t instanceof Response);
  assert.ok(!(r instanceof Tagged));
  assert.equal(await t.text(), 'sub');
  assert.equal(await new Response(new Uint8Array([104, 105])).text(), 'hi');
  const init = new Response('x', { status: 202, headers: { 'x-a': '1' } });
  const head = new Response(null, init);
  assert.equal(head.status, 202);
  assert.equal(head.headers.get('x-a'), '1');
});

test('what is written is what the Response says: status text, late headers, cookies, lengths', async () => {
  const s = await serve(async (request) => {
    const path = new URL(request.url).pathname;
    if (path === '/late') {
      const r = new Response('late headers', { status: 201, statusText: 'Made It' });
      r.headers.set('x-late', '1');
      r.headers.append('set-cookie', 'a=1');
      r.headers.append('set-cookie', 'b=2');
      r.headers.set('keep-alive', 'timeout=99'); // hop-by-hop: dropped
      return r;
    }
    if (path === '/no-type') {
      const r = new Response('untyped');
      r.headers.delete('content-type');
      return r;
    }
    if (path === '/bytes') return new Response(new Uint8Array([1, 2, 3]), { headers: { 'content-type': 'application/octet-stream' } });
    if (path === '/blob') return new Response(new Blob(['blob body']));
    if (path === '/own-length') return new Response('abc', { headers: { 'content-length': '3' } });
    if (path === '/null') return new Response(null, { status: 200, headers: { 'x-n': '1' } });
    if (path === '/used') {
      const r = new Response('read already');
      await r.text();
      return r;
    }
    if (path === '/materialised') {
      const r = new Response('materialised');
      void r.body; // builds the real Response
      return r;
    }
    return new Response('plain');
  });
  const late = await call(s.port, { path: '/late' });
  assert.equal(late.status, 201);
  assert.equal(late.statusText, 'Made It');
  assert.equal(late.headers['x-late'], '1');
  assert.deepEqual(late.headers['set-cookie'], ['a=1', 'b=2']);
  assert.equal(late.headers['content-length'], String('late headers'.length));
  assert.equal(late.headers['keep-alive'], undefined, 'the hop-by-hop header of the Response was dropped');
  assert.equal(late.body, 'late headers');
  const untyped = await call(s.port, { path: '/no-type' });
  assert.equal(untyped.headers['content-type'], undefined, 'a deleted Content-Type stays deleted');
  assert.equal(untyped.body, 'untyped');
  const bytes = await call(s.port, { path: '/bytes' });
  assert.equal(bytes.headers['content-length'], '3');
  const blob = await call(s.port, { path: '/blob' });
  assert.equal(blob.body, 'blob body');
  // a body there at once gets a Content-Length where the fast path knows this Node's Response
  // internals (Node 20); elsewhere it is streamed, chunked: both are complete responses
  if (blob.headers['content-length'] !== undefined) assert.equal(blob.headers['content-length'], '9');
  else assert.equal(blob.headers['transfer-encoding'], 'chunked');
  assert.equal((await call(s.port, { path: '/own-length' })).rawHeaders.filter((h) => /^content-length$/i.test(h)).length, 1);
  const nul = await call(s.port, { path: '/null' });
  assert.equal(nul.headers['content-length'], '0');
  assert.equal(nul.headers['x-n'], '1');
  const head = await call(s.port, { method: 'HEAD', path: '/plain' });
  assert.equal(head.headers['content-length'], '5', 'HEAD says the length a GET would have');
  assert.equal(head.body, '');
  assert.equal((await call(s.port, { path: '/materialised' })).body, 'materialised');
  assert.deepEqual(s.errors, []);
  const used = await call(s.port, { path: '/used' });
  assert.equal(used.status, 500, 'a Response whose body was read cannot be sent');
  assert.equal(s.errors.length, 1);
});

test('Hono: a HEAD answer carries the GET headers and no made-up length', async () => {
  const { default: app } = (await import('../../test/fixtures/apps/hono.mjs' as string)) as { default: { fetch: FetchHandler } };
  const s = await serve((request, env) => app.fetch(request, env));
  const get = await call(s.port, { path: '/' });
  assert.equal(get.headers['content-length'], String('hello from hono'.length));
  const head = await call(s.port, { method: 'HEAD', path: '/' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-type'], get.headers['content-type']);
  assert.equal(head.headers['content-length'], undefined);
  assert.equal(head.body, '');
});

test('a signal first read after the client left is already aborted', async () => {
  let seen: boolean | undefined;
  const s = await serve(async (request) => {
    await new Promise((r) => setTimeout(r, 150));
    seen = request.signal.aborted;
    return new Response('too late');
  });
  await new Promise<void>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: s.port, path: '/', agent: false });
    req.on('error', () => resolve());
    setTimeout(() => {
      req.destroy();
      resolve();
    }, 50);
  });
  const deadline = Date.now() + 2000;
  while (seen === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(seen, true);
  assert.deepEqual(s.errors, []);
});
