// The log lines of a dispatched task's own request (Fastify's `incoming request` and `request
// completed`, and `request.log` in its handler) carry `taskId` and `queue`: the request's logger
// is made with them. Fastify makes that logger before any hook runs, from the raw request, so the
// app's child logger factory is wrapped: it binds them for a request that carries the live token of
// a dispatch of this app, and hands every request on to the factory the app had.
import type { FastifyInstance } from 'fastify'
import type { DispatchMarks } from '../request/mark'

export function bindTaskLogFields (app: FastifyInstance, marks: DispatchMarks): void {
  // A disabled logger is its own child: nothing to bind to, and a factory of our own would make
  // Fastify build and check a logger for every request of the app, which it otherwise skips.
  if (app.log.child({}) === app.log) return
  const appFactory = app.childLoggerFactory
  app.setChildLoggerFactory(function taskLogFields (logger, bindings, options, raw) {
    const dispatch = marks.peek(raw)
    if (dispatch === undefined) return appFactory.call(this, logger, bindings, options, raw)
    // Fastify's bindings are the request id under its label: kept as the id of the try, which
    // the plugin's own lines about the try carry.
    dispatch.reqId = String(Object.values(bindings)[0])
    return appFactory.call(this, logger, { ...bindings, taskId: dispatch.task.id, queue: dispatch.task.queue }, options, raw)
  })
}
