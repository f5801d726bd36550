// The request's hooks: they mark the tasks this app dispatched, hide `taskOnly` routes from every
// other request, and hand the tasks a request holds to their queues once it succeeded (or drop
// them once it failed).
import type { FastifyReply, FastifyRequest, onErrorHookHandler, onRequestHookHandler, onResponseHookHandler, onSendHookHandler } from 'fastify'
import type { TaskQueueService } from '../taskqueue'
import { dispatchHeader } from '../consumer/task-headers'
import { madeRequestTasks, requestTasks, taskFields } from './tasks'

const kFailed = Symbol('taskqueue.failed')

interface FailedRequest extends FastifyRequest {
  [kFailed]?: true
}

/**
 * Works out the mark of a request that carries a dispatch token, if no earlier hook did, and hides
 * `taskOnly` routes from every request that is not a task. A request without the header (nearly
 * every request) allocates nothing here.
 */
export function onRequestHook (service: TaskQueueService): onRequestHookHandler {
  return function markDispatchedTask (request, reply, done) {
    let tasks = madeRequestTasks(request)
    if (tasks === undefined && request.headers[dispatchHeader] !== undefined) {
      tasks = requestTasks(service, request)
    }
    if ((tasks === undefined || tasks.task === null) && request.routeOptions.config.taskOnly === true) {
      reply.callNotFound()
      return
    }
    done()
  }
}

/** A handler error fails the request even when an error handler answers it with a success. */
export function onErrorHook (): onErrorHookHandler {
  return function markFailedRequest (request, reply, error, done) {
    (request as FailedRequest)[kFailed] = true
    done()
  }
}

function succeeded (request: FastifyRequest, reply: FastifyReply): boolean {
  return reply.statusCode < 400 && (request as FailedRequest)[kFailed] !== true && !request.raw.aborted
}

/**
 * Tasks held by a request that succeeded are handed to their queues after the response was sent;
 * for a failed or aborted request they are dropped.
 */
export function onResponseHook (service: TaskQueueService): onResponseHookHandler {
  return function handOverTasks (request, reply, done) {
    const held = madeRequestTasks(request)?.takeHeld() ?? null
    if (held !== null) {
      if (succeeded(request, reply)) {
        service.pushAfterResponse(held)
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
  return async function pushBeforeResponse (request, reply, payload) {
    const held = madeRequestTasks(request)?.held
    if (held == null || !succeeded(request, reply)) return payload
    const early = service.takeEarlyTasks(held)
    if (early.length === 0) return payload
    await service.pushNow(early)
    return payload
  }
}
