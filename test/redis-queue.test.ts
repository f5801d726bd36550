// The Redis queue's basic behaviour, against a real redis-server: its keys, its messages, the
// connections it opens (or is handed), the enqueue modes, and consumer names.
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import taskqueue from '../plugin'
import { startOwnRedis, storedMessages, testRedis, uniquePrefix, type RedisConnection } from './helpers/redis'
import { connectionNames, dropPrefixAtEnd, loggedApp, redisForTest, scanKeys, sleep, waitUntil, within } from './helpers/redis-children'

/** A client of the test's own for `connection`, closed when the test ends. */
function clientFor (t: { teardown: (fn: () => unknown) => void }, connection: RedisConnection['connection'], options: RedisOptions = {}): Redis {
  const client = 'url' in connection ? new Redis(connection.url, options) : new Redis({ path: connection.unixSocketPath, ...options })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

/** The ids of the tasks of a waiting list, oldest first (producers LPUSH). */
async function waitingIds (client: Redis, key: string): Promise<string[]> {
  return (await client.lrange(key, 0, -1)).reverse()
}

test('length() and reset() touch only their own queue\'s keys; every key carries the queue\'s hash tag', async (t) => {
  const { redis, client, prefix } = await redisForTest(t)
  const queues = ['mail', 'mail2'].map((queue) => ({ queue, type: 'redis' as const, prefix, ...redis.connection, heartbeatInterval: 200 }))

  // Producer only: with `queues` given and `consumers` left out, shared queues get no consumer.
  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues })
  await producer.ready()
  for (const queue of ['mail', 'mail2']) {
    await producer.taskqueue.add('/tasks/send', { queue })
    await producer.taskqueue.add('/tasks/send', { queue, delay: 60_000 })
    await producer.taskqueue.add('/tasks/send', { queue, id: `named-${queue}` })
  }
  await producer.taskqueue.add('/tasks/send', { queue: 'mail' })
  t.equal(await producer.taskqueue.queue('mail').length(), 4, 'waiting and delayed tasks of mail')
  t.equal(await producer.taskqueue.queue('mail2').length(), 3, 'waiting and delayed tasks of mail2')

  const keyOf = (queue: string, name: string): string => `${prefix}:{${queue}}:v2:${name}`
  t.same(await scanKeys(client, `${prefix}*`), [
    keyOf('mail', 'delayed'), keyOf('mail', 'tasks'), keyOf('mail', 'waiting'), keyOf('mail', 'wake'),
    keyOf('mail2', 'delayed'), keyOf('mail2', 'tasks'), keyOf('mail2', 'waiting'), keyOf('mail2', 'wake')
  ].sort(), 'the keys of each queue, under its hash tag (a wake-up token waits, as no consumer took it)')
  const mail2Before = {
    waiting: await client.lrange(keyOf('mail2', 'waiting'), 0, -1),
    delayed: await client.zrange(keyOf('mail2', 'delayed'), '0', '-1', 'WITHSCORES'),
    tasks: await client.hgetall(keyOf('mail2', 'tasks'))
  }

  await producer.taskqueue.queue('mail').reset()
  t.equal(await producer.taskqueue.queue('mail').length(), 0, 'mail is empty after its reset')
  t.equal(await producer.taskqueue.queue('mail2').length(), 3, 'mail2 keeps its tasks')
  t.same({
    waiting: await client.lrange(keyOf('mail2', 'waiting'), 0, -1),
    delayed: await client.zrange(keyOf('mail2', 'delayed'), '0', '-1', 'WITHSCORES'),
    tasks: await client.hgetall(keyOf('mail2', 'tasks'))
  }, mail2Before, 'every key of mail2 is untouched')
  t.same(await scanKeys(client, `${prefix}:{mail}:*`), [], 'no key of mail is left')
  // The name of a task of a reset queue is free again.
  await producer.taskqueue.add('/tasks/send', { queue: 'mail', id: 'named-mail' })
  t.equal(await producer.taskqueue.queue('mail').length(), 1, 'a named task can be added again after the reset')

  // The keys of a running consumer: its processing list, heartbeat, the consumer set, the lease,
  // the dead list.
  const consumer = Fastify()
  t.teardown(() => consumer.close())
  // Room for the two held tasks and the refused one.
  await consumer.register(taskqueue, { queues, consumers: [{ queue: 'mail2', concurrentLimit: 3 }] })
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let started = 0
  consumer.get('/tasks/send', async () => {
    started++
    await held
    return 'ok'
  })
  consumer.get('/tasks/refuse', async (request, reply) => reply.code(400).send('no'))
  t.teardown(release)
  await consumer.ready()
  await producer.taskqueue.add('/tasks/refuse', { queue: 'mail2' })
  await waitUntil('the two due tasks to be held', () => started === 2, 10_000)
  await waitUntil('the refused task to be buried', async () => await client.llen(keyOf('mail2', 'dead')) === 1, 10_000)
  const keys = await scanKeys(client, `${prefix}*`)
  const tagged = /^tq-test-[0-9a-f]+:\{(mail|mail2)\}:v2:(tasks|waiting|delayed|inflight|dead|dead-index|consumers|lease|recoveries|wake|processing:.+|heartbeat:.+)$/
  t.same(keys.filter((key) => !tagged.test(key)), [], 'every key is `prefix:{queue}:...`')
  for (const kind of ['processing:', 'heartbeat:', 'consumers', 'dead']) {
    t.ok(keys.some((key) => key.startsWith(keyOf('mail2', kind))), `a ${kind} key exists while a task runs`)
  }
  release()
  await consumer.close()
  t.same(await scanKeys(client, `${prefix}:{mail2}:v2:processing:*`), [], 'the processing list is gone once its tasks are done')
  t.same(await scanKeys(client, `${prefix}:{mail2}:v2:heartbeat:*`), [], 'a closed consumer leaves no heartbeat')
  t.equal(await client.scard(keyOf('mail2', 'consumers')), 0, 'nor its entry in the consumer set')
})

test('a binary payload survives the round trip through Redis byte for byte', async (t) => {
  const { redis, client, prefix } = await redisForTest(t)
  const queues = [{ queue: 'bin', type: 'redis' as const, prefix, ...redis.connection }]
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const withBufferParser = (app: FastifyInstance): void => {
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (request, body, done) => { done(null, body) })
  }

  const producer = Fastify()
  t.teardown(() => producer.close())
  withBufferParser(producer)
  await producer.register(taskqueue, { queues })
  // The task inherits the body of the request that queues it, with its content type.
  producer.post('/upload', async (request) => ({ id: request.taskqueue.add('/tasks/store', { method: 'POST' }) }))
  await producer.ready()
  const response = await producer.inject({ method: 'POST', url: '/upload', headers: { 'content-type': 'application/octet-stream' }, payload: bytes })
  t.equal(response.statusCode, 200, 'the uploading request succeeded')
  const addedId = await producer.taskqueue.add('/tasks/store', { method: 'POST', payload: bytes })
  await waitUntil('both tasks in Redis', async () => await client.llen(`${prefix}:{bin}:v2:waiting`) === 2, 5000)

  const stored = (await storedMessages(client, `${prefix}:{bin}:v2:waiting`)).map((raw) => JSON.parse(raw))
  for (const message of stored) {
    t.equal(message.v, 1, 'a versioned message')
    t.equal(message.binary, true, 'marked as binary')
    t.equal(message.payload, bytes.toString('base64'), 'the payload in base64')
    t.equal(message.headers['content-type'], 'application/octet-stream', 'with its content type')
  }

  const consumer = Fastify()
  t.teardown(() => consumer.close())
  withBufferParser(consumer)
  await consumer.register(taskqueue, { queues, consumers: [{ queue: 'bin' }] })
  const received: Array<{ id: string, body: unknown }> = []
  consumer.post('/tasks/store', async (request) => {
    received.push({ id: request.headers['x-task-id'] as string, body: request.body })
    return 'ok'
  })
  await consumer.ready()
  await waitUntil('both tasks to run', () => received.length === 2, 10_000)
  t.same(received.map(({ id }) => id), [JSON.parse(response.body).id, addedId], 'in the order queued')
  for (const { body } of received) {
    t.ok(Buffer.isBuffer(body) && bytes.equals(body), 'the task got the 256 byte values, unchanged')
  }
})

test('a plain ioredis client is accepted as `client`', async (t) => {
  const redis = await testRedis()
  t.teardown(() => redis.close())
  const handed = clientFor(t, redis.connection)
  const app = Fastify()
  t.teardown(() => app.close())
  app.register(taskqueue, { queues: [{ queue: 'plain', type: 'redis', prefix: uniquePrefix(), client: handed }] })
  await t.resolves(within('ready()', app.ready(), 10_000), 'ready() with a plain ioredis client')
})

test('a client handed in is used and left open; the connections the plugin opened are closed', async (t) => {
  const redis = await testRedis()
  t.teardown(() => redis.close())
  const observer = redis.client()
  const prefix = uniquePrefix()
  dropPrefixAtEnd(t, observer, prefix)
  const queue = `handed-${prefix.slice(-6)}`
  const handed = clientFor(t, redis.connection, { connectionName: `handed-in-${prefix}` })
  // Works around the options bug of the test above: the schema wants `duplicate` as an own property.
  Object.defineProperty(handed, 'duplicate', { value: Redis.prototype.duplicate, configurable: true, writable: true })
  await handed.ping()

  const app = Fastify()
  await app.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, client: handed }], consumers: [{ queue }] })
  const ran: string[] = []
  app.get('/tasks/run', async (request) => {
    ran.push(request.headers['x-task-id'] as string)
    return 'ok'
  })
  await app.ready()
  const id = await app.taskqueue.add('/tasks/run')
  await waitUntil('the task to run', () => ran.length === 1, 10_000)
  t.same(ran, [id], 'the task ran through the handed-in client')
  const names = async (): Promise<string[]> => (await connectionNames(observer)).filter((name) => name.includes(prefix) || name.startsWith(`fastify-taskqueue:${queue}`)).sort()
  t.same(await names(), [`fastify-taskqueue:${queue}:consumer`, `handed-in-${prefix}`],
    'the queue uses the handed-in client, plus a blocking connection of its own')

  await app.close()
  t.equal(handed.status, 'ready', 'the handed-in client is still ready after app.close()')
  t.equal(await handed.ping(), 'PONG', 'and still answers')
  await waitUntil('the blocking connection to close', async () => (await names()).length === 1, 5000)
  t.same(await names(), [`handed-in-${prefix}`], 'the connection the plugin opened is closed')

  // Without `client`, the plugin opens its connections and closes them all.
  const own = Fastify()
  await own.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }], consumers: [{ queue }] })
  own.get('/tasks/run', async () => 'ok')
  await own.ready()
  await waitUntil('the consumer to connect', async () => (await names()).length === 3, 5000)
  t.same(await names(), [`fastify-taskqueue:${queue}`, `fastify-taskqueue:${queue}:consumer`, `handed-in-${prefix}`], 'without `client`, two connections of its own')
  await own.close()
  await waitUntil('the plugin\'s connections to close', async () => (await names()).length === 1, 5000)
  t.same(await names(), [`handed-in-${prefix}`], 'both connections the plugin opened are closed')
})

test('an unreachable Redis makes ready() reject with a coded error whose cause is the connection error, without hanging', async (t) => {
  const cases = [
    { what: 'a unix socket that does not exist', options: { unixSocketPath: '/nonexistent-taskqueue-dir/redis.sock' }, code: 'ENOENT' },
    { what: 'a closed port of 127.0.0.1', options: { host: '127.0.0.1', port: 1 }, code: 'ECONNREFUSED' }
  ]
  for (const { what, options, code } of cases) {
    const app = Fastify()
    // Not awaited: awaiting register() would load the plugin, and fail, there.
    app.register(taskqueue, { queues: [{ queue: 'q', type: 'redis', prefix: uniquePrefix(), ...options }], consumers: [{ queue: 'q' }] })
    const startedAt = Date.now()
    const error = await within(`ready() with ${what}`, app.ready().then(() => null, (error: unknown) => error), 10_000)
    t.ok(error instanceof Error, `${what}: ready() rejects`)
    t.equal((error as NodeJS.ErrnoException).code, 'FST_TASKQUEUE_REDIS_UNAVAILABLE', `${what}: with the code`)
    t.equal(((error as Error).cause as NodeJS.ErrnoException).code, code, `${what}: caused by the connection error (${code})`)
    t.ok(Date.now() - startedAt < 5000, `${what}: at once, not after a long wait`)
    await within('close() after a failed ready()', app.close().catch(() => {}), 5000)
  }
})

test('a client handed in that cannot connect at ready() is left open, to its own reconnection', async (t) => {
  const own = await startOwnRedis()
  t.teardown(() => own.close())
  await own.stop()
  // The owner's policy: keep trying every 50 ms.
  const client = new Redis({ path: own.socketPath, lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())

  const app = Fastify()
  app.register(taskqueue, { queues: [{ queue: 'q', type: 'redis', prefix: uniquePrefix(), client }], consumers: [] })
  const error = await within('ready() with Redis down', app.ready().then(() => null, (error: unknown) => error), 10_000)
  t.equal((error as NodeJS.ErrnoException | null)?.code, 'FST_TASKQUEUE_REDIS_UNAVAILABLE', 'ready() rejects with the code')
  t.equal(((error as Error).cause as NodeJS.ErrnoException).code, 'ENOENT', 'caused by the connection error')
  await within('close() after a failed ready()', app.close().catch(() => {}), 5000)

  // The plugin did not disconnect it: once Redis is up, the client connects by itself.
  await own.start()
  await waitUntil('the client handed in to connect', () => client.status === 'ready', 10_000)
  t.equal(await client.ping(), 'PONG', 'the client handed in works')
})

test('before-response: the tasks are in Redis before the response; Redis down makes it a 503', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const waiting = `${prefix}:{early}:v2:waiting`
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, { queues: [{ queue: 'early', type: 'redis', prefix, ...redis.connection, enqueueMode: 'before-response' }] })
  app.post('/order', async (request) => ({
    ids: [1, 2, 3].map((n) => request.taskqueue.add('/tasks/ship', { method: 'POST', payload: { n } }))
  }))
  await app.ready()

  const response = await app.inject({ method: 'POST', url: '/order', payload: {} })
  // Read as soon as the response is received, before anything else could run.
  const inRedis = await waitingIds(client, waiting)
  t.equal(response.statusCode, 200, 'Redis up: the response is a 200')
  t.same(inRedis, JSON.parse(response.body).ids, 'the three tasks, in order, were in Redis when the response came')

  await redis.stop()
  const refused = await within('the response with Redis down', app.inject({ method: 'POST', url: '/order', payload: {} }), 20_000)
  t.equal(refused.statusCode, 503, 'Redis down: the response is a 503')
  t.equal(JSON.parse(refused.body).code, 'FST_TASKQUEUE_ENQUEUE_FAILED', 'with code FST_TASKQUEUE_ENQUEUE_FAILED')

  await redis.start()
  await waitUntil('the app to reconnect', async () => (await app.inject({ method: 'POST', url: '/order', payload: {} })).statusCode === 200, 20_000, 200)
  const after = await waitingIds(client, waiting)
  t.same(after.slice(0, 3), inRedis, 'the tasks pushed before the outage are kept')
  t.equal(after.length, 6, 'with those of the one response that succeeded since: the tasks of the refused response were never pushed')
  await sleep(300)
  t.equal(await client.llen(waiting), after.length, 'and are not pushed later either')
})

test('after-response with Redis down: the push is logged, retried, and lands once Redis is back', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const waiting = `${prefix}:{late}:v2:waiting`
  const { app, lines } = loggedApp()
  t.teardown(() => app.close())
  await app.register(taskqueue, { queues: [{ queue: 'late', type: 'redis', prefix, ...redis.connection }] })
  app.post('/order', async (request) => ({
    ids: [1, 2].map((n) => request.taskqueue.add('/tasks/ship', { method: 'POST', payload: { n } }))
  }))
  await app.ready()

  await redis.stop()
  const response = await app.inject({ method: 'POST', url: '/order', payload: {} })
  t.equal(response.statusCode, 200, 'the response does not wait for Redis')
  const { ids } = JSON.parse(response.body)
  const failures = (): typeof lines => lines.filter(({ msg }) => msg === 'taskqueue: queuing tasks failed, trying again')
  await waitUntil('the failed push to be logged', () => failures().length > 0, 15_000)
  t.equal(failures()[0].level, 50, 'logged as an error')
  t.same(failures()[0].taskIds, ids, 'naming the tasks')
  t.equal(await within('drain()', app.taskqueue.drain().then(() => 'drained'), 300).catch(() => 'waiting'), 'waiting',
    'drain() waits for the pending push')

  await redis.start()
  await waitUntil('the tasks to land', async () => await client.llen(waiting) === 2, 30_000, 100)
  t.same(await waitingIds(client, waiting), ids, 'both tasks, in order, once')
  await within('drain() once the push landed', app.taskqueue.drain(), 5000)
  await sleep(300)
  t.equal(await client.llen(waiting), 2, 'pushed once only')
})

/**
 * An app whose Redis queue uses a client that fails a command at once while Redis is down and
 * reconnects every 50 ms: the push's own retries set the pace, not ioredis' reconnection backoff.
 * `POST /order` queues one task.
 */
async function appWithFastFailingClient (t: { teardown: (fn: () => unknown) => void }, redis: Awaited<ReturnType<typeof startOwnRedis>>, prefix: string) {
  const pushing = new Redis({ path: redis.socketPath, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 50 })
  pushing.on('error', () => {})
  t.teardown(() => pushing.disconnect())
  const { app, lines } = loggedApp()
  await app.register(taskqueue, { queues: [{ queue: 'late', type: 'redis', prefix, client: pushing }], closeTimeout: 3000 })
  app.post<{ Body: { n: number } }>('/order', async (request) => ({ id: request.taskqueue.add('/tasks/ship', { method: 'POST', payload: { n: request.body.n } }) }))
  await app.ready()
  return { app, lines, pushing }
}

test('after-response: a push waiting to be tried again goes at once when another push to its queue succeeds', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const waiting = `${prefix}:{late}:v2:waiting`
  const { app, lines, pushing } = await appWithFastFailingClient(t, redis, prefix)
  t.teardown(() => app.close())

  await redis.stop()
  const { id } = JSON.parse((await app.inject({ method: 'POST', url: '/order', payload: { n: 1 } })).body)
  // Failed attempts wait longer and longer: until one is to wait at least 3.2 s.
  let retryDue = 0
  await waitUntil('a retry delay of 3.2 s or more', () => {
    const long = lines.find(({ msg, delay }) => msg === 'taskqueue: queuing tasks failed, trying again' && (delay as number) >= 3200)
    if (long !== undefined) retryDue = long.time as number + (long.delay as number)
    return long !== undefined
  }, 30_000)

  await redis.start()
  await waitUntil('the client to reconnect', () => pushing.status === 'ready', 5000)
  const response = await app.inject({ method: 'POST', url: '/order', payload: { n: 2 } })
  await waitUntil('both tasks to land', async () => await client.llen(waiting) === 2, 10_000, 20)
  const landedAt = Date.now()
  t.ok(landedAt < retryDue, `the waiting push landed ${retryDue - landedAt} ms before its retry was due`)
  t.same((await waitingIds(client, waiting)).sort(), [id, JSON.parse(response.body).id].sort(), 'both tasks, once: the one of the outage and the new one')
  await within('drain()', app.taskqueue.drain(), 5000)
})

test('closing while a push waits to be tried again: it is tried once more, now, and lands when Redis is back', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const { app, lines, pushing } = await appWithFastFailingClient(t, redis, prefix)

  await redis.stop()
  const { id } = JSON.parse((await app.inject({ method: 'POST', url: '/order', payload: { n: 1 } })).body)
  await waitUntil('a retry due in 1.6 s or more', () => lines.some(({ msg, delay }) => msg === 'taskqueue: queuing tasks failed, trying again' && (delay as number) >= 1600), 30_000)
  await redis.start()
  await waitUntil('the client to reconnect', () => pushing.status === 'ready', 5000)

  await within('app.close()', app.close(), 5000)
  t.same(await waitingIds(client, `${prefix}:{late}:v2:waiting`), [id], 'the task landed before close() resolved, not at its retry')
  t.notOk(lines.some(({ msg }) => msg === 'taskqueue: queuing tasks failed as the app closed, they are lost'), 'nothing was lost')
})

test('closing while Redis is down: the tasks still to be pushed are logged as lost, and nothing is tried after close', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis({ durable: true })
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const { app, lines } = await appWithFastFailingClient(t, redis, prefix)

  await redis.stop()
  const { id } = JSON.parse((await app.inject({ method: 'POST', url: '/order', payload: { n: 1 } })).body)
  const failures = (): typeof lines => lines.filter(({ msg }) => msg === 'taskqueue: queuing tasks failed, trying again')
  await waitUntil('the failed push to be logged', () => failures().length > 0, 15_000)

  await within('app.close()', app.close(), 5000)
  const lost = lines.filter(({ msg }) => msg === 'taskqueue: queuing tasks failed as the app closed, they are lost')
  t.equal(lost.length, 1, 'the tasks are logged as lost')
  t.equal(lost[0]?.level, 50, 'as an error')
  t.same(lost[0]?.taskIds, [id], 'naming them')
  const triedBeforeClose = failures().length
  await sleep(1500)
  t.equal(failures().length, triedBeforeClose, 'and no retry followed the close')
})

test('two apps given the same consumer name share a queue and never run the same task twice', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queues = [{ queue: 'shared', type: 'redis' as const, prefix, ...redis.connection, heartbeatInterval: 200 }]
  const runs = new Map<string, number>()
  const perApp = [0, 0]
  const apps: FastifyInstance[] = []
  for (const index of [0, 1]) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(taskqueue, { queues, consumers: [{ queue: 'shared', name: 'worker', concurrentLimit: 4 }] })
    app.post<{ Body: { n: number } }>('/tasks/count', async (request) => {
      await sleep(1 + Math.floor(Math.random() * 10))
      const id = request.headers['x-task-id'] as string
      runs.set(id, (runs.get(id) ?? 0) + 1)
      perApp[index]++
      return 'ok'
    })
    await app.ready()
    apps.push(app)
  }

  const ids: string[] = []
  let members: string[] = []
  // In bursts, so that both consumers go idle between them (when a consumer looks at its own
  // processing list) while the other may still be busy.
  for (let burst = 0; burst < 4; burst++) {
    for (let n = 0; n < 100; n++) ids.push(await apps[n % 2].taskqueue.add('/tasks/count', { method: 'POST', payload: { n } }))
    if (burst === 0) {
      await waitUntil('both consumers to register', async () => (members = await client.smembers(`${prefix}:{shared}:v2:consumers`)).length === 2, 5000)
    }
    await sleep(300)
  }
  await waitUntil('every task to run', () => ids.every((id) => runs.has(id)), 30_000)
  await sleep(500)
  t.equal(members.length, 2, 'two consumers, each with an id of its own')
  t.ok(members.every((member) => member.startsWith('worker:')), 'both named worker')
  t.equal(runs.size, 400, 'every task ran')
  const twice = [...runs.values()].filter((count) => count > 1).length
  t.equal(twice, 0, 'no task ran twice')
  t.ok(perApp[0] > 0 && perApp[1] > 0, `both apps ran tasks (${perApp.join(' and ')})`)
})
