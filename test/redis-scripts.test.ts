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

test('acknowledging a task no longer in the processing list leaves its name and recovery count to the copy that went back', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:${name}`
  await client.sadd(key('names'), 'named-1')
  await client.hset(key('recoveries'), 'named-1', '1')
  await client.lpush(key('waiting'), 'the copy that went back')

  const taken = await client.eval(ackAndReserveScript, 7, key('processing:c'), key('waiting'), key('recoveries'), key('names'), key('consumers'), key('heartbeat:c'), key('recovered'), 0, 'c', 600, 'the reserved string', 'named-1')
  t.same(taken, ['batch'], 'nothing reserved (none asked for)')
  t.equal(await client.sismember(key('names'), 'named-1'), 1, 'the name is still live')
  t.equal(await client.hget(key('recoveries'), 'named-1'), '1', 'the recovery count is kept')
  t.same(await client.lrange(key('waiting'), 0, -1), ['the copy that went back'], 'the queue is untouched')

  await client.lpush(key('processing:c'), 'the reserved string')
  await client.eval(ackAndReserveScript, 7, key('processing:c'), key('waiting'), key('recoveries'), key('names'), key('consumers'), key('heartbeat:c'), key('recovered'), 0, 'c', 600, 'the reserved string', 'named-1')
  t.equal(await client.llen(key('processing:c')), 0, 'a task still in the list is acknowledged')
  t.equal(await client.sismember(key('names'), 'named-1'), 0, 'and its name is freed')
  t.equal(await client.hexists(key('recoveries'), 'named-1'), 0, 'and its recovery count dropped')
})

test('burying a task no longer in the processing list writes no dead letter', async (t) => {
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:${name}`
  await client.sadd(key('names'), 'named-1')
  const bury = () => client.eval(buryScript, 4, key('processing:c'), key('dead'), key('names'), key('recoveries'), 'the reserved string', '{"reason":"final status"}', 'named-1', 10)

  t.equal(await bury(), 0, 'nothing to bury')
  t.equal(await client.llen(key('dead')), 0, 'no dead letter')
  t.equal(await client.sismember(key('names'), 'named-1'), 1, 'the name is still live')

  await client.lpush(key('processing:c'), 'the reserved string')
  t.equal(await bury(), 1, 'a task still in the list is buried')
  t.equal(await bury(), 0, 'once')
  t.equal(await client.llen(key('dead')), 1, 'one dead letter')
  t.equal(await client.sismember(key('names'), 'named-1'), 0, 'its name freed')
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
    for (const [snippet, definition] of [['now-ms', 'local function nowMs ()'], ['push-dead-letter', 'local function pushDeadLetter ('], ['task-id', 'local function taskIdOf (']]) {
      t.equal(lua.split(definition).length - 1, source.includes(`-- @include ${snippet}\n`) ? 1 : 0, `${file}: ${snippet} is defined there only if included`)
    }
    t.notMatch(source, /redis\.call\('TIME'\)/, `${file}: reads the Redis clock through now-ms`)
  }
})

test('the scripts that score by the Redis clock agree with it', async (t) => {
  // retry through now-ms: the task is scored at Redis time + delay, whatever this process's clock says.
  const { client, prefix } = await redisForTest(t)
  const key = (name: string) => `${prefix}:{q}:${name}`
  await client.lpush(key('processing:c'), 'reserved')
  const [seconds, micros] = await client.time()
  t.equal(await client.eval(scripts.taskqueueRetry.lua, 2, key('processing:c'), key('delayed'), 'reserved', 'next', 60_000), 1, 'retried')
  const score = Number(await client.zscore(key('delayed'), 'next'))
  const before = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) + 60_000
  t.ok(score >= before && score < before + 5_000, `scored at Redis time + delay (${score - before} ms after the time read before)`)
})
