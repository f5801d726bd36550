// Recovery of reserved tasks: a consumer with another name takes over the processing list of a
// killed one; a task whose handler keeps killing its process is set aside after the set number of
// recoveries; a consumer whose blocking read was cut off returns its own processing list.
import { randomUUID } from 'node:crypto'
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { encodeMessage } from '../lib/queues/codec'
import { type ConsumerChild, ensureBuilt, list, loggedApp, redisForTest, scanKeys, sleep, startConsumer, waitUntil } from './helpers/redis-children'

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
  const processingOfA = await scanKeys(client, `${prefix}:{${queue}}:processing:a:*`)
  t.equal(processingOfA.length, 1, 'consumer a has a processing list')
  t.same((await client.lrange(processingOfA[0], 0, -1)).map((raw) => JSON.parse(raw).id), [id], 'holding the task')
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
  const recovered = (): typeof lines => lines.filter(({ msg }) => msg === 'taskqueue: tasks of a dead consumer returned to the queue')
  await waitUntil('the recovery to be logged', () => recovered().length > 0, 5000)
  t.same(recovered().map((line) => line.recovered), [1], 'b recovered one task, and logged it')
  await sleep(300)
  t.same(await scanKeys(client, `${prefix}:{${queue}}:processing:a:*`), [], 'the processing list of a is gone')
  const members = await client.smembers(`${prefix}:{${queue}}:consumers`)
  t.ok(members.length === 1 && members[0].startsWith('b:'), 'a left the consumer set; b is in it')
  t.equal(await client.hlen(`${prefix}:{${queue}}:recoveries`), 0, 'the recovery count is forgotten once the task is done')
  t.same(ran, [id], 'the task ran once in b')
})

test('a poison pill is set aside in the dead list after recoveryMaxCount recoveries, while other tasks run', async (t) => {
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
    if (await client.llen(`${prefix}:{${queue}}:dead`) === 1 && await doneCount() === normal) break
    await sleep(50)
  }
  const poisonStarts = (await list(client, `${prefix}:started`)).filter((entry) => entry.startsWith('poison:')).length
  t.equal(deaths.length, recoveryMaxCount + 1, `the poison killed ${recoveryMaxCount + 1} consumers: ${recoveryMaxCount} recoveries, then set aside`)
  t.equal(poisonStarts, recoveryMaxCount + 1, 'it started that many times, and no more')
  t.equal(await doneCount(), normal, 'every other task ran')

  const letters = await producer.taskqueue.queue(queue).dead()
  t.equal(letters.length, 1, 'one dead letter')
  t.equal(letters[0]?.id, poisonId, 'the poison pill')
  t.equal(letters[0]?.reason, 'recovered too often')
  t.same(letters[0]?.task?.payload !== undefined && JSON.parse(letters[0].task.payload.toString()), { n: 'poison', poison: true }, 'with its message intact')
  t.equal(JSON.parse((await client.lindex(`${prefix}:{${queue}}:dead`, 0)) as string).reason, 'recovered too often', 'as stored in `<prefix>:{queue}:dead`')
  t.equal(await client.hlen(`${prefix}:{${queue}}:recoveries`), 0, 'its recovery count is dropped')

  const live = children.filter((child) => !child.isGone)
  await Promise.all(live.map((child) => child.stop('SIGTERM')))
  await sleep(200)
  t.equal(await client.llen(`${prefix}:{${queue}}:waiting`), 0, 'nothing is left in the queue')
  t.same(await scanKeys(client, `${prefix}:{${queue}}:processing:*`), [], 'nor reserved')
})

// "On start-up", a consumer's own leftover list cannot be shown: consumer ids are random per
// process, so no new consumer ever has an old list of its own (those of dead consumers are
// recovered through their heartbeat, above). What can be shown is a live consumer's list holding a
// task it never saw, as a reservation whose reply was lost, or a command that the client library
// sent after it had given up on it, leave behind. The test makes that state (the task put in the
// list by hand, every connection left up) and the idle consumer must return the task to the queue.
test('an idle consumer gives back what its own processing list holds unknown to it (as a late command of a client may put there)', async (t) => {
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
    consumerId = (await client.smembers(`${prefix}:{${queue}}:consumers`))[0] ?? ''
    return consumerId !== ''
  }, 5000)
  t.match(consumerId, /^c:/, 'the consumer named c')
  // Let it settle into its blocking read on an empty queue; it has looked at its own list by then.
  await sleep(300)

  const now = Date.now()
  const id = randomUUID()
  const raw = encodeMessage({
    v: 1, id, queue, url: '/tasks/work', method: 'POST', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ n: 7 }), retries: 0, createdAt: now, eta: now
  })
  // A task moved into the list behind the consumer's back, while its connections stay up, as a
  // reservation that a client library sent after it had given up on it.
  const processing = `${prefix}:{${queue}}:processing:${consumerId}`
  await client.lpush(processing, raw)

  await waitUntil('the task in the consumer\'s own list to run', () => ran.length === 1, 15_000)
  t.same(ran, [7], 'it ran')
  await sleep(300)
  t.equal(await client.llen(processing), 0, 'its processing list is empty')
  t.equal(await client.exists(`${prefix}:{${queue}}:heartbeat:${consumerId}`), 1, 'the consumer stayed alive throughout')
  t.ok(lines.some(({ msg, returned }) => msg === 'taskqueue: tasks left in this consumer\'s own list returned to the queue' && returned === 1), 'it says so')
  t.notOk(lines.some(({ msg }) => msg === 'taskqueue: tasks of a dead consumer returned to the queue'), 'no recovery of a dead consumer was involved')
})
