// The `client` option with the app's own ioredis 5 (issue 11, "Packaging and types": the README
// supports ioredis 5 and 6 clients and Clusters, and the app's copy is never the plugin's).
// Real redis-server processes: one server, and a throwaway cluster of three masters.
import { execFileSync } from 'node:child_process'
import { test } from 'tap'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis5'
import taskqueue from '../plugin'
import { uniquePrefix } from './helpers/redis'
import { startRedisCluster } from './helpers/redis-cluster'
import { connectionNames, redisForTest, waitUntil } from './helpers/redis-children'

test('an ioredis 5 client runs tasks', async (t) => {
  const { redis, prefix } = await redisForTest(t)
  const client = 'url' in redis.connection
    ? new Redis5(redis.connection.url)
    : new Redis5({ path: redis.connection.unixSocketPath })
  t.teardown(() => client.disconnect())
  const app = Fastify()
  await app.register(taskqueue, { queues: [{ queue: 'five', type: 'redis', prefix, client }], consumers: [{ queue: 'five' }] })
  const ran: string[] = []
  app.post('/tasks/run', async (request) => {
    ran.push(request.headers['x-task-id'] as string)
    return 'ok'
  })
  await app.ready()
  const id = await app.taskqueue.add('/tasks/run', { method: 'POST', queue: 'five' })
  await waitUntil('the task to run', () => ran.length === 1, 10_000)
  t.same(ran, [id], 'the task ran once')
  await app.close()
  t.equal(client.status, 'ready', 'the client handed in is left open')
})

function redisServerRuns (): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

test('an ioredis 5 Cluster: the consumer\'s blocking connection gets its own options', {
  skip: redisServerRuns() ? false : 'redis-server is not on the PATH: no cluster can be started'
}, async (t) => {
  // A Cluster was told apart with `instanceof` the plugin's own ioredis 6 Cluster: an ioredis 5
  // one was duplicated as a single client, its blocking options taken for startup nodes and lost.
  t.setTimeout(120_000)
  const cluster = await startRedisCluster()
  t.teardown(() => cluster.close())
  const client = new Cluster5(cluster.nodes)
  t.teardown(() => client.disconnect())
  const queue = 'mail'
  const prefix = uniquePrefix()
  const app = Fastify()
  await app.register(taskqueue, { queues: [{ queue, type: 'redis', prefix, client }], consumers: [{ queue }] })
  let runs = 0
  app.post('/tasks/run', async () => {
    runs++
    return 'ok'
  })
  await app.ready()
  await app.taskqueue.add('/tasks/run', { method: 'POST', queue })
  await waitUntil('the task to run', () => runs === 1, 10_000)

  const node = await cluster.nodeOf(`{${queue}}`)
  const observer = new Redis({ host: node.host, port: node.port })
  t.teardown(() => observer.disconnect())
  // The blocking connection opens once the consumer finds the queue empty: on a loaded machine,
  // after the task ran. Wait for it rather than read the list once.
  const named = async (): Promise<boolean> => (await connectionNames(observer)).includes(`fastify-taskqueue:${queue}:consumer`)
  await waitUntil('the blocking connection to connect', named, 10_000, 100).catch(() => {})
  t.ok(await named(), 'the blocking connection carries its own name on the queue\'s node')
  await app.close()
})
