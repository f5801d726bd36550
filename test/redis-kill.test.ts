// The kill test: consumer processes (test/fixtures/redis-consumer.js, on the built plugin) share a
// Redis queue; one of them is killed with SIGKILL in the middle of tasks, again and again, and
// replaced. Every task queued runs at least once; only tasks in flight at a kill may run twice.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { type ConsumerChild, type ConsumerEnv, ensureBuilt, list, redisForTest, scanKeys, sleep, startConsumer, waitUntil } from './helpers/redis-children'

test('consumers killed with SIGKILL again and again: every task runs, only those in flight at a kill may run twice', async (t) => {
  t.setTimeout(120_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const total = 600
  const kills = 6
  const concurrentLimit = 2
  const env: ConsumerEnv = { connection: redis.connection, prefix, queue, heartbeatInterval: 200, concurrentLimit, minDelay: 20, maxDelay: 60 }

  const children: ConsumerChild[] = []
  // Whatever happens, no child outlives the test.
  t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })
  const spawnOne = (): ConsumerChild => {
    const child = startConsumer(env)
    children.push(child)
    return child
  }

  // The tasks are queued before any consumer runs.
  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection }] })
  await producer.ready()
  for (let n = 0; n < total; n++) await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n } })
  t.equal(await producer.taskqueue.queue(queue).length(), total, `${total} tasks queued`)

  // Entries `<n>:<pid>`: which task ran, in which process.
  const entries = async (key: 'started' | 'done'): Promise<Array<{ n: string, pid: number }>> =>
    (await list(client, `${prefix}:${key}`)).map((entry) => {
      const [n, pid] = entry.split(':')
      return { n, pid: Number(pid) }
    })
  const doneCount = async (): Promise<number> => new Set((await entries('done')).map(({ n }) => n)).size
  for (let i = 0; i < 3; i++) spawnOne()
  await Promise.all(children.map((child) => child.ready))

  // Every ~300 ms, a running child is killed and a new one started.
  const killedPids: number[] = []
  let killedMidRun = 0
  for (let kill = 0; kill < kills; kill++) {
    await sleep(300)
    // A replacement may still be starting: wait (a while at most) until a child runs.
    await waitUntil('a running child to kill', () => children.some((child) => child.isReady && !child.isGone), 10_000)
    const candidates = children.filter((child) => child.isReady && !child.isGone)
    const victim = candidates[Math.floor(Math.random() * candidates.length)]
    if (await doneCount() < total) killedMidRun++
    await victim.stop('SIGKILL')
    killedPids.push(victim.pid)
    spawnOne()
  }
  t.equal(killedPids.length, kills, `${kills} consumers killed`)
  t.equal(killedMidRun, kills, 'every kill came while tasks were still to be done')

  await waitUntil('every task to be done', async () => await doneCount() >= total, 60_000, 100)
  const live = children.filter((child) => !child.isGone)
  // A consumer killed with nothing left undone may not be recovered yet: give the live ones time.
  await waitUntil('the killed consumers to be recovered', async () =>
    await client.scard(`${prefix}:{${queue}}:v2:consumers`) === live.length, 10_000, 50)
  await Promise.all(live.map((child) => child.stop('SIGTERM')))
  for (const child of live) {
    const { code, signal } = await child.exited
    t.equal(code, 0, `a child stopped with SIGTERM closes and exits 0${signal === null ? '' : ` (got ${signal})`}`)
  }

  // Tasks a killed process started and did not finish: those in flight at its kill.
  const started = await entries('started')
  const finished = new Set((await entries('done')).map(({ n, pid }) => `${n}:${pid}`))
  const interrupted = started.filter(({ n, pid }) => killedPids.includes(pid) && !finished.has(`${n}:${pid}`)).length
  t.ok(interrupted > 0, `kills came in the middle of tasks (${interrupted} task(s) interrupted)`)

  const records = await entries('done')
  const counts = new Map<string, number>()
  for (const { n } of records) counts.set(n, (counts.get(n) ?? 0) + 1)
  const missing = Array.from({ length: total }, (_, n) => String(n)).filter((n) => !counts.has(n))
  t.same(missing, [], 'every task queued ran at least once')
  const twice = [...counts.values()].filter((count) => count > 1).length
  t.comment(`${kills} kills (concurrentLimit ${concurrentLimit}), ${interrupted} task(s) interrupted: ${twice} task(s) ran twice, ${records.length} runs for ${total} tasks`)
  const startCounts = new Map<string, number>()
  for (const { n } of started) startCounts.set(n, (startCounts.get(n) ?? 0) + 1)
  t.comment(`task(s) started more than once (run again after a kill, finished or not the first time): ${[...startCounts.values()].filter((count) => count > 1).length}`)
  t.ok(twice <= kills * concurrentLimit, `duplicates (${twice}) <= kills x concurrentLimit (${kills * concurrentLimit})`)

  // Nothing is left behind: no waiting or reserved task, no dead letter, no expired consumer.
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:waiting`), 0, 'the queue is empty')
  t.equal(await client.llen(`${prefix}:{${queue}}:v2:dead`), 0, 'no task was buried')
  t.same(await scanKeys(client, `${prefix}:{${queue}}:v2:processing:*`), [], 'no processing list is left')
  t.equal(await client.scard(`${prefix}:{${queue}}:v2:consumers`), 0, 'the killed consumers were recovered and the others left')
})
