// Issue 15: idle consumers of a Redis queue block on wake-up tokens (the `wake` key), and one token
// wakes one of them, where a push onto `waiting` woke every consumer blocked on it. First the
// scripts: each that makes a task reservable leaves one token, never more. Then whole apps: the
// commands a task costs do not grow with the idle consumers, a backlog spreads over them, and a
// task made reservable in each way (delayed, retried, requeued, recovered, resumed) still runs.
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import taskqueue from '../plugin'
import { scripts } from '../lib/queues/redis/scripts'
import { encodeMessage } from '../lib/queues/codec'
import { startOwnRedis, uniquePrefix } from './helpers/redis'
import { dropPrefixAtEnd, redisForTest, sleep, waitUntil } from './helpers/redis-children'
import type { Test } from './helpers/harness'

const queue = 'q'

test('issue 15: each script that makes a task reservable leaves one wake-up token, never more', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  const tokens = () => client.llen(key('wake'))
  const add = (id: string, delay = 0, group = '') => client.eval(scripts.taskqueueAdd.lua, 3, key('tasks'), key('waiting'), key('delayed'), key(''), id, `m-${id}`, delay, group)
  const reserve = (count: number, ...acks: string[]) => client.eval(scripts.taskqueueAckAndReserve.lua, 12, key('processing:c'), key('waiting'), key('tasks'),
    key('inflight'), key('cancelled'), key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'), key('group-of'),
    count, 'c', 600, 0, 0, key(''), 1, ...acks) as Promise<string[]>
  /** An idle consumer takes the token. */
  const takeToken = async () => (await client.lpop(key('wake'))) !== null

  t.equal(await tokens(), 0, 'no token before anything')
  await add('a')
  t.equal(await tokens(), 1, 'add: a token')
  await add('b')
  t.equal(await tokens(), 1, 'a second add while the token waits: still one')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'a', 'm-a'], 'a reservation that leaves a task behind...')
  t.equal(await tokens(), 1, '...wakes the next consumer (chain)')
  t.ok(await takeToken())
  t.same(await reserve(5, 'a'), ['batch', 'b', 'm-b'], 'a short batch...')
  t.equal(await tokens(), 0, '...leaves nothing behind, and wakes nobody')

  t.equal(await client.eval(scripts.taskqueueRelease.lua, 3, key('processing:c'), key('waiting'), key('inflight'), 'b', key('')), 1, 'released')
  t.equal(await tokens(), 1, 'release: a token')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'b', 'm-b'])
  t.equal(await tokens(), 0)

  await add('d', 60_000)
  t.equal(await tokens(), 0, 'a delayed task wakes nobody yet')
  await client.zadd(key('delayed'), 0, 'd')
  await client.eval(scripts.taskqueuePromote.lua, 2, key('delayed'), key('waiting'), 100, key(''))
  t.equal(await tokens(), 1, 'promote of a due task: a token')
  t.ok(await takeToken())
  await client.eval(scripts.taskqueuePromote.lua, 2, key('delayed'), key('waiting'), 100, key(''))
  t.equal(await tokens(), 1, 'promote again while d waits: a token again, in case the first was lost')
  t.ok(await takeToken())
  t.same(await reserve(1, 'b'), ['batch', 'd', 'm-d'])
  await client.eval(scripts.taskqueuePromote.lua, 2, key('delayed'), key('waiting'), 100, key(''))
  t.equal(await tokens(), 0, 'promote with nothing to reserve: no token')

  const retried = await client.eval(scripts.taskqueueRetry.lua, 4, key('processing:c'), key('delayed'), key('tasks'), key('inflight'), 'd', 'm-d2', 0, key(''))
  t.equal(retried, 1, 'd retried, due at once')
  await client.eval(scripts.taskqueuePromote.lua, 2, key('delayed'), key('waiting'), 100, key(''))
  t.equal(await tokens(), 1, 'the promoted retry: a token')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'd', 'm-d2'])

  await client.eval(scripts.taskqueueBury.lua, 6, key('processing:c'), key('dead'), key('tasks'), key('inflight'), key('recoveries'), key('dead-index'),
    'd', 'letter-d', 'd', 10, key(''))
  t.equal(await tokens(), 0, 'a bury frees no task: no token')
  t.equal(await client.eval(scripts.taskqueueRequeue.lua, 4, key('dead'), key('waiting'), key('tasks'), key('dead-index'), 'letter-d', 'd', 'm-d3', key(''), ''), 1)
  t.equal(await tokens(), 1, 'requeue: a token')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'd', 'm-d3'])

  // An orphan: d is in the list, unknown to its consumer.
  t.equal(await client.eval(scripts.taskqueueReleaseOrphans.lua, 5, key('processing:c'), key('waiting'), key('recoveries'), key('recovered'), key('inflight'), key('')), 1)
  t.equal(await tokens(), 1, 'release of orphans: a token')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'd', 'm-d3'])

  // A consumer that expired with d: its list is recovered.
  await client.multi().lmove(key('processing:c'), key('processing:gone'), 'RIGHT', 'LEFT').sadd(key('consumers'), 'gone').exec()
  const recovered = await client.eval(scripts.taskqueueRecover.lua, 8, key('consumers'), key('recovered'), key('dead'), key('recoveries'), key('lease'),
    key('tasks'), key('inflight'), key('dead-index'), key(''), 'me', 1000, 5, 'me', 10)
  t.same(recovered, [['d'], []], 'd recovered')
  t.equal(await tokens(), 1, 'recover: a token')
  t.ok(await takeToken())
  t.same(await reserve(1), ['recovered', 'd', 'm-d3'])

  await client.set(key('paused'), '1')
  t.equal(await client.eval(scripts.taskqueueResume.lua, 1, key('paused'), key('')), 1, 'resumed')
  t.equal(await tokens(), 1, 'resume: a token, for a consumer blocked since before the pause')
  t.ok(await takeToken())

  t.equal(await client.eval(scripts.taskqueueAddTick.lua, 4, key('schedules'), key('tasks'), key('waiting'), key('delayed'), 's', 1000, 'tick', 'm-tick', 0, key('')), 1)
  t.equal(await tokens(), 1, 'the tick of a schedule: a token')
  t.ok(await takeToken())
  t.same(await reserve(1, 'd'), ['batch', 'tick', 'm-tick'])

  // Groups (groupConcurrency 1 in reserve): g2 waits at its limit until g1 leaves flight.
  await add('g1', 0, 'g')
  t.equal(await tokens(), 1, 'a group entering the turns: a token')
  await add('g2', 0, 'g')
  t.ok(await takeToken())
  t.same(await reserve(5, 'tick'), ['batch', 'g1', 'm-g1'], 'one task of the group at a time')
  t.equal(await tokens(), 0, 'its next task cannot run yet: no token')
  t.same(await reserve(0, 'g1'), ['batch'], 'g1 acknowledged, nothing asked')
  t.equal(await tokens(), 1, 'its slot freed: a token for the group\'s next task')
  t.same(await client.lrange(key('waiting'), 0, -1), [], 'and no entry pushed onto waiting for it')
  await add('g3', 0, 'g')
  t.ok(await takeToken())
  t.same(await reserve(5), ['batch', 'g2', 'm-g2'], 'the group\'s next task; g3 waits at its limit')
  t.same(await client.lrange(key('group-turns'), 0, -1), [], 'no group takes turns: the turn of the tasks without a group left too...')
  t.equal(await tokens(), 0, '...and woke nobody')
  t.same(await reserve(1, 'g2'), ['batch', 'g3', 'm-g3'], 'g2 acknowledged, and the group\'s next task reserved in the same call')
  t.same(await client.lrange(key('group-turns'), 0, -1), [], 'the group left the turns again, and with it the turn of the tasks without a group')
  t.equal(await tokens(), 0, 'which took the token its acknowledgement pushed: nothing is left to wake anyone for')
  await add('g4', 0, 'g')
  await add('u1')
  t.ok(await takeToken())
  t.same(await reserve(1, 'g3'), ['batch', 'u1', 'm-u1'], 'g3 acknowledged; the turn of the tasks without a group comes first')
  t.equal(await tokens(), 1, 'g4 can run and this call did not take it: its token stays')
  t.ok(await takeToken())
  t.same(await reserve(5, 'u1'), ['batch', 'g4', 'm-g4'])
  t.equal(await tokens(), 0)
  t.same(await reserve(0, 'g4'), ['batch'], 'g4 acknowledged, nothing asked')
  await client.eval(scripts.taskqueueReset.lua, 6, key('waiting'), key('recovered'), key('delayed'), key('tasks'), key('recoveries'), key('cancelled'), 100, key(''))
  t.equal(await tokens(), 0, 'reset: the token goes with the tasks')

  await add('r1')
  await add('r2')
  t.equal(await client.eval(scripts.taskqueueReset.lua, 6, key('waiting'), key('recovered'), key('delayed'), key('tasks'), key('recoveries'), key('cancelled'), 1, key('')), 1,
    'a reset of one task of two')
  t.equal(await tokens(), 1, 'a reset that leaves a task behind keeps the token for it')
  t.ok(await takeToken())
  t.same(await reserve(1), ['batch', 'r2', 'm-r2'], 'this consumer holds a task...')
  await client.hset(key('tasks'), 'x', 'm-x')
  await client.lpush(key('recovered'), 'x')
  t.same(await reserve(1), ['finishing'], '...so a recovered task waits for another')
  t.equal(await tokens(), 1, 'and the token goes on to a consumer that holds nothing')
})

/** An app on the queue under `prefix`: `consumers` consumers of one slot each, its task route counting runs. */
async function app (t: Test, connection: object, prefix: string, consumers: number, ran: string[], options: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const instance = Fastify()
  t.teardown(() => instance.close())
  await instance.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...connection, ...options }],
    consumers: Array.from({ length: consumers }, () => ({ queue, concurrentLimit: 1 }))
  })
  instance.all('/tasks/:name', async (request) => {
    ran.push(request.headers['x-task-id'] as string)
    return 'ok'
  })
  await instance.ready()
  return instance
}

/** Calls of every command since `CONFIG RESETSTAT`, but those of the test's own INFO, CONFIG and CLIENT. */
async function commandCalls (client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats')
  const calls: Record<string, number> = {}
  for (const [, name, count] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (name !== 'info' && !name.startsWith('config') && !name.startsWith('client')) calls[name] = Number(count)
  }
  return calls
}

/** How many clients are blocked on the server. */
async function blockedClients (client: Redis): Promise<number> {
  return Number(/blocked_clients:(\d+)/.exec(await client.info('clients'))?.[1])
}

/**
 * Adds `count` tasks one at a time, each once the one before it ran, with `consumers` idle consumers
 * (one app, a slot each) on a fresh prefix; resolves with the commands Redis served per task.
 */
async function commandsPerTask (t: Test, redis: Awaited<ReturnType<typeof startOwnRedis>>, client: Redis, consumers: number, count: number) {
  const prefix = uniquePrefix()
  dropPrefixAtEnd(t, client, prefix)
  const ran: string[] = []
  const producer = await app(t, redis.connection, prefix, 0, ran)
  const consumer = await app(t, redis.connection, prefix, consumers, ran)
  await waitUntil(`${consumers} consumers blocked`, async () => await blockedClients(client) === consumers, 5000)
  await client.config('RESETSTAT')
  const startedAt = Date.now()
  const added: string[] = []
  for (let n = 0; n < count; n++) {
    added.push(await producer.taskqueue.add(`/tasks/t${n}`))
    await waitUntil(`task ${n} to run`, () => ran.length === added.length, 5000, 2)
    // Idle again before the next: a lone consumer would else find it with its acknowledgement.
    await waitUntil('every consumer idle', async () => await blockedClients(client) === consumers, 5000, 2)
  }
  const elapsed = Date.now() - startedAt
  const calls = await commandCalls(client)
  // Each idle consumer polls once a second (promote, then a new blocking read) whatever the tasks
  // do: on a slow machine the loop lasts longer and counts more of them. Their rate, measured
  // while nothing is added, is taken out, so that only what the tasks cost is compared.
  await client.config('RESETSTAT')
  await sleep(idleWindow)
  const background = sumOf(await commandCalls(client)) / idleWindow * elapsed
  await consumer.close()
  await producer.close()
  return { perTask: (sumOf(calls) - background) / count, background, calls, added, ran }
}

/** How long the idle consumers' own polling is counted (ms): two of their polls each. */
const idleWindow = 2000

function sumOf (calls: Record<string, number>): number {
  return Object.values(calls).reduce((sum, count) => sum + count, 0)
}

test('issue 15: with 8 idle consumers a task costs Redis at most 1.5 times the commands it costs with one', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const client = redis.client()
  const count = 40
  const one = await commandsPerTask(t, redis, client, 1, count)
  const eight = await commandsPerTask(t, redis, client, 8, count)
  for (const [label, measured] of [['1 consumer', one], ['8 consumers', eight]] as const) {
    t.same([...measured.ran].sort(), [...measured.added].sort(), `${label}: every task ran exactly once`)
  }
  const ratio = eight.perTask / one.perTask
  t.ok(ratio <= 1.5, `${eight.perTask.toFixed(1)} commands per task with 8 idle consumers, ${one.perTask.toFixed(1)} with 1: ${ratio.toFixed(2)}x ` +
    `(8: ${JSON.stringify(eight.calls)}, ${eight.background.toFixed(0)} of them polling; 1: ${JSON.stringify(one.calls)}, ${one.background.toFixed(0)} polling)`)
  t.notOk('blmove' in eight.calls, 'no consumer blocks on the waiting list')
})

test('issue 15: a backlog added at once spreads over the idle consumers', async (t) => {
  t.setTimeout(30_000)
  // A server of its own: the count of blocked clients below is the whole server's.
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const client = redis.client()
  const prefix = uniquePrefix()
  const running = new Set<string>()
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => release())
  const producer = await app(t, redis.connection, prefix, 0, [])
  const consumers = Fastify()
  t.teardown(() => consumers.close())
  await consumers.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection }],
    consumers: Array.from({ length: 4 }, () => ({ queue, concurrentLimit: 1 }))
  })
  const done: string[] = []
  consumers.all('/tasks/:name', async (request) => {
    const id = request.headers['x-task-id'] as string
    running.add(id)
    await gate
    done.push(id)
    return 'ok'
  })
  await consumers.ready()
  await waitUntil('4 consumers blocked', async () => await blockedClients(client) === 4, 5000)
  const ids = await Promise.all(Array.from({ length: 8 }, (_, n) => producer.taskqueue.add(`/tasks/b${n}`)))
  await waitUntil('4 tasks running at once', () => running.size === 4, 5000)
  t.equal(running.size, 4, 'each idle consumer took one task of the backlog, though one token came with it')
  release()
  await waitUntil('the backlog done', () => done.length === 8, 10_000)
  t.same([...done].sort(), [...ids].sort(), 'every task ran once')
})

test('issue 15: a delayed task, a retry, a requeued dead letter, a recovered task and a resume each wake an idle consumer', async (t) => {
  t.setTimeout(60_000)
  const { redis, client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{${queue}}:v2:${name}`
  const answers = new Map<string, number[]>()
  const ran: string[] = []
  const instance = Fastify()
  t.teardown(() => instance.close())
  await instance.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: Array.from({ length: 3 }, () => ({ queue, concurrentLimit: 1, retryMaxCount: 1, retryDelay: { min: 50, max: 50 } }))
  })
  // Each task answers the statuses given for it in turn, then 200.
  instance.all('/tasks/:name', async (request, reply) => {
    const { name } = request.params as { name: string }
    ran.push(name)
    reply.code(answers.get(name)?.shift() ?? 200)
    return 'ok'
  })
  await instance.ready()
  const handle = instance.taskqueue.queue(queue)
  const ranAll = (name: string, times: number) => waitUntil(`${name} to run ${times} times`, () => ran.filter((each) => each === name).length === times, 10_000)

  await instance.taskqueue.add('/tasks/delayed', { delay: 300 })
  await ranAll('delayed', 1)
  t.pass('a delayed task ran once due')

  answers.set('retried', [500])
  await instance.taskqueue.add('/tasks/retried')
  await ranAll('retried', 2)
  t.pass('a retry ran')

  answers.set('buried', [500, 500])
  const buried = await instance.taskqueue.add('/tasks/buried')
  await waitUntil('the dead letter', async () => (await handle.dead()).length === 1, 10_000)
  t.equal(await handle.requeue(buried), 1, 'requeued')
  await ranAll('buried', 3)
  t.pass('a requeued dead letter ran')

  // A task held by a consumer that expired: registered, no heartbeat; a live consumer recovers it.
  const now = Date.now()
  const message = encodeMessage({ v: 1, id: 'orphan', queue, url: '/tasks/recovered', method: 'GET', headers: {}, retries: 0, createdAt: now, eta: now })
  await client.multi().hset(key('tasks'), 'orphan', message).lpush(key('processing:gone'), 'orphan').hset(key('inflight'), 'orphan', 'gone')
    .sadd(key('consumers'), 'gone').exec()
  await ranAll('recovered', 1)
  t.pass('a recovered task ran')

  // Paused from a client of its own (no consumer of this instance is told), resumed the same way.
  await sleep(300)
  await client.set(key('paused'), '1')
  await instance.taskqueue.add('/tasks/resumed')
  await sleep(300)
  t.equal(ran.includes('resumed'), false, 'nothing runs while paused')
  await client.eval(scripts.taskqueueResume.lua, 1, key('paused'), key(''))
  await ranAll('resumed', 1)
  t.pass('a task added while paused ran once resumed')
  t.equal(await client.llen(key('wake')) <= 1, true, 'at most one token waits')
})
