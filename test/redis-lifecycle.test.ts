// The Redis queue's connection lifecycle (issue 11): a prompt wake-up after a Redis restart.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { startOwnRedis, uniquePrefix } from './helpers/redis'
import { sleep, waitUntil } from './helpers/redis-children'

// issue 11, point 6: the blocking read in flight when the link dropped was settled only by its 5 s
// guard: an idle consumer was deaf for about 6 s after a Redis restart.
test('issue 11, point 6: an idle consumer starts a task pushed right after a Redis restart within about a second', async (t) => {
  t.setTimeout(60_000)
  const redis = await startOwnRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue: 'jobs', type: 'redis', prefix, ...redis.connection, heartbeatInterval: 200 }],
    consumers: [{ queue: 'jobs' }]
  })
  const startedAt: number[] = []
  app.post('/tasks/work', async () => {
    startedAt.push(Date.now())
    return 'ok'
  })
  await app.ready()
  await app.taskqueue.add('/tasks/work', { method: 'POST', payload: {} })
  await waitUntil('the first task to run', () => startedAt.length === 1, 5000)
  // The consumer is idle, in a blocking read, when Redis goes.
  await sleep(300)
  await redis.stop()
  await redis.start()
  const client = redis.client()
  // A task another instance pushes: the message format of the queue, written as it would.
  const pushedAt = Date.now()
  await client.lpush(`${prefix}:{jobs}:waiting`, JSON.stringify({
    v: 1, id: 'after-restart', queue: 'jobs', url: '/tasks/work', method: 'POST', headers: {}, retries: 0, createdAt: pushedAt, eta: pushedAt
  }))
  await waitUntil('the task pushed after the restart to start', () => startedAt.length === 2, 10_000)
  const delay = startedAt[1] - pushedAt
  t.ok(delay < 1500, `it started ${delay} ms after it was pushed (within about a second)`)
})
