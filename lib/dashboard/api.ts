// The dashboard's JSON API, under <prefix>/api/: what the page reads and the actions its buttons
// take, each a call of a queue handle (app.taskqueue.queue(name)). Every answer about a task is
// masked (./mask.ts); every action passes the guard (./guard.ts) after the app's own hooks.
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance, FastifySchema } from 'fastify'
import type { QueueHandle, TaskQueue } from '../../types'
import { UnknownQueueError, UnknownTaskError } from '../errors'
import { refuseForeignRequests } from './guard'
import { deadLetterView, taskView } from './mask'

// The same rules as queue names (lib/options.ts) and task ids (lib/message.ts): a name or an id
// that no queue can hold is refused before any queue is asked.
const QueueParams = Type.Object({
  queue: Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$' })
})
// A task id is the last segment of its path, a wildcard: the router refuses a named parameter
// longer than Fastify's maxParamLength (100 by default), and a task id may be 200 characters.
const TaskParams = Type.Object({
  ...QueueParams.properties,
  '*': Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9_.:-]+$' })
})
const PageQuery = Type.Object({
  offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 }))
}, { additionalProperties: false })

type QueueRoute = { Params: Static<typeof QueueParams> }
type TaskRoute = { Params: Static<typeof TaskParams> }
type PageRoute = QueueRoute & { Querystring: Static<typeof PageQuery> }

/**
 * The handle of a queue that a client named. The handle throws FST_TASKQUEUE_UNKNOWN_QUEUE as a
 * 500, a fault of the code that calls it; asked by a client, the same code is a 404.
 */
function handleOf (taskqueue: TaskQueue, name: string): QueueHandle {
  if (!taskqueue.queueNames.includes(name)) {
    const error = new UnknownQueueError(name, taskqueue.queueNames.join(', '))
    error.statusCode = 404
    throw error
  }
  return taskqueue.queue(name)
}

/** A queue's line of `GET api/queues`: its figures, or the coded error that kept them from us. */
async function summary (handle: QueueHandle): Promise<Record<string, unknown>> {
  try {
    return { queue: handle.name, type: handle.type, ...await handle.stats() }
  } catch (error) {
    const { code, message } = error as { code?: string, message?: string }
    return { queue: handle.name, type: handle.type, error: { code, message } }
  }
}

/**
 * A route schema hidden from document generators (@fastify/swagger, which reads `hide`): an admin
 * API is not the app's public API. Fastify's own type does not know `hide`.
 */
function hidden (schema: FastifySchema): FastifySchema {
  return { ...schema, hide: true } as FastifySchema
}

export function dashboardApi (app: FastifyInstance): void {
  const taskqueue = app.taskqueue
  const read = { schema: hidden({ params: QueueParams }) }
  const readPage = { schema: hidden({ params: QueueParams, querystring: PageQuery }) }
  const readTask = { schema: hidden({ params: TaskParams }) }
  const act = { schema: hidden({ params: QueueParams }), onRequest: refuseForeignRequests }
  const actOnTask = { schema: hidden({ params: TaskParams }), onRequest: refuseForeignRequests }

  // One queue whose backend fails does not hide the others: its line carries the error instead.
  app.get('/api/queues', { schema: hidden({}) }, async () => {
    return await Promise.all(taskqueue.queueNames.map((name) => summary(taskqueue.queue(name))))
  })

  // The schedules with their next run (ISO 8601, or null once there is none).
  app.get('/api/schedules', { schema: hidden({}) }, async () => {
    return taskqueue.schedules().map((schedule) => ({ ...schedule, nextRun: schedule.nextRun?.toISOString() ?? null }))
  })

  app.get<QueueRoute>('/api/queues/:queue', read, async (request) => {
    const handle = handleOf(taskqueue, request.params.queue)
    return { queue: handle.name, type: handle.type, ...await handle.stats() }
  })

  app.get<PageRoute>('/api/queues/:queue/waiting', readPage, async (request) => {
    const tasks = await handleOf(taskqueue, request.params.queue).waiting(request.query)
    return tasks.map(taskView)
  })

  app.get<PageRoute>('/api/queues/:queue/dead', readPage, async (request) => {
    const letters = await handleOf(taskqueue, request.params.queue).dead(request.query)
    return letters.map(deadLetterView)
  })

  app.get<TaskRoute>('/api/queues/:queue/tasks/*', readTask, async (request) => {
    const { queue, '*': id } = request.params
    const info = await handleOf(taskqueue, queue).get(id)
    if (info === null) throw new UnknownTaskError(queue, id)
    return taskView(info)
  })

  app.post<QueueRoute>('/api/queues/:queue/pause', act, async (request) => {
    await handleOf(taskqueue, request.params.queue).pause()
    return { paused: true }
  })

  app.post<QueueRoute>('/api/queues/:queue/resume', act, async (request) => {
    await handleOf(taskqueue, request.params.queue).resume()
    return { paused: false }
  })

  // false, not a 404, when the task was not waiting: it may have started or ended meanwhile.
  app.delete<TaskRoute>('/api/queues/:queue/tasks/*', actOnTask, async (request) => {
    const { queue, '*': id } = request.params
    return { cancelled: await handleOf(taskqueue, queue).cancel(id) }
  })

  app.post<QueueRoute>('/api/queues/:queue/dead/requeue', act, async (request) => {
    return { requeued: await handleOf(taskqueue, request.params.queue).requeue() }
  })

  // 0, not a 404, when nothing was requeued: a live task may hold the id of a dead one.
  app.post<TaskRoute>('/api/queues/:queue/dead/requeue/*', actOnTask, async (request) => {
    const { queue, '*': id } = request.params
    return { requeued: await handleOf(taskqueue, queue).requeue(id) }
  })

  app.delete<QueueRoute>('/api/queues/:queue/dead', act, async (request) => {
    return { purged: await handleOf(taskqueue, request.params.queue).purge() }
  })
}
