// How a request dispatched by a consumer is told apart from any other: it is an injection (no
// outside client can make one) carrying this process's secret key (no code that merely calls
// `inject()` with x-task-* headers knows it). Both are needed for `request.taskqueue.task`.
import { randomBytes } from 'node:crypto'
import { isInjection } from 'light-my-request'
import type { FastifyRequest } from 'fastify'
import type { DispatchedTask } from '../types'

export const dispatchHeader = 'x-taskqueue-dispatch'

export function createDispatchKey (): string {
  return randomBytes(24).toString('base64url')
}

/**
 * The task a request carries, or null when it was not dispatched by a consumer holding `key`. The
 * key header is removed either way, so a handler cannot read it or pass it on.
 */
export function dispatchedTask (request: FastifyRequest, key: string): DispatchedTask | null {
  const headers = request.headers
  const given = headers[dispatchHeader]
  if (given === undefined) return null
  delete headers[dispatchHeader]
  if (given !== key || !isInjection(request.raw)) return null
  return {
    id: headers['x-task-id'] as string,
    queue: headers['x-task-queue'] as string,
    retries: Number(headers['x-task-retries']),
    eta: new Date(headers['x-task-eta'] as string)
  }
}
