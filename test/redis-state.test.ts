// State of the Redis queue across consumer deaths (issue 11): a processing list always belongs to a
// registered consumer, even one that reserved before it could announce itself again, and a task
// that kills its consumer takes only itself into the dead letters, not the tasks reserved beside it.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { startOwnRedis, uniquePrefix } from './helpers/redis'
import { type ConsumerChild, ensureBuilt, list, loggedApp, redisForTest, scanKeys, sleep, startConsumer, waitUntil } from './helpers/redis-children'

// issue 11, point 1: Redis restarted empty forgot the consumer set; a consumer that reserves before
// its next heartbeat and then dies left a processing list that no recovery ever looked at.
test('a consumer that reserves while missing from the consumer set is recovered when it dies', async (t) => {
  t.setTimeout(90_000)
  ensureBuilt()
  // Not durable: a restart comes back empty, as after a failover that missed the registration.
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const queue = 'work'
  const keyOf = (name: string): string => `${prefix}:{${queue}}:v2:${name}`
  // Long enough for the restart and the reservation to come between two beats: a blocking read
  // caught by the restart may take its timeout and grace (6 s) to give up.
  const heartbeatInterval = 8000

  const child = startConsumer({ connection: redis.connection, prefix, queue, name: 'lost', heartbeatInterval })
  t.teardown(() => child.stop('SIGKILL'))
  await child.ready
  const client = redis.client()
  let heartbeatKey = ''
  await waitUntil('the consumer to beat', async () => {
    heartbeatKey = (await scanKeys(client, keyOf('heartbeat:lost:*')))[0] ?? ''
    return heartbeatKey !== ''
  }, 10_000)
  // Right after a beat, so that the restart and the reservation both come before the next one.
  await waitUntil('a fresh beat', async () => (await client.pttl(heartbeatKey)) > heartbeatInterval * 3 - 300, 10_000, 10)
  const t0 = Date.now()
  await redis.stop()
  await redis.start()
  t.comment(`restarted after ${Date.now() - t0} ms`)
  t.same(await scanKeys(client, `${prefix}*`), [], 'Redis came back empty')

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }] })
  await producer.ready()
  // The task kills its consumer mid-run.
  const id = await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 1, poison: true } })
  const { signal } = await child.exited
  t.comment(`died after ${Date.now() - t0} ms`)
  t.equal(signal, 'SIGKILL', 'the consumer died running the task')
  t.equal((await list(client, `${prefix}:started`)).length, 1, 'having started it')
  t.comment(`consumer set when it died: ${JSON.stringify(await client.smembers(keyOf('consumers')))}, its list: ${JSON.stringify(await scanKeys(client, keyOf('processing:*')))}`)

  const { app } = loggedApp()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue, name: 'rescuer' }]
  })
  const ran: string[] = []
  app.post('/tasks/work', async (request) => {
    ran.push(request.headers['x-task-id'] as string)
    return 'ok'
  })
  await app.ready()
  await waitUntil('another consumer to run the task of the dead one', () => ran.length > 0, 40_000)
  t.same(ran, [id], 'the task ran in the other consumer')
  await sleep(300)
  t.same(await scanKeys(client, keyOf('processing:lost:*')), [], 'the expired consumer\'s list is gone')
})

// issue 11, point 3: a poison pill takes its neighbours into the dead letters. With concurrentLimit
// 3, one task that kills its process and two ordinary ones are reserved together; recovery used to
// return all three together, the next consumer reserved them as one batch again, and all three
// ended as 'recovered too often'. A recovered task now runs alone: only the poison pill dies.
test('a poison pill reserved with two ordinary tasks takes only itself into the dead letters', async (t) => {
  t.setTimeout(90_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const keyOf = (name: string): string => `${prefix}:{${queue}}:v2:${name}`
  const recoveryMaxCount = 2
  const env = { connection: redis.connection, prefix, queue, heartbeatInterval: 200, recoveryMaxCount, concurrentLimit: 3 }

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }] })
  await producer.ready()
  // Queued before any consumer runs, so that the first one reserves the three in one batch; the
  // ordinary ones are still running when the poison pill kills their process.
  const poisonId = await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 'poison', poison: true } })
  const ordinary = [
    await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 'a', hold: 1500 } }),
    await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: 'b', hold: 1500 } })
  ]

  // One consumer at a time, started again whenever it dies (a bounded number of times).
  const children: ConsumerChild[] = []
  t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })
  children.push(startConsumer(env))
  await waitUntil('the first consumer to start the three tasks', async () => (await list(client, `${prefix}:started`)).length === 3, 15_000)

  const done = async (): Promise<string[]> => [...new Set((await list(client, `${prefix}:done`)).map((entry) => entry.split(':')[0]))].sort()
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline && children.length <= 8) {
    const current = children[children.length - 1]
    if (current.isGone) {
      t.equal((await current.exited).signal, 'SIGKILL', 'a consumer died of the poison')
      children.push(startConsumer(env))
    }
    if ((await client.llen(keyOf('dead'))) + (await done()).length >= 3) break
    await sleep(50)
  }

  t.same(await done(), ['a', 'b'], 'the two ordinary tasks completed')
  const letters = await producer.taskqueue.queue(queue).dead()
  t.same(letters.map(({ id, reason }) => ({ id, reason })), [{ id: poisonId, reason: 'recovered too often' }], 'the poison pill alone is dead')
  t.notOk(letters.some(({ id }) => ordinary.includes(id as string)), 'no ordinary task is among the dead letters')
  const poisonStarts = (await list(client, `${prefix}:started`)).filter((entry) => entry.startsWith('poison:')).length
  t.equal(poisonStarts, recoveryMaxCount + 1, 'the poison pill started once per death, until it was buried')
  t.equal(await client.hlen(keyOf('recoveries')), 0, 'no recovery count is left behind')

  await Promise.all(children.filter((child) => !child.isGone).map((child) => child.stop('SIGTERM')))
  t.equal(await producer.taskqueue.queue(queue).length(), 0, 'nothing waits')
  t.same(await scanKeys(client, keyOf('processing:*')), [], 'nothing is reserved')
})
