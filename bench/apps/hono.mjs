// A small Hono app, default-exported (it has .fetch): quiesce bridges fetch itself, the node:cluster
// bench server wraps it with @hono/node-server's getRequestListener.
import { Hono } from 'hono';

const app = new Hono();
app.get('/', (c) => c.text('hello from hono'));
app.get('/user/:id', (c) => c.json({ id: c.req.param('id') }));
export default app;
