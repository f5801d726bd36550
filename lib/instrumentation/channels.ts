// The one instrumentation point: the task lifecycle published on Node's diagnostics_channel. The
// metrics (./metrics.ts) subscribe to these channels as any user may. Every publication is guarded
// by `hasSubscribers` and builds its message only inside the guard: with nobody listening, an event
// costs that check and nothing else.
import { channel } from 'node:diagnostics_channel'
import type {
  DeadLetterCause, TaskCancelledEvent, TaskDeadEvent, TaskEnqueuedEvent, TaskFinishedEvent, TaskMessage, TaskQueue, TaskQueueChannelNames,
  TaskRecoveredEvent, TaskRetriedEvent, TaskStartedEvent
} from '../../types'
import type { Step, TryResult } from '../consumer/retry-policy'

export const taskqueueChannels: Readonly<TaskQueueChannelNames> = Object.freeze({
  enqueued: 'taskqueue:task:enqueued',
  started: 'taskqueue:task:started',
  finished: 'taskqueue:task:finished',
  retried: 'taskqueue:task:retried',
  dead: 'taskqueue:task:dead',
  recovered: 'taskqueue:task:recovered',
  cancelled: 'taskqueue:task:cancelled'
})

const enqueued = channel(taskqueueChannels.enqueued)
const started = channel(taskqueueChannels.started)
const finished = channel(taskqueueChannels.finished)
const retried = channel(taskqueueChannels.retried)
const dead = channel(taskqueueChannels.dead)
const recovered = channel(taskqueueChannels.recovered)
const cancelled = channel(taskqueueChannels.cancelled)

const nextOf = { ack: 'done', retry: 'retry', bury: 'dead', release: 'released' } as const

/**
 * The publisher of one app's events: every message names the app's `taskqueue`, which is set once
 * the service that owns it exists (the backends are made before it, and get this object).
 */
export class TaskEvents {
  taskqueue: TaskQueue | undefined

  /** Tasks added, now in their queue. */
  enqueued (tasks: readonly TaskMessage[]): void {
    if (!enqueued.hasSubscribers) return
    for (const task of tasks) {
      const message: TaskEnqueuedEvent = { taskqueue: this.taskqueue as TaskQueue, queue: task.queue, id: task.id, task }
      enqueued.publish(message)
    }
  }

  started (task: TaskMessage, consumer: string): void {
    if (!started.hasSubscribers) return
    const message: TaskStartedEvent = {
      taskqueue: this.taskqueue as TaskQueue,
      queue: task.queue,
      id: task.id,
      retries: task.retries,
      consumer,
      eta: task.eta,
      waitMs: Math.max(0, Date.now() - task.eta)
    }
    started.publish(message)
  }

  /** A try ended with `result` after `durationMs`, and the consumer takes `step`. */
  finished (task: TaskMessage, reqId: string | undefined, result: TryResult, durationMs: number, step: Step): void {
    if (!finished.hasSubscribers) return
    const message: TaskFinishedEvent = {
      taskqueue: this.taskqueue as TaskQueue,
      queue: task.queue,
      id: task.id,
      retries: task.retries,
      outcome: result.kind,
      durationMs,
      next: nextOf[step.step]
    }
    if (result.kind === 'answered') message.statusCode = result.statusCode
    if (result.kind === 'error') message.error = result.error
    if (reqId !== undefined) message.reqId = reqId
    finished.publish(message)
  }

  /** The queue holds the step the consumer took: a retry or a burial is published. */
  settled (task: TaskMessage, reqId: string | undefined, result: TryResult, step: Step): void {
    if (step.step === 'retry') {
      if (!retried.hasSubscribers) return
      const message: TaskRetriedEvent = {
        taskqueue: this.taskqueue as TaskQueue, queue: task.queue, id: task.id, retries: task.retries + 1, delayMs: step.delay, detail: step.detail
      }
      if (result.kind === 'answered') message.statusCode = result.statusCode
      if (reqId !== undefined) message.reqId = reqId
      retried.publish(message)
    } else if (step.step === 'bury') {
      this.dead(task.queue, task.id, step.cause, reqId)
    }
  }

  /** A task buried; `id` null when it is not known. */
  dead (queue: string, id: string | null, cause: DeadLetterCause, reqId?: string): void {
    if (!dead.hasSubscribers) return
    const message: TaskDeadEvent = { taskqueue: this.taskqueue as TaskQueue, queue, id, ...cause }
    if (reqId !== undefined) message.reqId = reqId
    dead.publish(message)
  }

  /** A task of an expired consumer, back in its queue. */
  recovered (queue: string, id: string): void {
    if (!recovered.hasSubscribers) return
    const message: TaskRecoveredEvent = { taskqueue: this.taskqueue as TaskQueue, queue, id }
    recovered.publish(message)
  }

  cancelled (queue: string, id: string): void {
    if (!cancelled.hasSubscribers) return
    const message: TaskCancelledEvent = { taskqueue: this.taskqueue as TaskQueue, queue, id }
    cancelled.publish(message)
  }
}
