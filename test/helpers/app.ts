// The one app builder of the tests: a Fastify app with the plugin, a debug logger whose lines are
// kept parsed, and a route /tasks/:name (any method) that records every task request it runs and
// answers as the test says. Closed when the test ends; closing it earlier in the test is harmless.
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import taskqueue from '../../plugin'
import type { TaskQueuePluginOptions } from '../../lib/options'
import type { DispatchedTask } from '../../types'
import { loggedApp, type LogLine, type Test } from './harness'

/** One task request as the route /tasks/:name saw it when it started. */
export interface TaskRun {
  /** The `:name` of the url, and the url itself. */
  name: string
  url: string
  /** The x-task-id, x-task-retries and x-task-eta headers. */
  id: string
  retries: string
  eta: string
  /** Date.now() when the handler started. */
  at: number
  headers: IncomingHttpHeaders
  body: unknown
  task: DispatchedTask | null
}

/**
 * How /tasks/:name answers a run: `tries` counts the earlier runs of the same task id. What it
 * returns (or sends) is the answer; nothing, or no behaviour, answers `{ ok: true }`.
 */
export type TaskBehaviour = (request: FastifyRequest, reply: FastifyReply, tries: number, name: string) => unknown

export interface RecordingSetup {
  /** Behaviour by task name, or one behaviour for every name. */
  tasks?: Record<string, TaskBehaviour> | TaskBehaviour
  /** Leaves /tasks/:name out, for a test that declares routes of that path itself. */
  noTaskRoute?: boolean
  /** More routes (and plugins registered after the plugin), added before ready(). */
  routes?: (app: FastifyInstance) => unknown
  /** Options of Fastify itself (the logger is always the test's). */
  fastify?: FastifyServerOptions
  /** The lowest level of the log lines kept; debug unless said. */
  logLevel?: string
  /** Hooks and plugins that must come before the plugin (e.g. an onRequest hook that runs first). */
  before?: (app: FastifyInstance) => unknown
}

export interface RecordingApp {
  app: FastifyInstance
  /** Every log line of the app, parsed. */
  lines: LogLine[]
  /** The task requests that started, in that order. */
  runs: TaskRun[]
  /** The task requests whose behaviour returned (not threw), in the order they did. */
  finished: TaskRun[]
  /** The runs of one task id. */
  runsOf: (id: string) => TaskRun[]
}

export async function recordingApp (t: Test, options: TaskQueuePluginOptions, setup: RecordingSetup = {}): Promise<RecordingApp> {
  const { app, lines } = loggedApp(setup.fastify, setup.logLevel)
  t.teardown(() => app.close())
  await setup.before?.(app)
  await app.register(taskqueue, options)
  const runs: TaskRun[] = []
  const finished: TaskRun[] = []
  const runsOf = (id: string): TaskRun[] => runs.filter((run) => run.id === id)
  if (setup.noTaskRoute !== true) {
    app.all('/tasks/:name', async (request, reply) => {
      const { name } = request.params as { name: string }
      const id = request.headers['x-task-id'] as string
      const tries = runsOf(id).length
      const run: TaskRun = {
        name,
        url: request.url,
        id,
        retries: request.headers['x-task-retries'] as string,
        eta: request.headers['x-task-eta'] as string,
        at: Date.now(),
        headers: { ...request.headers },
        body: request.body,
        task: request.taskqueue.task
      }
      runs.push(run)
      const behaviour = typeof setup.tasks === 'function' ? setup.tasks : setup.tasks?.[name]
      const answer = behaviour === undefined ? undefined : await behaviour(request, reply, tries, name)
      finished.push(run)
      return reply.sent ? reply : (answer ?? { ok: true })
    })
  }
  await setup.routes?.(app)
  await app.ready()
  return { app, lines, runs, finished, runsOf }
}

/** The task names of some runs, in their order. */
export function namesOf (runs: TaskRun[]): string[] {
  return runs.map(({ name }) => name)
}
