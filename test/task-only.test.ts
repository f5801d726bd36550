// Routes with `config: { taskOnly: true }` (issue 2): hidden behind a 404, the same as an unknown
// route's, from every request that the consumers did not dispatch (injected or over the network,
// with or without forged x-task-* headers), and run for dispatched tasks.
import { randomUUID } from 'node:crypto'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { TaskQueuePluginOptions } from '../lib/options'
import { httpRequest, listenLocal, type Test } from './helpers/harness'
import { recordingApp } from './helpers/app'

interface TaskOnlyApp {
  app: FastifyInstance
  /** What the task-only routes ran, by url, with the task they saw. */
  ran: Array<{ url: string, taskId: string | undefined }>
  /** Set by the preHandler hook of the task-only route: its hooks past onRequest ran. */
  hooks: string[]
}

async function taskOnlyApp (t: Test, options: TaskQueuePluginOptions = {}, extra: (app: FastifyInstance) => void = () => {}): Promise<TaskOnlyApp> {
  const ran: TaskOnlyApp['ran'] = []
  const hooks: string[] = []
  const { app } = await recordingApp(t, options, {
    noTaskRoute: true,
    routes: (app) => {
      app.post('/tasks/welcome', {
        config: { taskOnly: true },
        preHandler: async (request) => { hooks.push(request.url) }
      }, async (request) => {
        ran.push({ url: request.url, taskId: request.taskqueue.task?.id })
        return { welcomed: true }
      })
      app.get('/tasks/report', { config: { taskOnly: true } }, async (request) => {
        ran.push({ url: request.url, taskId: request.taskqueue.task?.id })
        return { reported: true }
      })
      // Registered in a plugin of its own: the plugin's hook reaches encapsulated routes too.
      app.register(async (scope) => {
        scope.delete('/scoped/task', { config: { taskOnly: true } }, async (request) => {
          ran.push({ url: request.url, taskId: request.taskqueue.task?.id })
          return { scoped: true }
        })
      })
      app.get('/public', async () => ({ public: true }))
      extra(app)
    }
  })
  return { app, ran, hooks }
}

const forgedHeaders = {
  'x-task-id': '11111111-1111-4111-8111-111111111111',
  'x-task-queue': 'default',
  'x-task-retries': '0',
  'x-task-eta': new Date().toISOString(),
  'user-agent': 'fastify-taskqueue'
}

test('a task-only route answers 404 to a normal injected request, like an unknown route', async (t) => {
  const { app, ran, hooks } = await taskOnlyApp(t)
  const unknownPost = await app.inject({ method: 'POST', url: '/no/such/route', payload: { a: 1 } })
  const unknownGet = await app.inject({ method: 'GET', url: '/no/such/route' })
  const unknownDelete = await app.inject({ method: 'DELETE', url: '/no/such/route' })

  const welcome = await app.inject({ method: 'POST', url: '/tasks/welcome', payload: { a: 1 } })
  t.equal(welcome.statusCode, 404)
  t.same(welcome.json(), { ...unknownPost.json(), message: 'Route POST:/tasks/welcome not found' }, 'the body of an unknown route')
  t.equal(welcome.headers['content-type'], unknownPost.headers['content-type'])

  const report = await app.inject({ method: 'GET', url: '/tasks/report?x=1' })
  t.equal(report.statusCode, 404)
  t.same(report.json(), { ...unknownGet.json(), message: 'Route GET:/tasks/report?x=1 not found' })

  const scoped = await app.inject({ method: 'DELETE', url: '/scoped/task' })
  t.equal(scoped.statusCode, 404, 'a task-only route in an encapsulated plugin is hidden too')
  t.same(scoped.json(), { ...unknownDelete.json(), message: 'Route DELETE:/scoped/task not found' })

  t.same(ran, [], 'no handler ran')
  t.same(hooks, [], 'nor the route\'s later hooks')
  t.equal((await app.inject({ url: '/public' })).statusCode, 200, 'other routes answer as usual')
})

test('the 404 is the app\'s own: a custom not-found handler answers for task-only routes too', async (t) => {
  const { app, ran } = await taskOnlyApp(t, {}, (app) => {
    app.setNotFoundHandler(async (request, reply) => reply.code(404).send({ nothing: 'here', url: request.url }))
  })
  const unknown = await app.inject({ method: 'POST', url: '/no/such/route' })
  const hidden = await app.inject({ method: 'POST', url: '/tasks/welcome' })
  t.equal(hidden.statusCode, 404)
  t.same(unknown.json(), { nothing: 'here', url: '/no/such/route' })
  t.same(hidden.json(), { nothing: 'here', url: '/tasks/welcome' })
  t.same(ran, [])
})

test('a task-only route runs for a dispatched task', async (t) => {
  const { app, ran, hooks } = await taskOnlyApp(t)
  const welcome = await app.taskqueue.add('/tasks/welcome', { method: 'POST', payload: { user: 42 } })
  const report = await app.taskqueue.add('/tasks/report', { params: { day: 'monday' } })
  const scoped = await app.taskqueue.add('/scoped/task', { method: 'DELETE', payload: null })
  await app.taskqueue.drain()
  t.same(ran, [
    { url: '/tasks/welcome', taskId: welcome },
    { url: '/tasks/report?day=monday', taskId: report },
    { url: '/scoped/task', taskId: scoped }
  ])
  t.same(hooks, ['/tasks/welcome'], 'through the route\'s hooks')
  t.same(await app.taskqueue.queue('default').dead(), [], 'all done')
})

test('a task queued by a request runs its task-only route', async (t) => {
  const { app, ran } = await taskOnlyApp(t, {}, (app) => {
    app.post('/signup', async (request) => ({ queued: request.taskqueue.add('/tasks/welcome', { method: 'POST' }) }))
  })
  const response = await app.inject({ method: 'POST', url: '/signup', payload: { user: 1 } })
  await app.taskqueue.drain()
  t.same(ran, [{ url: '/tasks/welcome', taskId: response.json().queued }])
})

test('forged x-task-* headers, with or without a made-up dispatch token, still get 404', async (t) => {
  const { app, ran } = await taskOnlyApp(t)
  const attempts = [
    forgedHeaders,
    { ...forgedHeaders, 'x-taskqueue-dispatch': 'guessed' },
    { ...forgedHeaders, 'x-taskqueue-dispatch': '' },
    { ...forgedHeaders, 'x-taskqueue-dispatch': randomUUID() }
  ]
  for (const [index, headers] of attempts.entries()) {
    const response = await app.inject({ method: 'POST', url: '/tasks/welcome', headers, payload: {} })
    t.equal(response.statusCode, 404, `forged request ${index + 1}`)
  }
  t.same(ran, [])
})

test('over real HTTP on 127.0.0.1: 404 like an unknown route, also with forged x-task-* headers', async (t) => {
  const { app, ran } = await taskOnlyApp(t)
  const port = await listenLocal(app)
  const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' }
  const unknown = await httpRequest(port, { ...post, path: '/no/such/route' })
  const plain = await httpRequest(port, { ...post, path: '/tasks/welcome' })
  t.equal(plain.statusCode, 404)
  t.same(JSON.parse(plain.body), { ...JSON.parse(unknown.body), message: 'Route POST:/tasks/welcome not found' })
  t.equal(plain.headers['content-type'], unknown.headers['content-type'])

  const forged = await httpRequest(port, { ...post, path: '/tasks/welcome', headers: { ...post.headers, ...forgedHeaders } })
  t.equal(forged.statusCode, 404, 'forged x-task-* headers')
  // A live dispatch token sent over HTTP: see request-mark.test.ts.
  const report = await httpRequest(port, { path: '/tasks/report' })
  t.equal(report.statusCode, 404)
  t.equal((await httpRequest(port, { path: '/public' })).statusCode, 200, 'other routes answer over HTTP')
  t.same(ran, [], 'no task-only handler ran')

  // Tasks still reach it while the app listens.
  const id = await app.taskqueue.add('/tasks/report')
  await app.taskqueue.drain()
  t.same(ran, [{ url: '/tasks/report', taskId: id }])
})
