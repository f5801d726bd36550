// The original's acceptance test: two Fastify instances share a Redis queue, one only produces,
// the other consumes one task at a time; 1000 tasks queued through real requests run exactly
// once each, in order.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { redisForTest, scanKeys, sleep, waitUntil } from './helpers/redis-children'

test('two instances share a queue: 1000 tasks queued through requests on one run exactly once, in order, on the other', async (t) => {
  t.setTimeout(120_000)
  const { redis, client, prefix } = await redisForTest(t)
  const queues = [{ queue: 'shared', type: 'redis' as const, prefix, ...redis.connection, heartbeatInterval: 200 }]

  // The producer: with `queues` given and `consumers` left out, the shared queue gets no consumer
  // here, so the task route it also has never runs.
  const producer = Fastify()
  t.teardown(() => producer.close())
  await producer.register(taskqueue, { queues })
  let ranOnProducer = 0
  producer.post('/tasks/record', async () => {
    ranOnProducer++
    return 'ok'
  })
  producer.post<{ Params: { n: string } }>('/produce/:n', async (request) => {
    request.taskqueue.add('/tasks/record', { method: 'POST', payload: { n: Number(request.params.n) } })
    return 'ok'
  })
  await producer.ready()

  const consumer = Fastify()
  t.teardown(() => consumer.close())
  await consumer.register(taskqueue, { queues, consumers: [{ queue: 'shared', concurrentLimit: 1 }] })
  const seen: number[] = []
  consumer.post<{ Body: { n: number } }>('/tasks/record', async (request) => {
    seen.push(request.body.n)
    return 'ok'
  })
  await consumer.ready()

  const total = 1000
  const statuses = new Map<number, number>()
  for (let n = 0; n < total; n++) {
    const response = await producer.inject({ method: 'POST', url: `/produce/${n}` })
    statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
  }
  t.same([...statuses], [[200, total]], 'every producing request answered 200')

  await waitUntil(`${total} tasks to run`, () => seen.length >= total, 60_000)
  // Anything run twice would show up now.
  await sleep(500)
  t.equal(seen.length, total, 'as many runs as tasks')
  t.equal(new Set(seen).size, total, 'each task ran once')
  t.ok(seen.every((n, index) => n === index), 'in the order queued')
  t.equal(ranOnProducer, 0, 'nothing ran on the producer')

  t.equal(await consumer.taskqueue.queue('shared').length(), 0, 'the queue is empty')
  const processing = await scanKeys(client, `${prefix}:{shared}:v2:processing:*`)
  t.same(processing, [], 'no task is left reserved')
  t.equal(await client.llen(`${prefix}:{shared}:v2:dead`), 0, 'no task was buried')
})
