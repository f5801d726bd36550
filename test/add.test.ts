// `add(url, options)` of issue 2, from a request (`request.taskqueue.add`) and from the app
// (`app.taskqueue.add`): argument checks and their error codes, the url and its query, the method,
// the headers copied from the current request and the payload of the dispatched request.
import { test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest, type InjectOptions } from 'fastify'
import taskqueue from '../plugin'
import type { TaskQueuePluginOptions } from '../lib/options'

type Test = Parameters<Parameters<typeof test>[0]>[0]

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const

/** What a task route saw of one dispatched request. */
interface Seen {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: unknown
  query: unknown
}

interface Harness {
  app: FastifyInstance
  /** Every task request the task routes received, in order. */
  seen: Seen[]
  /** What the route `/src` (any method) runs; its return value is answered as `{ result }`. */
  source: (request: FastifyRequest) => unknown
  /** Calls `/src` and waits until every task it queued was dispatched. */
  run: (options: InjectOptions, source: (request: FastifyRequest) => unknown) => Promise<{ statusCode: number, result: unknown }>
}

/**
 * An app with the plugin, task routes `/task` and `/task/:name` that record each request they get,
 * and the route `/src` that runs whatever a test sets as `source`.
 */
async function setup (t: Test, options?: TaskQueuePluginOptions, extend?: (app: FastifyInstance) => void): Promise<Harness> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, options ?? {})
  const harness: Harness = {
    app,
    seen: [],
    source: () => null,
    async run (injectOptions, source) {
      harness.source = source
      const response = await app.inject({ ...injectOptions, url: injectOptions.url ?? '/src' })
      await app.taskqueue.drain()
      const body = response.headers['content-type']?.toString().startsWith('application/json') === true ? response.json() : response.body
      return { statusCode: response.statusCode, result: body.result }
    }
  }
  const record = async (request: FastifyRequest): Promise<{ ok: true }> => {
    harness.seen.push({ method: request.method, url: request.url, headers: { ...request.headers }, body: request.body, query: { ...request.query as object } })
    return { ok: true }
  }
  app.route({ method: [...methods], url: '/task', handler: record })
  app.route({ method: [...methods], url: '/task/:name', handler: record })
  app.route({ method: [...methods], url: '/src', handler: async (request) => ({ result: harness.source(request) }) })
  extend?.(app)
  await app.ready()
  return harness
}

/** The code of what `fn` throws synchronously, or what went wrong otherwise. */
function codeOf (fn: () => unknown): string {
  let returned: unknown
  try {
    returned = fn()
  } catch (error) {
    return (error as { code?: string }).code ?? `uncoded: ${(error as Error).message}`
  }
  if (returned instanceof Promise) {
    returned.catch(() => {})
    return 'returned a promise'
  }
  return 'no error'
}

/** `add` as a JavaScript caller may call it, past the types. */
type LooseAdd = (url: unknown, options?: unknown) => unknown

function looseRequestAdd (request: FastifyRequest): LooseAdd {
  return request.taskqueue.add.bind(request.taskqueue) as LooseAdd
}

function looseAppAdd (app: FastifyInstance): LooseAdd {
  return app.taskqueue.add.bind(app.taskqueue) as LooseAdd
}

/** Each bad call, from a request and from the app, throws `code` synchronously and queues nothing. */
async function rejectsCalls (t: Test, code: string, calls: Array<[unknown, unknown?]>): Promise<void> {
  const h = await setup(t, { queues: [{ queue: 'default' }, { queue: 'mail' }] })
  const { result } = await h.run({ method: 'POST', url: '/src', payload: { a: 1 } }, (request) =>
    calls.map(([url, options]) => codeOf(() => looseRequestAdd(request)(url, options))))
  t.same(result, calls.map(() => code), `request.taskqueue.add throws ${code}`)
  const appAdd = looseAppAdd(h.app)
  t.same(calls.map(([url, options]) => codeOf(() => appAdd(url, options))), calls.map(() => code), `app.taskqueue.add throws ${code}`)
  await h.app.taskqueue.drain()
  t.same(h.seen, [], 'no task was queued')
  t.equal(await h.app.taskqueue.queue('default').length(), 0)
  t.equal(await h.app.taskqueue.queue('mail').length(), 0)
}

test('add returns the task id at once: a UUID, sent as x-task-id', async (t) => {
  const h = await setup(t)
  const { result } = await h.run({ method: 'GET' }, (request) => {
    const id = request.taskqueue.add('/task')
    return { id, type: typeof id }
  })
  const { id, type } = result as { id: string, type: string }
  t.equal(type, 'string', 'a string, not a promise')
  t.match(id, uuid)
  t.equal(h.seen.length, 1)
  t.equal(h.seen[0].headers['x-task-id'], id)

  const pending = h.app.taskqueue.add('/task')
  t.ok(pending instanceof Promise, 'app.taskqueue.add returns a promise')
  const appId = await pending
  t.match(appId, uuid)
  t.not(appId, id, 'each task its own id')
  await h.app.taskqueue.drain()
  t.equal(h.seen[1].headers['x-task-id'], appId)
})

test('url: a path of this app, with or without a query string', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'GET' }, (request) => {
    request.taskqueue.add('/task/plain')
    request.taskqueue.add('/task/q?x=1&y=a%20b&y=c')
    return null
  })
  t.same(h.seen.map(({ url }) => url), ['/task/plain', '/task/q?x=1&y=a%20b&y=c'])
  t.same(h.seen[1].query, { x: '1', y: ['a b', 'c'] })
})

test('url: anything else is FST_TASKQUEUE_INVALID_URL', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_INVALID_URL', [
    ['http://x/y'],
    ['https://example.com/task'],
    ['//evil/x'],
    ['/\\evil/x'],
    ['relative'],
    ['task/x'],
    [''],
    ['/task with space'],
    ['/task\r\nx-injected: 1'],
    [42],
    [undefined],
    [null],
    [{ url: '/task' }]
  ])
})

test('url: a query string together with params is FST_TASKQUEUE_INVALID_URL', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_INVALID_URL', [
    ['/task?x=1', { params: { y: '2' } }],
    ['/task?', { params: { y: '2' } }],
    ['/task?x=1', { method: 'POST', params: {} }]
  ])
})

test('params: url-encoded onto the url, arrays as repeated keys', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'GET' }, (request) => request.taskqueue.add('/task', {
    params: { user: '42', text: 'a b&c=d/é', list: ['1', '2', 'x y'], n: 7, yes: true }
  }))
  t.equal(h.seen.length, 1)
  const [path, query] = h.seen[0].url.split('?')
  t.equal(path, '/task')
  t.match(query, /(^|&)list=1&list=2&list=x(\+|%20)y(&|$)/, 'an array becomes repeated keys')
  t.notMatch(query, /[ é&]c=d/, 'reserved characters are encoded')
  t.same(h.seen[0].query, { user: '42', text: 'a b&c=d/é', list: ['1', '2', 'x y'], n: '7', yes: 'true' })

  await h.app.taskqueue.add('/task/empty', { params: {} })
  await h.app.taskqueue.drain()
  t.equal(h.seen[1].url, '/task/empty', 'empty params add no "?"')
})

test('method: GET by default; POST, PUT, PATCH and DELETE accepted', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'GET' }, (request) => {
    request.taskqueue.add('/task')
    for (const method of methods) request.taskqueue.add(`/task/${method}`, { method })
    return null
  })
  t.same(h.seen.map(({ method, url }) => `${method} ${url}`), [
    'GET /task',
    'GET /task/GET',
    'POST /task/POST',
    'PUT /task/PUT',
    'PATCH /task/PATCH',
    'DELETE /task/DELETE'
  ], 'in the order added, each with its method')
})

test('method: anything else is FST_TASKQUEUE_INVALID_METHOD', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_INVALID_METHOD', [
    ['/task', { method: 'TRACE' }],
    ['/task', { method: 'HEAD' }],
    ['/task', { method: 'OPTIONS' }],
    ['/task', { method: 'get' }],
    ['/task', { method: 'Post' }],
    ['/task', { method: 42 }],
    ['/task', { method: null }],
    ['/task', { method: ['GET'] }]
  ])
})

test('options: unknown keys and malformed values are FST_TASKQUEUE_INVALID_ARGUMENT', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_INVALID_ARGUMENT', [
    ['/task', { bogus: 10 }],
    ['/task', { Method: 'GET' }],
    ['/task', 'POST'],
    ['/task', null],
    ['/task', []],
    ['/task', { params: 'a=1' }],
    ['/task', { params: { a: { b: 1 } } }],
    ['/task', { params: { a: [null] } }],
    ['/task', { queue: 1 }],
    ['/task', { payload: 42 }],
    ['/task', { payload: true }],
    ['/task', { payload: () => 'x' }]
  ])
})

test('options: bad headers are FST_TASKQUEUE_INVALID_ARGUMENT', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_INVALID_ARGUMENT', [
    ['/task', { headers: 'x-a: 1' }],
    ['/task', { headers: { 'x-n': 1 } }],
    ['/task', { headers: { 'x-n': ['a', 'b'] } }],
    ['/task', { headers: { 'x-n': undefined } }],
    ['/task', { headers: { 'x-a': 'one\r\nx-injected: two' } }],
    ['/task', { headers: { 'x-a': 'one\ntwo' } }],
    ['/task', { headers: { 'x-a': 'one\rtwo' } }],
    ['/task', { headers: { 'bad name': 'v' } }],
    ['/task', { headers: { 'x-a\r\nx-b': 'v' } }],
    ['/task', { headers: { '': 'v' } }],
    ['/task', { headers: { 'x-task-id': 'mine' } }],
    ['/task', { headers: { 'X-Task-Retries': '5' } }],
    ['/task', { headers: { 'x-task-anything': 'v' } }]
  ])
})

test('queue: an unknown name is FST_TASKQUEUE_UNKNOWN_QUEUE, naming the registered ones', async (t) => {
  await rejectsCalls(t, 'FST_TASKQUEUE_UNKNOWN_QUEUE', [
    ['/task', { queue: 'nope' }],
    ['/task', { queue: 'Mail' }],
    ['/task', { queue: '' }]
  ])
  const h = await setup(t, { queues: [{ queue: 'default' }, { queue: 'mail' }] })
  t.throws(() => h.app.taskqueue.add('/task', { queue: 'sms' }), {
    code: 'FST_TASKQUEUE_UNKNOWN_QUEUE',
    message: /"sms".*default, mail/
  })
})

test('queue: the default is the alphabetically first registered queue', async (t) => {
  const h = await setup(t, { queues: [{ queue: 'mail' }, { queue: 'billing' }, { queue: 'zeta' }] })
  const { result } = await h.run({ method: 'GET' }, (request) => {
    request.taskqueue.add('/task/first')
    request.taskqueue.add('/task/mail', { queue: 'mail' })
    return null
  })
  t.equal(result, null)
  await h.app.taskqueue.add('/task/second')
  await h.app.taskqueue.drain()
  const queueOf = (url: string): unknown => h.seen.find((seen) => seen.url === url)?.headers['x-task-queue']
  t.equal(queueOf('/task/first'), 'billing', 'from a request')
  t.equal(queueOf('/task/second'), 'billing', 'from the app')
  t.equal(queueOf('/task/mail'), 'mail', 'a named queue')
})

test('errors are thrown synchronously, with a message that says what is allowed', async (t) => {
  const h = await setup(t)
  let thrown: unknown
  let returned: unknown = 'nothing'
  try {
    returned = h.app.taskqueue.add('relative')
  } catch (error) {
    thrown = error
  }
  t.equal(returned, 'nothing', 'no promise was returned, not even a rejected one')
  t.match(thrown, { code: 'FST_TASKQUEUE_INVALID_URL', message: /relative.*single "\/"/ })
  t.throws(() => h.app.taskqueue.add('/task', { method: 'TRACE' as 'GET' }), {
    code: 'FST_TASKQUEUE_INVALID_METHOD',
    message: /GET, POST, PUT, PATCH, DELETE.*"TRACE"/
  })
  t.throws(() => h.app.taskqueue.add('/task', { wait: true } as object), {
    code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
    message: /allowed options are method, params, headers, payload, queue/
  })
  t.throws(() => h.app.taskqueue.add('/task?a=1', { params: { b: '2' } }), {
    code: 'FST_TASKQUEUE_INVALID_URL',
    message: /either in the url or as params/
  })
  t.throws(() => h.app.taskqueue.add('/task', { headers: { 'x-task-id': 'x' } }), {
    code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
    message: /x-task-id/
  })
})

test('a request whose add() threw still succeeds with the tasks it did add', async (t) => {
  const h = await setup(t)
  const { statusCode, result } = await h.run({ method: 'GET' }, (request) => {
    request.taskqueue.add('/task/kept')
    return codeOf(() => request.taskqueue.add('http://x/y'))
  })
  t.equal(statusCode, 200)
  t.equal(result, 'FST_TASKQUEUE_INVALID_URL')
  t.same(h.seen.map(({ url }) => url), ['/task/kept'])
})

test('headers: the dispatched request carries the task headers', async (t) => {
  const h = await setup(t, { queues: [{ queue: 'default' }, { queue: 'mail' }] })
  const { result } = await h.run({ method: 'GET', headers: { 'user-agent': 'curl/8.0' } }, (request) => request.taskqueue.add('/task', { queue: 'mail' }))
  t.equal(h.seen.length, 1)
  const headers = h.seen[0].headers
  t.equal(headers['x-task-id'], result)
  t.equal(headers['x-task-queue'], 'mail')
  t.equal(headers['x-task-retries'], '0')
  t.equal(headers['user-agent'], 'fastify-taskqueue', 'not the user agent of the request that queued it')
  t.notOk(Object.keys(headers).some((name) => name.startsWith('x-taskqueue')), 'the dispatch mark is not visible to the handler')

  await h.app.taskqueue.add('/task')
  await h.app.taskqueue.drain()
  t.match(h.seen[1].headers, { 'x-task-queue': 'default', 'x-task-retries': '0', 'user-agent': 'fastify-taskqueue' })
})

test('headers: every header of the current request is copied but hop-by-hop ones, content-length, user-agent and x-task-*', async (t) => {
  const h = await setup(t)
  await h.run({
    method: 'GET',
    headers: {
      authorization: 'Bearer abc',
      cookie: 'session=1',
      'accept-language': 'fi',
      'x-custom': 'kept',
      'x-forwarded-for': '10.0.0.1',
      'user-agent': 'curl/8.0',
      connection: 'keep-alive, X-Private-Hop',
      'x-private-hop': 'dropped',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      upgrade: 'h2c',
      te: 'trailers',
      trailer: 'x-checksum',
      'proxy-authorization': 'Basic eA==',
      'proxy-authenticate': 'Basic',
      'proxy-connection': 'keep-alive',
      'x-task-id': 'forged',
      'x-task-queue': 'forged',
      'x-task-retries': '7',
      'x-task-custom': 'forged'
    }
  }, (request) => request.taskqueue.add('/task'))
  t.equal(h.seen.length, 1)
  const headers = h.seen[0].headers
  t.match(headers, {
    authorization: 'Bearer abc',
    cookie: 'session=1',
    'accept-language': 'fi',
    'x-custom': 'kept',
    'x-forwarded-for': '10.0.0.1',
    host: 'localhost:80'
  }, 'end-to-end headers are copied')
  for (const name of ['connection', 'x-private-hop', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer',
    'proxy-authorization', 'proxy-authenticate', 'proxy-connection', 'x-task-custom', 'content-length', 'content-type']) {
    t.equal(headers[name], undefined, `${name} is not copied`)
  }
  t.equal(headers['user-agent'], 'fastify-taskqueue')
  t.match(headers['x-task-id'], uuid, 'a fresh task id, not the forged one')
  t.equal(headers['x-task-queue'], 'default')
  t.equal(headers['x-task-retries'], '0')
})

test('headers: content-length is never copied, the task has its own', async (t) => {
  const h = await setup(t)
  const big = { text: 'x'.repeat(500) }
  await h.run({ method: 'POST', payload: big }, (request) => {
    request.taskqueue.add('/task/copied', { method: 'POST' })
    request.taskqueue.add('/task/own', { method: 'POST', payload: 'abc' })
    request.taskqueue.add('/task/none', { method: 'POST', payload: null })
    return null
  })
  const byUrl = Object.fromEntries(h.seen.map((seen) => [seen.url, seen]))
  t.equal(byUrl['/task/copied'].headers['content-length'], String(JSON.stringify(big).length))
  t.same(byUrl['/task/copied'].body, big)
  t.equal(byUrl['/task/own'].headers['content-length'], '3')
  t.equal(byUrl['/task/own'].body, 'abc')
  t.not(byUrl['/task/none'].headers['content-length'], String(JSON.stringify(big).length), 'no content-length of a body it does not carry')
  t.notOk(byUrl['/task/none'].body, 'and no body')
})

test('headers: content-type is copied only when the payload is', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'POST', payload: 'hello', headers: { 'content-type': 'text/plain; charset=iso-8859-1' } }, (request) => {
    request.taskqueue.add('/task/copied', { method: 'POST' })
    request.taskqueue.add('/task/none', { method: 'POST', payload: null })
    request.taskqueue.add('/task/object', { method: 'POST', payload: { a: 1 } })
    request.taskqueue.add('/task/get')
    return null
  })
  const byUrl = Object.fromEntries(h.seen.map((seen) => [seen.url, seen]))
  t.equal(byUrl['/task/copied'].headers['content-type'], 'text/plain; charset=iso-8859-1', 'with the payload, its own content type')
  t.equal(byUrl['/task/none'].headers['content-type'], undefined, 'payload: null, no content type')
  t.equal(byUrl['/task/object'].headers['content-type'], 'application/json', 'a given object: JSON, not the request\'s type')
  t.equal(byUrl['/task/get'].headers['content-type'], undefined, 'a GET task carries no body, hence no content type')
})

test('headers: the caller\'s headers win, compared case-insensitively', async (t) => {
  const h = await setup(t)
  await h.run({
    method: 'POST',
    payload: { a: 1 },
    headers: { 'x-lang': 'en', authorization: 'Bearer user', 'x-other': 'kept' }
  }, (request) => request.taskqueue.add('/task', {
    method: 'POST',
    headers: { 'X-Lang': 'fi', AUTHORIZATION: 'Bearer service', 'Content-Type': 'application/json; charset=utf-8', 'X-New': 'added' }
  }))
  t.equal(h.seen.length, 1)
  const headers = h.seen[0].headers
  t.equal(headers['x-lang'], 'fi')
  t.equal(headers.authorization, 'Bearer service')
  t.equal(headers['content-type'], 'application/json; charset=utf-8')
  t.equal(headers['x-new'], 'added')
  t.equal(headers['x-other'], 'kept')
  t.same(h.seen[0].body, { a: 1 })
})

test('headers: app.taskqueue.add has no request to copy from', async (t) => {
  const h = await setup(t)
  await h.app.taskqueue.add('/task', { headers: { 'X-Only': 'this' } })
  await h.app.taskqueue.drain()
  const headers = h.seen[0].headers
  t.same(Object.keys(headers).filter((name) => !name.startsWith('x-task-')).sort(), ['host', 'user-agent', 'x-only'], 'only the caller\'s headers and those of inject')
  t.match(headers, { 'x-task-id': uuid, 'x-task-queue': 'default', 'x-task-retries': '0' })
})

test('headers: a task that queues a task starts a fresh one', async (t) => {
  const h = await setup(t, undefined, (app) => {
    app.post('/task/parent', async (request) => {
      const id = request.taskqueue.add('/task/child', { method: 'POST' })
      return { id, parent: request.taskqueue.task }
    })
  })
  const parentId = await h.app.taskqueue.add('/task/parent', { method: 'POST', payload: { from: 'app' }, headers: { 'x-trace': 't1' } })
  await h.app.taskqueue.drain()
  t.equal(h.seen.length, 1)
  const child = h.seen[0]
  t.equal(child.url, '/task/child')
  t.match(child.headers['x-task-id'], uuid)
  t.not(child.headers['x-task-id'], parentId, 'not the parent\'s id')
  t.equal(child.headers['x-task-retries'], '0')
  t.equal(child.headers['x-trace'], 't1', 'other headers of the parent are copied')
  t.same(child.body, { from: 'app' }, 'and so is its body')
})

test('payload: by default a JSON body is sent again as JSON', async (t) => {
  const h = await setup(t)
  const body = { a: 1, nested: { list: [1, 'two', null] }, text: 'é' }
  await h.run({ method: 'POST', payload: body, headers: { 'content-type': 'application/json; charset=utf-8' } }, (request) => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) request.taskqueue.add(`/task/${method}`, { method })
    return null
  })
  t.equal(h.seen.length, 4)
  for (const seen of h.seen) {
    t.same(seen.body, body, `${seen.method}: the same body`)
    t.equal(seen.headers['content-type'], 'application/json', `${seen.method}: as JSON`)
  }
})

test('payload: by default a text body is sent as it is, with its content type', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'PUT', payload: 'plain words\nline two', headers: { 'content-type': 'text/plain' } }, (request) => request.taskqueue.add('/task', { method: 'POST' }))
  t.equal(h.seen.length, 1)
  t.equal(h.seen[0].body, 'plain words\nline two')
  t.equal(h.seen[0].headers['content-type'], 'text/plain')
})

test('payload: by default a binary body is sent byte for byte, with its content type', async (t) => {
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const h = await setup(t, undefined, (app) => {
    app.addContentTypeParser(['application/octet-stream', 'image/png'], { parseAs: 'buffer' }, (request, body, done) => { done(null, body) })
  })
  await h.run({ method: 'POST', payload: bytes, headers: { 'content-type': 'application/octet-stream' } }, (request) => request.taskqueue.add('/task/octets', { method: 'POST' }))
  await h.run({ method: 'POST', payload: bytes, headers: { 'content-type': 'image/png' } }, (request) => request.taskqueue.add('/task/png', { method: 'PUT' }))
  t.equal(h.seen.length, 2)
  for (const seen of h.seen) {
    t.ok(Buffer.isBuffer(seen.body), `${seen.url}: bytes`)
    t.ok(bytes.equals(seen.body as Buffer), `${seen.url}: the same bytes`)
  }
  t.equal(h.seen[0].headers['content-type'], 'application/octet-stream')
  t.equal(h.seen[1].headers['content-type'], 'image/png', 'its own content type, not a generic one')
})

test('payload: by default a JSON scalar body is sent again as JSON', async (t) => {
  const h = await setup(t)
  for (const body of ['42', 'true', '"just text"', '[]']) {
    const { statusCode, result } = await h.run({ method: 'POST', payload: body, headers: { 'content-type': 'application/json' } }, (request) =>
      codeOf(() => request.taskqueue.add(`/task/${encodeURIComponent(body)}`, { method: 'POST' })))
    t.equal(statusCode, 200)
    t.equal(result, 'no error', `${body}: add() did not throw`)
  }
  t.same(h.seen.map((seen) => seen.body), [42, true, 'just text', []], 'each body as the request had it')
  t.same(h.seen.map((seen) => seen.headers['content-type']), ['application/json', 'application/json', 'application/json', 'application/json'])
})

test('payload: a GET task does not inherit the body', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'POST', payload: { a: 1 } }, (request) => {
    request.taskqueue.add('/task/default')
    request.taskqueue.add('/task/explicit', { method: 'GET' })
    return null
  })
  t.equal(h.seen.length, 2)
  for (const seen of h.seen) {
    t.equal(seen.method, 'GET')
    t.equal(seen.body, undefined, `${seen.url}: no body`)
    t.equal(seen.headers['content-type'], undefined, `${seen.url}: no content type`)
    t.equal(seen.headers['content-length'], undefined, `${seen.url}: no content length`)
  }
})

test('payload: a request without a body gives none', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'GET' }, (request) => request.taskqueue.add('/task', { method: 'POST' }))
  t.equal(h.seen.length, 1)
  t.equal(h.seen[0].body, undefined)
  t.equal(h.seen[0].headers['content-type'], undefined)
})

test('payload: null sends none', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'POST', payload: { a: 1 } }, (request) => request.taskqueue.add('/task', { method: 'POST', payload: null }))
  await h.app.taskqueue.add('/task', { method: 'PUT', payload: null })
  await h.app.taskqueue.drain()
  t.equal(h.seen.length, 2)
  for (const seen of h.seen) {
    t.equal(seen.body, undefined, `${seen.method}: no body`)
    t.equal(seen.headers['content-type'], undefined, `${seen.method}: no content type`)
  }
})

test('payload: a given object or array is sent as JSON', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'POST', payload: 'text body', headers: { 'content-type': 'text/plain' } }, (request) => request.taskqueue.add('/task/object', { method: 'POST', payload: { b: [1, 2], c: { d: 'e' } } }))
  await h.app.taskqueue.add('/task/array', { method: 'PATCH', payload: [1, { a: 'b' }] })
  await h.app.taskqueue.drain()
  const byUrl = Object.fromEntries(h.seen.map((seen) => [seen.url, seen]))
  t.same(byUrl['/task/object'].body, { b: [1, 2], c: { d: 'e' } })
  t.equal(byUrl['/task/object'].headers['content-type'], 'application/json')
  t.same(byUrl['/task/array'].body, [1, { a: 'b' }])
  t.equal(byUrl['/task/array'].headers['content-type'], 'application/json')
})

test('payload: a given string is sent as text, a given Buffer byte for byte', async (t) => {
  const bytes = Buffer.from([0, 255, 1, 254, 0x0d, 0x0a, 0x7f, 0x80])
  const h = await setup(t, undefined, (app) => {
    app.addContentTypeParser(['application/octet-stream', 'application/x-thing'], { parseAs: 'buffer' }, (request, body, done) => { done(null, body) })
  })
  await h.app.taskqueue.add('/task/text', { method: 'POST', payload: 'some text' })
  await h.app.taskqueue.add('/task/bytes', { method: 'POST', payload: bytes })
  await h.app.taskqueue.add('/task/typed', { method: 'POST', payload: bytes, headers: { 'Content-Type': 'application/x-thing' } })
  await h.app.taskqueue.drain()
  const byUrl = Object.fromEntries(h.seen.map((seen) => [seen.url, seen]))
  t.equal(byUrl['/task/text'].body, 'some text')
  t.match(byUrl['/task/text'].headers['content-type'], /^text\/plain/)
  for (const url of ['/task/bytes', '/task/typed']) {
    t.ok(Buffer.isBuffer(byUrl[url].body) && bytes.equals(byUrl[url].body as Buffer), `${url}: the same bytes`)
  }
  t.equal(byUrl['/task/bytes'].headers['content-type'], 'application/octet-stream')
  t.equal(byUrl['/task/typed'].headers['content-type'], 'application/x-thing', 'the caller\'s content type wins')
})

test('the tasks of a request are dispatched in the order added', async (t) => {
  const h = await setup(t)
  await h.run({ method: 'GET' }, (request) => {
    for (let i = 0; i < 5; i++) request.taskqueue.add(`/task/${i}`)
    return null
  })
  t.same(h.seen.map(({ url }) => url), ['/task/0', '/task/1', '/task/2', '/task/3', '/task/4'])
})

test('issue 11, point 15: a default payload that cannot be JSON is FST_TASKQUEUE_INVALID_ARGUMENT naming payload', async (t) => {
  // What @fastify/multipart does with attachFieldsToBody: true: each field of the body is an
  // object whose `fields` points back at the body, which makes the body circular.
  const h = await setup(t, undefined, (app) => {
    app.post('/form', {
      preValidation: async (request) => {
        const body = request.body as Record<string, unknown>
        for (const [name, value] of Object.entries(body)) body[name] = { fieldname: name, value, fields: body }
      }
    }, async (request) => {
      const add = (options: Parameters<typeof request.taskqueue.add>[1]): unknown => {
        try {
          return { id: request.taskqueue.add('/task/form', options) }
        } catch (error) {
          return { code: (error as { code?: string }).code, message: (error as Error).message }
        }
      }
      const values = Object.fromEntries(Object.entries(request.body as Record<string, { value: unknown }>).map(([name, field]) => [name, field.value]))
      return { inherited: add({ method: 'POST' }), given: add({ method: 'POST', payload: values }) }
    })
  })
  const response = await h.app.inject({ method: 'POST', url: '/form', payload: { title: 'a', count: 2 } })
  await h.app.taskqueue.drain()
  t.equal(response.statusCode, 200)
  const { inherited, given } = response.json()
  t.equal(inherited.code, 'FST_TASKQUEUE_INVALID_ARGUMENT', 'a coded error, not a TypeError')
  t.match(inherited.message, /payload: the body of the request that queues the task cannot be sent as JSON \(Converting circular structure to JSON\)/)
  t.match(inherited.message, /pass the task's body as options\.payload/, 'the message says what to do')
  t.match(given.id, uuid, 'with payload given, the same request queues the task')
  t.same(h.seen.map(({ url, body }) => ({ url, body })), [{ url: '/task/form', body: { title: 'a', count: 2 } }], 'only the task with a payload was queued')
})

test('issue 11, point 15: other bodies and payloads with no JSON form are FST_TASKQUEUE_INVALID_ARGUMENT', async (t) => {
  const bodies: Record<string, () => unknown> = {
    bigint: () => ({ n: 10n }),
    'throwing toJSON': () => ({ toJSON () { throw new Error('no JSON for you') } }),
    'toJSON giving undefined': () => ({ toJSON () { return undefined } })
  }
  const h = await setup(t, undefined, (app) => {
    app.post('/odd/:kind', {
      preHandler: async (request) => { request.body = bodies[(request.params as { kind: string }).kind]() }
    }, async (request) => ({ result: codeOf(() => request.taskqueue.add('/task', { method: 'POST' })) }))
  })
  for (const kind of Object.keys(bodies)) {
    const response = await h.app.inject({ method: 'POST', url: `/odd/${encodeURIComponent(kind)}`, payload: { a: 1 } })
    t.equal(response.json().result, 'FST_TASKQUEUE_INVALID_ARGUMENT', `a request body with ${kind}`)
    t.throws(() => h.app.taskqueue.add('/task', { method: 'POST', payload: bodies[kind]() as Record<string, unknown> }), {
      code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
      message: /^Invalid task argument: payload: the given object/
    }, `a given payload with ${kind}`)
  }
  await h.app.taskqueue.drain()
  t.same(h.seen, [], 'nothing was queued')
})

// Found while looking at the default payload for issue 11, point 15: bytes a parser gives as a
// plain Uint8Array went out as {"0":0,"1":255,...}.
test('payload: by default a Uint8Array body is sent byte for byte, not as a JSON object of indices', async (t) => {
  const bytes = new Uint8Array([0, 255, 1, 254])
  const h = await setup(t, undefined, (app) => {
    app.addContentTypeParser('application/x-bytes', { parseAs: 'buffer' }, (request, body, done) => { done(null, new Uint8Array(body as Buffer)) })
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (request, body, done) => { done(null, body) })
  })
  await h.run({ method: 'POST', payload: Buffer.from(bytes), headers: { 'content-type': 'application/x-bytes' } }, (request) =>
    request.taskqueue.add('/task', { method: 'POST', headers: { 'content-type': 'application/octet-stream' } }))
  t.equal(h.seen.length, 1)
  t.ok(Buffer.isBuffer(h.seen[0].body) && Buffer.from(bytes).equals(h.seen[0].body as Buffer), 'the same bytes')
})

test('issue 11, point 18: an invalid notBefore date and a delay that is not finite say so, not "got null"', async (t) => {
  const h = await setup(t)
  const add = looseAppAdd(h.app)
  t.throws(() => add('/task', { notBefore: new Date('nope') }), {
    code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
    message: /^Invalid task argument: options\.notBefore: Expected Date, got an invalid Date;/
  })
  for (const delay of [NaN, Infinity, -Infinity]) {
    t.throws(() => add('/task', { delay }), {
      code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
      message: new RegExp(`^Invalid task argument: options\\.delay: Expected integer, got ${String(delay)};`)
    }, `delay ${String(delay)}`)
  }
  await h.app.taskqueue.drain()
  t.same(h.seen, [], 'nothing was queued')
})

test('issue 11, point 18: a notBefore more than a year ahead is refused, as a delay of more than a year is', async (t) => {
  const h = await setup(t)
  const year = 365 * 24 * 60 * 60 * 1000
  // In seconds instead of ms by mistake, a timestamp of the year 2128 or so; and the last Date there is.
  for (const notBefore of [new Date(Date.now() + year + 60_000), new Date(8.64e15)]) {
    t.throws(() => h.app.taskqueue.add('/task', { notBefore }), {
      code: 'FST_TASKQUEUE_INVALID_ARGUMENT',
      message: /options\.notBefore: at most a year from now/
    }, `notBefore ${notBefore.toISOString()}`)
  }
  t.equal(await h.app.taskqueue.queue('default').length(), 0, 'nothing was queued')
  const id = await h.app.taskqueue.add('/task', { notBefore: new Date(Date.now() + year - 60_000) })
  t.match(id, uuid, 'just under a year is fine')
  await h.app.taskqueue.queue('default').reset()
})

// Found while bounding notBefore for issue 11, point 18: a delay the options allow (up to a year)
// overflowed the local queue's timer, which Node then fired after 1 ms.
test('delay: a local task put off for longer than a timer can wait (24.8 days) does not run at once', async (t) => {
  const h = await setup(t)
  const day = 24 * 60 * 60 * 1000
  await h.app.taskqueue.add('/task/delay', { delay: 30 * day })
  await h.app.taskqueue.add('/task/not-before', { notBefore: new Date(Date.now() + 300 * day) })
  await h.app.taskqueue.add('/task/soon', { delay: 20 })
  const deadline = Date.now() + 2000
  while (h.seen.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(h.seen.map(({ url }) => url), ['/task/soon'], 'only the task due soon ran')
  t.equal(await h.app.taskqueue.queue('default').length(), 2, 'the two others still wait')
  await h.app.taskqueue.queue('default').reset()
})
