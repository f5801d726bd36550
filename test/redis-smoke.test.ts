import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import { testRedis, uniquePrefix } from './helpers/redis'

test('redis smoke', async (t) => {
  const redis = await testRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const app = Fastify()
  const seen: string[] = []
  await app.register(taskqueue, { queues: [{ queue: 'default', type: 'redis', prefix, ...redis.connection }], consumers: [{ queue: 'default', concurrentLimit: 1 }] })
  app.post('/tasks/x', async (request) => { seen.push((request.body as any).n); return 'ok' })
  app.get('/q', async (request) => { request.taskqueue.add('/tasks/x', { method: 'POST', payload: { n: 'a' } }); request.taskqueue.add('/tasks/x', { method: 'POST', payload: { n: 'b' } }); return 'ok' })
  await app.ready()
  await app.inject('/q')
  await app.taskqueue.add('/tasks/x', { method: 'POST', payload: { n: 'c' } })
  while (seen.length < 3) await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(seen, ['a', 'b', 'c'])
  await app.close()
  const c = redis.client()
  t.same((await c.keys(`${prefix}*`)).filter((key) => !key.endsWith(':lease')), [])
})
