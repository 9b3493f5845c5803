// Unit tests of the probe's pieces: the response parser, the classifier, target and argv parsing,
// the tally and the timeline. No sockets here; see probe.test.ts for the real ones.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  bucketize,
  buildResultForTest,
  classify,
  formatSummary,
  parseProbeArgs,
  parseTarget,
  renderTimeline,
  ResponseParser,
  normalizeOptions,
  UsageError,
  type Outcome,
  type ParseResult,
} from './fixtures/probe-helpers.js';

/** Feeds the bytes one at a time; returns the result after each byte. */
function feedBytewise(text: string, method = 'GET'): { parser: ResponseParser; results: ParseResult[] } {
  const parser = new ResponseParser(method);
  const bytes = Buffer.from(text, 'latin1');
  const results: ParseResult[] = [];
  for (let i = 0; i < bytes.length; i++) results.push(parser.push(bytes.subarray(i, i + 1)));
  return { parser, results };
}

function completeAt(results: ParseResult[]): number {
  return results.findIndex((r) => r.state === 'complete');
}

describe('response parser', () => {
  test('Content-Length: complete exactly at the last body byte, split anywhere', () => {
    const text = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Quiesce-Generation: 4\r\n\r\nhello';
    const { parser, results } = feedBytewise(text);
    assert.equal(completeAt(results), text.length - 1);
    const last = results[results.length - 1]!;
    assert.ok(last.state === 'complete');
    assert.equal(last.response.status, 200);
    assert.equal(last.response.bodyBytes, 5);
    assert.equal(last.response.reusable, true);
    assert.equal(last.response.headers.get('x-quiesce-generation'), '4');
    assert.equal(parser.bytes, text.length);
  });

  test('chunked with extensions and trailers, split anywhere', () => {
    const text = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n';
    const { results } = feedBytewise(text);
    assert.equal(completeAt(results), text.length - 1);
    const last = results[results.length - 1]!;
    assert.ok(last.state === 'complete');
    assert.equal(last.response.bodyBytes, 11);
  });

  test('chunked cut before the last chunk is not complete at EOF', () => {
    const p = new ResponseParser();
    assert.equal(p.push(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')).state, 'partial');
    assert.deepEqual(p.end(), { state: 'error', code: 'EOF' });
    assert.ok(p.bytes > 0);
  });

  test('no length: the body runs to EOF, and the connection is not reusable', () => {
    const p = new ResponseParser();
    assert.equal(p.push(Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc')).state, 'partial');
    assert.equal(p.push(Buffer.from('def')).state, 'partial');
    const r = p.end();
    assert.ok(r.state === 'complete');
    assert.equal(r.response.bodyBytes, 6);
    assert.equal(r.response.reusable, false);
  });

  test('a short Content-Length body is an EOF error, a bodyless EOF too', () => {
    const p = new ResponseParser();
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123'));
    assert.deepEqual(p.end(), { state: 'error', code: 'EOF' });
    const q = new ResponseParser();
    assert.deepEqual(q.end(), { state: 'error', code: 'EOF' });
    assert.equal(q.bytes, 0);
  });

  test('1xx responses are skipped; HEAD, 204 and 304 have no body', () => {
    const p = new ResponseParser();
    const r = p.push(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n'));
    assert.ok(r.state === 'complete');
    assert.equal(r.response.status, 204);
    const h = new ResponseParser('HEAD').push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n'));
    assert.ok(h.state === 'complete');
    assert.equal(h.response.bodyBytes, 0);
    assert.equal(new ResponseParser().push(Buffer.from('HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n')).state, 'complete');
  });

  test('reuse follows Connection and the version', () => {
    const reuse = (head: string): boolean => {
      const r = new ResponseParser().push(Buffer.from(`${head}\r\nContent-Length: 0\r\n\r\n`));
      assert.ok(r.state === 'complete');
      return r.response.reusable;
    };
    assert.equal(reuse('HTTP/1.1 200 OK'), true);
    assert.equal(reuse('HTTP/1.1 200 OK\r\nConnection: Close'), false);
    assert.equal(reuse('HTTP/1.0 200 OK'), false);
    assert.equal(reuse('HTTP/1.0 200 OK\r\nConnection: keep-alive'), true);
  });

  test('bytes after a complete response are reported as extra', () => {
    const r = new ResponseParser().push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxJUNK'));
    assert.ok(r.state === 'complete');
    assert.equal(r.extraBytes, 4);
  });

  test('malformed responses are errors with a code', () => {
    const code = (text: string): string | undefined => {
      const r = new ResponseParser().push(Buffer.from(text));
      return r.state === 'error' ? r.code : undefined;
    };
    assert.equal(code('HTTP/2 200 OK\r\n\r\n'), 'EPARSE_STATUS');
    assert.equal(code('garbage\r\n\r\n'), 'EPARSE_STATUS');
    assert.equal(code('HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n'), 'EPARSE_LENGTH');
    assert.equal(code('HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n'), 'EPARSE_LENGTH');
    assert.equal(code('HTTP/1.1 200 OK\r\nbad header\r\n\r\n'), 'EPARSE_HEADER');
    assert.equal(code('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'), 'EPARSE_CHUNK');
  });
});

describe('classify', () => {
  const headers = (h: Record<string, string>): Map<string, string> => new Map(Object.entries(h));
  const response = (status: number, h: Record<string, string> = {}) =>
    ({ type: 'response', bytes: 50, reusable: true, response: { status, version: '1.1', headers: headers(h), bodyBytes: 0, reusable: true } }) as const;
  const failed = (code: string, bytes: number, established = true) => ({ type: 'failed', code, bytes, established }) as const;

  test('the seven classes', () => {
    assert.equal(classify(response(200), false).kind, 'ok');
    assert.equal(classify(response(503, { 'quiesce-forced': '1' }), true).kind, 'forced');
    assert.equal(classify(failed('ECONNREFUSED', 0, false), false).kind, 'refused');
    assert.equal(classify(failed('ENOENT', 0, false), false).kind, 'refused');
    assert.deepEqual(classify(failed('ECONNRESET', 0), false), { kind: 'cut', afterBytes: false, code: 'ECONNRESET' });
    assert.deepEqual(classify(failed('EOF', 12), false), { kind: 'cut', afterBytes: true, code: 'EOF' });
    assert.equal(classify(failed('EOF', 0), true).kind, 'ka_race');
    assert.equal(classify(failed('ECONNRESET', 3), true).kind, 'cut', 'a reused connection that got bytes is cut');
    assert.equal(classify({ type: 'timeout', bytes: 0, established: true }, false).kind, 'timeout');
    assert.deepEqual(classify(failed('EPARSE_STATUS', 9), false), { kind: 'other', afterBytes: true, code: 'EPARSE_STATUS' });
    assert.equal(classify(failed('EADDRNOTAVAIL', 0, false), false).kind, 'other');
  });
});

describe('target and argv', () => {
  test('targets', () => {
    assert.deepEqual(parseTarget('127.0.0.1:8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080, family: 4 });
    assert.deepEqual(parseTarget('[::1]:80'), { kind: 'tcp', host: '::1', port: 80, family: 6 });
    assert.deepEqual(parseTarget('localhost:1'), { kind: 'tcp', host: 'localhost', port: 1, family: 4 });
    assert.deepEqual(parseTarget('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
    for (const bad of ['8080', '127.0.0.1', '127.0.0.1:0', 'h:65536', '::1:80', '[nope]:80', 'unix:', 'a b:80', ':80']) {
      assert.throws(() => parseTarget(bad), (e: unknown) => e instanceof UsageError && e.message.startsWith('--target'), bad);
    }
  });

  test('argv: values, pairs of --at/--run, and usage errors naming the flag', () => {
    const p = parseProbeArgs(['--target', '127.0.0.1:1', '--rate', '20', '--keepalive', '3', '--duration', '1.5', '--at', '0.5', '--run', 'true', '--at', '1', '--run', 'echo', '--json']);
    assert.equal(p.json, true);
    assert.deepEqual(p.options, {
      target: '127.0.0.1:1',
      rate: 20,
      keepalive: 3,
      durationS: 1.5,
      commands: [
        { atS: 0.5, run: 'true' },
        { atS: 1, run: 'echo' },
      ],
    });
    const flagOf = (argv: string[]): string => {
      try {
        normalizeOptions(parseProbeArgs(argv).options);
      } catch (e) {
        assert.ok(e instanceof UsageError);
        assert.ok(!e.message.includes('\n'), 'one line');
        return e.message.split(':')[0]!;
      }
      return 'no error';
    };
    const t = ['--target', '127.0.0.1:1'];
    assert.equal(flagOf(['--rate', '5']), '--target');
    assert.equal(flagOf([...t, '--rate', 'abc']), '--rate');
    assert.equal(flagOf([...t, '--rate', '-5']), '--rate');
    assert.equal(flagOf([...t, '--keepalive', '1.5']), '--keepalive');
    assert.equal(flagOf([...t, '--duration', '0']), '--duration');
    assert.equal(flagOf([...t, '--timeout', 'x']), '--timeout');
    assert.equal(flagOf([...t, '--path', 'no-slash']), '--path');
    assert.equal(flagOf([...t, '--at', '1']), '--at/--run');
    assert.equal(flagOf([...t, '--duration', '1', '--at', '2', '--run', 'true']), '--at');
    assert.equal(flagOf([...t, '--bogus']), '--bogus');
    assert.equal(flagOf([...t, 'stray']), 'unexpected argument stray (every value follows its flag)');
    assert.equal(flagOf([...t, '--admin', '127.0.0.1:2', '--admin-ca', '/etc/hostname']), '--admin-ca', 'a CA only for an https admin listener');
    assert.equal(flagOf([...t, '--admin', 'https://127.0.0.1:2', '--admin-ca', '/nonexistent/ca.pem']), '--admin-ca');
    assert.equal(flagOf(t), 'no error');
  });

  test('neither --rate nor --keepalive: rate 100', () => {
    const s = normalizeOptions({ target: '127.0.0.1:1' });
    assert.equal(s.rate, 100);
    assert.equal(s.keepalive, 0);
  });
});

describe('tally and timeline', () => {
  const o = (kind: Outcome['kind'], startMs: number, extra: Partial<Outcome> = {}): Outcome => ({
    kind,
    mode: 'rate',
    startMs,
    endMs: startMs + 2,
    bytes: 0,
    reused: false,
    ...extra,
  });
  const outcomes = [
    o('ok', 10, { status: 200, generation: '1', bytes: 40 }),
    o('ok', 20, { status: 200, generation: '2', bytes: 40 }),
    o('ok', 30, { status: 404, bytes: 40 }),
    o('refused', 150, { code: 'ECONNREFUSED' }),
    o('cut', 250, { code: 'ECONNRESET', bytes: 7 }),
    o('cut', 260, { code: 'EOF' }),
    o('forced', 350, { status: 503 }),
    o('other', 360, { code: 'EPARSE_STATUS' }),
  ];
  const command = { at_s: 0.2, command: 'kill -TERM 1234', started_s: 0.2, ended_s: 0.21, exit_code: 0, signal: null, stdout_tail: '', stderr_tail: '' };
  const result = buildResultForTest(outcomes, [command]);

  test('counts, statuses, generations and the pass rule', () => {
    assert.equal(result.ok, 3);
    assert.equal(result.cut, 2);
    assert.equal(result.cut_after_bytes, 1);
    assert.equal(result.sent, 8);
    assert.deepEqual(result.ok_by_status, { '200': 2, '404': 1 });
    assert.deepEqual(result.other_by_code, { EPARSE_STATUS: 1 });
    assert.deepEqual(result.generations, { '1': 1, '2': 1 });
    assert.equal(result.status, 'fail');
    assert.equal(buildResultForTest(outcomes.filter((x) => ['ok', 'refused', 'forced'].includes(x.kind)), []).status, 'pass');
    assert.deepEqual(result.reasons, ['2 cut', '1 other']);
    // nothing completed before the first command (at 0.2 s): the command met a server not serving
    const late = [o('refused', 10, { code: 'ECONNREFUSED' }), o('ok', 300, { status: 200 })];
    const lateResult = buildResultForTest(late, [command]);
    assert.equal(lateResult.status, 'fail');
    assert.deepEqual(lateResult.reasons, ['no request completed before the first command (at 0.2 s): the target was not serving when it ran']);
    assert.equal(buildResultForTest([o('ok', 10, { status: 200 }), ...late], [command]).status, 'pass');
    assert.deepEqual(buildResultForTest([o('refused', 10, { code: 'ECONNREFUSED' })], []).reasons, ['no request completed (of 1 sent, 1 refused): is the target serving?']);
    assert.deepEqual(result.latency_ms, { p50: 2, p90: 2, p99: 2, max: 2 });
  });

  test('the human summary: a row per class, the behind warning, the commands', () => {
    const behind = { ...result, rate: { asked: 50, achieved: 41.5, behind: 9 } };
    const text = formatSummary(behind, { target: '127.0.0.1:8080', path: '/', rate: 50, keepalive: 0, durationS: 1 });
    for (const row of [/^ {2}ok +3 {3}200: 2, 404: 1$/m, /^ {2}cut +2 {3}after bytes: 1$/m, /^ {2}sent +8$/m, /^ {2}other +1 {3}EPARSE_STATUS: 1$/m]) {
      assert.match(text, row);
    }
    assert.match(text, /achieved 41\.5\/s, behind 9 {2}BEHIND: 9/);
    assert.match(text, /at 0\.2 s \(0\.200-0\.210 s\) exit 0: kill -TERM 1234/);
    assert.match(text, /status: FAIL/);
  });

  test('buckets of 100 ms and the SVG', () => {
    const b = bucketize(result);
    assert.equal(b.length, 4);
    assert.deepEqual([b[0]!.ok, b[1]!.refused, b[2]!.cut, b[3]!.forced, b[3]!.other], [3, 1, 2, 1, 1]);
    const svg = renderTimeline(result, 'probe <test>');
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /probe &#60;test&#62;/, 'text is escaped');
    assert.match(svg, /fill="#d62728"/, 'cut bars are red');
    assert.match(svg, /kill -TERM 1234 \(exit 0\)/, 'command line is labelled');
    assert.match(svg, /cut 2 \(1 after bytes\)/, 'legend has totals');
    assert.match(svg, />FAIL</);
  });
});
