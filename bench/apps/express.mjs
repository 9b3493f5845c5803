// A small Express app, exported (not listening): quiesce serves the default export, the node:cluster
// bench server mounts it as its request listener.
import express from 'express';

const app = express();
app.disable('x-powered-by');
app.get('/', (_req, res) => res.send('hello from express'));
app.get('/user/:id', (req, res) => res.json({ id: req.params.id }));
export default app;
