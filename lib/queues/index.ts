// Makes the backend of each registered queue: a built-in type or one the user supplied.
import type { FastifyBaseLogger } from 'fastify'
import type { QueueBackend } from '../../types'
import type { ResolvedQueueOptions } from '../options'
import { InvalidOptionError } from '../errors'
import { LocalQueue } from './local'
import { RedisQueue } from './redis'
import type { TaskEvents } from '../instrumentation/channels'

/** `events`: where a built-in backend publishes what only it sees (a Redis recovery, an unreadable task). */
export function createBackend (options: ResolvedQueueOptions, index: number, log: FastifyBaseLogger, events: TaskEvents): QueueBackend {
  const { queue, type } = options
  if (type === 'local') return new LocalQueue(queue, options.deadLetterMax as number, log, options.groupConcurrency, options.rateLimit)
  if (type === 'redis') return new RedisQueue(options, log, events)
  const backend = typeof type === 'function' ? type({ queue, log }) : type
  const methods = ['put', 'receive', 'length', 'reset', 'dead', 'requeue', 'purge', 'close'] as const
  if (backend?.name !== queue || typeof backend.shared !== 'boolean' || methods.some((method) => typeof backend[method] !== 'function')) {
    throw new InvalidOptionError(`queues[${index}].type: a custom backend must implement QueueBackend with name "${queue}"`)
  }
  return backend
}
