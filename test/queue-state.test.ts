// Queue state on both queue types (issue 11): reset() drops the waiting tasks and only their names
// and recovery counts, never those of tasks in flight; add() refuses a task too large for a
// consumer to read, and one buried as unreadable frees its id.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { backendFor, codeOf, gate, queueTypes, startApp, storeRaw, waitFor, type Backend, type Test } from './helpers/both-queues'

interface Harness {
  app: FastifyInstance
  /** How often each task id started. */
  runs: Map<string, number>
  /** Handlers of /tasks/hold wait for this gate. */
  hold: ReturnType<typeof gate>
}

async function start (t: Test, backend: Backend): Promise<Harness> {
  const harness: Harness = { app: undefined as unknown as FastifyInstance, runs: new Map(), hold: gate() }
  harness.app = await startApp(t, {
    queues: [backend.queue()],
    consumers: [{ queue: 'default', concurrentLimit: 1 }]
  }, (app) => {
    app.all('/tasks/:name', async (request) => {
      const id = request.headers['x-task-id'] as string
      harness.runs.set(id, (harness.runs.get(id) ?? 0) + 1)
      if ((request.params as { name: string }).name === 'hold') await harness.hold.promise
      return { ok: true }
    })
  })
  t.teardown(() => harness.hold.open())
  return harness
}

for (const type of queueTypes) {
  // issue 11, point 5: reset() deleted every live name, those of tasks in flight too (the same id
  // could then run twice at once), and left recovery counts behind.
  test(`${type}: reset() drops the waiting tasks with their names and recovery counts, and leaves those of a task in flight`, async (t) => {
    const backend = await backendFor(type)
    const harness = await start(t, backend)
    const { app, runs } = harness
    const queue = app.taskqueue.queue('default')
    await app.taskqueue.add('/tasks/hold', { id: 'in-flight' })
    await waitFor('the named task to run', () => runs.get('in-flight') === 1, 5000)
    // With one slot taken, these wait: one due, one delayed.
    await app.taskqueue.add('/tasks/now', { id: 'waiting-1' })
    await app.taskqueue.add('/tasks/now', { id: 'delayed-1', delay: 60_000 })
    if (type === 'redis') {
      // Counts of recoveries from expired consumers, as a recovery leaves them.
      await backend.redis().hset(backend.key('recoveries'), 'in-flight', '1', 'waiting-1', '1', 'delayed-1', '1')
    }
    t.equal(await queue.length(), 2, 'two tasks wait')

    await queue.reset()
    t.equal(await queue.length(), 0, 'reset() dropped the waiting and the delayed task')
    if (type === 'redis') {
      t.same(await backend.redis().hgetall(backend.key('recoveries')), { 'in-flight': '1' }, 'only the task in flight keeps its recovery count')
      t.same(await backend.redis().hkeys(backend.key('tasks')), ['in-flight'], 'and its message: its id stays live')
    }

    t.equal(await app.taskqueue.add('/tasks/hold', { id: 'in-flight' }), 'in-flight', 'adding the id of the task in flight again')
    await app.taskqueue.add('/tasks/now', { id: 'waiting-1' })
    await app.taskqueue.add('/tasks/now', { id: 'delayed-1' })
    t.equal(await queue.length(), 2, 'is a no-op, while the dropped ids are free again')

    harness.hold.open()
    await waitFor('the re-added tasks to run', () => runs.get('waiting-1') === 1 && runs.get('delayed-1') === 1, 5000)
    t.equal(runs.get('in-flight'), 1, 'the task in flight ran once')
    if (type === 'redis') t.equal(await backend.redis().hlen(backend.key('recoveries')), 0, 'no recovery count is left behind')
    await app.taskqueue.add('/tasks/now', { id: 'in-flight' })
    await waitFor('its id to be free once it finished', () => runs.get('in-flight') === 2, 5000)
  })
}

// reset() on Redis works in chunks of a bounded size (one script per chunk), until the queue is empty.
test('redis: reset() drops a queue longer than one chunk, with the names of its tasks', async (t) => {
  const backend = await backendFor('redis')
  const app = await startApp(t, { queues: [backend.queue()], consumers: [] })
  const ids = Array.from({ length: 1234 }, (_, n) => `task-${n}`)
  for (let n = 0; n < ids.length; n += 100) {
    await Promise.all(ids.slice(n, n + 100).map((id, index) => app.taskqueue.add('/tasks/now', { id, delay: index % 3 === 0 ? 60_000 : 0 })))
  }
  const queue = app.taskqueue.queue('default')
  t.equal(await queue.length(), ids.length, 'every task waits')
  await queue.reset()
  t.equal(await queue.length(), 0, 'none after reset()')
  t.equal(await backend.redis().hlen(backend.key('tasks')), 0, 'nor any message')
})

for (const type of queueTypes) {
  // issue 11, point 4: a task over the size a consumer reads was accepted, then buried unread.
  test(`${type}: add() refuses a task whose message no consumer could read`, async (t) => {
    const backend = await backendFor(type)
    const app = await startApp(t, { queues: [backend.queue()], consumers: [] }, (app) => {
      app.post('/produce', { bodyLimit: 32 * 1024 * 1024 }, async (request) => request.taskqueue.add('/tasks/big', { method: 'POST' }))
    })
    // 13 MiB of bytes are 17.3 MiB of base64 in the stored message: over the 16 MiB a consumer reads.
    const bytes = Buffer.alloc(13 * 1024 * 1024, 1)
    t.equal(await codeOf(() => app.taskqueue.add('/tasks/big', { method: 'POST', payload: bytes })), 'FST_TASKQUEUE_INVALID_ARGUMENT', 'app.taskqueue.add()')
    const text = 'x'.repeat(16 * 1024 * 1024)
    t.equal(await codeOf(() => app.taskqueue.add('/tasks/big', { method: 'POST', payload: text })), 'FST_TASKQUEUE_INVALID_ARGUMENT', 'a text payload too')
    const response = await app.inject({ method: 'POST', url: '/produce', headers: { 'content-type': 'text/plain' }, payload: text })
    t.equal(response.json().code, 'FST_TASKQUEUE_INVALID_ARGUMENT', 'request.taskqueue.add() with an inherited body')
    t.equal(await app.taskqueue.queue('default').length(), 0, 'nothing was queued')
    t.ok(await app.taskqueue.add('/tasks/big', { method: 'POST', payload: 'x'.repeat(1024 * 1024) }), 'a large task under the limit is queued')
  })
}

// issue 11, point 4: a message buried as unreadable kept its caller-chosen id live for ever (and
// its recovery count): re-adding the id was skipped without a word.
test('redis: an oversized message buried as unreadable frees its name and recovery count', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const ran: string[] = []
  const app = await startApp(t, { queues: [backend.queue()], consumers: [{ queue: 'default' }] }, (app) => {
    app.all('/tasks/:name', async (request) => {
      ran.push(request.headers['x-task-id'] as string)
      return 'ok'
    })
  })
  const now = Date.now()
  // As another producer (or an older version) could have stored it: valid, named, and too large.
  const big = JSON.stringify({ v: 1, id: 'big-1', queue: 'default', url: '/tasks/big', method: 'POST', headers: {}, payload: 'x'.repeat(16 * 1024 * 1024), retries: 0, createdAt: now, eta: now, named: true })
  await client.hset(backend.key('recoveries'), 'big-1', '1')
  await storeRaw(client, backend.key, 'big-1', big)
  await waitFor('the message to be buried', async () => (await client.llen(backend.key('dead'))) === 1, 10_000)
  const [letter] = await app.taskqueue.queue('default').dead()
  t.equal(letter.reason, 'unreadable', 'as unreadable')
  t.equal(await client.hexists(backend.key('tasks'), 'big-1'), 0, 'its id is free')
  t.equal(await client.hexists(backend.key('recoveries'), 'big-1'), 0, 'its recovery count is gone')
  await app.taskqueue.add('/tasks/small', { id: 'big-1' })
  await waitFor('the id to run again', () => ran.includes('big-1'), 5000)
  t.same(ran, ['big-1'], 're-adding the id queued and ran the task')
})

// issue 11, point 8 (dead letters): entries were read from Redis field by field without checking
// their shape; a malformed one is now shown whole as unreadable, with its raw text.
test('redis: a malformed dead letter is shown as unreadable with its raw text, and never requeued', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const app = await startApp(t, { queues: [backend.queue()], consumers: [] })
  const now = Date.now()
  const task = JSON.stringify({ v: 1, id: 'good-1', queue: 'default', url: '/tasks/x', method: 'GET', headers: {}, retries: 2, createdAt: now, eta: now })
  const good = JSON.stringify({ reason: 'final status', detail: 'answered 400', statusCode: 400, at: now, task })
  const malformed = [
    JSON.stringify({ reason: 'final status', at: 'yesterday', task }),
    JSON.stringify({ reason: 'no such reason', at: now, task }),
    JSON.stringify({ reason: 'timeout', at: now, task: JSON.parse(task) }),
    `{"reason":"timeout","at":${now},"task":${JSON.stringify(task)},"__proto__":{"polluted":true}}`,
    'not json'
  ]
  await client.lpush(backend.key('dead'), good, ...malformed)
  const letters = await app.taskqueue.queue('default').dead()
  t.equal(letters.length, 6, 'every entry is listed')
  const shown = letters.slice(0, malformed.length)
  t.same(shown.map(({ raw }) => raw), [...malformed].reverse(), 'newest first, each malformed one with its raw text')
  t.ok(shown.every((letter) => letter.reason === 'unreadable' && letter.id === null && letter.task === null && letter.at === 0), 'as unreadable, none of its fields trusted')
  t.ok(shown.every(({ detail }) => detail?.startsWith('not a dead letter')), 'saying why')
  t.match(letters[5], { id: 'good-1', reason: 'final status', statusCode: 400, detail: 'answered 400', at: now, task: { id: 'good-1' } }, 'a well-formed entry is read as it was stored')
  t.equal(await app.taskqueue.queue('default').requeue(), 1, 'requeue() puts back the readable one only')
  t.equal(await client.llen(backend.key('dead')), malformed.length, 'the malformed ones stay')
})
