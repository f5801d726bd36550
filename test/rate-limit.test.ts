// The rate limit of a queue (issue 14), on both queue types: the start times of the tries, as the
// task route sees them, stay within `max` per `timeWindow` over several windows while using it;
// retries count; a limited consumer waits without asking (no Redis command while it waits, no
// timer spinning on a local queue); close while limited is prompt; bad options are refused. The
// Redis side across instances and the script's own edges are at the end.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { RateWindow } from '../lib/queues/rate-window'
import { scripts } from '../lib/queues/redis/scripts'
import type { ConsumerOptions, QueueOptions, RateLimit } from '../lib/options'
import { backendFor, queueTypes, scanKeys, sleep, startApp, waitFor, type Backend, type QueueType, type Test } from './helpers/both-queues'
import { clockFor, type TestClock } from './helpers/clock'

/**
 * The first pair of starts (by the route's clock) more than `max` apart in the log that are closer
 * than `windowMs - slack`: a window that held more than `max` starts. Undefined when there is none.
 */
function overLimit (starts: number[], { max, timeWindow }: RateLimit, slack: number): string | undefined {
  const sorted = [...starts].sort((a, b) => a - b)
  for (let index = 0; index + max < sorted.length; index++) {
    const span = sorted[index + max] - sorted[index]
    if (span < timeWindow - slack) return `starts ${index} and ${index + max} are ${span} ms apart, below ${timeWindow} ms`
  }
  return undefined
}

/**
 * Starts per window of `windowMs` from the first start (less `slack`: the first try's dispatch may
 * have been slower than the later ones'): what a reader checks against `max`.
 */
function perWindow (starts: number[], windowMs: number, slack: number): number[] {
  const first = Math.min(...starts) - slack
  const counts: number[] = []
  for (const at of starts) {
    const window = Math.floor((at - first) / windowMs)
    counts[window] = (counts[window] ?? 0) + 1
  }
  return Array.from(counts, (count) => count ?? 0)
}

interface Limited {
  app: FastifyInstance
  backend: Backend
  clock: TestClock
  /** Date.now() at the start of each try, in the route. */
  starts: number[]
}

/**
 * A queue with `rateLimit`, its consumer (`consumer`), and a route /tasks/:name that records the
 * start of each try; `fails` tries of each task id answer 500 (retried at once) before it succeeds.
 */
async function startLimited (t: Test, type: QueueType, rateLimit: RateLimit, consumer: ConsumerOptions = {}, fails = 0,
  queue: QueueOptions = {}): Promise<Limited> {
  const clock = clockFor(t, type)
  const backend = await backendFor(type)
  const starts: number[] = []
  const tries = new Map<string, number>()
  const app = await startApp(t, {
    queues: [backend.queue('default', { ...queue, rateLimit })],
    consumers: [{ concurrentLimit: 0, retryDelay: { min: 0, max: 0 }, ...consumer }]
  }, (app) => {
    app.all('/tasks/:name', async (request, reply) => {
      starts.push(Date.now())
      const id = request.headers['x-task-id'] as string
      const tried = tries.get(id) ?? 0
      tries.set(id, tried + 1)
      return tried < fails ? reply.code(500).send({}) : { ok: true }
    })
  })
  return { app, backend, clock, starts }
}

/** Lets time pass (fake on a local queue) until `count` tries started, within `realMs` of real time. */
async function passUntilStarted (clock: TestClock, starts: number[], count: number, realMs = 15_000): Promise<void> {
  const deadline = performance.now() + realMs
  while (starts.length < count) {
    if (performance.now() > deadline) throw new Error(`only ${starts.length} of ${count} tries started`)
    await clock.pass(20)
  }
}

/** How far the route's clock may see two starts closer than the limit's own clock did (dispatch latency). */
const slackOf = (type: QueueType): number => type === 'local' ? 20 : 150

for (const type of queueTypes) {
  test(`${type}: issue 14: tries start at most max per timeWindow over several windows, and the limit is used`, async (t) => {
    const rateLimit = { max: 5, timeWindow: 800 }
    const { app, clock, starts } = await startLimited(t, type, rateLimit)
    const total = 22
    for (let n = 0; n < total; n++) await app.taskqueue.add(`/tasks/t${n}`)
    await passUntilStarted(clock, starts, total)
    await clock.pass(rateLimit.timeWindow)
    t.equal(starts.length, total, 'every task ran once')
    t.equal(overLimit(starts, rateLimit, slackOf(type)), undefined, 'no span of timeWindow holds more than max starts')
    const counts = perWindow(starts, rateLimit.timeWindow, slackOf(type))
    t.ok(counts.every((count) => count <= rateLimit.max), `at most max a window from the first start: ${counts.join(', ')}`)
    // 22 tasks at 5 a window: windows 0 to 4 are enough; an under-using limit would need more.
    const span = Math.max(...starts) - Math.min(...starts)
    t.ok(span <= 4 * rateLimit.timeWindow + rateLimit.timeWindow / 2, `the limit is used: all started within ${span} ms (4 windows and a bit)`)
    t.ok(counts.slice(0, 4).every((count) => count === rateLimit.max), `the first four windows are full: ${counts.join(', ')}`)
  })

  test(`${type}: issue 14: retries count like any try`, async (t) => {
    const rateLimit = { max: 4, timeWindow: 800 }
    const { app, clock, starts } = await startLimited(t, type, rateLimit, {}, 1)
    for (let n = 0; n < 6; n++) await app.taskqueue.add(`/tasks/r${n}`)
    await passUntilStarted(clock, starts, 12)
    t.equal(starts.length, 12, 'each of the 6 tasks ran twice: a failed try, then its retry')
    t.equal(overLimit(starts, rateLimit, slackOf(type)), undefined, 'the retries stayed within the limit with the first tries')
    const span = Math.max(...starts) - Math.min(...starts)
    t.ok(span >= 2 * rateLimit.timeWindow - slackOf(type), `12 tries at 4 a window took 3 windows (${span} ms from the first to the last)`)
  })

  test(`${type}: issue 14: tasks of groups keep to the rate limit too`, async (t) => {
    const rateLimit = { max: 3, timeWindow: 800 }
    const { app, clock, starts } = await startLimited(t, type, rateLimit, {}, 0, { groupConcurrency: 1 })
    for (let n = 0; n < 9; n++) await app.taskqueue.add(`/tasks/g${n}`, n % 3 === 0 ? {} : { group: `tenant-${n % 3}` })
    await passUntilStarted(clock, starts, 9)
    t.equal(overLimit(starts, rateLimit, slackOf(type)), undefined, 'no span of timeWindow holds more than max starts')
    const span = Math.max(...starts) - Math.min(...starts)
    t.ok(span >= 2 * rateLimit.timeWindow - slackOf(type) && span <= 2 * rateLimit.timeWindow + rateLimit.timeWindow / 2,
      `9 tries at 3 a window took 3 windows (${span} ms from the first to the last)`)
  })

  test(`${type}: issue 14: close while limited is prompt`, async (t) => {
    const rateLimit = { max: 1, timeWindow: 60_000 }
    const { app, clock, starts } = await startLimited(t, type, rateLimit)
    for (let n = 0; n < 3; n++) await app.taskqueue.add(`/tasks/c${n}`)
    await passUntilStarted(clock, starts, 1)
    await clock.pass(200)
    t.equal(starts.length, 1, 'one try in the window, the others wait for the next one')
    const before = performance.now()
    await app.close()
    const took = performance.now() - before
    t.ok(took < 2000, `close() took ${Math.round(took)} ms, not the minute the window would hold it`)
    t.equal(starts.length, 1, 'nothing else started')
  })
}

test('local: issue 14: a limited consumer waits on one timer, without asking again and again', async (t) => {
  const rateLimit = { max: 2, timeWindow: 10_000 }
  let asked = 0
  const hasRoom = RateWindow.prototype.hasRoom
  RateWindow.prototype.hasRoom = function (this: RateWindow) {
    asked++
    return hasRoom.call(this)
  }
  t.teardown(() => { RateWindow.prototype.hasRoom = hasRoom })
  const { app, clock, starts } = await startLimited(t, 'local', rateLimit, { concurrentLimit: 1 })
  for (let n = 0; n < 6; n++) await app.taskqueue.add(`/tasks/w${n}`)
  await passUntilStarted(clock, starts, 2)
  await clock.pass(100)
  asked = 0
  await clock.pass(9000)
  t.equal(starts.length, 2, 'nothing started while the window was full')
  t.ok(asked <= 2, `the limit was asked ${asked} times over 9 s`)
  await clock.pass(1000)
  await passUntilStarted(clock, starts, 4)
  t.equal(starts.length, 4, 'the next two started once the window opened')
})

/** Calls of each command since `CONFIG RESETSTAT`, but those of the test's own INFO and CONFIG. */
async function commandCalls (client: Redis): Promise<Map<string, number>> {
  const info = await client.info('commandstats')
  const calls = new Map<string, number>()
  for (const [, name, count] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (name !== 'info' && !name.startsWith('config')) calls.set(name, Number(count))
  }
  return calls
}

test('redis: issue 14: a limited consumer waits out the window without a command to Redis', async (t) => {
  const rateLimit = { max: 2, timeWindow: 3000 }
  const { app, backend, starts } = await startLimited(t, 'redis', rateLimit, { concurrentLimit: 4 })
  for (let n = 0; n < 6; n++) await app.taskqueue.add(`/tasks/s${n}`)
  await waitFor('the first two tries', () => starts.length === 2)
  await sleep(200)
  const client = backend.redis()
  await client.config('RESETSTAT')
  await sleep(2000)
  const calls = await commandCalls(client)
  const total = [...calls.values()].reduce((sum, count) => sum + count, 0)
  t.equal(starts.length, 2, 'nothing started while the window was full')
  // Over 2 s: the promotion of due retries (once a second) and perhaps a heartbeat; no reservation
  // and no blocking read, where a spinning consumer would have made hundreds.
  t.ok(total <= 6, `${total} commands in 2 s while limited: ${JSON.stringify([...calls])}`)
  t.notOk(calls.has('blpop') || calls.has('blmove'), 'no blocking read while limited')
  await waitFor('the next two tries once the window opened', () => starts.length === 4, 5000)
})

test('redis: issue 14: three instances on one queue share the limit', async (t) => {
  t.setTimeout(60_000)
  const rateLimit = { max: 6, timeWindow: 800 }
  const backend = await backendFor('redis')
  const starts: number[] = []
  const ranOn = [0, 0, 0]
  const apps: FastifyInstance[] = []
  for (const index of [0, 1, 2]) {
    apps.push(await startApp(t, { queues: [backend.queue('default', { rateLimit })], consumers: [{ concurrentLimit: 5 }] }, (app) => {
      app.all('/tasks/:name', async () => {
        starts.push(Date.now())
        ranOn[index]++
        return { ok: true }
      })
    }))
  }
  const total = 30
  for (let n = 0; n < total; n++) await apps[n % 3].taskqueue.add(`/tasks/m${n}`)
  await waitFor(`${total} tries`, () => starts.length === total, 20_000)
  await sleep(rateLimit.timeWindow)
  t.equal(starts.length, total, 'every task ran once')
  t.equal(overLimit(starts, rateLimit, slackOf('redis')), undefined, 'no span of timeWindow holds more than max starts, across the instances')
  const counts = perWindow(starts, rateLimit.timeWindow, slackOf('redis'))
  t.ok(counts.every((count) => count <= rateLimit.max), `at most max a window from the first start: ${counts.join(', ')}`)
  const span = Math.max(...starts) - Math.min(...starts)
  t.ok(span <= 4 * rateLimit.timeWindow + rateLimit.timeWindow / 2, `the limit is used: 30 tasks at 6 a window within ${span} ms (4 windows and a bit)`)
  t.ok(ranOn.filter((count) => count > 0).length >= 2, `the instances shared the work: ${ranOn.join(', ')}`)
})

test('redis: issue 14: without a rate limit no rate log is written', async (t) => {
  const backend = await backendFor('redis')
  const app = await startApp(t, { queues: [backend.queue()], consumers: [{}] }, (app) => {
    app.all('/tasks/:name', async () => ({ ok: true }))
  })
  await app.taskqueue.add('/tasks/a')
  await app.taskqueue.drain()
  t.same(await scanKeys(backend.redis(), `${backend.prefix}:*rate*`), [], 'no key of the rate limit')
})

test('redis: issue 14: the reserving script counts recovered tasks, and says how long to wait', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const key = (name: string): string => backend.key(name, 'q')
  const reserve = async (count: number, max: number, windowMs: number): Promise<string[]> => {
    const reply = await client.eval(scripts.taskqueueAckAndReserve.lua, 12, key('processing:c'), key('waiting'), key('tasks'), key('inflight'),
      key('cancelled'), key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'),
      key('group-of'), count, 'c', 600, max, windowMs, key(''), 0) as string[]
    return reply
  }
  await client.hset(key('tasks'), 'r1', 'recovered one', 'w1', 'waiting one', 'w2', 'waiting two', 'w3', 'waiting three')
  await client.lpush(key('recovered'), 'r1')
  await client.lpush(key('waiting'), 'w1', 'w2', 'w3')

  t.same(await reserve(5, 2, 60_000), ['recovered', 'r1', 'recovered one'], 'the recovered task is reserved alone')
  t.equal(await client.llen(key('rate-log')), 1, 'and logged as a start')
  const ttl = await client.pttl(key('rate-log'))
  t.ok(ttl > 59_000 && ttl <= 60_000, `the log outlives its newest start's window by nothing (${ttl} ms left)`)
  await client.del(key('processing:c'))
  const limited = await reserve(5, 2, 60_000)
  t.same(limited.slice(0, 1), ['limited'], 'the batch that fills the window says so')
  t.ok(Number(limited[1]) > 59_000 && Number(limited[1]) <= 60_000, `with the ms until it has room (${limited[1]})`)
  t.same(limited.slice(2), ['w1', 'waiting one'], 'and brings the one task the window had room for')
  const full = await reserve(5, 2, 60_000)
  t.same([full.length, full[0]], [2, 'limited'], 'a full window reserves nothing')
  t.equal(await client.llen(key('waiting')), 2, 'the other tasks still wait')

  await client.lpush(key('recovered'), 'w2')
  await client.lrem(key('waiting'), 1, 'w2')
  await client.del(key('processing:c'))
  const [kind] = await reserve(1, 2, 60_000)
  t.equal(kind, 'limited', 'a recovered task waits for the window too')
  t.equal(await client.llen(key('recovered')), 1, 'and stays recovered')

  await client.del(key('processing:c'))
  t.same((await reserve(1, 3, 60_000)).slice(0, 2), ['recovered', 'w2'], 'with room (a larger max), it is reserved')
  t.equal(await client.llen(key('rate-log')), 3, 'and logged')
  const [now] = await client.time()
  await client.lpush(key('rate-log'), String((Number(now) + 3600) * 1000))
  await client.del(key('processing:c'))
  t.same((await reserve(1, 3, 60_000)).slice(0, 2), ['batch', 'w3'], 'a start in the future (a clock set back) forgets the log rather than hold the queue')
})

test('redis: issue 14: starts older than the window leave the log', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const key = (name: string): string => backend.key(name, 'q')
  await client.hset(key('tasks'), 'a', 'A', 'b', 'B')
  await client.lpush(key('waiting'), 'a', 'b')
  const [seconds] = await client.time()
  const old = (Number(seconds) - 10) * 1000
  await client.rpush(key('rate-log'), String(old), String(old - 1))
  const reply = await client.eval(scripts.taskqueueAckAndReserve.lua, 12, key('processing:c'), key('waiting'), key('tasks'), key('inflight'),
    key('cancelled'), key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'),
    key('group-of'), 2, 'c', 600, 2, 1000, key(''), 0) as string[]
  t.same(reply.slice(0, 1), ['limited'], 'two starts fill the window again')
  t.same(reply.slice(2), ['a', 'A', 'b', 'B'], 'after the starts of ten seconds ago left it')
  t.equal(await client.llen(key('rate-log')), 2, 'the log holds the two new starts only')
})

test('issue 14: bad rate limits fail register() with FST_TASKQUEUE_INVALID_OPTION naming the path', async (t) => {
  const cases: Array<[unknown, string]> = [
    [{ max: 0, timeWindow: 1000 }, 'queues[0].rateLimit.max'],
    [{ max: -1, timeWindow: 1000 }, 'queues[0].rateLimit.max'],
    [{ max: 1.5, timeWindow: 1000 }, 'queues[0].rateLimit.max'],
    [{ max: '5', timeWindow: 1000 }, 'queues[0].rateLimit.max'],
    [{ max: 5, timeWindow: 0 }, 'queues[0].rateLimit.timeWindow'],
    [{ max: 5, timeWindow: -1000 }, 'queues[0].rateLimit.timeWindow'],
    [{ max: 5, timeWindow: 0.5 }, 'queues[0].rateLimit.timeWindow'],
    [{ max: 5, timeWindow: 2 ** 31 }, 'queues[0].rateLimit.timeWindow'],
    [{ timeWindow: 1000 }, 'queues[0].rateLimit.max'],
    [{ max: 5 }, 'queues[0].rateLimit.timeWindow'],
    [{ max: 5, timeWindow: 1000, ban: 2 }, 'queues[0].rateLimit.ban'],
    [{ max: 5, timeWindow: '1 minute' }, 'queues[0].rateLimit.timeWindow'],
    [5, 'queues[0].rateLimit']
  ]
  for (const [rateLimit, path] of cases) {
    const app = Fastify()
    app.register(taskqueue, { queues: [{ rateLimit }] } as never)
    const error = await app.ready().then(() => undefined, (error: Error & { code?: string }) => error)
    await app.close().catch(() => {})
    t.equal(error?.code, 'FST_TASKQUEUE_INVALID_OPTION', `${JSON.stringify(rateLimit)}: coded as an invalid option`)
    t.ok(error?.message.startsWith(`Invalid taskqueue option: ${path}:`), `it names ${path}: ${error?.message}`)
  }
  const custom = Fastify()
  custom.register(taskqueue, { queues: [{ type: () => ({}) as never, rateLimit: { max: 1, timeWindow: 1 } }] })
  const error = await custom.ready().then(() => undefined, (error: Error & { code?: string }) => error)
  await custom.close().catch(() => {})
  t.match(error, { code: 'FST_TASKQUEUE_INVALID_OPTION', message: /queues\[0\]\.rateLimit: only a queue of type 'local' or 'redis'/ }, 'a custom backend limits itself')
})
