// `request.taskqueue`: the tasks a request adds are held with it and handed to their queues only
// once its response was sent successfully, as the original queued them when the transaction
// committed. The hooks that hand them over are in hooks.ts.
import type { FastifyRequest } from 'fastify'
import type { AddOptions, DispatchedTask, RequestTaskQueue, TaskMessage } from '../../types'
import type { TaskQueueService } from '../taskqueue'

const kRequestTasks = Symbol('taskqueue.requestTasks')

interface TaskQueueRequest extends FastifyRequest {
  [kRequestTasks]?: RequestTasks
}

/** What every log line about some tasks carries: their ids and their queues. */
export function taskFields (tasks: TaskMessage[]): { taskIds: string[], queues: string[] } {
  return { taskIds: tasks.map(({ id }) => id), queues: [...new Set(tasks.map(({ queue }) => queue))] }
}

export class RequestTasks implements RequestTaskQueue {
  /** The task this request runs, when a consumer of this app dispatched it. */
  readonly task: DispatchedTask | null
  /** Tasks added while handling the request, in the order added; null until one is. */
  held: TaskMessage[] | null = null
  private readonly service: TaskQueueService
  private readonly request: FastifyRequest

  constructor (service: TaskQueueService, request: FastifyRequest, task: DispatchedTask | null) {
    this.service = service
    this.request = request
    this.task = task
  }

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

  /** The held tasks, which the request holds no more; null if it held none. */
  takeHeld (): TaskMessage[] | null {
    const held = this.held
    this.held = null
    return held
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
export function requestTasks (service: TaskQueueService, request: FastifyRequest): RequestTasks {
  const tasked = request as TaskQueueRequest
  return (tasked[kRequestTasks] ??= new RequestTasks(service, request, service.dispatchMarks.take(request)))
}

/** The request's task API if something used it already, without making it. */
export function madeRequestTasks (request: FastifyRequest): RequestTasks | undefined {
  return (request as TaskQueueRequest)[kRequestTasks]
}
