// Steering a Redis queue across instances (issue 13): the pause is state in Redis, seen by every
// instance's consumers within about a second and outliving an instance; stats() read the same from
// any instance; get() and cancel() reach any task from any instance, also against a consumer
// reserving at the same time; the figures stay right after a consumer is killed with tasks in
// flight, and after Redis restarted empty; with Redis down, each call rejects with a coded error.
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import taskqueue from '../plugin'
import { startOwnRedis, storeRaw, uniquePrefix } from './helpers/redis'
import { ensureBuilt, list, redisForTest, sleep, startConsumer, waitUntil, within } from './helpers/redis-children'
import { gate, type Test } from './helpers/harness'

const queue = 'shared'

/**
 * An instance on the shared queue; with `consume`, a consumer of `concurrentLimit` slots whose
 * /tasks/:name records the task ids it starts, each held until `hold` resolves when one is given,
 * and taking `taking` ms when given.
 */
async function instance (t: Test, connection: object, prefix: string, consume?: { concurrentLimit?: number, hold?: Promise<void>, taking?: number }) {
  const app: FastifyInstance = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...connection, heartbeatInterval: 200 }],
    ...(consume === undefined ? {} : { consumers: [{ queue, concurrentLimit: consume.concurrentLimit ?? 1 }] })
  })
  const started: string[] = []
  app.all('/tasks/:name', async (request) => {
    started.push(request.headers['x-task-id'] as string)
    await consume?.hold
    if (consume?.taking !== undefined) await sleep(consume.taking)
    return 'ok'
  })
  await app.ready()
  return { app, handle: app.taskqueue.queue(queue), started }
}

test('issue 13: pause() in one instance stops the consumers of another within about a second; resume() restarts them', async (t) => {
  t.setTimeout(30_000)
  const { redis, prefix } = await redisForTest(t)
  const a = await instance(t, redis.connection, prefix)
  const b = await instance(t, redis.connection, prefix, {})

  await a.handle.pause()
  t.equal(await b.handle.isPaused(), true, 'B sees the pause at once')
  const ids = [await a.app.taskqueue.add('/tasks/x'), await a.app.taskqueue.add('/tasks/y')]
  await sleep(1500)
  t.same(b.started, [], 'B\'s consumer started no task while paused, though its blocking read saw them come')
  t.match(await b.handle.stats(), { waiting: 2, paused: true }, 'both wait')

  const resumedAt = Date.now()
  await a.handle.resume()
  await waitUntil('B to run both', () => b.started.length === 2, 5000)
  const took = Date.now() - resumedAt
  t.same(b.started, ids, 'B ran them in order')
  t.ok(took < 2500, `B resumed within about a second (${took} ms)`)
  t.equal(await b.handle.isPaused(), false)
})

test('issue 13: a pause outlives the instance that made it: a new instance starts paused', async (t) => {
  t.setTimeout(30_000)
  const { redis, prefix } = await redisForTest(t)
  const first = await instance(t, redis.connection, prefix, {})
  await first.handle.pause()
  await first.app.close()

  const second = await instance(t, redis.connection, prefix, {})
  t.equal(await second.handle.isPaused(), true, 'the new instance sees the queue paused')
  const id = await second.app.taskqueue.add('/tasks/x')
  await sleep(1200)
  t.same(second.started, [], 'and its consumer starts nothing')
  await second.handle.resume()
  await waitUntil('the task to run once resumed here', () => second.started.length === 1, 3000)
  t.same(second.started, [id])
})

test('issue 13: stats() read the same from every instance, and get() and cancel() reach a task with a UUID id from any', async (t) => {
  t.setTimeout(30_000)
  const { redis, prefix } = await redisForTest(t)
  const hold = gate()
  t.teardown(() => hold.open())
  const a = await instance(t, redis.connection, prefix)
  const b = await instance(t, redis.connection, prefix, { hold: hold.promise })
  const flight = await a.app.taskqueue.add('/tasks/hold')
  await waitUntil('B to start the held task', () => b.started.length === 1, 5000)
  const uuid = await a.app.taskqueue.add('/tasks/wait')
  await a.app.taskqueue.add('/tasks/wait')
  await a.app.taskqueue.add('/tasks/later', { delay: 60_000 })

  const [fromA, fromB] = await Promise.all([a.handle.stats(), b.handle.stats()])
  t.match(fromA, { waiting: 2, delayed: 1, inFlight: 1, dead: 0, paused: false }, 'A counts the tasks of the queue, those B runs too')
  t.same({ ...fromA, oldestWaitingAge: 0 }, { ...fromB, oldestWaitingAge: 0 }, 'B reads the same figures')
  t.ok(Math.abs((fromA.oldestWaitingAge as number) - (fromB.oldestWaitingAge as number)) < 1000, 'and about the same age')

  t.match(await a.handle.get(flight), { state: 'in-flight' }, 'A sees the task B runs in flight')
  t.match(await b.handle.get(uuid), { id: uuid, state: 'waiting', url: '/tasks/wait' }, 'B finds a task with a UUID id that A added')
  t.equal(await b.handle.cancel(uuid), true, 'B cancels it')
  t.equal(await a.handle.get(uuid), null, 'A no longer finds it')
  t.equal(await a.handle.cancel(flight), false, 'A cannot cancel the task B runs')
  hold.open()
  await waitUntil('B to run what is left', () => b.started.length === 2, 5000)
  await sleep(300)
  t.notOk(b.started.includes(uuid), 'the cancelled task never ran')
})

test('issue 13: cancel() from one instance races the reservations of another: each task is cancelled or runs, never both', async (t) => {
  t.setTimeout(60_000)
  const { redis, prefix } = await redisForTest(t)
  const a = await instance(t, redis.connection, prefix)
  // Tasks of a few ms: B is still reserving while A cancels.
  const b = await instance(t, redis.connection, prefix, { concurrentLimit: 8, taking: 10 })
  // Paused while the tasks are added, so that B starts on them only when A starts cancelling.
  await a.handle.pause()
  const ids: string[] = []
  for (let n = 0; n < 600; n++) ids.push(await a.app.taskqueue.add(`/tasks/t${n}`))
  await b.handle.resume()
  // B reserves from the front while A cancels from the back, so that the two meet.
  const cancelled = new Set<string>()
  for (const id of [...ids].reverse()) if (await a.handle.cancel(id)) cancelled.add(id)
  await waitUntil('every task that was not cancelled to run', () => b.started.length + cancelled.size >= ids.length, 20_000)
  await sleep(300)
  const ran = new Set(b.started)
  t.ok(cancelled.size > 0 && ran.size > 0, `both sides got some (${cancelled.size} cancelled, ${ran.size} ran)`)
  t.same(ids.filter((id) => cancelled.has(id) === ran.has(id)), [], 'no task was both cancelled and run, nor neither')
  t.equal(b.started.length, ran.size, 'none ran twice')
  t.match(await a.handle.stats(), { waiting: 0, inFlight: 0 }, 'nothing is left, tombstones included')
})

test('issue 13: after a consumer is killed with tasks in flight, stats() and get() follow the recovery', async (t) => {
  t.setTimeout(60_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const producer = await instance(t, redis.connection, prefix)
  const ids = [
    await producer.app.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 1, hold: 30_000 } }),
    await producer.app.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 2, hold: 30_000 } })
  ]
  const child = startConsumer({ connection: redis.connection, prefix, queue, concurrentLimit: 2, heartbeatInterval: 200 })
  t.teardown(() => child.stop('SIGKILL'))
  await child.ready
  await waitUntil('the child to start both tasks', async () => (await list(client, `${prefix}:started`)).length === 2, 10_000)
  t.match(await producer.handle.stats(), { waiting: 0, inFlight: 2 }, 'two tasks in flight')
  t.match(await producer.handle.get(ids[0]), { state: 'in-flight' })
  await child.stop('SIGKILL')
  t.match(await producer.handle.stats(), { inFlight: 2 }, 'still in flight until the consumer expired')

  // A live consumer recovers them: each recovered task runs alone, so one runs while the other waits.
  const hold = gate()
  t.teardown(() => hold.open())
  const rescuer = await instance(t, redis.connection, prefix, { concurrentLimit: 2, hold: hold.promise })
  await waitUntil('one recovered task to run', () => rescuer.started.length === 1, 10_000)
  t.match(await producer.handle.stats(), { waiting: 1, inFlight: 1, dead: 0 }, 'one recovered task runs, the other waits')
  const states = await Promise.all(ids.map(async (id) => (await producer.handle.get(id))?.state))
  t.same([...states].sort(), ['in-flight', 'waiting'], 'get() tells which')
  hold.open()
  await waitUntil('both to have run', () => rescuer.started.length === 2, 10_000)
  await waitUntil('the figures to settle', async () => (await producer.handle.stats()).inFlight === 0, 5000)
  t.match(await producer.handle.stats(), { waiting: 0, delayed: 0, inFlight: 0, dead: 0 }, 'nothing left')
  t.same(await Promise.all(ids.map((id) => producer.handle.get(id))), [null, null], 'both done')
})

test('issue 13: get() and waiting() leave out a task whose stored message cannot be read; stats() still count it', async (t) => {
  t.setTimeout(30_000)
  const { redis, client, prefix } = await redisForTest(t)
  const a = await instance(t, redis.connection, prefix)
  const key = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  const good = await a.app.taskqueue.add('/tasks/good')
  // As another program (or a person) could have written them.
  await storeRaw(client, key, 'garbled-1', 'not a task message')
  await client.hset(key('dead-index'), 'garbled-2', '{"not": "a dead letter"}')
  t.equal(await a.handle.get('garbled-1'), null, 'an unreadable live task: null')
  t.equal(await a.handle.get('garbled-2'), null, 'an unreadable dead letter: null')
  t.same((await a.handle.waiting()).map(({ id }) => id), [good], 'waiting() lists the readable one')
  t.match(await a.handle.stats(), { waiting: 2 }, 'stats() count both: a consumer will bury the unreadable one')
  t.equal(await a.handle.length(), 2)
})

test('issue 13: after Redis restarted empty, stats() are all zero and the steering calls work', async (t) => {
  t.setTimeout(30_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const a = await instance(t, redis.connection, prefix, {})
  await a.handle.pause()
  await a.app.taskqueue.add('/tasks/x', { id: 'x' })
  await a.app.taskqueue.add('/tasks/y', { delay: 60_000 })
  await redis.stop()
  await redis.start()
  await waitUntil('the queue to answer again', () => a.handle.stats().then(() => true, () => false), 10_000)
  t.same(await a.handle.stats(), { waiting: 0, delayed: 0, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: null }, 'all zero, not paused')
  t.equal(await a.handle.get('x'), null, 'the lost task is unknown')
  t.equal(await a.handle.cancel('x'), false)
  t.same(await a.handle.waiting(), [])
  await a.app.taskqueue.add('/tasks/x', { id: 'x' })
  await waitUntil('a new task to run', () => a.started.includes('x'), 5000)
  t.pass('the consumer carries on')
})

test('issue 13: with Redis down, each steering call rejects with a coded error naming the queue, within the command timeout', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, { queues: [{ queue: 'mail', type: 'redis', prefix: uniquePrefix(), ...redis.connection, commandTimeout: 1000 }] })
  await app.ready()
  await redis.stop()
  const handle = app.taskqueue.queue('mail')
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['stats()', () => handle.stats()],
    ['pause()', () => handle.pause()],
    ['resume()', () => handle.resume()],
    ['isPaused()', () => handle.isPaused()],
    ['get()', () => handle.get('x')],
    ['cancel()', () => handle.cancel('x')],
    ['waiting()', () => handle.waiting()]
  ]
  for (const [call, run] of calls) {
    const startedAt = Date.now()
    const error = await within(call, run().then(() => null, (error: unknown) => error), 15_000) as (Error & { code?: string }) | null
    const took = Date.now() - startedAt
    t.equal(error?.code, 'FST_TASKQUEUE_QUEUE_FAILED', `${call} rejects with the code`)
    // ioredis fails a command after its reconnection attempts, or its commandTimeout (1 s here).
    t.ok(took < 3000, `${call}: within about the command timeout (${took} ms)`)
    t.ok(error?.message.includes('"mail"') && error?.message.includes(call), `${call}: the message names the queue and the call (${error?.message})`)
  }
})
