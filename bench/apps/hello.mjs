// The bench's plain app: "hello world", an x-pid header (to tally each worker's share client side),
// and ?burn=MS to burn CPU synchronously (the drain bench pushes load above capacity with it).
export default function hello(req, res) {
  const q = req.url.indexOf('?');
  if (q !== -1) {
    const m = /(?:^|&)burn=(\d+(?:\.\d+)?)/.exec(req.url.slice(q + 1));
    if (m) { const end = performance.now() + Number(m[1]); while (performance.now() < end); }
  }
  res.setHeader('content-type', 'text/plain');
  res.setHeader('x-pid', String(process.pid));
  res.end('hello world\n');
}
