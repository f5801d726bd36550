// How a request dispatched by a consumer is told apart from any other. Each dispatch carries a
// fresh random token in a header, registered here before its inject() starts. The first time the
// request's mark is worked out the token is spent (gone from the registry and from the request's
// headers), and it is forgotten anyway once its inject() ended: a token that some hook read, or
// logged, proves nothing afterwards. A request that came through a real server is never a task.
import { randomUUID } from 'node:crypto'
import { IncomingMessage } from 'node:http'
import { Http2ServerRequest } from 'node:http2'
import type { FastifyRequest } from 'fastify'
import type { DispatchedTask, TaskMessage } from '../../types'
import { dispatchHeader } from '../consumer/task-headers'

/**
 * Whether the raw request came from a client of a server of this process. Checked against node's
 * own classes, which no copy of a package can change: `light-my-request`'s `isInjection` tests for
 * its own class, so an app whose Fastify injects through another copy of it had no task at all.
 */
function cameOverNetwork (raw: unknown): boolean {
  return raw instanceof IncomingMessage || raw instanceof Http2ServerRequest
}

/** One dispatch of a task: its token, the task it runs, and the id its request got. */
export interface Dispatch {
  readonly token: string
  readonly task: DispatchedTask
  /** Set as the request's logger is made (see lib/instrumentation/log-bindings.ts). */
  reqId: string | undefined
}

export class DispatchMarks {
  /** Token -> a dispatch whose mark was not worked out yet and whose inject() runs. */
  private readonly live = new Map<string, Dispatch>()

  /** A single-use token for one dispatch of `message`, valid until `forget()` or its first use. */
  issue (message: Pick<TaskMessage, 'id' | 'queue' | 'retries' | 'eta' | 'createdAt' | 'group' | 'schedule'>): Dispatch {
    // randomUUID draws from a cached pool of random bytes: cheaper per dispatch than randomBytes.
    const token = randomUUID()
    const task: DispatchedTask = { id: message.id, queue: message.queue, retries: message.retries, eta: new Date(message.eta), createdAt: new Date(message.createdAt) }
    if (message.group !== undefined) task.group = message.group
    if (message.schedule !== undefined) task.schedule = { name: message.schedule.name, tick: new Date(message.schedule.tick) }
    const dispatch: Dispatch = { token, task, reqId: undefined }
    this.live.set(token, dispatch)
    return dispatch
  }

  /**
   * The dispatch a raw request carries the live token of, without spending the token: what the
   * request's logger is made from, before any hook runs. Null for a request from the network.
   */
  peek (raw: { headers: Record<string, unknown> }): Dispatch | undefined {
    const given = raw.headers[dispatchHeader]
    if (typeof given !== 'string' || cameOverNetwork(raw)) return undefined
    return this.live.get(given)
  }

  /** The dispatch of `token` ended: its token proves nothing any more. */
  forget (token: string): void {
    this.live.delete(token)
  }

  /**
   * The task a request runs, or null. Spends the request's token: the header is removed and the
   * token unregistered, so nothing that reads the request later can use it again. A request from
   * the network leaves the registry alone: a leaked token cannot take the mark away from its task.
   */
  take (request: FastifyRequest): DispatchedTask | null {
    const headers = request.headers
    const given = headers[dispatchHeader]
    if (given === undefined) return null
    delete headers[dispatchHeader]
    if (typeof given !== 'string' || cameOverNetwork(request.raw)) return null
    const dispatch = this.live.get(given)
    if (dispatch === undefined) return null
    this.live.delete(given)
    // Known already when the app logs; else the id of the request is taken here.
    dispatch.reqId ??= request.id
    return dispatch.task
  }

  /** Tokens issued and not yet spent nor forgotten. */
  get size (): number {
    return this.live.size
  }
}
