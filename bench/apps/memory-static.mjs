// The floor for a Node static server: every file of BENCH_ROOT read into memory at start, each
// answered with the headers quiesce's static handler sends (type, length, ETag, Last-Modified,
// Cache-Control, Accept-Ranges) in one res.end(). No lookup, no stat, no cache to revalidate:
// what Node's own http.Server costs per request, for the bench's yardstick column.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = process.env.BENCH_ROOT;
if (!root) throw new Error('memory-static.mjs: BENCH_ROOT is not set');
const TYPES = { '.txt': 'text/plain; charset=utf-8', '.html': 'text/html; charset=utf-8', '.bin': 'application/octet-stream' };
const files = new Map();
for (const name of readdirSync(root)) {
  const file = join(root, name);
  const st = statSync(file);
  if (!st.isFile()) continue;
  const body = readFileSync(file);
  const ext = name.slice(name.lastIndexOf('.'));
  files.set(`/${name}`, {
    body,
    headers: {
      'content-type': TYPES[ext] ?? 'application/octet-stream', 'content-length': body.length,
      etag: `W/"${body.length.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`, 'last-modified': st.mtime.toUTCString(),
      'cache-control': 'public, max-age=0', 'accept-ranges': 'bytes',
    },
  });
}

export default function app(req, res) {
  const f = files.get(req.url);
  if (!f) { res.writeHead(404, { 'content-length': 0 }); res.end(); return; }
  res.writeHead(200, f.headers);
  res.end(f.body);
}
