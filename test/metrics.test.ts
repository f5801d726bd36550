// issue 13, "Instrumentation", Prometheus: the `metrics` option registers the plugin's metrics on
// prom-client's default registry or on the app's own, with the names and labels of the issue; the
// counters follow the task channels, the queue gauges are read at scrape time (every state, zeros
// included); two apps share one registry, and closing the last removes what it registered.
import { test } from 'tap'
import { Counter, Registry, register as defaultRegistry } from 'prom-client'
import { backendFor, codeOf, queueTypes, startApp, waitFor } from './helpers/both-queues'
import { recordingApp } from './helpers/app'

type Labels = Record<string, string | number>

/** The value of one sample (the metric's own name, or one of a histogram's, such as `_count`). */
async function sample (registry: Registry, name: string, labels: Labels): Promise<number | undefined> {
  const metrics = await registry.getMetricsAsJSON()
  for (const metric of metrics) {
    for (const value of metric.values as Array<{ metricName?: string, labels: Labels, value: number }>) {
      const sampleName = value.metricName ?? metric.name
      if (sampleName !== name) continue
      if (Object.entries(labels).every(([key, wanted]) => value.labels[key] === wanted)) return value.value
    }
  }
  return undefined
}

for (const type of queueTypes) {
  test(`${type}: issue 13, the counters and histograms count what this process did`, async (t) => {
    const backend = await backendFor(type)
    const registry = new Registry()
    const app = await startApp(t, {
      queues: [backend.queue('mail')],
      consumers: [{ queue: 'mail', retryMaxCount: 1, retryDelay: { min: 5, max: 10 } }],
      metrics: { registry }
    }, (app) => {
      app.get('/tasks/ok', async () => 'ok')
      app.get('/tasks/moved', async (request, reply) => reply.redirect('/elsewhere'))
      app.get('/tasks/flaky', async (request, reply) => reply.code(500).send())
      app.get('/tasks/bad', async (request, reply) => reply.code(400).send())
    })
    for (const name of ['ok', 'moved', 'flaky', 'bad']) await app.taskqueue.add(`/tasks/${name}`, { queue: 'mail', params: { user: 42 } })
    const dead = (reason: string): Promise<number | undefined> => sample(registry, 'taskqueue_tasks_dead_total', { queue: 'mail', reason })
    await waitFor('both failing tasks to die', async () => (await dead('final status')) === 1 && (await dead('retries exhausted')) === 1)

    t.equal(await sample(registry, 'taskqueue_tasks_enqueued_total', { queue: 'mail' }), 4, 'enqueued: the tasks added, not the retry')
    t.equal(await sample(registry, 'taskqueue_tasks_completed_total', { queue: 'mail' }), 2, 'completed: a 2xx and a 3xx')
    t.equal(await sample(registry, 'taskqueue_tasks_retried_total', { queue: 'mail' }), 1, 'retried: the flaky task once')
    t.equal(await sample(registry, 'taskqueue_task_duration_seconds_count', { queue: 'mail' }), 5, 'duration: one per try')
    t.equal(await sample(registry, 'taskqueue_task_wait_seconds_count', { queue: 'mail' }), 5, 'wait: one per try')
    t.equal(await sample(registry, 'taskqueue_task_duration_seconds_bucket', { queue: 'mail', le: '+Inf' }), 5)
    const text = await registry.metrics()
    t.notMatch(text, /\/tasks\//, 'never a url as a label')
  })

  test(`${type}: issue 13, the queue gauges are read at scrape time, every state present`, async (t) => {
    const backend = await backendFor(type)
    const registry = new Registry()
    const app = await startApp(t, { queues: [backend.queue('mail')], consumers: [], metrics: { registry } })
    const queue = app.taskqueue.queue('mail')
    const gauge = (state: string): Promise<number | undefined> => sample(registry, 'taskqueue_queue_tasks', { queue: 'mail', state })
    const supported = await codeOf(() => queue.stats()) === 'no error'
    if (!supported) {
      // A backend without stats() (the Redis queue until it has them) gets no gauge at all.
      t.equal(await gauge('waiting'), undefined, 'no gauge for a queue without stats()')
      t.equal(await sample(registry, 'taskqueue_queue_paused', { queue: 'mail' }), undefined)
      return
    }
    for (const state of ['waiting', 'delayed', 'in_flight', 'dead']) t.equal(await gauge(state), 0, `${state}: present at zero`)
    t.equal(await sample(registry, 'taskqueue_queue_paused', { queue: 'mail' }), 0)
    await app.taskqueue.add('/tasks/a', { queue: 'mail' })
    await app.taskqueue.add('/tasks/b', { queue: 'mail' })
    await app.taskqueue.add('/tasks/c', { queue: 'mail', delay: 60_000 })
    await queue.pause()
    t.equal(await gauge('waiting'), 2, 'waiting, as stats() says at the scrape')
    t.equal(await gauge('delayed'), 1)
    t.equal(await sample(registry, 'taskqueue_queue_paused', { queue: 'mail' }), 1, 'paused')
  })
}

test('local: issue 13, a gauge forgets the queues of an app that closed', async (t) => {
  const backend = await backendFor('local')
  const registry = new Registry()
  const first = await startApp(t, { queues: [backend.queue('one')], consumers: [], metrics: { registry } })
  const second = await startApp(t, { queues: [backend.queue('two')], consumers: [], metrics: { registry } })
  await first.taskqueue.add('/tasks/a', { queue: 'one' })
  await second.taskqueue.add('/tasks/b', { queue: 'two' })
  t.equal(await sample(registry, 'taskqueue_queue_tasks', { queue: 'one', state: 'waiting' }), 1, 'two apps on one registry: both queues')
  t.equal(await sample(registry, 'taskqueue_queue_tasks', { queue: 'two', state: 'waiting' }), 1)
  t.equal(await sample(registry, 'taskqueue_tasks_enqueued_total', { queue: 'one' }), 1, 'each app counts its own tasks once')
  await first.close()
  t.equal(await sample(registry, 'taskqueue_queue_tasks', { queue: 'one', state: 'waiting' }), undefined, 'the closed app\'s queue is gone')
  t.equal(await sample(registry, 'taskqueue_queue_tasks', { queue: 'two', state: 'waiting' }), 1, 'the other stays')
  await second.close()
  t.same(await registry.getMetricsAsJSON(), [], 'the last app to close removes the metrics')
})

test('issue 13: a stats() that fails leaves its queue out of the scrape, logged', async (t) => {
  const backend = await backendFor('local')
  const registry = new Registry()
  const { app, lines } = await recordingApp(t, { queues: [backend.queue('default')], consumers: [], metrics: { registry } })
  // The handle of a queue whose backend fails to answer, as a Redis that is down does.
  const queue = app.taskqueue.queue
  app.taskqueue.queue = (name) => ({ ...queue.call(app.taskqueue, name), stats: async () => { throw new Error('down') } })
  t.teardown(() => { app.taskqueue.queue = queue })
  t.equal(await sample(registry, 'taskqueue_queue_tasks', { queue: 'default', state: 'waiting' }), undefined, 'no figure')
  t.match(lines.filter(({ msg }) => msg === 'taskqueue: the queue\'s stats could not be read for its metrics'), [{ level: 40, queue: 'default', err: { message: 'down' } }], 'a warning')
})

test('issue 13: metrics: true registers on the default registry, again after the app closed', async (t) => {
  for (const round of [1, 2]) {
    const app = await startApp(t, { consumers: [], metrics: true })
    await app.taskqueue.add('/tasks/a')
    t.equal(await sample(defaultRegistry, 'taskqueue_tasks_enqueued_total', { queue: 'default' }), 1, `round ${round}: counted from zero`)
    await app.close()
    t.equal(defaultRegistry.getSingleMetric('taskqueue_tasks_enqueued_total'), undefined, `round ${round}: removed at close`)
  }
  const off = await startApp(t, { consumers: [], metrics: false })
  await off.taskqueue.add('/tasks/a')
  t.equal(defaultRegistry.getSingleMetric('taskqueue_tasks_enqueued_total'), undefined, 'metrics: false registers nothing')
})

test('issue 13: a registry that holds a metric of the same name of its own is refused with a coded error', async (t) => {
  const registry = new Registry()
  registry.registerMetric(new Counter({ name: 'taskqueue_tasks_dead_total', help: 'the app\'s own', registers: [] }))
  t.equal(await codeOf(() => startApp(t, { metrics: { registry } })), 'FST_TASKQUEUE_METRICS_CONFLICT')
})

test('issue 13: metrics options are checked', async (t) => {
  t.equal(await codeOf(() => startApp(t, { metrics: { registry: {} as never } })), 'FST_TASKQUEUE_INVALID_OPTION', 'an object that is no registry')
  t.equal(await codeOf(() => startApp(t, { metrics: 'yes' as never })), 'FST_TASKQUEUE_INVALID_OPTION', 'neither a boolean nor an object')
  t.equal(await codeOf(() => startApp(t, { metrics: { registry: new Registry(), extra: 1 } as never })), 'FST_TASKQUEUE_INVALID_OPTION', 'an unknown key')
  const app = await startApp(t, { metrics: {} })
  t.ok(app.hasDecorator('taskqueue'), '{} means the default registry')
  await app.close()
})
