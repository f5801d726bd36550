// The Redis queue's connection lifecycle (issue 11): close() bounded whatever Redis does, a prompt
// wake-up after a Redis restart, start-up against a bad Redis, coded errors of the queue calls,
// nothing left open after a failed start, the listeners of a client handed in, and the start-up
// line about a queue nobody consumes.
import { test } from 'tap'
import { spawn } from 'node:child_process'
import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import taskqueue from '../plugin'
import { startOwnRedis, uniquePrefix } from './helpers/redis'
import { ensureBuilt, loggedApp, root, scanKeys, sleep, waitUntil, within } from './helpers/redis-children'

const levels = { debug: 20, info: 30, warn: 40, error: 50 }

/** A free TCP port of 127.0.0.1. */
async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Every task in the queue's lists (waiting or a processing list), as ids. */
async function idsInQueue (client: Redis, prefix: string, queue: string): Promise<string[]> {
  const keys = [`${prefix}:{${queue}}:v2:waiting`, ...await scanKeys(client, `${prefix}:{${queue}}:v2:processing:*`)]
  return (await Promise.all(keys.map((key) => client.lrange(key, 0, -1)))).flat()
}

/** A Redis queue app whose task route holds every task until the test ends. */
async function holdingApp (t: { teardown: (fn: () => unknown) => void }, connection: object, prefix: string) {
  const { app, lines } = loggedApp()
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  const started: string[] = []
  await app.register(taskqueue, {
    queues: [{ queue: 'jobs', type: 'redis', prefix, ...connection, heartbeatInterval: 200, commandTimeout: 1000 }],
    consumers: [{ queue: 'jobs', concurrentLimit: 1 }],
    closeTimeout: 2000
  })
  app.post('/tasks/hold', async (request) => {
    started.push(request.headers['x-task-id'] as string)
    await held
    return 'ok'
  })
  await app.ready()
  return { app, lines, started }
}

const closeTimeout = 2000
const closeMargin = 1500

// issue 11, point 2: close() hung while Redis did not answer (SIGSTOP), and took about 26 s with
// closeTimeout 2000 while Redis was down.
for (const { what, inFlight, fault } of [
  { what: 'frozen (SIGSTOP) while a task is in flight', inFlight: true, fault: 'freeze' },
  { what: 'frozen (SIGSTOP) while the consumer is idle', inFlight: false, fault: 'freeze' },
  { what: 'stopped while a task is in flight', inFlight: true, fault: 'stop' }
] as const) {
  test(`issue 11, point 2: close() returns within closeTimeout and a margin with Redis ${what}`, async (t) => {
    t.setTimeout(60_000)
    const redis = await startOwnRedis({ durable: true })
    t.teardown(() => redis.close())
    const prefix = uniquePrefix()
    const { app, lines, started } = await holdingApp(t, redis.connection, prefix)
    t.teardown(() => app.close())
    let id = ''
    if (inFlight) {
      id = await app.taskqueue.add('/tasks/hold', { method: 'POST', payload: {} })
      await waitUntil('the task to start', () => started.length === 1, 5000)
    } else {
      await sleep(300)
    }
    if (fault === 'freeze') {
      redis.signal('SIGSTOP')
      t.teardown(() => redis.signal('SIGCONT'))
    } else {
      await redis.stop()
    }

    const startedAt = Date.now()
    await within('app.close()', app.close(), 20_000)
    const took = Date.now() - startedAt
    t.ok(took < closeTimeout + closeMargin, `close() took ${took} ms (closeTimeout ${closeTimeout} + at most ${closeMargin})`)
    if (inFlight) {
      t.ok(took >= closeTimeout - 100, `the task in flight was waited for up to closeTimeout (${took} ms)`)
      t.ok(lines.some(({ level, msg }) => level === levels.error && /left to recovery/.test(msg)),
        'what could not be handed back is logged as left to recovery')
    }

    // Nothing was lost: once Redis runs again, the task is in the queue or in the consumer's own
    // list, which another instance recovers once the heartbeat expires.
    if (fault === 'freeze') redis.signal('SIGCONT')
    else await redis.start()
    if (inFlight) {
      const client = redis.client()
      t.same(await idsInQueue(client, prefix, 'jobs'), [id], 'the task in flight is still held by Redis')
    }
  })
}

// issue 11, point 6: the blocking read in flight when the link dropped was settled only by its 5 s
// guard: an idle consumer was deaf for about 6 s after a Redis restart.
test('issue 11, point 6: an idle consumer starts a task pushed right after a Redis restart within about a second', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue: 'jobs', type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue: 'jobs' }]
  })
  const startedAt: number[] = []
  app.post('/tasks/work', async () => {
    startedAt.push(Date.now())
    return 'ok'
  })
  await app.ready()
  await app.taskqueue.add('/tasks/work', { method: 'POST', payload: {} })
  await waitUntil('the first task to run', () => startedAt.length === 1, 5000)
  // The consumer is idle, in a blocking read, when Redis goes.
  await sleep(300)
  await redis.stop()
  await redis.start()
  const client = redis.client()
  // A task another instance pushes: the message format of the queue, written as it would.
  const pushedAt = Date.now()
  await client.multi().hset(`${prefix}:{jobs}:v2:tasks`, 'after-restart', JSON.stringify({
    v: 1, id: 'after-restart', queue: 'jobs', url: '/tasks/work', method: 'POST', headers: {}, retries: 0, createdAt: pushedAt, eta: pushedAt
  })).lpush(`${prefix}:{jobs}:v2:waiting`, 'after-restart').exec()
  await waitUntil('the task pushed after the restart to start', () => startedAt.length === 2, 10_000)
  const delay = startedAt[1] - pushedAt
  t.ok(delay < 1500, `it started ${delay} ms after it was pushed (within about a second)`)
})

// issue 11, point 7: a db index that does not exist was a warning, ready() succeeded and the tasks
// went to db 0.
test('issue 11, point 7: a db index that does not exist fails ready() with a coded error', async (t) => {
  t.setTimeout(30_000)
  const port = await freePort()
  const redis = await startOwnRedis({ port })
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const cases = [
    { what: 'db: 99', options: { ...redis.connection, db: 99 }, address: `${redis.socketPath} db 99` },
    { what: 'redis://127.0.0.1:port/99', options: { url: `redis://:secret@127.0.0.1:${port}/99` }, address: `redis://:***@127.0.0.1:${port}/99` }
  ]
  for (const { what, options, address } of cases) {
    const app = Fastify()
    app.register(taskqueue, { queues: [{ queue: 'q', type: 'redis', prefix, ...options }] })
    const error = await within(`ready() with ${what}`, app.ready().then(() => null, (error: unknown) => error), 10_000) as
      (Error & { code?: string, cause?: Error }) | null
    t.equal(error?.code, 'FST_TASKQUEUE_REDIS_UNAVAILABLE', `${what}: ready() rejects with the code`)
    t.match(error?.message, /"q"/, `${what}: the message names the queue`)
    t.ok(error?.message.includes(address), `${what}: the message names the address without its password (${error?.message})`)
    t.notOk(error?.message.includes('secret'), `${what}: never the password`)
    t.match(error?.cause?.message, /DB index is out of range/, `${what}: the cause is Redis' own error`)
    await within('close() after a failed ready()', app.close().catch(() => {}), 5000)
  }
  t.same(await scanKeys(client, `${prefix}*`), [], 'nothing went to db 0')
})

// issue 11, point 7: a server that accepts the connection and never answers made ready() fail only
// through Fastify's plugin timeout, naming no Redis, and the process then never exited.
test('issue 11, point 7: a server that never answers fails ready() before the plugin timeout, and nothing stays open', async (t) => {
  t.setTimeout(30_000)
  const sockets = new Set<Socket>()
  const silent: Server = createServer((socket) => {
    // Reads what the client says (else the end of its connection is never seen) and answers nothing.
    socket.resume()
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    silent.close(() => resolve())
  }))
  const { port } = silent.address() as AddressInfo

  const app = Fastify()
  app.register(taskqueue, {
    queues: [{ queue: 'silent', type: 'redis', prefix: uniquePrefix(), host: '127.0.0.1', port, connectTimeout: 1000 }],
    consumers: [{ queue: 'silent' }]
  })
  const startedAt = Date.now()
  const error = await within('ready() against a silent server', app.ready().then(() => null, (error: unknown) => error), 15_000) as
    (Error & { code?: string }) | null
  const took = Date.now() - startedAt
  t.equal(error?.code, 'FST_TASKQUEUE_REDIS_UNAVAILABLE', `ready() rejects with the code: ${error?.message}`)
  t.ok(error?.message.includes('"silent"') && error?.message.includes(`127.0.0.1:${port}`), 'naming the queue and the address')
  t.ok(took < 5000, `after connectTimeout, long before Fastify's plugin timeout (${took} ms)`)
  await within('close() after a failed ready()', app.close().catch(() => {}), 5000)
  // The plugin's connection is gone: the silent server sees no client left.
  await waitUntil('the connection to the silent server to be closed', () => sockets.size === 0, 3000)
  t.equal(sockets.size, 0, 'no connection is left open')
})

// issue 11, point 7: while Redis was down, the queue calls rejected with ioredis' raw errors.
test('issue 11, point 7: the queue calls reject with a coded error naming the queue while Redis is down', async (t) => {
  t.setTimeout(30_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, { queues: [{ queue: 'mail', type: 'redis', prefix: uniquePrefix(), ...redis.connection, commandTimeout: 1000 }] })
  await app.ready()
  await redis.stop()
  const queue = app.taskqueue.queue('mail')
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['length()', () => queue.length()],
    ['reset()', () => queue.reset()],
    ['dead()', () => queue.dead()],
    ['requeue()', () => queue.requeue()],
    ['purge()', () => queue.purge()],
    ['add()', () => app.taskqueue.add('/tasks/x')]
  ]
  for (const [call, run] of calls) {
    const error = await within(call, run().then(() => null, (error: unknown) => error), 15_000) as (Error & { code?: string, cause?: unknown }) | null
    t.equal(error?.code, 'FST_TASKQUEUE_QUEUE_FAILED', `${call} rejects with the code`)
    t.ok(error?.message.includes('"mail"') && error?.message.includes(call), `${call}: the message names the queue and the call (${error?.message})`)
    t.ok(error?.cause instanceof Error, `${call}: ioredis' error is the cause`)
  }
})

// issue 11, point 10: with one reachable and one unreachable Redis queue, ready() rejected and the
// process never exited: the connection that was opened stayed.
test('issue 11, point 10: a failed start closes every backend it opened, and the process exits by itself', async (t) => {
  t.setTimeout(30_000)
  ensureBuilt()
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const script = `
    const Fastify = require('fastify')
    const taskqueue = require('./dist/plugin.js')
    const app = Fastify()
    app.register(taskqueue, { queues: [
      { queue: 'up', type: 'redis', unixSocketPath: ${JSON.stringify(redis.socketPath)} },
      { queue: 'down', type: 'redis', unixSocketPath: '/nonexistent-taskqueue-dir/redis.sock' }
    ] })
    app.ready().then(() => console.log('ready'), (error) => console.log('failed', error.code, error.message))
  `
  const child = spawn(process.execPath, ['-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => { child.kill('SIGKILL') })
  const code = await within('the child to exit by itself', exited, 10_000).catch((error: Error) => {
    t.fail(`${error.message}; it wrote: ${output}`)
    return null
  })
  t.equal(code, 0, 'the process exited by itself')
  t.match(output, /failed FST_TASKQUEUE_REDIS_UNAVAILABLE Redis queue "down"/, 'ready() rejected with the unreachable queue\'s error')
})

// issue 11, point 8 (part): a client handed in kept the plugin's listeners after close().
test('issue 11, point 8: a client handed in keeps none of the plugin\'s listeners after close()', async (t) => {
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const client = new Redis({ path: redis.socketPath })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const events = ['error', 'ready', 'close', 'end', 'node error'] as const
  const counts = (): Record<string, number> => Object.fromEntries(events.map((event) => [event, client.listenerCount(event)]))
  const before = counts()
  const app = Fastify()
  await app.register(taskqueue, {
    queues: [{ queue: 'handed', type: 'redis', prefix: uniquePrefix(), client }],
    consumers: [{ queue: 'handed' }]
  })
  await app.ready()
  t.notSame(counts(), before, 'the plugin listens to the client while it runs')
  await app.close()
  t.same(counts(), before, 'every listener it added is removed at close')
  t.equal(client.status, 'ready', 'the client itself stays open')
})

// issue 11, point 18 (part): a Redis queue with no consumer here and none elsewhere was silent.
test('issue 11, point 18: a Redis queue nobody consumes is announced once at start, at info level', async (t) => {
  t.setTimeout(30_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const announced = (lines: Array<{ level: number, msg: string, queue?: unknown }>, queue: string) =>
    lines.filter(({ msg, queue: of }) => of === queue && /wait for another instance/.test(msg))

  // Nobody consumes 'orphan'.
  const lonely = loggedApp()
  t.teardown(() => lonely.app.close())
  await lonely.app.register(taskqueue, { queues: [{ queue: 'orphan', type: 'redis', prefix, ...redis.connection }] })
  await lonely.app.ready()
  const lines = announced(lonely.lines, 'orphan')
  t.equal(lines.length, 1, 'said once')
  t.equal(lines[0]?.level, levels.info, 'at info level')

  // 'served' has a consumer in another instance: nothing to say.
  const consumer = Fastify()
  t.teardown(() => consumer.close())
  await consumer.register(taskqueue, {
    queues: [{ queue: 'served', type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue: 'served' }]
  })
  await consumer.ready()
  const client = redis.client()
  await waitUntil('the consumer to join the consumer set', async () => await client.scard(`${prefix}:{served}:v2:consumers`) === 1, 5000)
  const producer = loggedApp()
  t.teardown(() => producer.app.close())
  await producer.app.register(taskqueue, { queues: [{ queue: 'served', type: 'redis', prefix, ...redis.connection }] })
  await producer.app.ready()
  t.same(announced(producer.lines, 'served'), [], 'a queue consumed by another instance is not announced')
  const consumerLines = loggedApp()
  t.teardown(() => consumerLines.app.close())
  await consumerLines.app.register(taskqueue, {
    queues: [{ queue: 'own', type: 'redis', prefix, ...redis.connection }],
    consumers: [{ queue: 'own' }]
  })
  await consumerLines.app.ready()
  t.same(announced(consumerLines.lines, 'own'), [], 'nor one consumed in this process')
})
