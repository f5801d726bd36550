// Public types of fastify-taskqueue: the task message, the queue backend interface that the local
// and Redis queues implement (and that a user may implement), and the Fastify augmentation.
import type { FastifyBaseLogger } from 'fastify'
import type { TaskQueueService } from '../lib/taskqueue'
import type { RequestTaskQueue } from '../lib/request-tasks'

/** The HTTP methods a task may use. */
export type TaskMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/**
 * One queued task: everything needed to replay it as a request of this app. Version 1 of the
 * message format; the Redis queue stores it as JSON, with a binary payload in base64.
 */
export interface TaskMessage {
  v: 1
  /** Task id: a UUID, or the id the caller chose. Sent as `x-task-id`. */
  id: string
  queue: string
  /** Path of this app, with its query string. */
  url: string
  method: TaskMethod
  /** Lower-case header names. */
  headers: Record<string, string>
  /** Request body as it will be sent: text or bytes, or absent. */
  payload?: string | Buffer
  /** How many times the task was dispatched again after a retryable outcome. */
  retries: number
  /** Milliseconds since the epoch when the task was added. */
  createdAt: number
  /** Milliseconds since the epoch before which the task does not run (its delay, or its retry's). */
  eta: number
  /** Set when the caller chose the id: while such a task lives, adding the same id again is a no-op. */
  named?: true
}

/** Why a task ended in the dead letters. */
export type DeadLetterReason =
  /** It kept getting retryable outcomes until `retryMaxCount` was spent. */
  | 'retries exhausted'
  /** It got a status that no retry can fix (a 4xx other than 409 and 429, or 501). */
  | 'final status'
  /** Its last try ran past `taskTimeout`. */
  | 'timeout'
  /** Its consumers kept dying while running it (a poison pill). */
  | 'recovered too often'
  /** What the queue held could not be read as a task of this queue. */
  | 'unreadable'

/** A task that will not run again unless it is requeued. */
export interface DeadLetter {
  /** The task id, or null when the message was unreadable. */
  id: string | null
  queue: string
  reason: DeadLetterReason
  /** What went wrong, in words. */
  detail?: string
  /** Status of the last try, when there was one. */
  statusCode?: number
  /** When the task was set aside (ms since the epoch). */
  at: number
  /** The task, or null when the message was unreadable. */
  task: TaskMessage | null
  /** The message as the queue held it, when it was unreadable. */
  raw?: string
}

/** How a task ended in the dead letters. */
export interface DeadLetterCause {
  reason: DeadLetterReason
  detail?: string
  statusCode?: number
}

/** A page of dead letters: newest first. */
export interface DeadLetterPage {
  offset?: number
  limit?: number
}

/** A task handed to a consumer, to be acknowledged, retried or released exactly once. */
export interface ReservedTask {
  readonly message: TaskMessage
}

/**
 * The consuming side of a queue for one consumer: what it reserved is its own until it
 * acknowledges, retries or releases it.
 */
export interface TaskReceiver {
  /**
   * Resolves with the next task as soon as one is available, or with `null` once `signal` is
   * aborted. Only one `reserve()` of a receiver is pending at a time. `room` is how many tasks the
   * consumer could start now (at least 1): a backend may reserve that many in one go and hand
   * them out on the next calls.
   */
  reserve (signal: AbortSignal, room: number): Promise<ReservedTask | null>
  /** The task is finished (done or given up): forget it. */
  ack (task: ReservedTask): Promise<void>
  /** Dispatch the task again after `delayMs`, its retry count raised by one. */
  retry (task: ReservedTask, delayMs: number): Promise<void>
  /** Put the task back unchanged, as if it had never been reserved (used when the app closes). */
  release (task: ReservedTask): Promise<void>
  /** Set the task aside in the queue's dead letters. */
  bury (task: ReservedTask, cause: DeadLetterCause): Promise<void>
  /**
   * Stop receiving: called once, after every reserved task was settled or given up. `deadline`
   * (ms since the epoch) is when the app stops waiting for it.
   */
  close (deadline?: number): Promise<void>
}

/** A queue backend. `local` and `redis` implement it; pass your own as a queue's `type`. */
export interface QueueBackend {
  readonly name: string
  /**
   * True when other processes can see the queue. Shared queues get no consumer by default, and
   * their waiting tasks are not waited for by `drain()` nor counted as lost on close.
   */
  readonly shared: boolean
  /** Called while the plugin starts: resolve when the backend can take tasks, reject if it cannot. */
  ready? (): Promise<void>
  /**
   * Appends the tasks, in order. A task whose `eta` is in the future waits until then; a `named`
   * task whose id is waiting, delayed or in flight is dropped.
   */
  put (tasks: readonly TaskMessage[]): Promise<void>
  /** Opens the consuming side for one consumer name. */
  receive (consumerName: string): TaskReceiver
  /**
   * Waiting tasks, including those waiting for their `eta`, not those in flight. A backend that is
   * not `shared` must count every task it holds until a `reserve()` has resolved with it: while
   * someone awaits `app.taskqueue.drain()`, this is how the plugin knows the backend still has work.
   */
  length (): Promise<number>
  /** Drops every waiting task. */
  reset (): Promise<void>
  /** Lists dead letters, newest first. */
  dead (page?: DeadLetterPage): Promise<DeadLetter[]>
  /** Puts the dead letter of one task id, or all that are readable, back into the queue; resolves to how many. */
  requeue (id?: string): Promise<number>
  /** Empties the dead letters; resolves to how many there were. */
  purge (): Promise<number>
  /**
   * Called once when the app closes, after every receiver was closed. `deadline` (ms since the
   * epoch) is when the app stops waiting for it: past it, drop what is pending.
   */
  close (deadline?: number): Promise<void>
}

/** What a backend factory receives. */
export interface QueueBackendContext {
  queue: string
  log: FastifyBaseLogger
}

/** A function that makes a backend for a queue name. */
export type QueueBackendFactory = (context: QueueBackendContext) => QueueBackend

/** What `request.taskqueue.task` holds for a dispatched task. */
export interface DispatchedTask {
  id: string
  queue: string
  /** Retries so far (`x-task-retries`). */
  retries: number
  /** When this try was due to run (`x-task-eta`, ISO 8601). */
  eta: Date
}

declare module 'fastify' {
  interface FastifyInstance {
    taskqueue: TaskQueueService
  }
  interface FastifyRequest {
    taskqueue: RequestTaskQueue
  }
  interface FastifyContextConfig {
    /** Answer 404 to every request that is not a task dispatched by this app's consumers. */
    taskOnly?: boolean
  }
}
