// The checks and error mapping of the calls of a queue handle (lib/taskqueue.ts): a bad argument
// throws at once, a failing backend rejects with FST_TASKQUEUE_QUEUE_FAILED, a call a backend of
// the user's own leaves out with FST_TASKQUEUE_UNSUPPORTED.
import type { QueueBackend, TaskPage } from '../types'
import { InvalidArgumentError, QueueFailedError, UnsupportedError, shown } from './errors'

export function checkPage (call: string, page: TaskPage | undefined): void {
  if (page === undefined) return
  // Object.keys(null) threw a TypeError, and a number or an array passed unchecked.
  if (page === null || typeof page !== 'object' || Array.isArray(page)) {
    throw new InvalidArgumentError(`${call}(${shown(page)}): expected { offset?, limit? }, each an integer of 0 or more`)
  }
  for (const key of Object.keys(page)) {
    const value = (page as Record<string, unknown>)[key]
    if ((key !== 'offset' && key !== 'limit') || !Number.isInteger(value) || (value as number) < 0) {
      throw new InvalidArgumentError(`${call}(${shown(page)}): expected { offset?, limit? }, each an integer of 0 or more`)
    }
  }
}

export function checkId (call: string, id: unknown): void {
  if (typeof id !== 'string') throw new InvalidArgumentError(`${call}(id): expected a task id string, got ${shown(id)}`)
}

/**
 * Runs a queue call, turning a failure of its backend (ioredis' own errors, for a Redis that is
 * down) into FST_TASKQUEUE_QUEUE_FAILED naming the queue, the original as its cause. Errors that
 * already carry a code of the plugin's pass as they are.
 */
export async function queueCall<T> (queue: string, call: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (error) {
    if (String((error as { code?: unknown })?.code).startsWith('FST_TASKQUEUE_')) throw error
    throw new QueueFailedError(queue, call, (error as Error)?.message ?? shown(error), { cause: error })
  }
}

export type Steering = 'stats' | 'pause' | 'resume' | 'isPaused' | 'get' | 'cancel' | 'waiting'

/** Runs a call that a backend of the user's own may leave out: FST_TASKQUEUE_UNSUPPORTED when it does. */
export async function optionalCall<K extends Steering, T> (backend: QueueBackend, method: K, work: (implementation: NonNullable<QueueBackend[K]>) => Promise<T>): Promise<T> {
  const implementation = backend[method]
  if (typeof implementation !== 'function') throw new UnsupportedError(backend.name, `${method}()`)
  return await queueCall(backend.name, `${method}()`, () => work(implementation as NonNullable<QueueBackend[K]>))
}
