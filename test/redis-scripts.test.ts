// The scripts that settle a reserved task, run against a real Redis in a state a live system can
// reach: the task is no longer in the consumer's processing list, because it went back to the
// queue (recovered from an expired consumer, or released as an orphan) or because the call is a
// second run of one that ioredis sent again after a reconnection. Such a call changes nothing.
// Then the script files themselves: each documents its keys, and the shared snippets are included.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'tap'
import { scriptFiles, scripts } from '../lib/queues/redis/scripts'
import { redisForTest } from './helpers/redis-children'

const ackAndReserveScript = scripts.taskqueueAckAndReserve.lua
const buryScript = scripts.taskqueueBury.lua

test('acknowledging a task no longer in the processing list leaves its message and recovery count to the copy that went back', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  await client.hset(key('tasks'), 'named-1', 'its message')
  await client.hset(key('recoveries'), 'named-1', '1')
  await client.lpush(key('waiting'), 'named-1')
  const ackAndReserve = () => client.eval(ackAndReserveScript, 12, key('processing:c'), key('waiting'), key('tasks'), key('inflight'), key('cancelled'),
    key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'), key('group-of'), 0, 'c', 600, 0, 0, key(''), 0, 'named-1')

  t.same(await ackAndReserve(), ['batch'], 'nothing reserved (none asked for)')
  t.equal(await client.hget(key('tasks'), 'named-1'), 'its message', 'the message is kept: the id is still live')
  t.equal(await client.hget(key('recoveries'), 'named-1'), '1', 'the recovery count is kept')
  t.same(await client.lrange(key('waiting'), 0, -1), ['named-1'], 'the queue is untouched')

  await client.multi().lrem(key('waiting'), 1, 'named-1').lpush(key('processing:c'), 'named-1').hset(key('inflight'), 'named-1', 'c').exec()
  await ackAndReserve()
  t.equal(await client.llen(key('processing:c')), 0, 'a task still in the list is acknowledged')
  t.equal(await client.hexists(key('tasks'), 'named-1'), 0, 'its message is gone, and its id free')
  t.equal(await client.hlen(key('inflight')), 0, 'it is no longer counted in flight')
  t.equal(await client.hexists(key('recoveries'), 'named-1'), 0, 'and its recovery count dropped')
})

test('burying a task no longer in the processing list writes no dead letter', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  await client.hset(key('tasks'), 'named-1', 'its message')
  const entry = '{"reason":"final status","at":1,"task":"{\\"v\\":1,\\"id\\":\\"named-1\\"}"}'
  const bury = () => client.eval(buryScript, 6, key('processing:c'), key('dead'), key('tasks'), key('inflight'), key('recoveries'), key('dead-index'),
    'named-1', entry, 'named-1', 10, key(''))

  t.equal(await bury(), 0, 'nothing to bury')
  t.equal(await client.llen(key('dead')), 0, 'no dead letter')
  t.equal(await client.hexists(key('tasks'), 'named-1'), 1, 'the task is still live')

  await client.multi().lpush(key('processing:c'), 'named-1').hset(key('inflight'), 'named-1', 'c').exec()
  t.equal(await bury(), 1, 'a task still in the list is buried')
  t.equal(await bury(), 0, 'once')
  t.equal(await client.llen(key('dead')), 1, 'one dead letter')
  t.equal(await client.hexists(key('tasks'), 'named-1'), 0, 'its id freed')
  t.equal(await client.hlen(key('inflight')), 0, 'no longer in flight')
  t.equal(await client.hget(key('dead-index'), 'named-1'), entry, 'the dead letter is found by its id')
})

test('a dead letter trimmed off by deadLetterMax takes its index entry with it, unless a newer letter of the id holds it', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  const letter = (id: string, at: number) => JSON.stringify({ reason: 'final status', at, task: JSON.stringify({ v: 1, id }) })
  const bury = async (id: string, at: number, max: number) => {
    await client.multi().lpush(key('processing:c'), id).hset(key('tasks'), id, 'message').exec()
    return await client.eval(buryScript, 6, key('processing:c'), key('dead'), key('tasks'), key('inflight'), key('recoveries'), key('dead-index'),
      id, letter(id, at), id, max, key(''))
  }
  await bury('a', 1, 2)
  await bury('b', 2, 2)
  await bury('a', 3, 2)
  t.same(await client.hgetall(key('dead-index')), { a: letter('a', 3), b: letter('b', 2) }, 'the oldest letter of a left; its index holds the newest')
  await bury('c', 4, 2)
  t.same(await client.hgetall(key('dead-index')), { a: letter('a', 3), c: letter('c', 4) }, 'b left with its index entry')
  await bury('d', 5, 0)
  t.equal(await client.exists(key('dead'), key('dead-index')), 0, 'deadLetterMax 0 keeps no letter and no index')
})

test('issue 13: a cancelled waiting task leaves a tombstone that reservations skip, also when its id is added again', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  const add = (id: string, message: string, group = '') => client.eval(scripts.taskqueueAdd.lua, 3, key('tasks'), key('waiting'), key('delayed'), key(''), id, message, 0, group)
  const cancel = (id: string) => client.eval(scripts.taskqueueCancel.lua, 5, key('tasks'), key('delayed'), key('inflight'), key('cancelled'), key('recoveries'), id, key(''))
  const reserve = (count: number) => client.eval(ackAndReserveScript, 12, key('processing:c'), key('waiting'), key('tasks'), key('inflight'), key('cancelled'),
    key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'), key('group-of'), count, 'c', 600, 0, 0, key(''), 0)
  const waitingCount = async () => (await client.eval(scripts.taskqueueStats.lua, 8, key('waiting'), key('recovered'), key('delayed'), key('inflight'),
    key('dead'), key('paused'), key('cancelled'), key('tasks'), key('')) as number[])[0]

  t.equal(await add('x', 'first'), 1, 'x added')
  t.equal(await add('x', 'again'), 0, 'a live id is added once')
  await add('y', 'y')
  t.equal(await cancel('x'), 1, 'x cancelled')
  t.equal(await cancel('x'), 0, 'once')
  t.equal(await add('x', 'second'), 1, 'its id is free: x added again')
  t.equal(await cancel('x'), 1, 'and cancelled again')
  t.equal(await add('x', 'third'), 1, 'and added a third time')
  t.same(await client.lrange(key('waiting'), 0, -1), ['x', 'x', 'y', 'x'], 'two tombstones of x stay in the list')
  t.equal(await waitingCount(), 2, 'stats count the tasks, not the tombstones')
  t.same(await reserve(1), ['batch', 'y', 'y'], 'the tombstone at the head is skipped: y is next')
  t.same(await reserve(5), ['batch', 'x', 'third'], 'x runs once, with its last message')
  t.equal(await client.exists(key('cancelled')), 0, 'no tombstone is left')
  t.equal(await waitingCount(), 0, 'nothing waits')

  // Issue 14: the tombstone of a grouped task is its group list's own; the id added again without a
  // group waits in `waiting`, whose turn comes first.
  await add('z', 'in g', 'g')
  t.equal(await cancel('z'), 1, 'z of group g cancelled')
  await add('z', 'without a group')
  t.equal(await waitingCount(), 1, 'one task waits, beside a tombstone')
  const reserved = await reserve(5) as string[]
  t.same(reserved, ['batch', 'z', 'without a group'], 'z runs once, without its group: the ungrouped turn came before group g\'s tombstone')
  t.same(await client.hgetall(key('cancelled')), {}, 'no tombstone is left')
  t.equal(await waitingCount(), 0, 'nothing waits')
})

test('issue 14: an orphan and a due retry of a group go back to their group\'s list, its slot given back', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  const reserve = (count: number) => client.eval(ackAndReserveScript, 12, key('processing:c'), key('waiting'), key('tasks'), key('inflight'), key('cancelled'),
    key('recoveries'), key('consumers'), key('heartbeat:c'), key('recovered'), key('paused'), key('rate-log'), key('group-of'), count, 'c', 600, 0, 0, key(''), 1)
  await client.eval(scripts.taskqueueAdd.lua, 3, key('tasks'), key('waiting'), key('delayed'), key(''), 'a', 'A', 0, 'g', 'b', 'B', 0, 'g')
  t.same(await reserve(5), ['batch', 'a', 'A'], 'one task of the group: its limit is 1')
  t.same(await client.hgetall(key('group-inflight')), { g: '1' }, 'counted in flight')
  t.same(await client.smembers(key('group-full')), ['g'], 'set aside at its limit')

  t.equal(await client.eval(scripts.taskqueueReleaseOrphans.lua, 5, key('processing:c'), key('waiting'), key('recoveries'), key('recovered'), key('inflight'), key('')), 1, 'released as an orphan')
  t.same(await client.lrange(key('group:g'), 0, -1), ['b', 'a'], 'back at the head of its group')
  t.same(await client.hgetall(key('group-inflight')), {}, 'its slot given back')
  t.same(await client.smembers(key('group-full')), [], 'the group takes turns again')
  t.same(await client.lrange(key('group-turns'), 0, -1), ['g', '*'], 'after the turn of the tasks without a group')

  t.same(await reserve(5), ['batch', 'a', 'A'], 'reserved again, first of its group')
  t.equal(await client.eval(scripts.taskqueueRetry.lua, 4, key('processing:c'), key('delayed'), key('tasks'), key('inflight'), 'a', 'A2', 0, key('')), 1, 'retried')
  t.same(await client.hgetall(key('group-inflight')), {}, 'the retry gave the slot back')
  await client.eval(scripts.taskqueuePromote.lua, 2, key('delayed'), key('waiting'), 10, key(''))
  t.same(await client.lrange(key('group:g'), 0, -1), ['a', 'b'], 'the due retry went to the back of its group')
  t.same(await reserve(5), ['batch', 'b', 'B'], 'the group goes on in order, one at a time')
})

const scriptsFolder = join(__dirname, '..', 'lib', 'queues', 'redis', 'scripts')

test('each script file opens with what it does, its KEYS, its ARGV and what it returns', async (t) => {
  const files = readdirSync(scriptsFolder).filter((file) => file.endsWith('.lua')).sort()
  t.same(files, Object.values(scriptFiles).map(({ file }) => `${file}.lua`).sort(), 'one file per script, and no file left unused')
  for (const { file, numberOfKeys } of Object.values(scriptFiles)) {
    const text = readFileSync(join(scriptsFolder, `${file}.lua`), 'utf8')
    const header = text.slice(0, text.search(/^[^-\n]/m))
    t.match(header, new RegExp(`^-- ${file}: \\S`), `${file}: says what it does first`)
    const documented = [...header.matchAll(/^-- KEYS\[(\d+)\] \S/gm)].map((match) => Number(match[1]))
    t.same(documented, Array.from({ length: numberOfKeys }, (_, index) => index + 1), `${file}: documents each of its ${numberOfKeys} keys, in order`)
    t.match(header, /^-- ARGV/m, `${file}: documents its arguments`)
    t.match(header, /^-- Returns \S/m, `${file}: says what it returns`)
  }
})

test('the shared snippets are written once and included where a script asks for them', async (t) => {
  for (const [name, { file }] of Object.entries(scriptFiles)) {
    const source = readFileSync(join(scriptsFolder, `${file}.lua`), 'utf8')
    const lua = scripts[name as keyof typeof scripts].lua
    t.notMatch(lua, /@include/, `${file}: no include marker is left`)
    for (const [snippet, definition] of [['now-ms', 'local function nowMs ()'], ['push-dead-letter', 'local function pushDeadLetter ('], ['tombstones', 'local function takeTombstone ('],
      ['rate-limit', 'local function rateRoom ('], ['groups', 'local function leaveGroup ('],
      ['wake', 'local function wakeOne (']]) {
      t.equal(lua.split(definition).length - 1, source.includes(`-- @include ${snippet}\n`) ? 1 : 0, `${file}: ${snippet} is defined there only if included`)
    }
    t.notMatch(source, /redis\.call\('TIME'\)/, `${file}: reads the Redis clock through now-ms`)
  }
})

test('the scripts that score by the Redis clock agree with it', async (t) => {
  // retry through now-ms: the task is scored at Redis time + delay, whatever this process's clock says.
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:v2:${name}`
  await client.lpush(key('processing:c'), 'reserved')
  const [seconds, micros] = await client.time()
  t.equal(await client.eval(scripts.taskqueueRetry.lua, 4, key('processing:c'), key('delayed'), key('tasks'), key('inflight'), 'reserved', 'next', 60_000, key('')), 1, 'retried')
  t.equal(await client.hget(key('tasks'), 'reserved'), 'next', 'its message is that of the next try')
  const score = Number(await client.zscore(key('delayed'), 'reserved'))
  const before = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) + 60_000
  t.ok(score >= before && score < before + 5_000, `scored at Redis time + delay (${score - before} ms after the time read before)`)
})
