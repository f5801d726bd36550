// Groups across instances (issue 14): two apps on one Redis queue keep each group within
// groupConcurrency in all and serve the groups in turn; a consumer process killed with SIGKILL
// while its grouped tasks run gives their groups' slots back with the tasks, and every task runs.
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import taskqueue from '../plugin'
import { type ConsumerChild, ensureBuilt, list, redisForTest, startConsumer, waitUntil } from './helpers/redis-children'
import { sleep } from './helpers/harness'

test('issue 14: two apps on one queue keep each group within groupConcurrency in all, and serve the groups in turn', async (t) => {
  const { redis, prefix } = await redisForTest(t)
  const queue = { queue: 'work', type: 'redis' as const, prefix, ...redis.connection, groupConcurrency: 2 }
  const now = new Map<string, number>()
  const most = new Map<string, number>()
  const started: string[] = []
  const apps: FastifyInstance[] = []
  for (let n = 0; n < 2; n++) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(taskqueue, { queues: [queue], consumers: [{ queue: 'work', concurrentLimit: 10 }, { queue: 'work', concurrentLimit: 10 }] })
    app.post('/tasks/:name', async (request) => {
      const { name } = request.params as { name: string }
      const group = request.taskqueue.task?.group ?? ''
      started.push(name)
      now.set(group, (now.get(group) ?? 0) + 1)
      most.set(group, Math.max(most.get(group) ?? 0, now.get(group) as number))
      await sleep(10)
      now.set(group, (now.get(group) as number) - 1)
      return { ok: true }
    })
    await app.ready()
    apps.push(app)
  }
  const [one, two] = apps
  const handle = one.taskqueue.queue('work')
  await handle.pause()
  for (let n = 0; n < 100; n++) await (n % 2 === 0 ? one : two).taskqueue.add(`/tasks/big-${n}`, { method: 'POST', group: 'big' })
  for (const group of ['a', 'b', 'c']) {
    for (let n = 0; n < 10; n++) await two.taskqueue.add(`/tasks/${group}-${n}`, { method: 'POST', group })
  }
  await one.taskqueue.add('/tasks/late', { method: 'POST', group: 'late' })
  for (let n = 0; n < 20; n++) await one.taskqueue.add(`/tasks/none-${n}`, { method: 'POST' })
  t.match(await handle.stats(), { waiting: 151 }, 'every task waits, grouped or not')
  await handle.resume()
  await two.taskqueue.queue('work').resume()

  await waitUntil('every task to run', async () => started.length >= 151 && (await handle.stats()).inFlight === 0, 30_000)
  t.equal(new Set(started).size, 151, 'each task ran once')
  for (const group of ['big', 'a', 'b', 'c']) t.equal(most.get(group), 2, `group ${group}: at most 2 in flight across both apps, and 2 reached`)
  t.ok((most.get('') as number) > 2, `tasks without a group are not limited by it (${most.get('')} at once)`)
  const late = started.indexOf('late')
  t.ok(late < 20, `the group added last started ${late}th of 151, not after the backlog of group big`)
  const client = redis.client()
  const key = (name: string): string => `${prefix}:{work}:v2:${name}`
  t.same(await client.hgetall(key('group-inflight')), {}, 'no group counts a task in flight')
  t.equal(await client.exists(key('group-turns'), key('group-full'), key('group-of')), 0, 'no group takes turns or waits aside, no task is left in a group')
  t.equal(Number(await client.get(key('group-waiting'))), 0, 'the group lists are empty')
})

test('issue 14: kill -9 of a consumer running grouped tasks gives their groups\' slots back, and every task runs', async (t) => {
  t.setTimeout(60_000)
  ensureBuilt()
  const { redis, client, prefix } = await redisForTest(t)
  const queue = 'work'
  const key = (name: string): string => `${prefix}:{${queue}}:v2:${name}`
  const env = { connection: redis.connection, prefix, queue, heartbeatInterval: 200, concurrentLimit: 10, groupConcurrency: 1, minDelay: 20, maxDelay: 40 }
  const children: ConsumerChild[] = []
  t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })

  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, ...redis.connection, groupConcurrency: 1 }] })
  await producer.ready()
  // The first task of each group holds its process for a while: the kill comes while they run.
  for (const group of ['a', 'b', 'c']) {
    await producer.taskqueue.add('/tasks/work', { method: 'POST', group, payload: { n: `${group}-0`, hold: 1500 } })
    for (let n = 1; n < 5; n++) await producer.taskqueue.add('/tasks/work', { method: 'POST', group, payload: { n: `${group}-${n}` } })
  }
  for (let n = 0; n < 5; n++) await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n: `none-${n}` } })

  const victim = startConsumer(env)
  children.push(victim)
  await victim.ready
  await waitUntil('the victim to run the first task of each group', async () => {
    const started = await list(client, `${prefix}:started`)
    return ['a-0', 'b-0', 'c-0'].every((n) => started.some((entry) => entry.startsWith(`${n}:`)))
  }, 10_000)
  t.same(await client.hgetall(key('group-inflight')), { a: '1', b: '1', c: '1' }, 'one task of each group in flight, the limit')
  t.same((await client.smembers(key('group-full'))).sort(), ['a', 'b', 'c'], 'each group set aside at its limit')
  await victim.stop('SIGKILL')

  const survivor = startConsumer({ ...env, minDelay: 5, maxDelay: 10 })
  children.push(survivor)
  await survivor.ready
  const done = async (): Promise<Set<string>> => new Set((await list(client, `${prefix}:done`)).map((entry) => entry.split(':')[0]))
  await waitUntil('every task to be done', async () => (await done()).size === 20, 30_000, 50)
  const started = (await list(client, `${prefix}:started`)).map((entry) => entry.split(':'))
  for (const group of ['a', 'b', 'c']) {
    t.ok(started.filter(([n, pid]) => n === `${group}-0` && Number(pid) === survivor.pid).length === 1, `${group}-0 ran again in the survivor after the kill`)
  }
  await waitUntil('the last acknowledgements', async () => await client.hlen(key('inflight')) === 0, 5000)
  t.same(await client.hgetall(key('group-inflight')), {}, 'every group slot was given back')
  t.equal(await client.exists(key('group-turns'), key('group-full'), key('group-of')), 0, 'no group is left taking turns, aside, or with a live task')
  t.equal(await client.llen(key('dead')), 0, 'no task was buried')
  await survivor.stop('SIGTERM')
})

test('issue 14: a grouped task released at close goes back to the head of its group, its slot given back', async (t) => {
  const { redis, client, prefix } = await redisForTest(t)
  const queue = { queue: 'work', type: 'redis' as const, prefix, ...redis.connection, groupConcurrency: 1 }
  const key = (name: string): string => `${prefix}:{work}:v2:${name}`
  const runs: string[] = []
  const build = async (hold: boolean): Promise<FastifyInstance> => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(taskqueue, { queues: [queue], consumers: [{ queue: 'work', concurrentLimit: 5 }], closeTimeout: 200 })
    app.post('/tasks/:name', async (request) => {
      runs.push((request.params as { name: string }).name)
      if (hold) await sleep(2000)
      return { ok: true }
    })
    await app.ready()
    return app
  }
  const first = await build(true)
  await first.taskqueue.add('/tasks/one', { method: 'POST', group: 'g', id: 'one' })
  await first.taskqueue.add('/tasks/two', { method: 'POST', group: 'g', id: 'two' })
  await waitUntil('the first task to start', () => runs.includes('one'), 5000)
  t.same(await client.hgetall(key('group-inflight')), { g: '1' }, 'the group is at its limit')
  await first.close()
  t.same(await client.hgetall(key('group-inflight')), {}, 'the released task gave its slot back')
  t.same(await client.lrange(key('group:g'), 0, -1), ['two', 'one'], 'it is next in its group again')
  t.equal(await client.hget(key('group-of'), 'one'), 'g', 'it keeps its group')

  const second = await build(false)
  await waitUntil('both tasks to run in another app', () => runs.filter((name) => name === 'one').length === 2 && runs.includes('two'), 5000)
  t.same(runs, ['one', 'one', 'two'], 'the released task ran first, then the next of its group')
  await second.close()
})
