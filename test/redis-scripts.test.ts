// The scripts that settle a reserved task, run against a real Redis in a state a live system can
// reach: the task is no longer in the consumer's processing list, because it went back to the
// queue (recovered from a consumer taken for dead, or given back as unknown) or because the call
// is a second run of one that ioredis sent again after a reconnection. Such a call changes nothing.
import { test } from 'tap'
import { ackAndTakeScript, buryScript } from '../lib/queues/redis-scripts'
import { redisForTest } from './helpers/redis-children'

test('acknowledging a task no longer in the processing list leaves its name and recovery count to the copy that went back', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:${name}`
  await client.sadd(key('names'), 'named-1')
  await client.hset(key('recoveries'), 'named-1', '1')
  await client.lpush(key('waiting'), 'the copy that went back')

  const taken = await client.eval(ackAndTakeScript, 7, key('processing:c'), key('waiting'), key('recoveries'), key('names'), key('consumers'), key('heartbeat:c'), key('recovered'), 0, 'c', 600, 'the reserved string', 'named-1')
  t.same(taken, ['take'], 'nothing reserved (none asked for)')
  t.equal(await client.sismember(key('names'), 'named-1'), 1, 'the name is still live')
  t.equal(await client.hget(key('recoveries'), 'named-1'), '1', 'the recovery count is kept')
  t.same(await client.lrange(key('waiting'), 0, -1), ['the copy that went back'], 'the queue is untouched')

  await client.lpush(key('processing:c'), 'the reserved string')
  await client.eval(ackAndTakeScript, 7, key('processing:c'), key('waiting'), key('recoveries'), key('names'), key('consumers'), key('heartbeat:c'), key('recovered'), 0, 'c', 600, 'the reserved string', 'named-1')
  t.equal(await client.llen(key('processing:c')), 0, 'a task still in the list is acknowledged')
  t.equal(await client.sismember(key('names'), 'named-1'), 0, 'and its name is freed')
  t.equal(await client.hexists(key('recoveries'), 'named-1'), 0, 'and its recovery count dropped')
})

test('setting aside a task no longer in the processing list writes no dead letter', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:${name}`
  await client.sadd(key('names'), 'named-1')
  const bury = () => client.eval(buryScript, 4, key('processing:c'), key('dead'), key('names'), key('recoveries'), 'the reserved string', '{"reason":"final status"}', 'named-1', 10)

  t.equal(await bury(), 0, 'nothing to set aside')
  t.equal(await client.llen(key('dead')), 0, 'no dead letter')
  t.equal(await client.sismember(key('names'), 'named-1'), 1, 'the name is still live')

  await client.lpush(key('processing:c'), 'the reserved string')
  t.equal(await bury(), 1, 'a task still in the list is set aside')
  t.equal(await bury(), 0, 'once')
  t.equal(await client.llen(key('dead')), 1, 'one dead letter')
  t.equal(await client.sismember(key('names'), 'named-1'), 0, 'its name freed')
})
