// Small helpers of the tests: the app's log lines read back (see recordingApp in ./app.ts), waiting
// for a condition in real time, a gate to hold a task handler, and a plain HTTP client for 127.0.0.1.
import { Writable } from 'node:stream'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import tap from 'tap'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'

export type Test = Parameters<Parameters<typeof tap.test>[0]>[0]

/** One JSON log line of the app. */
export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export const levels = { debug: 20, info: 30, warn: 40, error: 50 } as const

/** A log stream that keeps every line, parsed. */
export function logCapture (): { stream: Writable, lines: LogLine[] } {
  const lines: LogLine[] = []
  let rest = ''
  const stream = new Writable({
    write (chunk: Buffer, encoding, callback) {
      const text = rest + chunk.toString()
      const parts = text.split('\n')
      rest = parts.pop() as string
      for (const part of parts) if (part.trim() !== '') lines.push(JSON.parse(part))
      callback()
    }
  })
  return { stream, lines }
}

/**
 * A Fastify app whose log lines (from `level` up, debug unless said) are kept, parsed: the one log
 * capture of the tests, under recordingApp and the Redis tests that register the plugin themselves.
 */
export function loggedApp (options: FastifyServerOptions = {}, level = 'debug'): { app: FastifyInstance, lines: LogLine[] } {
  const { stream, lines } = logCapture()
  return { app: Fastify({ ...options, logger: { level, stream } }), lines }
}

/** Log lines of the plugin (their message begins with "taskqueue:"). */
export function pluginLines (lines: LogLine[]): LogLine[] {
  return lines.filter(({ msg }) => typeof msg === 'string' && msg.startsWith('taskqueue:'))
}

// The real timers and clock, kept before a test can fake them (test/helpers/clock.ts): the waits of
// the tests stay in real time, bounded, whatever the clock of the code under test says.
const realSetTimeout = globalThis.setTimeout
const realClearTimeout = globalThis.clearTimeout
const realNow = (): number => performance.now()

/** Sleeps `ms` of real time. */
export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms))
}

/** Polls `check` every 5 ms until it holds; rejects after `timeout` ms of real time, naming `what`. */
export async function waitFor (what: string, check: () => boolean | Promise<boolean>, timeout = 5000): Promise<void> {
  const deadline = realNow() + timeout
  while (!(await check())) {
    if (realNow() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(5)
  }
}

/** A promise with its resolve function, to hold a handler until the test lets it go. */
export function gate (): { promise: Promise<void>, open: () => void } {
  let open = (): void => {}
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}

/** Whether `promise` settled within `ms` of real time. */
export async function settlesWithin (promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = realSetTimeout(resolve, ms, false) })
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout])
  } finally {
    realClearTimeout(timer)
  }
}

/** Listens on 127.0.0.1, on a free port; resolves to the port. */
export async function listenLocal (app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as AddressInfo).port
}

/** A plain HTTP request to 127.0.0.1 (no keep-alive), with the whole answer. */
export function httpRequest (port: number, options: { method?: string, path: string, headers?: http.OutgoingHttpHeaders, body?: string }):
Promise<{ statusCode: number, headers: http.IncomingHttpHeaders, body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: '127.0.0.1', port, method: options.method ?? 'GET', path: options.path, headers: options.headers, agent: false }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({ statusCode: response.statusCode as number, headers: response.headers, body: Buffer.concat(chunks).toString() }))
      response.on('error', reject)
    })
    request.on('error', reject)
    request.end(options.body)
  })
}
