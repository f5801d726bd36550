// Graceful shutdown of issue 4 on both queue types: `close()` waits up to `closeTimeout` for the
// tasks in flight; on Redis every task not finished by then is back in its waiting list when
// `close()` resolves (no processing list of the stopped instance holds anything), and runs in the
// next app; a try that the closing app refused is not counted as a retry.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { decodeMessage } from '../lib/queues/codec'
import { recordingApp } from './helpers/app'
import { backendFor, gate, queueTypes, scanKeys, sleep, waitFor, type Backend, type Test } from './helpers/both-queues'
import type { LogLine } from './helpers/harness'
import { storedMessages } from './helpers/redis'

interface Started {
  app: FastifyInstance
  /** x-task-retries of each dispatch, by task id. */
  runs: Map<string, string[]>
  /** Task ids whose handler finished. */
  finished: Set<string>
  logs: LogLine[]
}

/** An app whose /tasks/slow takes `slowMs`, and /tasks/hold waits for `hold`. */
async function start (t: Test, backend: Backend, closeTimeout: number, options: { slowMs?: number, hold?: Promise<void>, concurrentLimit?: number } = {}): Promise<Started> {
  const runs = new Map<string, string[]>()
  const finished = new Set<string>()
  const { app, lines } = await recordingApp(t, {
    queues: [backend.queue()],
    consumers: [{ queue: 'default', concurrentLimit: options.concurrentLimit ?? 1, retryMaxCount: 3, retryDelay: { min: 5, max: 10 } }],
    closeTimeout
  }, {
    noTaskRoute: true,
    logLevel: 'info',
    routes: (app) => app.post('/tasks/:name', async (request) => {
      const id = request.headers['x-task-id'] as string
      runs.set(id, [...runs.get(id) ?? [], request.headers['x-task-retries'] as string])
      const name = (request.params as { name: string }).name
      if (name === 'slow') await sleep(options.slowMs ?? 0)
      if (name === 'hold') await options.hold
      finished.add(id)
      return {}
    })
  })
  return { app, runs, finished, logs: lines }
}

async function processingLists (backend: Backend): Promise<string[]> {
  return await scanKeys(backend.redis(), `${backend.prefix}:*processing*`)
}

for (const type of queueTypes) {
  test(`${type}: close() waits for the tasks in flight`, async (t) => {
    const backend = await backendFor(type)
    const started = await start(t, backend, 5000, { slowMs: 400 })
    const id = await started.app.taskqueue.add('/tasks/slow', { method: 'POST', payload: {} })
    await waitFor('the task to start', () => started.runs.has(id))
    const closing = Date.now()
    await started.app.close()
    const took = Date.now() - closing
    t.ok(started.finished.has(id), 'the task finished before close() resolved')
    t.ok(took >= 300, `close() waited for it (${took} ms)`)
    t.notOk(started.logs.some(({ msg }) => /released to its queue/.test(msg)), 'nothing was released')
    if (type === 'redis') {
      const client = backend.redis()
      t.same(await processingLists(backend), [], 'no processing list is left')
      t.equal(await client.llen(backend.key('waiting')), 0, 'the finished task is not back in the queue')
      t.equal(await client.zcard(backend.key('delayed')), 0)
      t.equal(await client.llen(backend.key('dead')), 0)
    } else {
      t.same(await started.app.taskqueue.queue('default').dead(), [])
    }
  })

  test(`${type}: tasks still running at closeTimeout are released to their queue`, async (t) => {
    const backend = await backendFor(type)
    const hold = gate()
    t.teardown(hold.open)
    const started = await start(t, backend, 200, { hold: hold.promise, concurrentLimit: 3 })
    const running = await Promise.all([1, 2, 3].map((n) => started.app.taskqueue.add('/tasks/hold', { method: 'POST', payload: { n } })))
    await waitFor('three tasks in flight', () => running.every((id) => started.runs.has(id)))
    const waiting = await Promise.all([4, 5].map((n) => started.app.taskqueue.add('/tasks/later', { method: 'POST', payload: { n } })))
    const closing = Date.now()
    await started.app.close()
    const took = Date.now() - closing
    t.ok(took >= 180, `close() waited for closeTimeout (${took} ms)`)
    t.ok(took < 2000, 'and no longer')
    t.equal(started.finished.size, 0, 'the tasks were still running')
    const givenBack = started.logs.filter(({ msg }) => msg === 'taskqueue: task still running at close, released to its queue')
    t.same(givenBack.map(({ taskId }) => taskId).sort(), [...running].sort(), 'each task in flight was released')
    t.notOk(started.logs.some(({ msg }) => /to be retried|dead letters/.test(msg)), 'not retried, not buried')

    if (type === 'local') {
      // A local queue is volatile: what it still holds at close is lost, and said so.
      const lost = started.logs.find(({ msg }) => msg === 'taskqueue: local tasks still waiting are lost at close')
      t.equal(lost?.waiting, 5, 'the three released and the two waiting are counted as lost')
      t.same(await started.app.taskqueue.queue('default').dead(), [])
      return
    }
    const client = backend.redis()
    t.same(await processingLists(backend), [], 'no processing list of the stopped instance holds anything')
    const stored = (await storedMessages(client, backend.key('waiting'))).map((raw) => decodeMessage(raw).message)
    t.same(stored.map((message) => message?.id).sort(), [...running, ...waiting].sort(), 'every task is back in the waiting list')
    t.ok(stored.every((message) => message?.retries === 0), 'none counted as a retry')
    hold.open()
    await sleep(50)
    t.equal(await client.llen(backend.key('waiting')), 5, 'the late end of a released task does not take it out of the queue')

    const next = await start(t, backend, 5000, { concurrentLimit: 5 })
    await waitFor('the next app to run them all', () => [...running, ...waiting].every((id) => next.finished.has(id)))
    t.same([...running, ...waiting].map((id) => next.runs.get(id)), [...running, ...waiting].map(() => ['0']), 'each once, as a first try')
    t.equal(await client.llen(backend.key('waiting')), 0)
  })

  test(`${type}: a try refused because the app is closing is not counted as a retry`, async (t) => {
    const backend = await backendFor(type)
    let closingStarted = (): void => {}
    const closing = new Promise<void>((resolve) => { closingStarted = resolve })
    const runs: string[] = []
    const { app, lines: logs } = await recordingApp(t, {
      queues: [backend.queue()],
      consumers: [{ queue: 'default', retryMaxCount: 3, retryDelay: { min: 5, max: 10 } }],
      closeTimeout: 5000
    }, {
      noTaskRoute: true,
      logLevel: 'info',
      // Added before the plugin, so it runs before the plugin's own preClose hook.
      before: (app) => app.addHook('preClose', async () => { closingStarted() }),
      routes: (app) => app.post('/tasks/refused', async (request) => {
        runs.push(request.headers['x-task-retries'] as string)
        return {}
      })
    })
    // The first dispatch reaches the real inject() only once the app began to close, which
    // refuses it (FST_ERR_REOPENED_CLOSE_SERVER).
    const realInject = app.inject.bind(app)
    const refusals: string[] = []
    Object.assign(app, {
      inject (options: { url: string }, callback: (error: Error | null, response?: unknown) => void) {
        closing.then(() => sleep(20)).then(() => realInject(options as never)).then((response) => callback(null, response), (error: Error & { code?: string }) => {
          refusals.push(String(error.code))
          callback(error)
        })
      }
    })
    const id = await app.taskqueue.add('/tasks/refused', { method: 'POST', payload: {} })
    await sleep(100)
    t.same(runs, [], 'held until the app closes')
    await app.close()
    t.same(refusals, ['FST_ERR_REOPENED_CLOSE_SERVER'], 'the closing app refused the try')
    t.same(runs, [], 'the task did not run')
    t.notOk(logs.some(({ msg }) => /to be retried|dead letters|still running/.test(msg)), 'neither retried nor buried')

    if (type === 'local') {
      t.same(await app.taskqueue.queue('default').dead(), [])
      t.equal(await app.taskqueue.queue('default').length(), 1, 'released to the queue (lost with it, being local)')
    } else {
      const client = backend.redis()
      t.equal(await client.llen(backend.key('dead')), 0, 'not in the dead letters')
      t.same(await processingLists(backend), [], 'no processing list is left')
      t.equal(await client.zcard(backend.key('delayed')), 0, 'no retry waits')
      const [stored] = await storedMessages(client, backend.key('waiting'))
      t.match(decodeMessage(stored).message, { id, retries: 0 }, 'the task is back in the queue, its retries still 0')
      const next = await start(t, backend, 5000)
      await waitFor('the next app to run it', () => next.runs.has(id))
      t.same(next.runs.get(id), ['0'], 'it runs as a first try')
    }
  })
}
