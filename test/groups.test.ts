// Groups (issue 14), on both queue types: at most `groupConcurrency` tasks of one group in flight
// across every consumer, the groups served in turn, tasks without a group not limited by it, and
// the group kept through retries, get(), cancel(), dead letters, requeue, waiting() and stats().
// Across instances and through kill -9 on Redis: redis-groups.test.ts.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { QueueHandle } from '../types'
import type { ConsumerOptions } from '../lib/options'
import taskqueue from '../plugin'
import { loggedApp } from './helpers/harness'
import { backendFor, codeOf, gate, queueTypes, sleep, startApp, waitFor, type Test } from './helpers/both-queues'

interface Harness {
  app: FastifyInstance
  queue: QueueHandle
  /** The task names, in the order they started. */
  started: string[]
  /** The task names that finished. */
  done: Set<string>
  /** Most tasks in flight at once, by group ('' for none). */
  most: Map<string, number>
  /** The x-task-group header and request.taskqueue.task.group of each task name. */
  seen: Map<string, { header?: string, task?: string }>
  /** Holds /tasks/hold-* until opened. */
  hold: ReturnType<typeof gate>
}

interface Setup {
  groupConcurrency?: number
  consumers?: ConsumerOptions[]
}

/**
 * One queue and its consumers. `/tasks/<name>?ms=<n>` runs for n ms (default 5), `/tasks/hold-*`
 * until the gate opens, `/tasks/bad-*` answers 400 (buried at once), `/tasks/flaky-*` answers 503
 * on its first try.
 */
async function start (t: Test, type: typeof queueTypes[number], setup: Setup = {}): Promise<Harness> {
  const backend = await backendFor(type)
  const extra = setup.groupConcurrency === undefined ? {} : { groupConcurrency: setup.groupConcurrency }
  const started: string[] = []
  const done = new Set<string>()
  const now = new Map<string, number>()
  const most = new Map<string, number>()
  const seen: Harness['seen'] = new Map()
  const hold = gate()
  const consumers = setup.consumers ?? [{ queue: 'default', concurrentLimit: 10 }, { queue: 'default', concurrentLimit: 10 }]
  const app = await startApp(t, {
    queues: [backend.queue('default', extra)],
    consumers: consumers.map((consumer) => ({ retryDelay: { min: 20, max: 20 }, ...consumer }))
  }, (app) => {
    app.all('/tasks/:name', async (request, reply) => {
      const { name } = request.params as { name: string }
      const group = request.headers['x-task-group'] as string | undefined
      const tries = started.filter((other) => other === name).length
      started.push(name)
      seen.set(name, { header: group, task: request.taskqueue.task?.group })
      const key = group ?? ''
      now.set(key, (now.get(key) ?? 0) + 1)
      most.set(key, Math.max(most.get(key) ?? 0, now.get(key) as number))
      try {
        if (name.startsWith('hold-')) await hold.promise
        else await sleep(Number((request.query as { ms?: string }).ms ?? 5))
      } finally {
        now.set(key, (now.get(key) as number) - 1)
      }
      if (name.startsWith('bad-')) return reply.code(400).send({})
      if (name.startsWith('flaky-') && tries === 0) return reply.code(503).send({})
      done.add(name)
      return { ok: true }
    })
  })
  t.teardown(() => hold.open())
  return { app, queue: app.taskqueue.queue('default'), started, done, most, seen, hold }
}

for (const type of queueTypes) {
  test(`${type}: issue 14: groupConcurrency bounds each group across consumers; tasks without a group are not limited by it`, async (t) => {
    const harness = await start(t, type, { groupConcurrency: 2 })
    const { app, done, most } = harness
    const names: string[] = []
    for (let n = 0; n < 12; n++) {
      for (const group of ['a', 'b', 'c']) {
        names.push(`${group}-${n}`)
        await app.taskqueue.add(`/tasks/${group}-${n}?ms=15`, { group })
      }
      names.push(`none-${n}`)
      await app.taskqueue.add(`/tasks/none-${n}?ms=40`)
    }
    await waitFor('every task to run', () => names.every((name) => done.has(name)), 20_000)
    for (const group of ['a', 'b', 'c']) t.equal(most.get(group), 2, `group ${group}: at most 2 in flight at once, and 2 reached`)
    t.ok((most.get('') as number) > 2, `tasks without a group ran more than 2 at once (${most.get('')})`)
    // The last acknowledgements may still be on their way.
    await waitFor('the last tasks to settle', async () => (await harness.queue.stats()).inFlight === 0)
    t.match(await harness.queue.stats(), { waiting: 0, delayed: 0, inFlight: 0 }, 'nothing is left')
  })

  test(`${type}: issue 14: groups take turns: one task of another group starts within the first few of a long backlog`, async (t) => {
    const harness = await start(t, type, { consumers: [{ queue: 'default', concurrentLimit: 1 }] })
    const { app, started, done } = harness
    await app.taskqueue.add('/tasks/hold-first', { group: 'big' })
    await waitFor('the first task of the backlog to start', () => started.length === 1)
    for (let n = 0; n < 100; n++) await app.taskqueue.add(`/tasks/big-${n}?ms=1`, { group: 'big' })
    await app.taskqueue.add('/tasks/small-0', { group: 'small' })
    await app.taskqueue.add('/tasks/none-0')
    harness.hold.open()
    await waitFor('every task to run', () => done.size === 103, 20_000)
    const small = started.indexOf('small-0')
    const none = started.indexOf('none-0')
    t.ok(small >= 1 && small <= 3, `the other group's task started ${small}th, within the first few`)
    t.ok(none >= 1 && none <= 3, `the task without a group, taking its turn as one, started ${none}th`)
    t.same(started.filter((name) => name.startsWith('big-')), Array.from({ length: 100 }, (_, n) => `big-${n}`), 'a group runs in the order it was added')
  })

  test(`${type}: issue 14: the route sees the group; a retry keeps it and stays within the limit`, async (t) => {
    const harness = await start(t, type, { groupConcurrency: 1 })
    const { app, done, most, seen } = harness
    await app.taskqueue.add('/tasks/flaky-1', { group: 'g', id: 'flaky-1' })
    await app.taskqueue.add('/tasks/flaky-2', { group: 'g' })
    await app.taskqueue.add('/tasks/plain')
    await waitFor('the retries to run', () => done.has('flaky-1') && done.has('flaky-2') && done.has('plain'), 10_000)
    t.same(seen.get('flaky-1'), { header: 'g', task: 'g' }, 'x-task-group and request.taskqueue.task.group, on the retry too')
    t.same(seen.get('plain'), { header: undefined, task: undefined }, 'nothing for a task without a group')
    t.equal(most.get('g'), 1, 'never two of the group at once, retries included')
    t.equal(harness.started.filter((name) => name === 'flaky-1').length, 2, 'tried twice')
  })

  test(`${type}: issue 14: get(), waiting(), cancel() and stats() know grouped tasks`, async (t) => {
    const harness = await start(t, type, { groupConcurrency: 1, consumers: [{ queue: 'default', concurrentLimit: 5 }] })
    const { app, queue, started } = harness
    await app.taskqueue.add('/tasks/hold-g', { group: 'g', id: 'held' })
    await waitFor('the held task to start', () => started.includes('hold-g'))
    const before = Date.now()
    await app.taskqueue.add('/tasks/g-1', { group: 'g', id: 'g-1' })
    await app.taskqueue.add('/tasks/g-2', { group: 'g', id: 'g-2' })
    await app.taskqueue.add('/tasks/later', { group: 'g', id: 'later', delay: 60_000 })
    await sleep(50)
    t.match(await queue.get('held'), { state: 'in-flight', group: 'g' }, 'in flight, with its group')
    t.match(await queue.get('g-1'), { state: 'waiting', group: 'g' }, 'waiting for room in its group')
    t.match(await queue.get('later'), { state: 'delayed', group: 'g' }, 'delayed, with its group')
    t.same((await queue.waiting()).map(({ id, group }) => [id, group]), [['g-1', 'g'], ['g-2', 'g']], 'waiting() lists them, next first')
    const stats = await queue.stats()
    t.match(stats, { waiting: 2, delayed: 1, inFlight: 1 }, 'stats() counts them')
    t.ok(stats.oldestWaitingAge !== null && stats.oldestWaitingAge >= 40 && stats.oldestWaitingAge <= Date.now() - before + 5,
      `the oldest grouped task's age (${stats.oldestWaitingAge})`)

    t.equal(await queue.cancel('g-1'), true, 'a waiting grouped task is cancelled')
    t.equal(await queue.cancel('later'), true, 'a delayed grouped task is cancelled')
    t.equal(await queue.get('g-1'), null, 'gone')
    t.match(await queue.stats(), { waiting: 1, delayed: 0, inFlight: 1 }, 'the figures add up after the cancels')
    t.same((await queue.waiting()).map(({ id }) => id), ['g-2'], 'the cancelled one is not listed')
    const again = await app.taskqueue.add('/tasks/g-1b', { group: 'g', id: 'g-1' })
    t.equal(again, 'g-1', 'its id is free again')
    t.match(await queue.stats(), { waiting: 2 }, 'added again, behind its tombstone')

    harness.hold.open()
    await waitFor('the group to run', () => harness.done.has('g-2') && harness.done.has('g-1b'))
    t.notOk(started.includes('g-1'), 'the cancelled task never ran')
    await waitFor('the last acknowledgement', async () => (await queue.stats()).inFlight === 0)
    t.match(await queue.stats(), { waiting: 0, delayed: 0, inFlight: 0, oldestWaitingAge: null }, 'all settled')
  })

  test(`${type}: issue 14: a dead grouped task keeps its group, and runs in it again once requeued; reset() drops grouped tasks`, async (t) => {
    const harness = await start(t, type, { groupConcurrency: 1, consumers: [{ queue: 'default', concurrentLimit: 3 }] })
    const { app, queue } = harness
    await app.taskqueue.add('/tasks/bad-1', { group: 'g', id: 'bad-1' })
    await waitFor('the task to die', async () => (await queue.get('bad-1'))?.state === 'dead')
    t.match(await queue.get('bad-1'), { state: 'dead', group: 'g' }, 'get() of a dead grouped task')
    t.equal((await queue.dead())[0].task?.group, 'g', 'the dead letter keeps the group')

    await app.taskqueue.add('/tasks/hold-g', { group: 'g' })
    await waitFor('the group to be busy', () => harness.started.includes('hold-g'))
    t.equal(await queue.requeue('bad-1'), 1, 'requeued')
    await sleep(50)
    t.match(await queue.get('bad-1'), { state: 'waiting', group: 'g' }, 'it waits for room in its group')
    harness.hold.open()
    await waitFor('the requeued task to run again', () => harness.started.filter((name) => name === 'bad-1').length === 2)
    t.equal(harness.most.get('g'), 1, 'within its group\'s limit')

    await waitFor('the requeued task to die again', async () => (await queue.stats()).inFlight === 0)
    await queue.pause()
    for (let n = 0; n < 5; n++) await app.taskqueue.add(`/tasks/r-${n}`, { group: `r${n % 2}` })
    await app.taskqueue.add('/tasks/r-none')
    await app.taskqueue.add('/tasks/r-later', { group: 'r0', delay: 60_000 })
    t.match(await queue.stats(), { waiting: 6, delayed: 1 }, 'waiting and delayed, grouped or not')
    await queue.reset()
    t.match(await queue.stats(), { waiting: 0, delayed: 0, oldestWaitingAge: null }, 'reset() drops them all')
    t.same(await queue.waiting(), [], 'none is listed')
    await queue.resume()
    await app.taskqueue.add('/tasks/after', { group: 'r0' })
    await waitFor('a task added after the reset to run', () => harness.done.has('after'))
    t.notOk(harness.started.some((name) => name.startsWith('r-')), 'no dropped task ran')
  })
}

test('issue 14: a bad group or groupConcurrency fails with a coded error', async (t) => {
  const backend = await backendFor('local')
  for (const groupConcurrency of [0, 1.5, -1, '2']) {
    const { app } = loggedApp()
    t.teardown(() => app.close())
    const error = await app.register(taskqueue, { queues: [backend.queue('default', { groupConcurrency } as never)] }).ready().then(() => null, (error: unknown) => error)
    t.match(error, { code: 'FST_TASKQUEUE_INVALID_OPTION', message: /queues\[0\]\.groupConcurrency/ }, `groupConcurrency ${JSON.stringify(groupConcurrency)} is refused, by its path`)
  }
  const app = await startApp(t, { queues: [backend.queue()], consumers: [] })
  for (const group of ['', 'a b', 'x'.repeat(201), 'é', 5, null]) {
    t.equal(await codeOf(() => app.taskqueue.add('/tasks/x', { group } as never)), 'FST_TASKQUEUE_INVALID_ARGUMENT', `group ${JSON.stringify(group)} is refused`)
  }
  t.equal(await codeOf(() => app.taskqueue.add('/tasks/x', { group: 'A-z_0.9:-'.padEnd(200, 'x') })), 'no error', 'the characters and length of an id are taken')
})
