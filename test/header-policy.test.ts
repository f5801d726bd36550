// The `headerPolicy` option of issue 4, on both queue types (on Redis the copied headers are stored
// in Redis): `{ allow }` copies only those request headers into tasks, `{ exclude }` never copies
// those; the connection-level and x-task-* headers are never copied; bad values are coded errors.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import type { TaskQueuePluginOptions } from '../lib/options'
import { backendFor, queueTypes, startApp, waitFor, type Backend, type Test } from './helpers/both-queues'
import { storedMessages } from './helpers/redis'

type Headers = Record<string, string | string[] | undefined>

/** The request headers of the source request of every test. */
const sourceHeaders = {
  authorization: 'Bearer token',
  cookie: 'session=secret',
  'accept-language': 'fi',
  'x-custom': 'custom',
  'x-secret': 'hush',
  'x-task-id': 'forged',
  'user-agent': 'browser'
}

/** Queues one task from a request with `sourceHeaders`; resolves to the headers it was dispatched with. */
async function dispatchedHeaders (t: Test, backend: Backend, policy: TaskQueuePluginOptions['headerPolicy'],
  addHeaders?: Record<string, string>): Promise<Headers> {
  const seen: Headers[] = []
  const app = await startApp(t, { queues: [backend.queue()], consumers: [{ queue: 'default' }], headerPolicy: policy }, (app) => {
    app.post('/tasks/echo', async (request) => {
      seen.push({ ...request.headers })
      return {}
    })
    app.post('/src', async (request) => ({ id: request.taskqueue.add('/tasks/echo', { method: 'POST', headers: addHeaders }) }))
  })
  const response = await app.inject({ method: 'POST', url: '/src', headers: sourceHeaders, payload: { a: 1 } })
  t.equal(response.statusCode, 200)
  await waitFor('the task', () => seen.length === 1)
  t.equal(seen[0]['x-task-id'], response.json().id, 'x-task-id is the dispatch\'s own')
  t.equal(seen[0]['user-agent'], 'fastify-taskqueue', 'user-agent is the dispatch\'s own')
  return seen[0]
}

/** The headers of a dispatched task that came from its source request. */
function copied (headers: Headers): string[] {
  return Object.keys(sourceHeaders).filter((name) => name !== 'x-task-id' && name !== 'user-agent' && headers[name] !== undefined).sort()
}

for (const type of queueTypes) {
  test(`${type}: by default every request header is copied`, async (t) => {
    const headers = await dispatchedHeaders(t, await backendFor(type), undefined)
    t.same(copied(headers), ['accept-language', 'authorization', 'cookie', 'x-custom', 'x-secret'])
    t.equal(headers.cookie, 'session=secret')
    t.equal(headers['content-type'], 'application/json', 'the inherited body keeps its type')
  })

  test(`${type}: { allow } copies only those headers, matched case-insensitively`, async (t) => {
    const headers = await dispatchedHeaders(t, await backendFor(type), { allow: ['Authorization', 'accept-language'] })
    t.same(copied(headers), ['accept-language', 'authorization'])
    t.equal(headers.authorization, 'Bearer token')
    t.equal(headers.cookie, undefined, 'no cookie')
    t.equal(headers['x-custom'], undefined)
    t.equal(headers['content-type'], 'application/json', 'the body is still labelled')
  })

  test(`${type}: { allow: [] } copies none; the headers option still adds its own`, async (t) => {
    const headers = await dispatchedHeaders(t, await backendFor(type), { allow: [] }, { 'X-Extra': 'given', cookie: 'chosen=1' })
    t.same(copied(headers), ['cookie'])
    t.equal(headers.cookie, 'chosen=1', 'the given cookie, not the copied one')
    t.equal(headers['x-extra'], 'given')
  })

  test(`${type}: { exclude } drops those headers, matched case-insensitively`, async (t) => {
    const headers = await dispatchedHeaders(t, await backendFor(type), { exclude: ['Cookie', 'X-SECRET'] })
    t.same(copied(headers), ['accept-language', 'authorization', 'x-custom'])
  })

  // Allow and exclude together used to be taken (allow less exclude); issue 11, point 18 made it
  // an invalid option, tested below.
  test(`${type}: allow never lets connection-level and x-task-* headers through`, async (t) => {
    const headers = await dispatchedHeaders(t, await backendFor(type), {
      allow: ['authorization', 'user-agent', 'x-task-id', 'content-length']
    })
    t.same(copied(headers), ['authorization'], 'only the allowed header that may travel')
    t.equal(headers['content-length'], String(JSON.stringify({ a: 1 }).length), 'content-length is the body\'s own')
  })

  if (type === 'redis') {
    test('redis: headers left out by the policy are not stored in Redis', async (t) => {
      const backend = await backendFor(type)
      const client = backend.redis()
      const app = await startApp(t, { queues: [backend.queue()], consumers: [], headerPolicy: { exclude: ['cookie'] } }, (app) => {
        app.get('/src', async (request) => ({ id: request.taskqueue.add('/tasks/echo') }))
      })
      await app.inject({ url: '/src', headers: sourceHeaders })
      await waitFor('the task in Redis', async () => await client.llen(backend.key('waiting')) === 1)
      const [stored] = await storedMessages(client, backend.key('waiting'))
      t.notMatch(stored, /session=secret/, 'the cookie is not in Redis')
      t.match(stored, /Bearer token/, 'the authorization is')
    })
  }
}

test('bad headerPolicy values are FST_TASKQUEUE_INVALID_OPTION', async (t) => {
  const bad: unknown[] = [
    { allow: 'cookie' },
    { exclude: 'cookie' },
    { allow: [''] },
    { allow: ['bad header'] },
    { allow: ['x:y'] },
    { exclude: [1] },
    { exclude: [null] },
    { allow: {} },
    { deny: ['cookie'] },
    { allow: ['authorization'], exclude: ['cookie'] },
    [],
    'cookie',
    null,
    true
  ]
  for (const headerPolicy of bad) {
    const app = Fastify()
    t.teardown(() => app.close().catch(() => {}))
    app.register(taskqueue, { headerPolicy } as never)
    const error = await app.ready().then(() => undefined, (error: Error & { code?: string }) => error)
    t.equal(error?.code, 'FST_TASKQUEUE_INVALID_OPTION', `headerPolicy ${JSON.stringify(headerPolicy)}`)
    t.match(error?.message, /headerPolicy/, 'the message names the option')
  }
})
