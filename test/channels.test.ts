// issue 13, "Instrumentation": the task lifecycle on Node's diagnostics_channel, on both queue
// types. Each event is published once, with the message shape types/index.ts documents, naming
// the app whose queue it happened in; a Redis recovery and an unreadable message publish what the
// Redis queue knows of them.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { randomUUID } from 'node:crypto'
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import taskqueue from '../plugin'
import { encodeMessage } from '../lib/queues/codec'
import type { TaskEventBase, TaskQueueChannelNames } from '../types'
import { backendFor, codeOf, queueTypes, startApp, storeRaw, waitFor, type Test } from './helpers/both-queues'

const names: TaskQueueChannelNames = {
  enqueued: 'taskqueue:task:enqueued',
  started: 'taskqueue:task:started',
  finished: 'taskqueue:task:finished',
  retried: 'taskqueue:task:retried',
  dead: 'taskqueue:task:dead',
  recovered: 'taskqueue:task:recovered',
  cancelled: 'taskqueue:task:cancelled'
}

type Event = TaskEventBase & Record<string, unknown> & { channel: keyof TaskQueueChannelNames }

/** Every event of the app's own, in the order published; the subscriptions end with the test. */
function listen (t: Test, owner: { app?: FastifyInstance }): Event[] {
  const events: Event[] = []
  for (const [channel, name] of Object.entries(names)) {
    const listener = (message: unknown): void => {
      const event = message as TaskEventBase
      if (event.taskqueue === owner.app?.taskqueue) events.push({ ...event, channel } as Event)
    }
    subscribe(name, listener)
    t.teardown(() => { unsubscribe(name, listener) })
  }
  return events
}

const of = (events: Event[], channel: Event['channel']): Event[] => events.filter((event) => event.channel === channel)

test('the channel names are exported as taskqueueChannels', async (t) => {
  t.same(taskqueue.taskqueueChannels, names)
  t.ok(Object.isFrozen(taskqueue.taskqueueChannels), 'and cannot be changed')
})

for (const type of queueTypes) {
  test(`${type}: issue 13, a task's life is published on the channels, once per event`, async (t) => {
    const backend = await backendFor(type)
    const owner: { app?: FastifyInstance } = {}
    const events = listen(t, owner)
    const app = owner.app = await startApp(t, {
      queues: [backend.queue('default')],
      consumers: [{ queue: 'default', retryMaxCount: 1, retryDelay: { min: 5, max: 10 } }]
    }, (app) => {
      app.post('/tasks/ok', async () => ({ ok: true }))
      app.post('/tasks/flaky', async (request, reply) => reply.code(503).send('busy now'))
      app.post('/tasks/bad', async (request, reply) => reply.code(422).send({ error: 'no such user' }))
      app.post('/signup', async (request) => ({ id: request.taskqueue.add('/tasks/ok', { method: 'POST' }) }))
    })
    const outside = await app.taskqueue.add('/tasks/ok', { method: 'POST' })
    const inside = (await app.inject({ method: 'POST', url: '/signup', payload: {} })).json().id
    const flaky = await app.taskqueue.add('/tasks/flaky', { method: 'POST' })
    const bad = await app.taskqueue.add('/tasks/bad', { method: 'POST' })
    await waitFor('every task to end', () => of(events, 'dead').length === 2 && of(events, 'finished').length === 5)

    t.same(of(events, 'enqueued').map(({ id }) => id).sort(), [outside, inside, flaky, bad].sort(), 'enqueued once per task added, not per retry')
    const enqueued = of(events, 'enqueued').find(({ id }) => id === outside)
    t.match(enqueued, { queue: 'default', id: outside, task: { id: outside, url: '/tasks/ok', method: 'POST', retries: 0 } }, 'enqueued carries the task')

    const started = of(events, 'started')
    t.equal(started.length, 5, 'started once per try: 2 tasks, a retried one twice, a final one once')
    t.match(started.find(({ id }) => id === outside), { queue: 'default', retries: 0, consumer: String, eta: Number, waitMs: Number })
    t.ok(started.every(({ waitMs }) => (waitMs as number) >= 0), 'a wait is never negative')

    const finished = of(events, 'finished')
    t.match(finished.find(({ id }) => id === outside), { outcome: 'answered', statusCode: 200, next: 'done', retries: 0, reqId: String, durationMs: Number })
    t.same(finished.filter(({ id }) => id === flaky).map(({ next, statusCode }) => [next, statusCode]), [['retry', 503], ['dead', 503]], 'the flaky task: a retry, then dead')
    t.same(finished.filter(({ id }) => id === bad).map(({ next }) => next), ['dead'], 'a final status: dead at once')
    t.ok(finished.every(({ durationMs }) => (durationMs as number) >= 0))

    t.match(of(events, 'retried'), [{ id: flaky, retries: 1, delayMs: Number, detail: 'answered 503', statusCode: 503, reqId: String }], 'one retry')
    const dead = of(events, 'dead')
    t.match(dead.find(({ id }) => id === flaky), { reason: 'retries exhausted', statusCode: 503, body: 'busy now', reqId: String })
    t.match(dead.find(({ id }) => id === bad), { reason: 'final status', statusCode: 422, detail: 'answered 422', body: '{"error":"no such user"}' })
    const reqIdOfBad = finished.find(({ id }) => id === bad)?.reqId
    t.equal(dead.find(({ id }) => id === bad)?.reqId, reqIdOfBad, 'the dead event names the request id of the try that killed the task')
    t.ok(events.every((event) => event.taskqueue === app.taskqueue), 'every event names its app')
  })

  test(`${type}: issue 13, cancelled is published when cancel() resolves true, and only then`, async (t) => {
    const backend = await backendFor(type)
    const owner: { app?: FastifyInstance } = {}
    const events = listen(t, owner)
    const app = owner.app = await startApp(t, { queues: [backend.queue('default')], consumers: [] })
    const queue = app.taskqueue.queue('default')
    const id = await app.taskqueue.add('/tasks/later', { delay: 60_000 })
    const code = await codeOf(() => queue.cancel(id))
    if (code === 'FST_TASKQUEUE_UNSUPPORTED') {
      // A queue that cannot cancel yet publishes nothing.
      t.same(of(events, 'cancelled'), [], 'nothing cancelled')
      return
    }
    t.equal(code, 'no error')
    t.match(of(events, 'cancelled'), [{ queue: 'default', id }], 'the cancelled task')
    t.equal(await queue.cancel(id), false, 'a second cancel finds nothing')
    t.equal(await queue.cancel('unknown'), false)
    t.equal(of(events, 'cancelled').length, 1, 'and publishes nothing')
  })
}

test('two apps in one process: each event names the app it happened in', async (t) => {
  const backend = await backendFor('local')
  const first: { app?: FastifyInstance } = {}
  const second: { app?: FastifyInstance } = {}
  const ofFirst = listen(t, first)
  const ofSecond = listen(t, second)
  const a = await (first.app = await startApp(t, { queues: [backend.queue('default')], consumers: [] })).taskqueue.add('/tasks/a')
  const b = await (second.app = await startApp(t, { queues: [backend.queue('default')], consumers: [] })).taskqueue.add('/tasks/b')
  t.same(ofFirst.map(({ id }) => id), [a])
  t.same(ofSecond.map(({ id }) => id), [b])
})

test('redis: issue 13, a recovery publishes recovered and dead for each task, by id', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const owner: { app?: FastifyInstance } = {}
  const events = listen(t, owner)
  // A consumer that expired (registered, no heartbeat) holding two tasks; one was recovered as often
  // as allowed already, so the recovery buries it.
  const now = Date.now()
  const task = (id: string): string => encodeMessage({ v: 1, id, queue: 'default', url: '/tasks/ok', method: 'GET', headers: {}, retries: 0, createdAt: now, eta: now })
  const [returned, poisoned] = [randomUUID(), randomUUID()]
  await client.sadd(backend.key('consumers'), 'ghost')
  // Stored as the v2 layout keeps a reserved task: its message by id, its id in the consumer's list.
  for (const id of [returned, poisoned]) await storeRaw(client, (name) => backend.key(name), id, task(id), 'processing:ghost')
  await client.hset(backend.key('recoveries'), poisoned, 5)
  owner.app = await startApp(t, {
    queues: [backend.queue('default', { heartbeatInterval: 100, recoveryMaxCount: 5 })],
    consumers: [{ queue: 'default' }]
  }, (app) => { app.get('/tasks/ok', async () => 'ok') })
  await waitFor('the recovery', () => of(events, 'recovered').length > 0 && of(events, 'finished').length > 0)
  t.same(of(events, 'recovered').map(({ queue, id }) => ({ queue, id })), [{ queue: 'default', id: returned }], 'one task recovered, named')
  t.match(of(events, 'dead'), [{ queue: 'default', id: poisoned, reason: 'recovered too often' }], 'one buried, named')
  t.match(of(events, 'finished'), [{ id: returned, next: 'done' }], 'the recovered task ran')
})

test('redis: issue 13, an unreadable message is published as dead, with the id it was stored under', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const owner: { app?: FastifyInstance } = {}
  const events = listen(t, owner)
  await storeRaw(client, (name) => backend.key(name), 'readable-id', '{"v":1,"id":"readable-id","queue":"default"}')
  await storeRaw(client, (name) => backend.key(name), 'junk-id', 'not json at all')
  owner.app = await startApp(t, { queues: [backend.queue('default')], consumers: [{ queue: 'default' }] })
  await waitFor('both to be buried', () => of(events, 'dead').length === 2)
  const dead = of(events, 'dead')
  t.same(dead.map(({ id }) => id).sort(), ['junk-id', 'readable-id'], 'each under the id it was stored by, readable or not')
  t.ok(dead.every(({ reason, detail }) => reason === 'unreadable' && typeof detail === 'string'), 'reason unreadable, with the problem')
})
