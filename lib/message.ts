// Turning an `add(url, options)` call into a task message: validation of every argument, the
// headers copied from the request that queues the task, and its payload.
import { randomUUID } from 'node:crypto'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import { Type, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { FastifyRequest } from 'fastify'
import type { TaskMessage, TaskMethod } from '../types'
import { InvalidArgumentError, InvalidMethodError, InvalidUrlError } from './errors'

export const taskMethods: readonly TaskMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']

const ParamValue = Type.Union([Type.String(), Type.Number(), Type.Boolean()])

export const AddOptionsSchema = Type.Object({
  /** HTTP method of the task request. */
  method: Type.Optional(Type.Union(taskMethods.map((method) => Type.Literal(method)), { default: 'GET' })),
  /** Url-encoded onto the url as its query string; arrays become repeated keys. */
  params: Type.Optional(Type.Record(Type.String(), Type.Union([ParamValue, Type.Array(ParamValue)]))),
  /** Headers of the task request; they win over those copied from the current request. */
  headers: Type.Optional(Type.Record(Type.String(), Type.String())),
  /**
   * Body of the task request. Left out: the current request's body. `null`: none. An object or
   * array is sent as JSON, a string or a Buffer as it is.
   */
  payload: Type.Optional(Type.Unknown()),
  /** Queue name; the default is the alphabetically first registered queue. */
  queue: Type.Optional(Type.String())
}, { additionalProperties: false })

export type AddOptions = Static<typeof AddOptionsSchema>

const checkAddOptions = TypeCompiler.Compile(AddOptionsSchema)

/** Connection-level headers, and those the dispatch sets itself, never travel with a task. */
const neverCopied = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te',
  'trailer', 'transfer-encoding', 'upgrade', 'expect', 'content-length', 'content-encoding',
  'user-agent'
])

/** Headers that describe a task: a task that queues a task starts a fresh one. */
export const taskHeaderPrefix = 'x-task-'

function checkAddOptionsShape (options: unknown): void {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(`options must be an object, got ${JSON.stringify(options)}`)
  }
  const { method } = options as { method?: unknown }
  if (method !== undefined && !taskMethods.includes(method as TaskMethod)) {
    throw new InvalidMethodError(`expected one of ${taskMethods.join(', ')}, got ${JSON.stringify(method)}`)
  }
  if (checkAddOptions.Check(options)) return
  const error = checkAddOptions.Errors(options).First()
  const where = error === undefined || error.path === '' ? 'options' : `options${error.path.replaceAll('/', '.')}`
  throw new InvalidArgumentError(`${where}: ${error?.message ?? 'invalid'}, got ${JSON.stringify(error?.value)}; allowed options are ${Object.keys(AddOptionsSchema.properties).join(', ')}`)
}

function checkUrl (url: unknown, hasParams: boolean): string {
  if (typeof url !== 'string' || url.length === 0) {
    throw new InvalidUrlError(`expected a path of this app such as "/tasks/run", got ${JSON.stringify(url)}`)
  }
  // A path of this app: no scheme, no host, no protocol-relative "//host", nothing a request line
  // could not carry.
  if (url[0] !== '/' || url[1] === '/' || url[1] === '\\' || /[\s\u0000-\u001f\u007f]/.test(url)) { // eslint-disable-line no-control-regex
    throw new InvalidUrlError(`"${url}" is not a path of this app: it must begin with a single "/" and hold no spaces or control characters`)
  }
  if (hasParams && url.includes('?')) {
    throw new InvalidUrlError(`"${url}" already has a query string: pass the query either in the url or as params, not both`)
  }
  return url
}

function encodeParams (params: NonNullable<AddOptions['params']>): string {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const item of value) search.append(key, String(item))
    else search.append(key, String(value))
  }
  const query = search.toString()
  return query === '' ? '' : `?${query}`
}

function checkHeaders (headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch (error) {
      throw new InvalidArgumentError(`header ${JSON.stringify(name)}: ${(error as Error).message}`)
    }
    if (name.toLowerCase().startsWith(taskHeaderPrefix)) {
      throw new InvalidArgumentError(`header "${name}": x-task-* headers are set by the queue when it dispatches the task`)
    }
  }
}

/** Headers of the current request that a task inherits, by default with its content type or not. */
function inheritedHeaders (request: FastifyRequest, withContentType: boolean): Record<string, string> {
  const headers: Record<string, string> = {}
  const source = request.headers
  const connectionListed = typeof source.connection === 'string' ? source.connection.toLowerCase() : ''
  for (const name in source) {
    const value = source[name]
    if (value === undefined || neverCopied.has(name) || name.startsWith(taskHeaderPrefix)) continue
    if (name === 'content-type' && !withContentType) continue
    // Headers that the Connection header names are hop-by-hop too.
    if (connectionListed !== '' && connectionListed.split(',').some((listed) => listed.trim() === name)) continue
    headers[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return headers
}

interface Body { payload: string | Buffer | undefined, contentType: string | undefined }

function encodeBody (body: unknown): Body {
  if (body === undefined || body === null) return { payload: undefined, contentType: undefined }
  if (typeof body === 'string') return { payload: body, contentType: 'text/plain; charset=utf-8' }
  if (Buffer.isBuffer(body)) return { payload: body, contentType: 'application/octet-stream' }
  if (body instanceof Uint8Array) return { payload: Buffer.from(body), contentType: 'application/octet-stream' }
  if (typeof body === 'object') return { payload: JSON.stringify(body), contentType: 'application/json' }
  throw new InvalidArgumentError(`payload: expected an object, an array, a string, a Buffer or null, got a ${typeof body}`)
}

/**
 * Builds the message of one task. `request` is the request that queues it, when there is one:
 * its headers and body are inherited. `resolveQueue` maps the queue option to a registered queue.
 * Throws a coded error for any bad argument.
 */
export function createTaskMessage (
  url: string,
  options: AddOptions | undefined,
  resolveQueue: (queue: string | undefined) => string,
  request: FastifyRequest | undefined
): TaskMessage {
  if (options !== undefined) checkAddOptionsShape(options)
  const queue = resolveQueue(options?.queue)
  const method = options?.method ?? 'GET'
  const params = options?.params
  let path = checkUrl(url, params !== undefined)
  if (params !== undefined) path += encodeParams(params)
  if (options?.headers !== undefined) checkHeaders(options.headers)

  // By default a task carries the body of the request that queues it, except a GET, which has none.
  const inheritsBody = options?.payload === undefined && request !== undefined && method !== 'GET' && request.body !== undefined
  const body = encodeBody(inheritsBody ? request.body : options?.payload)
  const headers = request === undefined ? {} : inheritedHeaders(request, inheritsBody && typeof request.body !== 'object')
  if (body.payload !== undefined && headers['content-type'] === undefined) headers['content-type'] = body.contentType as string
  if (options?.headers !== undefined) {
    for (const name in options.headers) headers[name.toLowerCase()] = options.headers[name]
  }

  return { v: 1, id: randomUUID(), queue, url: path, method, headers, payload: body.payload, retries: 0, createdAt: Date.now() }
}
