// issue 13, "What a task says about itself": every log line of a dispatched task's own request
// carries taskId and queue, and the plugin's lines about a try carry the request id of that try,
// so that the two can be joined. A child logger factory the app set is kept.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import type { TaskFinishedEvent } from '../types'
import { recordingApp } from './helpers/app'
import { backendFor, waitFor } from './helpers/both-queues'
import { pluginLines, type LogLine } from './helpers/harness'

const linesOf = (lines: LogLine[], reqId: unknown): LogLine[] => lines.filter((line) => line.reqId === reqId)

for (const type of ['local', 'redis'] as const) {
  test(`${type}: issue 13, a task's request logs taskId and queue, and the plugin's lines name its reqId`, async (t) => {
    const backend = await backendFor(type)
    const { app, lines, finished } = await recordingApp(t, {
      queues: [backend.queue('mail')],
      consumers: [{ queue: 'mail', retryMaxCount: 1, retryDelay: { min: 5, max: 10 } }]
    }, {
      tasks: (request, reply, tries) => {
        request.log.info('in the handler')
        if (tries === 0) return reply.code(503).send()
      },
      routes: (app) => { app.get('/plain', async (request) => { request.log.info('plain handler'); return 'ok' }) }
    })
    const id = await app.taskqueue.add('/tasks/welcome', { queue: 'mail' })
    await waitFor('the retry to finish', () => finished.length === 2)
    await waitFor('its last line', () => pluginLines(lines).some((line) => line.msg === 'taskqueue: task done'))
    await app.inject('/plain')

    const handlerLines = lines.filter((line) => line.msg === 'in the handler')
    t.equal(handlerLines.length, 2, 'one per try')
    const reqIds = handlerLines.map((line) => line.reqId)
    t.not(reqIds[0], reqIds[1], 'each try is a request of its own')
    for (const reqId of reqIds) {
      const own = linesOf(lines, reqId).filter((line) => !String(line.msg).startsWith('taskqueue:'))
      t.same(own.map((line) => line.msg), ['incoming request', 'in the handler', 'request completed'], 'the request\'s own lines')
      t.ok(own.every((line) => line.taskId === id && line.queue === 'mail'), 'each with taskId and queue')
    }
    const retry = pluginLines(lines).find((line) => line.msg === 'taskqueue: task to be retried')
    t.match(retry, { taskId: id, queue: 'mail', reqId: reqIds[0], statusCode: 503 }, 'the retry line names the first try\'s request')
    const done = pluginLines(lines).find((line) => line.msg === 'taskqueue: task done')
    t.match(done, { taskId: id, reqId: reqIds[1] }, 'the done line names the second try\'s request')
    const plain = lines.filter((line) => line.msg === 'plain handler')
    t.equal(plain.length, 1)
    t.notOk('taskId' in plain[0] || 'queue' in plain[0], 'a request that is no task has neither field')
  })
}

test('issue 13: a child logger factory the app set before the plugin is kept', async (t) => {
  const backend = await backendFor('local')
  const { app, lines, finished } = await recordingApp(t, { queues: [backend.queue('default')] }, {
    before: (app) => {
      app.setChildLoggerFactory(function (logger, bindings, options) {
        return logger.child({ ...bindings, tenant: 'acme' }, options)
      })
    },
    tasks: (request) => { request.log.info('in the handler') }
  })
  const id = await app.taskqueue.add('/tasks/one')
  await waitFor('the task to run', () => finished.length === 1)
  await app.inject('/tasks/nothing')
  t.match(lines.find((line) => line.msg === 'in the handler'), { taskId: id, queue: 'default', tenant: 'acme' }, 'both: the app\'s bindings and the task\'s')
  const outside = lines.filter((line) => line.msg === 'incoming request' && line.taskId === undefined)
  t.ok(outside.length > 0 && outside.every((line) => line.tenant === 'acme'), 'other requests still go through the app\'s factory')
})

test('issue 13: an app without a logger keeps no factory of the plugin, and its events still name the request id', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  const childLoggerFactory = app.childLoggerFactory
  await app.register(taskqueue)
  t.equal(app.childLoggerFactory, childLoggerFactory, 'Fastify\'s own factory, which it skips for a disabled logger')
  const events: TaskFinishedEvent[] = []
  const listener = (message: unknown): void => { if ((message as TaskFinishedEvent).taskqueue === app.taskqueue) events.push(message as TaskFinishedEvent) }
  subscribe('taskqueue:task:finished', listener)
  t.teardown(() => { unsubscribe('taskqueue:task:finished', listener) })
  let requestId: string | undefined
  app.get('/tasks/one', async (request) => {
    requestId = request.id
    return 'ok'
  })
  await app.ready()
  await app.taskqueue.add('/tasks/one')
  await waitFor('the task to finish', () => events.length === 1)
  t.equal(events[0].reqId, requestId, 'the request id, taken as the request was marked')
})
