// The Redis queue on a real Redis Cluster (three masters on loopback ports, test/helpers/redis-cluster.ts):
// every key of a queue shares its hash tag, so each queue lives whole on one node, and every
// script, the blocking read and the recovery of an expired consumer run there.
import { execFileSync } from 'node:child_process'
import { test } from 'tap'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import taskqueue from '../plugin'
import { uniquePrefix } from './helpers/redis'
import { startRedisCluster } from './helpers/redis-cluster'
import { ensureBuilt, loggedApp, sleep, startConsumer, waitUntil, within, type ConsumerChild } from './helpers/redis-children'

// Hash slots 4247, 6132 and 12682: one queue on each of the three nodes.
const queues = ['mail', 'work', 'billing']

/** Whether redis-server can be run here; with REDIS_URL set, the other Redis tests need none. */
function redisServerRuns (): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

const skip = process.env.REDIS_URL !== undefined && process.env.REDIS_URL !== '' && !redisServerRuns()
  ? 'REDIS_URL is set and redis-server is not on the PATH: no cluster can be started'
  : false

test('redis cluster', { skip }, async (t) => {
  t.setTimeout(120_000)
  const cluster = await startRedisCluster()
  t.teardown(() => cluster.close())

  t.test('queues on three nodes: tasks, retries, delays, named ids and dead letters', async (t) => {
    const nodes = await Promise.all(queues.map(async (queue) => await cluster.nodeOf(`{${queue}}`)))
    t.equal(new Set(nodes.map(({ port }) => port)).size, 3, 'the three queues live on three different nodes')

    const client = cluster.client()
    const prefix = uniquePrefix()
    const app = Fastify()
    await app.register(taskqueue, {
      queues: queues.map((queue) => ({ queue, type: 'redis' as const, client, prefix, heartbeatInterval: 200 })),
      consumers: queues.map((queue) => ({ queue, concurrentLimit: 2, retryMaxCount: 2, retryDelay: { min: 20, max: 50 } }))
    })
    const ran: string[] = []
    const tries = new Map<string, number>()
    const ranAt = new Map<string, number>()
    app.post('/tasks/run', { config: { taskOnly: true } }, async (request, reply) => {
      const { name, failures = 0 } = request.body as { name: string, failures?: number }
      const task = `${request.headers['x-task-queue'] as string}:${name}`
      const tried = (tries.get(task) ?? 0) + 1
      tries.set(task, tried)
      if (tried <= failures) return await reply.code(500).send({ tried })
      ran.push(task)
      ranAt.set(task, Date.now())
      return { ok: true }
    })
    app.post('/order', async (request) => {
      for (const queue of queues) request.taskqueue.add('/tasks/run', { method: 'POST', queue, payload: { name: 'order' } })
      return { ok: true }
    })
    await app.ready()

    t.equal((await app.inject({ method: 'POST', url: '/order', payload: {} })).statusCode, 200)
    const addedAt = Date.now()
    for (const queue of queues) {
      await app.taskqueue.add('/tasks/run', { method: 'POST', queue, payload: { name: 'flaky', failures: 1 } })
      await app.taskqueue.add('/tasks/run', { method: 'POST', queue, payload: { name: 'late' }, delay: 300 })
      t.equal(await app.taskqueue.add('/tasks/run', { method: 'POST', queue, payload: { name: 'named' }, id: `named-${queue}` }), `named-${queue}`)
      t.equal(await app.taskqueue.add('/tasks/run', { method: 'POST', queue, payload: { name: 'named-again' }, id: `named-${queue}` }), `named-${queue}`,
        'adding a live named id again returns its id')
    }
    await app.taskqueue.add('/tasks/run', { method: 'POST', queue: 'work', payload: { name: 'broken', failures: 99 } })

    const expected = queues.flatMap((queue) => ['order', 'flaky', 'late', 'named'].map((name) => `${queue}:${name}`)).sort()
    await waitUntil('every task to run', () => ran.length >= expected.length, 20_000)
    await waitUntil('the broken task to be given up', async () => (await app.taskqueue.queue('work').dead()).length === 1, 20_000)
    await sleep(100)
    t.same([...ran].sort(), expected, 'every task ran once, on its queue; the second add of a named id was a no-op')
    for (const queue of queues) {
      t.equal(tries.get(`${queue}:flaky`), 2, `${queue}: the flaky task ran again after its failure`)
      t.ok((ranAt.get(`${queue}:late`) ?? 0) - addedAt >= 300, `${queue}: the delayed task waited for its time`)
    }
    const [dead] = await app.taskqueue.queue('work').dead()
    t.match(dead, { reason: 'retries exhausted', statusCode: 500, task: { payload: '{"name":"broken","failures":99}' } })
    t.equal(tries.get('work:broken'), 3, 'the broken task was tried once and retried twice')

    // The dead letters are where the queue's hash tag says: on the node of `{work}`, read directly.
    const workNode = nodes[queues.indexOf('work')]
    const direct = new Redis({ host: workNode.host, port: workNode.port })
    t.teardown(() => direct.disconnect())
    t.equal(await direct.llen(`${prefix}:{work}:v2:dead`), 1, 'the dead letters of "work" are on the node serving its hash tag')

    await within('close()', app.close(), 5_000)
    t.equal(await client.ping(), 'PONG', 'the Cluster client handed in stays open')
    for (const queue of queues) {
      const node = nodes[queues.indexOf(queue)]
      const nodeClient = new Redis({ host: node.host, port: node.port })
      const keys = await nodeClient.keys(`${prefix}:{${queue}}:*`)
      nodeClient.disconnect()
      t.same(keys.filter((key) => !/:(lease|dead|dead-index|wake)$/.test(key)), [], `${queue}: nothing left waiting, in flight or delayed`)
    }
  })

  t.test('a consumer killed with SIGKILL: another one recovers its tasks', async (t) => {
    ensureBuilt()
    const client = cluster.client()
    const prefix = uniquePrefix()
    const queue = 'work'
    const env = { connection: { cluster: cluster.nodes }, prefix, queue, heartbeatInterval: 200, concurrentLimit: 2 }
    const children: ConsumerChild[] = []
    t.teardown(async () => { await Promise.all(children.map((child) => child.stop('SIGKILL'))) })

    const producer = Fastify()
    t.teardown(() => producer.close())
    await producer.register(taskqueue, { queues: [{ queue, type: 'redis', client, prefix }] })
    await producer.ready()
    // Tasks that hold their consumer long enough to be killed in the middle of them.
    for (let n = 0; n < 6; n++) await producer.taskqueue.add('/tasks/work', { method: 'POST', payload: { n, hold: 400 } })

    const victim = startConsumer({ ...env, name: 'victim' })
    children.push(victim)
    await victim.ready
    await waitUntil('the victim to start two tasks', async () => await client.llen(`${prefix}:started`) >= 2, 10_000)
    await victim.stop('SIGKILL')
    const interrupted = (await client.lrange(`${prefix}:started`, 0, -1)).map((entry) => entry.split(':')[0])
    t.ok(interrupted.length >= 2, `the victim was killed in the middle of tasks ${interrupted.join(', ')}`)

    const rescuer = startConsumer({ ...env, name: 'rescuer' })
    children.push(rescuer)
    await rescuer.ready
    await waitUntil('every task to be done', async () => new Set(await client.lrange(`${prefix}:done`, 0, -1)).size >= 6, 20_000)
    const done = (await client.lrange(`${prefix}:done`, 0, -1)).map((entry) => entry.split(':'))
    t.same(done.map(([n]) => Number(n)).sort(), [0, 1, 2, 3, 4, 5], 'every task finished once')
    t.ok(done.every(([, pid]) => Number(pid) === rescuer.pid), 'all by the rescuer: the victim finished none')
    await rescuer.stop('SIGTERM')
    t.equal((await rescuer.exited).code, 0, 'the rescuer closes cleanly')
    t.equal(await client.scard(`${prefix}:{${queue}}:v2:consumers`), 0, 'the expired consumer was recovered and the live one left')
  })

  // Issue 14: the record of a schedule's ticks lives in its queue's slot, beside the tasks.
  t.test('schedules on queues of three nodes: two instances, each tick once', async (t) => {
    const prefix = uniquePrefix()
    const ran: string[] = []
    const instance = async (consume: boolean) => {
      const app = Fastify()
      await app.register(taskqueue, {
        queues: queues.map((queue) => ({ queue, type: 'redis' as const, client: cluster.client(), prefix })),
        consumers: consume ? queues.map((queue) => ({ queue })) : [],
        schedules: queues.map((queue) => ({ name: `each-second-${queue}`, cron: '* * * * * *', url: '/tasks/tick', queue }))
      })
      app.get('/tasks/tick', async (request) => {
        ran.push(request.headers['x-task-id'] as string)
        return 'ok'
      })
      await app.ready()
      return app
    }
    const apps = [await instance(true), await instance(false)]
    // Each queue's own count: a consumer that connects late under load must not leave the test
    // to end on the other queues' ticks alone.
    const runsOf = (queue: string) => ran.filter((id) => id.startsWith(`schedule:each-second-${queue}:`)).length
    await waitUntil('three ticks of each schedule to run', () => queues.every((queue) => runsOf(queue) >= 3), 15_000)
    const [first] = ran
    const tick = Date.parse(first.replace(/^schedule:each-second-\w+:/, ''))
    const name = first.split(':')[1]
    t.equal(await (apps[1].taskqueue as unknown as { scheduler: { addTick: (name: string, tick: number) => Promise<boolean> } }).scheduler.addTick(name, tick), false,
      'a tick that ran is not added again by a late instance')
    await Promise.all(apps.map((app) => within('close()', app.close(), 5_000)))
    await sleep(200)
    t.equal(new Set(ran).size, ran.length, `no tick ran twice (${ran.length} runs)`)
    t.same(new Set(ran.map((id) => id.split(':')[1])), new Set(queues.map((queue) => `each-second-${queue}`)), 'the schedules of the three queues ran')
  })

  t.test('the node of a queue goes down and comes back: nothing queued is lost', async (t) => {
    const client = cluster.client()
    const prefix = uniquePrefix()
    const queue = 'billing'
    const node = await cluster.nodeOf(`{${queue}}`)
    const nodeIndex = cluster.nodes.findIndex(({ port }) => port === node.port)

    const { app, lines } = loggedApp()
    await app.register(taskqueue, {
      queues: [{ queue, type: 'redis', client, prefix, heartbeatInterval: 200 }],
      consumers: [{ queue, concurrentLimit: 2, retryDelay: { min: 20, max: 50 } }]
    })
    const ran = new Set<number>()
    app.post('/tasks/bill', async (request) => {
      ran.add((request.body as { n: number }).n)
      return { ok: true }
    })
    app.post('/order/:n', async (request) => {
      request.taskqueue.add('/tasks/bill', { method: 'POST', payload: { n: Number((request.params as { n: string }).n) } })
      return { ok: true }
    })
    await app.ready()
    t.teardown(() => app.close())

    for (let n = 0; n < 5; n++) await app.inject({ method: 'POST', url: `/order/${n}`, payload: {} })
    await waitUntil('the first tasks to run', () => ran.size === 5, 10_000)

    // While the node is down, responses are still sent; their tasks wait in the process.
    await cluster.stopNode(nodeIndex)
    for (let n = 5; n < 10; n++) t.equal((await app.inject({ method: 'POST', url: `/order/${n}`, payload: {} })).statusCode, 200)
    await sleep(500)
    t.equal(ran.size, 5, 'nothing ran while the node was down')
    await cluster.startNode(nodeIndex)
    // Orders go on: the first push that lands sends those of the outage at once.
    t.equal((await app.inject({ method: 'POST', url: '/order/10', payload: {} })).statusCode, 200)

    await waitUntil('the tasks queued during the outage to run', () => ran.size === 11, 30_000).catch(async (error: unknown) => {
      // Where the tasks are, and what the app said, for whoever reads a failure.
      const direct = new Redis({ host: node.host, port: node.port })
      const keys = await direct.keys(`${prefix}:*`)
      const sizes = await Promise.all(keys.map(async (key) => `${key}: ${await direct.type(key)} ${await direct.call('MEMORY', 'USAGE', key) as number}`))
      direct.disconnect()
      t.comment(`ran ${[...ran].join(',')}; keys ${sizes.join('; ')}`)
      for (const { level, msg, err } of lines.filter(({ level }) => level >= 40)) t.comment(`${level} ${msg} ${(err as { message?: string } | undefined)?.message ?? ''}`)
      throw error
    })
    t.same([...ran].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'every task ran')
    // And the consumer is still reading: a task queued after the outage runs too.
    await app.inject({ method: 'POST', url: '/order/11', payload: {} })
    await waitUntil('a task queued after the outage to run', () => ran.has(11), 10_000)
    await within('close()', app.close(), 5_000)
  })
})
