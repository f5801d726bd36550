// Issue 11, point 16: a taskOnly route answers 404 to every outside caller, so the OpenAPI document
// that @fastify/swagger makes must not list it, unless the route asks to be shown (`hide: false`).
// Tested with the real @fastify/swagger, registered before and after the plugin.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import swagger from '@fastify/swagger'
import { recordingApp } from './helpers/app'

type Test = Parameters<Parameters<typeof test>[0]>[0]

interface Document { paths?: Record<string, Record<string, unknown>> }

/** The routes an app's OpenAPI document lists, as "METHOD /path". */
function listed (app: FastifyInstance): string[] {
  const { paths = {} } = app.swagger() as Document
  return Object.entries(paths).flatMap(([path, operations]) => Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`)).sort()
}

/** A JSON schema object that a public route and a taskOnly route share. */
function sharedBody (): { type: 'object', required: string[], properties: Record<string, { type: string }> } {
  return { type: 'object', required: ['user'], properties: { user: { type: 'integer' } } }
}

async function build (t: Test, swaggerFirst: boolean, shared = { body: sharedBody() }): Promise<{ app: FastifyInstance, ran: string[] }> {
  const openapi = { openapi: { info: { title: 'test', version: '1.0.0' } } }
  const ran: string[] = []
  const handler = async (request: { url: string }): Promise<{ ok: true }> => {
    ran.push(request.url)
    return { ok: true }
  }
  const { app } = await recordingApp(t, {}, {
    // The app's own routes only: the document must list exactly what the test declares.
    noTaskRoute: true,
    before: async (app) => { if (swaggerFirst) await app.register(swagger, openapi) },
    routes: async (app) => {
      if (!swaggerFirst) await app.register(swagger, openapi)
      app.get('/public', handler)
      app.post('/signup', { schema: shared }, handler)
      app.post('/tasks/no-schema', { config: { taskOnly: true } }, handler)
      app.post('/tasks/shared-schema', { config: { taskOnly: true }, schema: shared }, handler)
      app.post('/tasks/shown', { config: { taskOnly: true }, schema: { hide: false, body: sharedBody() } }, handler)
      app.post('/tasks/not-task-only', { config: { taskOnly: false } }, handler)
      app.register(async (scope) => {
        scope.get('/scoped/task', { config: { taskOnly: true } }, handler)
      })
    }
  })
  return { app, ran }
}

for (const swaggerFirst of [false, true]) {
  const order = swaggerFirst ? '@fastify/swagger registered first' : 'the plugin registered first'
  test(`issue 11, point 16: taskOnly routes are left out of the OpenAPI document (${order})`, async (t) => {
    const { app } = await build(t, swaggerFirst)
    t.same(listed(app), [
      'GET /public',
      'POST /signup',
      'POST /tasks/not-task-only',
      'POST /tasks/shown'
    ], 'ordinary routes and the taskOnly route with hide: false are listed; no other taskOnly route is')
  })
}

test('issue 11, point 16: hiding a taskOnly route changes neither its schema nor how it runs', async (t) => {
  const shared = { body: sharedBody() }
  const { app, ran } = await build(t, false, shared)
  // Compared as JSON: Fastify marks a schema it compiled with a symbol of its own.
  t.same(JSON.parse(JSON.stringify(shared)), { body: sharedBody() }, 'the schema object the routes share was not changed')
  const { paths = {} } = app.swagger() as Document
  t.ok(paths['/signup']?.post, 'the public route with the shared schema is still listed')

  // The taskOnly routes still run as tasks, with their schema still validating the body.
  await app.taskqueue.add('/tasks/no-schema', { method: 'POST', payload: { any: 'thing' } })
  await app.taskqueue.add('/tasks/shared-schema', { method: 'POST', payload: { user: 42 } })
  await app.taskqueue.add('/scoped/task')
  await app.taskqueue.drain()
  t.same(ran.sort(), ['/scoped/task', '/tasks/no-schema', '/tasks/shared-schema'])
  await app.taskqueue.add('/tasks/shared-schema', { method: 'POST', payload: { user: 'not a number' } })
  await app.taskqueue.drain()
  const [letter] = await app.taskqueue.queue('default').dead()
  t.match(letter, { reason: 'final status', statusCode: 400 }, 'a body its schema refuses is still refused')

  // And outside callers still get 404.
  for (const url of ['/tasks/no-schema', '/tasks/shared-schema']) {
    const response = await app.inject({ method: 'POST', url, payload: { user: 1 } })
    t.equal(response.statusCode, 404, `${url}: 404 to an outside caller`)
  }
  t.equal((await app.inject({ method: 'POST', url: '/signup', payload: { user: 'x' } })).statusCode, 400, 'the public route still validates with the shared schema')
})
