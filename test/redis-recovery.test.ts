// Recovery of reserved tasks: a consumer with another name takes over the processing list of a
// killed one; a task whose handler keeps killing its process is buried after the set number of
// recoveries; a consumer releases what its own processing list holds unknown to it, idle, or
// busy after its connection was lost (as when a reservation ran twice across a broken link); and
// a dead letter whose command ran twice is written once.
import { randomUUID } from 'node:crypto'
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import taskqueue from '../plugin'
import { encodeMessage } from '../lib/queues/codec'
import { type ConsumerChild, ensureBuilt, list, loggedApp, redisForTest, scanKeys, sleep, startConsumer, waitUntil } from './helpers/redis-children'
import { cuttingProxy } from './helpers/cutting-proxy'
import { storeRaw } from './helpers/redis'

/** A stored task message of `queue`: a POST of `body` as JSON to `url`, due now. */
function storedTask (queue: string, url: string, body: unknown, id: string = randomUUID()): string {
  const now = Date.now()
  return encodeMessage({
    v: 1, id, queue, url, method: 'POST', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body), retries: 0, createdAt: now, eta: now
  })
}

/** The ids of the tasks a list holds, sorted. */
async function idsIn (client: { lrange: (key: string, start: number, stop: number) => Promise<string[]> }, key: string): Promise<string[]> {
  return (await client.lrange(key, 0, -1)).sort()
}

/**
 * `POST /tasks/slow`, whose tasks start at once and finish only once the gate is opened (the app's
 * teardown should open it): what keeps a consumer busy. `started` and `ran` hold their `n`.
 */
function slowTasks (app: FastifyInstance): { started: number[], ran: number[], openGate: () => void } {
  const started: number[] = []
  const ran: number[] = []
  let openGate = (): void => {}
  const gate = new Promise<void>((resolve) => { openGate = resolve })
  app.post<{ Body: { n: number } }>('/tasks/slow', async (request) => {
    started.push(request.body.n)
    await gate
    ran.push(request.body.n)
    return 'ok'
  })
  return { started, ran, openGate }
}

test('a consumer with a new name recovers the processing list of a killed consumer with another name', async (t) => {
  t.setTimeout(60_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const queues = [{ queue, type: 'redis' as const, prefix, ...redis.connection, heartbeatInterval: 200 }]

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues })
  await producer.ready()
  // A slow task: still running when its process is killed.
  const id = await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 1, hold: 30_000 } })

  const a = startConsumer({ connection: redis.connection, prefix, queue, name: 'a', heartbeatInterval: 200 })
  t.teardown(() => a.stop('SIGKILL'))
  await a.ready
  await waitUntil('consumer a to start the task', async () => (await list(client, `${prefix}:started`)).includes(`1:${a.pid}`), 10_000)
  const processingOfA = await scanKeys(client, `${prefix}:{${queue}}:v2:processing:a:*`)
  t.equal(processingOfA.length, 1, 'consumer a has a processing list')
  t.same(await client.lrange(processingOfA[0], 0, -1), [id], 'holding the task')
  await a.stop('SIGKILL')
  t.equal((await a.exited).signal, 'SIGKILL', 'consumer a was killed')

  const { app: b, lines } = loggedApp()
  t.teardown(() => b.close())
  await b.register(taskqueue, { queues, consumers: [{ queue, name: 'b' }] })
  const ran: string[] = []
  b.post('/tasks/work', async (request) => {
    ran.push(request.headers['x-task-id'] as string)
    return 'ok'
  })
  await b.ready()
  await waitUntil('consumer b to run the task of a', () => ran.length === 1, 15_000)
  t.same(ran, [id], 'consumer b ran the task a was running')
  // The recovery's reply may come after the task it returned was already taken and run.
  const recovered = (): typeof lines => lines.filter(({ msg }) => msg === 'taskqueue: tasks of an expired consumer recovered')
  await waitUntil('the recovery to be logged', () => recovered().length > 0, 5000)
  t.same(recovered().map((line) => line.recovered), [1], 'b recovered one task, and logged it')
  await sleep(300)
  t.same(await scanKeys(client, `${prefix}:{${queue}}:v2:processing:a:*`), [], 'the processing list of a is gone')
  const members = await client.smembers(`${prefix}:{${queue}}:v2:consumers`)
  t.ok(members.length === 1 && members[0].startsWith('b:'), 'a left the consumer set; b is in it')
  t.equal(await client.hlen(`${prefix}:{${queue}}:v2:recoveries`), 0, 'the recovery count is forgotten once the task is done')
  t.same(ran, [id], 'the task ran once in b')
})

test('a poison pill is buried in the dead list after recoveryMaxCount recoveries, while other tasks run', async (t) => {
  t.setTimeout(90_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const recoveryMaxCount = 2
  const env = { connection: redis.connection, prefix, queue, heartbeatInterval: 200, recoveryMaxCount, concurrentLimit: 1, minDelay: 20, maxDelay: 40 }

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }] })
  await producer.ready()
  const normal = 30
  let poisonId = ''
  for (let n = 0; n < normal; n++) {
    if (n === 5) poisonId = await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 'poison', poison: true } })
    await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n } })
  }

  const children: ConsumerChild[] = []
  t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })
  const spawnOne = (): void => { children.push(startConsumer(env)) }
  spawnOne()
  spawnOne()

  // Children that die are replaced, a bounded number of times.
  const deaths: number[] = []
  const doneCount = async (): Promise<number> => new Set((await list(client, `${prefix}:done`)).map((entry) => entry.split(':')[0])).size
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline && deaths.length <= 10) {
    for (const child of children.filter((child) => child.isGone && !deaths.includes(child.pid))) {
      const { signal } = await child.exited
      deaths.push(child.pid)
      t.equal(signal, 'SIGKILL', 'a consumer died of the poison')
      spawnOne()
    }
    if (await client.llen(`${prefix}:{${queue}}:v2:dead`) === 1 && await doneCount() === normal) break
    await sleep(50)
  }
  const poisonStarts = (await list(client, `${prefix}:started`)).filter((entry) => entry.startsWith('poison:')).length
  t.equal(deaths.length, recoveryMaxCount + 1, `the poison killed ${recoveryMaxCount + 1} consumers: ${recoveryMaxCount} recoveries, then buried`)
  t.equal(poisonStarts, recoveryMaxCount + 1, 'it started that many times, and no more')
  t.equal(await doneCount(), normal, 'every other task ran')

  const letters = await producer.taskqueue.queue(queue).dead()
  t.equal(letters.length, 1, 'one dead letter')
  t.equal(letters[0]?.id, poisonId, 'the poison pill')
  t.equal(letters[0]?.reason, 'recovered too often')
  t.same(letters[0]?.task?.payload !== undefined && JSON.parse(letters[0].task.payload.toString()), { n: 'poison', poison: true }, 'with its message intact')
  t.equal(JSON.parse((await client.lindex(`${prefix}:{${queue}}:v2:dead`, 0)) as string).reason, 'recovered too often', 'as stored in `<prefix>:{queue}:v2:dead`')
  t.equal(await client.hlen(`${prefix}:{${queue}}:v2:recoveries`), 0, 'its recovery count is dropped')

  const live = children.filter((child) => !child.isGone)
  await Promise.all(live.map((child) => child.stop('SIGTERM')))
  await sleep(200)
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:waiting`), 0, 'nothing is left in the queue')
  t.same(await scanKeys(client, `${prefix}:{${queue}}:v2:processing:*`), [], 'nor reserved')
})

// "On start-up", a consumer's own leftover list cannot be shown: consumer ids are random per
// process, so no new consumer ever has an old list of its own (those of expired consumers are
// recovered through their heartbeat, above). What can be shown is a live consumer's list holding a
// task it never saw, as a reservation whose reply was lost, or a command that the client library
// sent after it had given up on it, leave behind. The test makes that state (the task put in the
// list by hand, every connection left up) and the idle consumer must return the task to the queue.
test('an idle consumer releases what its own processing list holds unknown to it (as a late command of a client may put there)', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queue = `own-${prefix.slice(-6)}`
  const { app, lines } = loggedApp()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue, name: 'c' }]
  })
  const ran: number[] = []
  app.post<{ Body: { n: number } }>('/tasks/work', async (request) => {
    ran.push(request.body.n)
    return 'ok'
  })
  await app.ready()

  let consumerId = ''
  await waitUntil('the consumer to register', async () => {
    consumerId = (await client.smembers(`${prefix}:{${queue}}:v2:consumers`))[0] ?? ''
    return consumerId !== ''
  }, 5000)
  t.match(consumerId, /^c:/, 'the consumer named c')
  // Let it settle into its blocking read on an empty queue; it has looked at its own list by then.
  await sleep(300)

  // A task moved into the list behind the consumer's back, while its connections stay up, as a
  // reservation that a client library sent after it had given up on it.
  const processing = `${prefix}:{${queue}}:v2:processing:${consumerId}`
  await storeRaw(client, (name) => `${prefix}:{${queue}}:v2:${name}`, 'unknown-7', storedTask(queue, '/tasks/work', { n: 7 }, 'unknown-7'), `processing:${consumerId}`)

  await waitUntil('the task in the consumer\'s own list to run', () => ran.length === 1, 15_000)
  t.same(ran, [7], 'it ran')
  await sleep(300)
  t.equal(await client.llen(processing), 0, 'its processing list is empty')
  t.equal(await client.exists(`${prefix}:{${queue}}:v2:heartbeat:${consumerId}`), 1, 'the consumer stayed alive throughout')
  t.ok(lines.some(({ msg, released }) => msg === 'taskqueue: orphans in this consumer\'s own list released' && released === 1), 'it says so')
  t.notOk(lines.some(({ msg }) => msg === 'taskqueue: tasks of an expired consumer recovered'), 'no recovery of an expired consumer was involved')
})

// The same while the consumer is busy, after its connection was lost: ioredis sends the commands
// in flight again once it has reconnected, so a reservation that ran before the link broke runs
// twice, and the tasks of its first run are in the list, known to nobody. A consumer that never
// runs out of work never becomes idle: they would wait until it stopped or died. The test puts
// such a task in the list and breaks the consumer's connection; at the next heartbeat the task is
// released, and the tasks the consumer is running stay in its list.
test('a busy consumer whose connection was lost releases what its own processing list holds unknown to it, and keeps the tasks it runs', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queue = `busy-${prefix.slice(-6)}`
  const keyOf = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  const { app, lines } = loggedApp()
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue, name: 'c', concurrentLimit: 2 }]
  })
  const { started, ran, openGate } = slowTasks(app)
  t.teardown(async () => {
    openGate()
    await app.close()
  })
  app.post<{ Body: { n: number } }>('/tasks/work', async (request) => {
    ran.push(request.body.n)
    return 'ok'
  })
  await app.ready()
  const slowIds = [
    await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: { n: 1 }, queue }),
    await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: { n: 2 }, queue })
  ]
  await waitUntil('both slots to be taken by the slow tasks', () => started.length === 2, 10_000)
  const consumerId = (await client.smembers(keyOf('consumers')))[0]
  const processing = keyOf(`processing:${consumerId}`)

  await storeRaw(client, keyOf, 'unknown-7', storedTask(queue, '/tasks/work', { n: 7 }, 'unknown-7'), `processing:${consumerId}`)
  await sleep(1000)
  t.equal(await client.llen(keyOf('waiting')), 0, 'while its connection stays up, a busy consumer leaves its list alone')

  const mainConnection = (await client.client('LIST') as string).split('\n').find((line) => line.includes(` name=fastify-taskqueue:${queue} `))
  const connectionId = /\bid=(\d+)/.exec(mainConnection ?? '')?.[1]
  t.ok(connectionId, 'the queue\'s connection is found')
  await client.client('KILL', 'ID', connectionId as string)

  await waitUntil('the unknown task to be back in the queue', async () => (await client.lrange(keyOf('waiting'), 0, -1)).includes('unknown-7'), 10_000)
  t.same(await idsIn(client, processing), [...slowIds].sort(), 'the processing list still holds the two tasks running, and only them')
  t.same(ran, [], 'nothing finished meanwhile: the consumer was busy throughout')
  t.ok(lines.some(({ msg, released }) => msg === 'taskqueue: orphans in this consumer\'s own list released' && released === 1), 'it says so')

  openGate()
  await waitUntil('every task to run', () => ran.length === 3, 10_000)
  t.same([...ran].sort(), [1, 2, 7], 'the slow tasks finished and the returned task ran, once each')
  await sleep(300)
  t.equal(await client.llen(processing), 0, 'the processing list is empty')
  t.equal(await client.llen(keyOf('waiting')), 0, 'so is the queue')
})

// The real thing: the link breaks after Redis ran a reservation and before its reply came back.
// ioredis sends the reservation again once it has reconnected, so it runs twice: the consumer gets
// the tasks of the second run, and those of the first are in its list, known to nobody. The
// consumer is kept busy by the tasks it got, so only the check made after a lost connection can
// release the others before it stops.
test('a reservation that runs twice across a broken link leaves no task behind in a busy consumer\'s list', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queue = `twice-${prefix.slice(-6)}`
  const keyOf = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  // The first reply that carries task messages: a reservation's (a blocking read answers with a
  // single message, not an array).
  const proxy = await cuttingProxy(redis, { reply: (chunk) => chunk[0] === 0x2a && chunk.includes('/tasks/slow') })
  const { app, lines } = loggedApp()
  for (const n of [1, 2, 3, 4]) await storeRaw(client, keyOf, `slow-${n}`, storedTask(queue, '/tasks/slow', { n }, `slow-${n}`))

  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, host: '127.0.0.1', port: proxy.port, heartbeatInterval: 200 }],
    consumers: [{ queue, name: 'c', concurrentLimit: 2 }]
  })
  const { started, ran, openGate } = slowTasks(app)
  t.teardown(async () => {
    openGate()
    await app.close()
    await proxy.close()
  })
  await app.ready()

  await waitUntil('both slots to be taken', () => started.length === 2, 15_000)
  t.equal(proxy.cuts, 1, 'the link broke once, under the reply of a reservation')
  t.same(started, [3, 4], 'the reservation ran twice: the consumer got the tasks of the second run')
  await waitUntil('the tasks of the first run to be back in the queue', async () => (await client.llen(keyOf('waiting'))) === 2, 10_000)
  const consumerId = (await client.smembers(keyOf('consumers')))[0]
  t.same(await idsIn(client, keyOf(`processing:${consumerId}`)), ['slow-3', 'slow-4'], 'the processing list holds the two tasks running, and only them')
  t.same(ran, [], 'while they still ran')
  t.ok(lines.some(({ msg, released }) => msg === 'taskqueue: orphans in this consumer\'s own list released' && released === 2), 'it says so')

  openGate()
  await waitUntil('every task to run', () => ran.length === 4, 15_000)
  t.same([...ran].sort(), [1, 2, 3, 4], 'each task ran once')
  await sleep(300)
  t.same(started.length, 4, 'and started once')
  t.equal(await client.llen(keyOf('waiting')), 0, 'nothing is left in the queue')
})

// Setting a task aside runs twice across a broken link as well. The second run finds the task no
// longer in the processing list and writes nothing: one dead letter, not two.
test('a dead letter whose command runs twice across a broken link is written once', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queue = `bury-${prefix.slice(-6)}`
  const keyOf = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  const proxy = await cuttingProxy(redis, { request: (chunk) => chunk.includes('"reason":"final status"') })
  const app = Fastify()
  t.teardown(async () => {
    await app.close()
    await proxy.close()
  })
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, host: '127.0.0.1', port: proxy.port, heartbeatInterval: 200 }],
    consumers: [{ queue, name: 'c' }]
  })
  let tries = 0
  app.post('/tasks/refused', async (request, reply) => {
    tries++
    return reply.code(400).send('no')
  })
  await app.ready()
  await storeRaw(client, keyOf, 'refused-1', storedTask(queue, '/tasks/refused', {}, 'refused-1'))

  await waitUntil('the link to break under the reply of the dead letter', () => proxy.cuts === 1, 15_000)
  await waitUntil('the dead letter to be written', async () => (await client.llen(keyOf('dead'))) > 0, 10_000)
  await sleep(1000)
  const dead = await app.taskqueue.queue(queue).dead()
  t.equal(dead.length, 1, 'one dead letter')
  t.equal(dead[0]?.id, 'refused-1', 'of the task')
  t.equal(tries, 1, 'which ran once')
  t.equal(await client.llen(keyOf('waiting')), 0, 'nothing waits')
})
