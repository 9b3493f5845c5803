// A self-listening app for the reload bench: it calls listen(PORT) itself, which is what pm2 cluster
// mode needs; quiesce runs the same file and adopts the listen() call (it binds nothing itself).
// Under pm2 only (pm_id is set), it installs the graceful SIGINT handler pm2's docs recommend, so pm2
// is measured at its best; quiesce decides its workers' lifecycle itself and never needs it.
'use strict';
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.setHeader('x-pid', String(process.pid));
  res.end('hello world\n');
});
server.listen(Number(process.env.PORT || 0), '127.0.0.1');

if (process.env.pm_id !== undefined) {
  process.on('SIGINT', () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1500).unref();
  });
}
