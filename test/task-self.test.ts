// issue 13, "What a task says about itself": a dead letter keeps the start of the answer that
// killed it (its first 1024 bytes as text, binary shown as a count), on both queue types; a
// dispatched request knows when its task was added (x-task-created-at, request.taskqueue.task).
import { test } from 'tap'
import { bodyStart, deadBodyBytes } from '../lib/consumer/retry-policy'
import type { DispatchedTask } from '../types'
import { backendFor, queueTypes, startApp, waitFor } from './helpers/both-queues'

test('bodyStart keeps the first 1024 bytes as text, never half a character, and counts binary', async (t) => {
  t.equal(bodyStart(undefined), undefined, 'no body')
  t.equal(bodyStart(Buffer.alloc(0)), undefined, 'an empty body')
  t.equal(bodyStart(Buffer.from('short')), 'short')
  t.equal(bodyStart(Buffer.from('x'.repeat(5000))), 'x'.repeat(deadBodyBytes), 'cut at 1024 bytes')
  // 1023 ASCII bytes, then a 2-byte character across the cut: left out whole.
  t.equal(bodyStart(Buffer.from('a'.repeat(1023) + 'é' + 'tail')), 'a'.repeat(1023), 'a character across the cut is left out')
  t.equal(bodyStart(Buffer.from('a'.repeat(1022) + 'é' + 'tail')), 'a'.repeat(1022) + 'é', 'one that ends at the cut is kept')
  t.equal(bodyStart(Buffer.from([0xff, 0xfe, 0x00, 0x01])), '<binary body, 4 bytes>', 'bytes that are not UTF-8 are counted')
})

for (const type of queueTypes) {
  test(`${type}: issue 13, dead() shows the start of the answer that killed the task`, async (t) => {
    const backend = await backendFor(type)
    const app = await startApp(t, {
      queues: [backend.queue('default')],
      consumers: [{ queue: 'default', retryMaxCount: 0 }]
    }, (app) => {
      app.get('/tasks/json', async (request, reply) => reply.code(404).send({ error: 'no user 42' }))
      app.get('/tasks/long', async (request, reply) => reply.code(500).type('text/plain').send('é'.repeat(2000)))
      app.get('/tasks/binary', async (request, reply) => reply.code(400).type('application/octet-stream').send(Buffer.from([0xff, 0x00, 0xfe])))
      app.get('/tasks/empty', async (request, reply) => reply.code(410).send())
    })
    const queue = app.taskqueue.queue('default')
    const ids: Record<string, string> = {}
    for (const name of ['json', 'long', 'binary', 'empty']) ids[name] = await app.taskqueue.add(`/tasks/${name}`)
    await waitFor('four dead letters', async () => (await queue.dead()).length === 4)
    const letters = new Map((await queue.dead()).map((letter) => [letter.id, letter]))
    t.match(letters.get(ids.json), { reason: 'final status', statusCode: 404, body: '{"error":"no user 42"}' }, 'a JSON answer, as text')
    t.match(letters.get(ids.long), { reason: 'retries exhausted', statusCode: 500, body: 'é'.repeat(512) }, 'a long one: its first 1024 bytes')
    t.equal(letters.get(ids.binary)?.body, '<binary body, 3 bytes>', 'binary: counted, not shown')
    t.equal(letters.get(ids.empty)?.body, undefined, 'no body, no field')
    t.equal(letters.get(ids.empty)?.statusCode, 410)
  })

  test(`${type}: issue 13, request.taskqueue.task has createdAt, from x-task-created-at`, async (t) => {
    const backend = await backendFor(type)
    const seen: Array<{ task: DispatchedTask | null, header: unknown }> = []
    const app = await startApp(t, { queues: [backend.queue('default')], consumers: [{ queue: 'default' }] }, (app) => {
      app.get('/tasks/when', async (request) => {
        seen.push({ task: request.taskqueue.task, header: request.headers['x-task-created-at'] })
        return 'ok'
      })
    })
    const before = Date.now()
    const id = await app.taskqueue.add('/tasks/when', { delay: 30 })
    const after = Date.now()
    await waitFor('the task to run', () => seen.length === 1)
    const [{ task, header }] = seen
    t.equal(task?.id, id)
    t.ok(task?.createdAt instanceof Date, 'a Date')
    const createdAt = task?.createdAt.getTime() as number
    t.ok(createdAt >= before && createdAt <= after, 'when add() was called')
    t.ok((task?.eta.getTime() as number) > createdAt, 'before its eta, for a delayed task')
    t.equal(header, task?.createdAt.toISOString(), 'the header says the same, in ISO 8601')
  })
}
