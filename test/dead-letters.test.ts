// The dead-letter API of issue 4 on both queue types: `queue(name).dead()` lists the buried tasks,
// newest first and paged; `.requeue(id)` / `.requeue()` put them back (with their retries reset),
// `.purge()` empties the store; `deadLetterMax` bounds it; bad arguments are coded errors.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { QueueOptions } from '../lib/options'
import type { DeadLetter } from '../types'
import { backendFor, codeOf, queueTypes, sleep, startApp, storeRaw, waitFor, type Backend, type Test } from './helpers/both-queues'

interface Harness {
  app: FastifyInstance
  /** x-task-retries of every dispatch, by task id. */
  runs: Map<string, string[]>
  /** While true, /tasks/bad answers 400 and /tasks/flaky 500; then both 200. */
  failing: { on: boolean }
}

async function start (t: Test, backend: Backend, queueExtra: QueueOptions = {}): Promise<Harness> {
  const runs = new Map<string, string[]>()
  const failing = { on: true }
  const app = await startApp(t, {
    queues: [backend.queue('default', queueExtra)],
    consumers: [{ queue: 'default', concurrentLimit: 1, retryMaxCount: 2, retryDelay: { min: 5, max: 10 } }]
  }, (app) => {
    app.post('/tasks/:name', async (request, reply) => {
      const id = request.headers['x-task-id'] as string
      runs.set(id, [...runs.get(id) ?? [], request.headers['x-task-retries'] as string])
      if (!failing.on) return { ok: true }
      return reply.code((request.params as { name: string }).name === 'flaky' ? 500 : 400).send({})
    })
  })
  return { app, runs, failing }
}

/** Adds the tasks one after another, each dead before the next is added, so that their order is sure. */
async function killInOrder (harness: Harness, count: number, name = 'bad'): Promise<string[]> {
  const queue = harness.app.taskqueue.queue('default')
  const ids: string[] = []
  for (let n = 0; n < count; n++) {
    ids.push(await harness.app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: { n } }))
    await waitFor(`task ${n} to die`, async () => (await queue.dead({ limit: 1 }))[0]?.id === ids[n])
  }
  return ids
}

const idsOf = (letters: DeadLetter[]): Array<string | null> => letters.map(({ id }) => id)

for (const type of queueTypes) {
  test(`${type}: dead() lists dead letters newest first, paged`, async (t) => {
    const harness = await start(t, await backendFor(type))
    const queue = harness.app.taskqueue.queue('default')
    t.same(await queue.dead(), [], 'empty at first')
    const started = Date.now()
    const ids = await killInOrder(harness, 5)
    const letters = await queue.dead()
    t.same(idsOf(letters), [...ids].reverse(), 'newest first')
    for (const [index, letter] of letters.entries()) {
      const n = 4 - index
      t.equal(letter.queue, 'default')
      t.equal(letter.reason, 'final status')
      t.equal(letter.statusCode, 400)
      t.equal(letter.detail, 'answered 400')
      t.ok(letter.at >= started && letter.at <= Date.now(), 'at: when it died')
      t.equal(letter.task?.id, ids[n])
      t.equal(letter.task?.url, '/tasks/bad')
      t.equal(letter.task?.method, 'POST')
      t.equal(letter.task?.payload?.toString(), JSON.stringify({ n }), 'the task as it was')
      t.equal(letter.raw, undefined, 'no raw message for a readable task')
    }
    t.ok(letters.every((letter, index) => index === 0 || letter.at <= letters[index - 1].at), 'times go back')
    t.same(idsOf(await queue.dead({ offset: 1, limit: 2 })), [ids[3], ids[2]], 'offset and limit')
    t.same(idsOf(await queue.dead({ offset: 3 })), [ids[1], ids[0]], 'offset alone')
    t.same(idsOf(await queue.dead({ limit: 1 })), [ids[4]], 'limit alone')
    t.same(await queue.dead({ offset: 5 }), [], 'past the end')
    t.same(await queue.dead({ offset: 50, limit: 10 }), [])
    t.same(await queue.dead({ limit: 0 }), [], 'limit 0')
    t.same(idsOf(await queue.dead({})), idsOf(letters), 'an empty page is the default one')
    t.equal(await queue.length(), 0, 'dead letters are not waiting tasks')
  })

  test(`${type}: requeue(id) puts one back, and it runs again with its retries reset`, async (t) => {
    const harness = await start(t, await backendFor(type))
    const queue = harness.app.taskqueue.queue('default')
    const [bad] = await killInOrder(harness, 1)
    const [flaky] = await killInOrder(harness, 1, 'flaky')
    t.same(harness.runs.get(flaky), ['0', '1', '2'], 'the flaky task ran out of retries')
    const [flakyLetter] = await queue.dead({ limit: 1 })
    t.match(flakyLetter, { id: flaky, reason: 'retries exhausted', statusCode: 500, task: { retries: 2 } })

    harness.failing.on = false
    t.equal(await queue.requeue(flaky), 1, 'one put back')
    await waitFor('the requeued task to run', () => harness.runs.get(flaky)?.length === 4)
    t.equal(harness.runs.get(flaky)?.[3], '0', 'its retries start again from 0')
    t.same(idsOf(await queue.dead()), [bad], 'it left the dead letters; the other stayed')
    t.equal(await queue.requeue(flaky), 0, 'a second requeue of the same id finds nothing')
    t.equal(await queue.requeue('no-such-task'), 0, 'an unknown id: 0')
    t.equal(await queue.requeue(''), 0)
    await sleep(50)
    t.same(harness.runs.get(bad), ['0'], 'the other did not run again')
    t.equal(harness.runs.get(flaky)?.length, 4, 'and the requeued one ran once')
  })

  test(`${type}: requeue() puts every one back; purge() empties the store`, async (t) => {
    const harness = await start(t, await backendFor(type))
    const queue = harness.app.taskqueue.queue('default')
    const ids = await killInOrder(harness, 4)
    harness.failing.on = false
    t.equal(await queue.requeue(), 4, 'all four put back')
    await waitFor('every requeued task to run', () => ids.every((id) => harness.runs.get(id)?.length === 2))
    t.same(await queue.dead(), [], 'the store is empty')
    t.equal(await queue.requeue(), 0, 'nothing left to requeue')
    t.same(ids.map((id) => harness.runs.get(id)), ids.map(() => ['0', '0']), 'each ran again once, from retry 0')

    harness.failing.on = true
    await killInOrder(harness, 3)
    t.equal((await queue.dead()).length, 3)
    t.equal(await queue.purge(), 3, 'purge tells how many there were')
    t.same(await queue.dead(), [], 'and empties the store')
    t.equal(await queue.purge(), 0, 'a second purge finds none')
    t.equal(await queue.requeue(), 0, 'purged letters cannot be requeued')
  })

  test(`${type}: deadLetterMax keeps the newest`, async (t) => {
    const harness = await start(t, await backendFor(type), { deadLetterMax: 3 })
    const ids = await killInOrder(harness, 5)
    t.same(idsOf(await harness.app.taskqueue.queue('default').dead()), [ids[4], ids[3], ids[2]], 'the two oldest were dropped')
  })

  test(`${type}: deadLetterMax 0 keeps none`, async (t) => {
    const harness = await start(t, await backendFor(type), { deadLetterMax: 0 })
    const queue = harness.app.taskqueue.queue('default')
    const id = await harness.app.taskqueue.add('/tasks/bad', { method: 'POST', payload: {} })
    await waitFor('the task to run', () => harness.runs.get(id)?.length === 1)
    await sleep(100)
    t.same(await queue.dead(), [], 'nothing kept')
    t.equal(await queue.purge(), 0)
  })

  test(`${type}: bad arguments are coded errors`, async (t) => {
    const harness = await start(t, await backendFor(type))
    const queue = harness.app.taskqueue.queue('default')
    const bad = 'FST_TASKQUEUE_INVALID_ARGUMENT'
    const pages: unknown[] = [
      { offset: -1 }, { limit: -1 }, { offset: 1.5 }, { limit: 2.5 }, { offset: '1' }, { limit: '10' }, { offset: NaN },
      { limit: Infinity }, { offset: null }, { page: 1 }, { offset: 0, limit: 1, extra: true }, null, 'first', 5, [], [1], true
    ]
    for (const page of pages) {
      t.equal(await codeOf(() => queue.dead(page as never)), bad, `dead(${JSON.stringify(page)})`)
    }
    for (const id of [5, null, {}, ['a'], true]) {
      t.equal(await codeOf(() => queue.requeue(id as never)), bad, `requeue(${JSON.stringify(id)})`)
    }
    t.equal(await codeOf(() => harness.app.taskqueue.queue('nope')), 'FST_TASKQUEUE_UNKNOWN_QUEUE', 'an unknown queue')
    t.equal(await codeOf(() => queue.dead({ offset: 0, limit: 0 })), 'no error', 'zeros are fine')
  })
}

test('redis: unreadable dead letters are listed with their raw message and never requeued', async (t) => {
  const backend = await backendFor('redis')
  const harness = await start(t, backend)
  const queue = harness.app.taskqueue.queue('default')
  const client = backend.redis()
  const [id] = await killInOrder(harness, 1)
  await storeRaw(client, backend.key, 'raw-1', 'not a task')
  await waitFor('the unreadable message to die', async () => (await queue.dead()).length === 2)
  // Something else wrote into the dead list itself.
  await client.lpush(backend.key('dead'), '{"reason": "unreadable", "task": 7')
  const letters = await queue.dead()
  t.equal(letters.length, 3)
  t.match(letters[0], { id: null, task: null, reason: 'unreadable', at: 0, raw: '{"reason": "unreadable", "task": 7' }, 'a garbled entry')
  t.match(letters[1], { id: null, task: null, reason: 'unreadable', raw: 'not a task' }, 'an unreadable message')
  t.match(letters[1].detail, /^not a task message/)
  t.equal(letters[2].id, id)

  harness.failing.on = false
  t.equal(await queue.requeue(), 1, 'only the readable one is put back')
  await waitFor('it to run', () => harness.runs.get(id)?.length === 2)
  t.same((await queue.dead()).map(({ raw }) => raw), ['{"reason": "unreadable", "task": 7', 'not a task'], 'the unreadable ones stay')
  t.equal(await queue.purge(), 2)
  t.equal(await client.exists(backend.key('dead')), 0, 'the dead list is gone')
})
