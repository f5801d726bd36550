// Schedules across instances (issue 14): three processes (test/fixtures/schedule-instance.js, on
// the built plugin) run the same every-second schedule on one Redis queue, one of them blocking its
// event loop so that its ticks come late, after the others added them and often after the task
// ran. Every tick runs exactly once in all, and none is skipped while the instances run.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { type ConsumerChild, cuttableProxy, ensureBuilt, list, loggedApp, redisForTest, sleep, startConsumer, waitUntil } from './helpers/redis-children'
import { startOwnRedis, uniquePrefix } from './helpers/redis'

test('three instances on one Redis queue: each tick of an every-second schedule runs exactly once', async (t) => {
  t.setTimeout(90_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const children: ConsumerChild[] = []
  t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })
  // The blocked one logs at debug level, where a tick it finds added already is told.
  for (const block of [0, 0, 700]) {
    const env: Record<string, string> = block === 0 ? { TQ_BLOCK: '0' } : { TQ_BLOCK: String(block), TQ_LOG_LEVEL: 'debug' }
    children.push(startConsumer({ connection: redis.connection, prefix, queue, script: 'schedule-instance.js', env }))
  }
  await Promise.all(children.map((child) => child.ready))
  const ticksRun = async (): Promise<string[]> => (await list(client, `${prefix}:runs`)).map((entry) => entry.split('|')[0])
  // Six ticks after every instance runs, then they stop.
  await waitUntil('six ticks to run', async () => new Set(await ticksRun()).size >= 7, 30_000, 100)
  await Promise.all(children.map((child) => child.stop('SIGTERM')))
  for (const child of children) t.equal((await child.exited).code, 0, 'an instance closes and exits 0 on SIGTERM')

  const runs = await ticksRun()
  const counts = new Map<string, number>()
  for (const id of runs) counts.set(id, (counts.get(id) ?? 0) + 1)
  const twice = [...counts].filter(([, count]) => count > 1)
  t.same(twice, [], `no tick ran twice (${runs.length} runs of ${counts.size} ticks)`)
  const ticks = [...counts.keys()].map((id) => Date.parse(id.replace(/^schedule:every-second:/, ''))).sort((a, b) => a - b)
  t.ok(ticks.every((tick) => Number.isFinite(tick) && tick % 1000 === 0), 'every task id is schedule:every-second:<tick ISO>')
  for (let index = 1; index < ticks.length; index++) t.equal(ticks[index] - ticks[index - 1], 1000, `no tick skipped before ${new Date(ticks[index]).toISOString()}`)
  const recorded = await client.hget(`${prefix}:{${queue}}:v2:schedules`, 'every-second')
  t.equal(Number(recorded), ticks[ticks.length - 1], 'the queue records the last tick added')
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:waiting`), 0, 'nothing left waiting')
  const late = children[2].stderr().split('\n').filter((line) => line.includes('the tick of the schedule was added already'))
  t.ok(late.length > 0, `the blocked instance, ticking late, found ticks added by another and added nothing (${late.length} time(s) in its last log lines)`)
})

test('an instance cut off from Redis logs the ticks it could not add, carries on, and adds the next ones once back', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const proxy = await cuttableProxy(redis.socketPath)
  t.teardown(() => proxy.close())
  const prefix = uniquePrefix()
  const queue = 'ticks'
  const schedule = { name: 'every-second', cron: '* * * * * *', url: '/tasks/tick', queue }

  // The scheduling instance reaches Redis through the proxy; the consumer directly.
  const { app: scheduling, lines } = loggedApp({}, 'warn')
  t.teardown(() => scheduling.close())
  await scheduling.register(taskqueue, {
    queues: [{ queue, type: 'redis', prefix, unixSocketPath: proxy.socketPath, commandTimeout: 300 }],
    consumers: [],
    schedules: [schedule]
  })
  await scheduling.ready()
  const consumer = Fastify()
  t.teardown(() => consumer.close())
  await consumer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }], consumers: [{ queue }] })
  const ran: string[] = []
  consumer.get('/tasks/tick', async (request) => {
    ran.push(request.taskqueue.task?.id as string)
    return 'ok'
  })
  await consumer.ready()

  await waitUntil('a tick to run', () => ran.length >= 1, 5000)
  await proxy.cut()
  const failed = (): number => lines.filter(({ err }) => (err as { code?: string } | undefined)?.code === 'FST_TASKQUEUE_SCHEDULE_FAILED').length
  await waitUntil('a tick that could not be added to be logged', () => failed() >= 1, 10_000)
  await sleep(1500)
  t.ok(failed() >= 2, `each tick that could not be added is logged (${failed()})`)
  const line = lines.find(({ err }) => (err as { code?: string } | undefined)?.code === 'FST_TASKQUEUE_SCHEDULE_FAILED')
  t.match(line, { level: 50, schedule: 'every-second', queue }, 'at error level, naming the schedule and the queue')
  t.ok(scheduling.taskqueue.schedules()[0].nextRun instanceof Date, 'the schedule goes on')

  await proxy.restore()
  const before = ran.length
  await waitUntil('ticks to run again once Redis is back', () => ran.length >= before + 2, 20_000)
  await scheduling.close()
  await sleep(300)
  t.equal(new Set(ran).size, ran.length, `no tick ran twice (${ran.length} runs)`)
})
