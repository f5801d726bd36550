// Redis goes away in the middle of a run and comes back: with the server restarted (durable, so
// that it keeps what it acknowledged), every task whose request answered 200 runs, and the
// consumer resumes without an app restart; with the path to Redis cut while the server stays up,
// tasks another instance pushed meanwhile are picked up once the consumer reconnects.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { startOwnRedis, uniquePrefix } from './helpers/redis'
import { connectionNames, cuttableProxy, list, loggedApp, scanKeys, sleep, waitUntil } from './helpers/redis-children'

test('Redis restarted in the middle of a run: no task whose request returned 200 is lost, consumers resume', async (t) => {
  t.setTimeout(90_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const { app, lines } = loggedApp()
  // Closed before the server stops (teardowns run last in, first out).
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue: 'jobs', type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue: 'jobs', concurrentLimit: 2, retryDelay: { min: 50, max: 500 } }]
  })
  const ran = new Map<number, number>()
  const ranAfterRestart = new Set<number>()
  let restarted = false
  app.post<{ Body: { n: number } }>('/tasks/work', async (request) => {
    await sleep(Math.floor(Math.random() * 5))
    const { n } = request.body
    ran.set(n, (ran.get(n) ?? 0) + 1)
    if (restarted) ranAfterRestart.add(n)
    return 'ok'
  })
  app.post<{ Params: { n: string } }>('/produce/:n', async (request) => {
    request.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: Number(request.params.n) } })
    return 'ok'
  })
  await app.ready()

  const accepted: number[] = []
  const refused: number[] = []
  let n = 0
  const produce = async (count: number, pause: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const number = n++
      const response = await app.inject({ method: 'POST', url: `/produce/${number}` })
      if (response.statusCode === 200) accepted.push(number)
      else refused.push(number)
      await sleep(pause)
    }
  }

  await produce(40, 10)
  await waitUntil('some tasks to run before the restart', () => ran.size > 0, 10_000)
  await redis.stop()
  // While Redis is down: the responses are sent, the pushes fail and are retried.
  await produce(30, 20)
  await sleep(500)
  await redis.start()
  restarted = true
  await produce(40, 10)

  t.equal(accepted.length, 110, 'every request answered 200 (tasks are pushed after the response)')
  t.same(refused, [], 'no request was refused')
  await waitUntil('every accepted task to run', () => accepted.every((number) => ran.has(number)), 45_000)
  t.ok(accepted.every((number) => (ran.get(number) ?? 0) >= 1), 'every task whose request returned 200 ran at least once')
  t.ok([...ranAfterRestart].some((number) => number >= 70), 'the consumer resumed after the restart, without an app restart')
  const duringOutage = accepted.filter((number) => number >= 40 && number < 70)
  t.ok(duringOutage.every((number) => ran.has(number)), 'the tasks queued while Redis was down ran after it came back')
  const failedPushes = lines.filter(({ msg }) => msg === 'taskqueue: queuing tasks failed, trying again')
  t.ok(failedPushes.length > 0, 'the failed pushes were logged')
  const twice = [...ran.values()].filter((count) => count > 1).length
  t.comment(`tasks run twice: ${twice} (a task whose acknowledgement failed while Redis was down may run again)`)

  await app.close()
  const client = redis.client()
  t.comment(`tasks released to the queue at close: ${await client.llen(`${prefix}:{jobs}:v2:waiting`)}`)
  t.same(await scanKeys(client, `${prefix}:{jobs}:v2:processing:*`), [], 'no processing list is left after close')
})

test('tasks pushed while the consumer was cut off from Redis are picked up once it reconnects', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const proxy = await cuttableProxy(redis.socketPath)
  t.teardown(() => proxy.close())
  const prefix = uniquePrefix()
  const queue = 'cutoff'

  // The consumer reaches Redis only through the proxy; the producer directly.
  const consumer = Fastify()
  t.teardown(() => consumer.close())
  await consumer.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, unixSocketPath: proxy.socketPath, heartbeatInterval: 200 }],
    consumers: [{ queue, concurrentLimit: 1 }]
  })
  const ran: number[] = []
  consumer.post<{ Body: { n: number } }>('/tasks/work', async (request) => {
    ran.push(request.body.n)
    return 'ok'
  })
  await consumer.ready()

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }] })
  await producer.ready()

  await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 0 } })
  await waitUntil('the first task to run', () => ran.length === 1, 10_000)

  const client = redis.client()
  // The producer holds one connection named after the queue; the consumer app one more, and one
  // for blocking reads (named "...:consumer"). Only the consumer's go through the proxy.
  const queueConnections = async (): Promise<string[]> =>
    (await connectionNames(client)).filter((name) => name.startsWith(`fastify-taskqueue:${queue}`)).sort()
  const withConsumer = [`fastify-taskqueue:${queue}`, `fastify-taskqueue:${queue}`, `fastify-taskqueue:${queue}:consumer`]
  const producerOnly = [`fastify-taskqueue:${queue}`]
  await waitUntil('the consumer connections to be seen', async () => (await queueConnections()).length === 3, 5000)
  t.same(await queueConnections(), withConsumer, 'the producer\'s connection and the consumer app\'s two')
  await proxy.cut()
  await waitUntil('the consumer connections to be gone', async () => (await queueConnections()).length === 1, 5000)

  for (let n = 1; n <= 20; n++) await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n } })
  // Longer than a blocking read's own timeout (1 s) plus ioredis' grace for it (5 s): a read cut
  // off by the outage is then settled by ioredis with null while the consumer loops through
  // failed reads and reconnection attempts (this stranded a task in the processing list).
  await sleep(8000)
  t.same(ran, [0], 'nothing ran while the consumer was cut off')
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:waiting`), 20, 'the tasks wait in Redis')
  t.same(await queueConnections(), producerOnly, 'the consumer was still cut off when the tasks were pushed')

  await proxy.restore()
  await waitUntil('the tasks pushed meanwhile to run', () => ran.length >= 21, 20_000).catch(async (error) => {
    const stuck = await scanKeys(client, `${prefix}:{${queue}}:v2:processing:*`)
    t.comment(`ran: ${ran.join(',')}; waiting: ${await client.llen(`${prefix}:{${queue}}:v2:waiting`)}; processing: ${(await Promise.all(stuck.map((key) => client.llen(key)))).join(',')}`)
    throw error
  })
  await sleep(300)
  t.same(ran, Array.from({ length: 21 }, (_, n) => n), 'each ran once, in order, after the consumer reconnected')
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:waiting`), 0, 'the queue is empty')
  const processing = await scanKeys(client, `${prefix}:{${queue}}:v2:processing:*`)
  const leftover = (await Promise.all(processing.map((key) => list(client, key)))).flat()
  t.same(leftover, [], 'no task is stuck in the consumer\'s processing list')
})

test('a consumer whose first connection is refused keeps trying, and runs tasks once Redis takes it', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const queue = 'refused'
  const client = redis.client()
  await client.ping()
  // Room for this client and the app's command connection only: the consumer's blocking
  // connection, opened when the consumer starts, is refused by the server.
  await client.config('SET', 'maxclients', '2')
  const { app, lines } = loggedApp()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue, concurrentLimit: 1 }]
  })
  const ran: number[] = []
  app.post<{ Body: { n: number } }>('/tasks/work', async (request) => {
    ran.push(request.body.n)
    return 'ok'
  })
  await app.ready()
  await app.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 1 } })
  await waitUntil('the consumer to fail to start', () => lines.some(({ msg }) => msg === 'taskqueue: reserving a task failed'), 10_000)
  t.same(ran, [], 'nothing ran while the consumer could not connect')
  await client.config('SET', 'maxclients', '1000')
  await waitUntil('the task to run once the consumer could connect', () => ran.length === 1, 15_000)
  t.same(ran, [1], 'once')
})
