// A busy Redis consumer acknowledges and reserves in batches, but never reserves more than it has
// free slots for: a task in its processing list is one it started (or finished, its acknowledgement
// on its way). So when it dies, the tasks counted as recovered are those that may have killed it,
// never tasks it only held. Seen from Redis: the length of the consumer's processing list, sampled
// while it works.
import { test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import taskqueue, { type ConsumerOptions } from '../plugin'
import { redisForTest, scanKeys, sleep, waitUntil } from './helpers/redis-children'
import type { Test } from './helpers/harness'

const concurrentLimit = 2

/**
 * A producer app (ready) and a consumer app (its routes still to add) sharing a Redis queue of
 * the test's own.
 */
async function producerAndConsumer (t: Test, consumer: Omit<ConsumerOptions, 'queue'> = {}): Promise<{ client: Redis, prefix: string, producer: FastifyInstance, consumer: FastifyInstance }> {
  const { redis, client, prefix } = await redisForTest(t)
  const queues = [{ queue: 'default', type: 'redis' as const, prefix, ...redis.connection }]
  const producerApp = Fastify()
  t.teardown(() => producerApp.close())
  await producerApp.register(taskqueue, { queues })
  await producerApp.ready()
  const consumerApp = Fastify()
  t.teardown(() => consumerApp.close())
  await consumerApp.register(taskqueue, { queues, consumers: [{ queue: 'default', concurrentLimit, ...consumer }] })
  return { client, prefix, producer: producerApp, consumer: consumerApp }
}

/** Queues `count` tasks to `url`, 100 at a time. */
async function addMany (producer: FastifyInstance, url: string, count: number): Promise<void> {
  for (let n = 0; n < count; n += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - n) }, (_, i) => producer.taskqueue.add(url, { method: 'POST', payload: { n: n + i } })))
  }
}

/** Runs `tasks` quick tasks from a backlog; resolves with the longest the processing list was seen. */
async function consumeWhileSampling (t: Test, tasks: number): Promise<{ most: number, ran: number }> {
  const { client, prefix, producer, consumer } = await producerAndConsumer(t)
  await addMany(producer, '/tasks/work', tasks)
  let ran = 0
  consumer.post('/tasks/work', async () => {
    ran++
    return {}
  })
  await consumer.ready()

  let most = 0
  const sampling = { on: true }
  const sampler = (async () => {
    while (sampling.on) {
      for (const key of await scanKeys(client, `${prefix}:{default}:v2:processing:*`)) {
        most = Math.max(most, await client.llen(key))
      }
      await sleep(5)
    }
  })()
  await waitUntil(`${tasks} tasks to run`, () => ran >= tasks, 60_000)
  sampling.on = false
  await sampler
  await consumer.close()
  t.equal(await client.llen(`${prefix}:{default}:v2:waiting`), 0, 'nothing left waiting')
  return { most, ran }
}

test('a consumer of quick tasks holds no more tasks than its slots, however long the backlog', async (t) => {
  const { most, ran } = await consumeWhileSampling(t, 3000)
  t.equal(ran, 3000, 'every task ran once')
  t.ok(most >= 1 && most <= concurrentLimit, `its processing list never held more than its ${concurrentLimit} slots (at most ${most})`)
})

test('a retry comes back while a consumer works through a backlog that never runs dry', async (t) => {
  t.setTimeout(60_000)
  const { client, prefix, producer, consumer } = await producerAndConsumer(t, { retryDelay: { min: 10, max: 20 } })
  let quick = 0
  const retried = { tries: 0, ranAgainWithBacklog: -1 }
  consumer.post('/tasks/quick', async () => {
    quick++
    return {}
  })
  consumer.post('/tasks/fails-once', async (request, reply) => {
    if (retried.tries++ === 0) return reply.code(503).send({})
    retried.ranAgainWithBacklog = await client.llen(`${prefix}:{default}:v2:waiting`)
    return {}
  })
  // A backlog first, so that the consumer reserves in batches from its first round trips on.
  await addMany(producer, '/tasks/quick', 200)
  await producer.taskqueue.add('/tasks/fails-once', { method: 'POST', payload: {} })
  await consumer.ready()

  // The backlog never runs dry (it is topped up to a few hundred tasks), for up to 30 s: a retry
  // joins its back and is reached however slow the machine.
  const started = Date.now()
  while (retried.ranAgainWithBacklog < 0 && Date.now() - started < 30_000) {
    if (await client.llen(`${prefix}:{default}:v2:waiting`) < 300) await addMany(producer, '/tasks/quick', 50)
    await sleep(2)
  }
  t.equal(retried.tries, 2, 'the task that failed once ran again')
  t.ok(retried.ranAgainWithBacklog > 0, `while tasks were still waiting (${retried.ranAgainWithBacklog})`)
  t.ok(quick > 0, 'the backlog was being worked')
  await consumer.close()
})
