// Queue state on both queue types (issue 11): reset() drops the waiting tasks and only their names
// and recovery counts, never those of tasks in flight.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { backendFor, gate, queueTypes, startApp, waitFor, type Backend, type Test } from './helpers/both-queues'

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
      // Counts of recoveries from dead consumers, as a recovery leaves them.
      await backend.redis().hset(backend.key('recoveries'), 'in-flight', '1', 'waiting-1', '1', 'delayed-1', '1')
    }
    t.equal(await queue.length(), 2, 'two tasks wait')

    await queue.reset()
    t.equal(await queue.length(), 0, 'reset() dropped the waiting and the delayed task')
    if (type === 'redis') {
      t.same(await backend.redis().hgetall(backend.key('recoveries')), { 'in-flight': '1' }, 'only the task in flight keeps its recovery count')
      t.same(await backend.redis().smembers(backend.key('names')), ['in-flight'], 'and its name')
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
  t.equal(await backend.redis().scard(backend.key('names')), 0, 'nor any name')
})
