// The mark of a dispatched task, `request.taskqueue.task` (issue 11, points 12 and 13): it does not
// depend on which copy of light-my-request injects the request, it is right in every hook whatever
// the order of registration, and the dispatch token that proves it is single-use: once the mark
// was worked out, or once the dispatch ended, replaying the token marks nothing.
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import taskqueue from '../plugin'
import type { ConsumerOptions } from '../lib/options'
import { dispatchHeader } from '../lib/consumer/task-headers'
import type { TaskQueueService } from '../lib/taskqueue'
import { recordingApp } from './helpers/app'
import { gate, httpRequest, listenLocal, settlesWithin, type Test } from './helpers/harness'

/**
 * A copy of the installed Fastify under a folder of the repository, with a copy of
 * light-my-request in its own node_modules: Fastify loaded from there injects through that copy,
 * as with pnpm or a lockfile that holds an older Fastify 5. Its other dependencies resolve by
 * walking up to the repository's node_modules. Removed when the test ends.
 */
function nestedFastify (t: Test): { Fastify: typeof Fastify, lightMyRequest: unknown } {
  const repo = path.resolve(__dirname, '..')
  const root = mkdtempSync(path.join(__dirname, '.tmp-nested-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const fastifyDir = path.join(root, 'node_modules', 'fastify')
  cpSync(path.join(repo, 'node_modules', 'fastify'), fastifyDir, { recursive: true })
  cpSync(path.join(repo, 'node_modules', 'light-my-request'), path.join(fastifyDir, 'node_modules', 'light-my-request'), { recursive: true })
  const fromFastify = createRequire(path.join(fastifyDir, 'fastify.js'))
  return { Fastify: createRequire(path.join(root, 'index.js'))('fastify'), lightMyRequest: fromFastify('light-my-request') }
}

test('issue 11, point 12: a taskOnly task runs when Fastify injects through another copy of light-my-request', async (t) => {
  const nested = nestedFastify(t)
  const installed = createRequire(require.resolve('fastify'))('light-my-request')
  t.not(nested.lightMyRequest, installed, 'the nested Fastify uses a copy of light-my-request of its own')
  t.not(nested.Fastify, Fastify, 'and is a Fastify module of its own')
  const app = nested.Fastify() as unknown as FastifyInstance
  t.teardown(() => app.close())
  const ran: Array<string | undefined> = []
  await app.register(taskqueue)
  app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
    ran.push(request.taskqueue.task?.id)
    return { welcomed: true }
  })
  await app.ready()

  const id = await app.taskqueue.add('/tasks/welcome', { method: 'POST', payload: { user: 42 } })
  await app.taskqueue.drain()
  t.same(ran, [id], 'the task ran, marked as a task')
  t.same(await app.taskqueue.queue('default').dead(), [], 'nothing in the dead letters')
  const outside = await app.inject({ method: 'POST', url: '/tasks/welcome', payload: {} })
  t.equal(outside.statusCode, 404, 'a request that is not a task is still hidden from the route')
  t.same(ran, [id])
})

interface EarlyHookApp {
  app: FastifyInstance
  /** The headers of each request to a /tasks/ url as the first hook of the app saw them. */
  seenHeaders: Array<Record<string, unknown>>
  /** What each task route saw: its url and the task's id. */
  ran: Array<{ url: string, taskId: string | undefined }>
}

/**
 * An app whose first onRequest hooks, added before the plugin is registered: one records the
 * headers of task requests (as a logging hook could), then @fastify/rate-limit exempts tasks
 * (at most 2 other requests a minute), then one adds a child task to every request of
 * /tasks/parent, before the plugin's own hook ran.
 */
async function earlyHookApp (t: Test, extraHook?: (request: FastifyRequest) => Promise<void>,
  consumer: Partial<ConsumerOptions> = { retryMaxCount: 0 }): Promise<EarlyHookApp> {
  const seenHeaders: EarlyHookApp['seenHeaders'] = []
  const ran: EarlyHookApp['ran'] = []
  const { app } = await recordingApp(t, { consumers: [{ queue: 'default', ...consumer }] }, {
    noTaskRoute: true,
    before: async (app) => {
      app.addHook('onRequest', async (request) => {
        if (request.url.startsWith('/tasks/')) seenHeaders.push({ ...request.headers })
        await extraHook?.(request)
      })
      await app.register(rateLimit, { global: false })
      app.addHook('onRequest', app.rateLimit({ max: 2, timeWindow: 60_000, allowList: (request) => request.taskqueue.task !== null }))
      app.addHook('onRequest', async (request) => {
        if (request.url === '/tasks/parent') request.taskqueue.add('/tasks/child', { method: 'POST', payload: null })
      })
    },
    routes: (app) => {
      for (const url of ['/tasks/parent', '/tasks/child', '/tasks/plain']) {
        app.post(url, { config: { taskOnly: true } }, async (request) => {
          ran.push({ url, taskId: request.taskqueue.task?.id })
          return { ok: true }
        })
      }
      app.get('/public', async () => ({ public: true }))
      app.get('/whoami', async (request) => ({ task: request.taskqueue.task, header: request.headers[dispatchHeader] ?? null }))
    }
  })
  return { app, seenHeaders, ran }
}

test('issue 11, point 13: a rate limit registered before the plugin exempts genuine tasks and limits the rest', async (t) => {
  const { app, ran } = await earlyHookApp(t)
  const ids: string[] = []
  for (let index = 0; index < 4; index++) ids.push(await app.taskqueue.add('/tasks/plain', { method: 'POST', payload: null }))
  await app.taskqueue.drain()
  t.same(ran, ids.map((taskId) => ({ url: '/tasks/plain', taskId })), 'four tasks ran past a limit of two, each marked')
  t.same(await app.taskqueue.queue('default').dead(), [], 'none was answered 429')

  const outside = []
  for (let index = 0; index < 3; index++) outside.push((await app.inject({ url: '/public' })).statusCode)
  t.same(outside, [200, 200, 429], 'requests that are not tasks are limited')
})

test('issue 11, point 13: a task added by a hook that runs before the plugin\'s is queued, and drain() resolves', async (t) => {
  const { app, ran } = await earlyHookApp(t)
  const parent = await app.taskqueue.add('/tasks/parent', { method: 'POST', payload: null })
  t.ok(await settlesWithin(app.taskqueue.drain(), 5000), 'drain() resolves')
  t.equal(ran.length, 2, 'the parent and its child ran')
  t.same(ran[0], { url: '/tasks/parent', taskId: parent })
  t.equal(ran[1].url, '/tasks/child')
  t.not(ran[1].taskId, undefined, 'the child ran as a task')
  t.not(ran[1].taskId, parent)
})

test('issue 11, point 13: a dispatch token read by an early hook cannot be replayed', async (t) => {
  const { app, seenHeaders, ran } = await earlyHookApp(t)
  const id = await app.taskqueue.add('/tasks/plain', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  t.same(ran, [{ url: '/tasks/plain', taskId: id }])
  const [stolen] = seenHeaders
  t.type(stolen[dispatchHeader], 'string', 'the first hook saw the token of the dispatch')

  // The exact headers of the genuine dispatch, injected again once it ended.
  const replayed = await app.inject({ method: 'POST', url: '/tasks/plain', headers: stolen as Record<string, string>, payload: '' })
  t.equal(replayed.statusCode, 404, 'the task-only route stays hidden')
  const whoami = await app.inject({ url: '/whoami', headers: stolen as Record<string, string> })
  t.same(whoami.json(), { task: null, header: null }, 'no mark, and the spent token is removed from the headers')
  t.same(ran, [{ url: '/tasks/plain', taskId: id }], 'the route did not run again')
  // The registry of tokens is internal: the app's taskqueue is its implementing class.
  t.equal((app.taskqueue as TaskQueueService).dispatchMarks.size, 0, 'no token outlives its dispatch')
})

test('issue 11, point 13: the token of a dispatch that an early hook answered dies with that dispatch', async (t) => {
  let refuse = true
  const { app, seenHeaders, ran } = await earlyHookApp(t, async (request) => {
    // Answers the first try before anything asked for the mark: the token stays in its headers.
    if (refuse && request.url === '/tasks/plain') {
      refuse = false
      throw Object.assign(new Error('busy'), { statusCode: 409 })
    }
  }, { retryMaxCount: 1, retryDelay: { min: 20, max: 40 } })
  const id = await app.taskqueue.add('/tasks/plain', { method: 'POST', payload: null })
  // The retry runs with a fresh token, so the first dispatch is over once drain() resolved.
  await app.taskqueue.drain()
  t.same(ran, [{ url: '/tasks/plain', taskId: id }], 'the retry ran as the task')
  const [unspent, retried] = seenHeaders
  t.type(unspent[dispatchHeader], 'string', 'the first try was answered with its token unspent')
  t.not(retried[dispatchHeader], unspent[dispatchHeader], 'every dispatch has a token of its own')
  const replayed = await app.inject({ url: '/whoami', headers: unspent as Record<string, string> })
  t.same(replayed.json(), { task: null, header: null }, 'a token left unspent by its dispatch marks nothing afterwards')
  t.same(await app.taskqueue.queue('default').dead(), [])
})

test('a live dispatch token sent over the network marks nothing, and its dispatch keeps its mark', async (t) => {
  const hold = gate()
  const held = gate()
  const { app, seenHeaders, ran } = await earlyHookApp(t, async (request) => {
    // Holds the genuine dispatch, its token unspent, while the test replays it over HTTP.
    if (request.url === '/tasks/plain' && seenHeaders.length === 1) {
      held.open()
      await hold.promise
    }
  })
  const port = await listenLocal(app)
  const id = await app.taskqueue.add('/tasks/plain', { method: 'POST', payload: null })
  await held.promise
  const live = seenHeaders[0] as Record<string, string>
  t.type(live[dispatchHeader], 'string')
  const headers = { ...live, host: `127.0.0.1:${port}`, 'content-length': '0' }
  const overHttp = await httpRequest(port, { method: 'POST', path: '/tasks/plain', headers })
  t.equal(overHttp.statusCode, 404, 'a request from the network is never a task')
  const whoami = await httpRequest(port, { path: '/whoami', headers: { [dispatchHeader]: live[dispatchHeader] } })
  t.same(JSON.parse(whoami.body), { task: null, header: null }, 'no mark, and the header is removed')
  hold.open()
  await app.taskqueue.drain()
  t.same(ran, [{ url: '/tasks/plain', taskId: id }], 'the genuine dispatch still ran as its task')
})
