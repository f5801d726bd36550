// `request.taskqueue`: the tasks a request adds are held with it and handed to their queues only
// once its response was sent successfully, as the original queued them when the transaction
// committed.
import type { FastifyReply, FastifyRequest, onRequestHookHandler, onResponseHookHandler, onSendHookHandler, onErrorHookHandler } from 'fastify'
import type { DispatchedTask, TaskMessage } from '../types'
import type { AddOptions } from './message'
import type { TaskQueueService } from './taskqueue'
import { dispatchHeader } from './dispatch-mark'

const kRequestTasks = Symbol('taskqueue.requestTasks')
const kFailed = Symbol('taskqueue.failed')

interface TaskQueueRequest extends FastifyRequest {
  [kRequestTasks]?: RequestTaskQueue
  [kFailed]?: true
}

/** What every log line about some tasks carries: their ids and their queues. */
function taskFields (tasks: TaskMessage[]): { taskIds: string[], queues: string[] } {
  return { taskIds: tasks.map(({ id }) => id), queues: [...new Set(tasks.map(({ queue }) => queue))] }
}

export class RequestTaskQueue {
  /** Tasks added while handling the request, in the order added; null until one is. */
  held: TaskMessage[] | null = null

  constructor (
    private readonly service: TaskQueueService,
    private readonly request: FastifyRequest,
    /** The task this request runs, when a consumer of this app dispatched it. */
    readonly task: DispatchedTask | null
  ) {}

  /**
   * Adds a task, to be queued once the response was sent with a status below 400. Returns the
   * task id at once. Throws a coded error for a bad argument.
   */
  add (url: string, options?: AddOptions): string {
    const message = this.service.createMessage(url, options, this.request)
    // The client already went away: no onResponse will come to hand this task over (or to drop
    // it), so holding it would keep `drain()` waiting forever. It is dropped at once.
    if (this.request.raw.aborted) {
      this.request.log.debug(taskFields([message]), 'taskqueue: request aborted, its tasks are dropped')
      return message.id
    }
    if (this.held === null) {
      this.held = [message]
      this.service.holding(1)
      this.watchForAbort()
    } else {
      this.held.push(message)
    }
    return message.id
  }

  /**
   * Fastify runs no onResponse hook for a request whose client went away (the response never
   * finishes): its held tasks would be neither handed over nor dropped, and `drain()` would wait
   * for them forever. They are dropped when the request closes aborted, as Fastify tells an
   * aborted request apart. A listener on the requests that hold tasks, rather than an
   * onRequestAbort hook: with such a hook Fastify listens for the close of every request of the
   * app, which cost about a sixth of the throughput of a small route (bench: dispatch of tasks).
   */
  private watchForAbort (): void {
    const raw = this.request.raw
    raw.once('close', () => {
      const held = this.held
      if (!raw.aborted || held === null) return
      this.held = null
      this.request.log.debug(taskFields(held), 'taskqueue: request aborted, its tasks are dropped')
      this.service.holding(-1)
    })
  }
}

/**
 * The request's task API, made on first use: requests that queue nothing pay nothing. Its mark is
 * worked out then, whichever hook asks first (one of another plugin that runs before ours
 * included), and the same object then serves the whole request, with the tasks it holds.
 */
export function requestTaskQueue (service: TaskQueueService, request: FastifyRequest): RequestTaskQueue {
  const tasked = request as TaskQueueRequest
  return (tasked[kRequestTasks] ??= new RequestTaskQueue(service, request, service.dispatchMarks.take(request)))
}

/**
 * Works out the mark of a request that carries a dispatch token, if no earlier hook did, and hides
 * `taskOnly` routes from every request that is not a task. A request without the header (nearly
 * every request) allocates nothing here.
 */
export function onRequestHook (service: TaskQueueService): onRequestHookHandler {
  return function markDispatchedTask (request, reply, done) {
    let requestTasks = (request as TaskQueueRequest)[kRequestTasks]
    if (requestTasks === undefined && request.headers[dispatchHeader] !== undefined) {
      requestTasks = requestTaskQueue(service, request)
    }
    if ((requestTasks === undefined || requestTasks.task === null) && request.routeOptions.config.taskOnly === true) {
      reply.callNotFound()
      return
    }
    done()
  }
}

/** A handler error fails the request even when an error handler answers it with a success. */
export function onErrorHook (): onErrorHookHandler {
  return function markFailedRequest (request, reply, error, done) {
    (request as TaskQueueRequest)[kFailed] = true
    done()
  }
}

function takeHeldTasks (request: FastifyRequest): TaskMessage[] | null {
  const requestTasks = (request as TaskQueueRequest)[kRequestTasks]
  const held = requestTasks?.held ?? null
  if (requestTasks !== undefined) requestTasks.held = null
  return held
}

function succeeded (request: FastifyRequest, reply: FastifyReply): boolean {
  return reply.statusCode < 400 && (request as TaskQueueRequest)[kFailed] !== true && !request.raw.aborted
}

/**
 * Tasks held by a request that succeeded are handed to their queues after the response was sent;
 * for a failed or aborted request they are dropped.
 */
export function onResponseHook (service: TaskQueueService): onResponseHookHandler {
  return function handOverTasks (request, reply, done) {
    const held = takeHeldTasks(request)
    if (held !== null) {
      if (succeeded(request, reply)) {
        service.enqueueAfterResponse(held)
      } else {
        request.log.debug({ ...taskFields(held), statusCode: reply.statusCode }, 'taskqueue: request failed, its tasks are dropped')
      }
      service.holding(-1)
    }
    done()
  }
}

/**
 * For queues in `before-response` mode: the tasks are pushed before the response is sent, and a
 * failure to push turns the response into a 503.
 */
export function onSendHook (service: TaskQueueService): onSendHookHandler {
  return async function enqueueBeforeResponse (request, reply, payload) {
    const requestTasks = (request as TaskQueueRequest)[kRequestTasks]
    if (requestTasks?.held == null || !succeeded(request, reply)) return payload
    const early = service.takeEarlyTasks(requestTasks.held)
    if (early.length === 0) return payload
    await service.enqueueNow(early)
    return payload
  }
}
